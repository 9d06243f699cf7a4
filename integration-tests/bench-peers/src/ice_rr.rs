//! iceoryx2 request-response round trips (ipc, shared memory), request and
//! response payloads `[u8; 64]`, both sides busy-polling (no waitset, no
//! events).
//!
//! The server (a separate process) creates the service (one server, one
//! client, `INFLIGHT` active requests per client, which is also the server's
//! request buffer; no safe overflow, so nothing is overwritten; default
//! backpressure `RetryUntilDelivered` on both sides), busy-polls `receive()`
//! and answers every request with a copy of its payload written into a loaned
//! response (`loan_uninit` / `write_payload` / `send`). It runs until its stdin
//! closes.
//!
//! The client (another process, started once the server is ready) writes a
//! sequence number into every request and busy-polls the request's
//! `PendingResponse` until the response arrives; it checks that the response
//! carries the same sequence number. Latency: one request at a time, timed
//! from the loan of the request until its response and pending response are
//! released. Throughput: up to `INFLIGHT` pending responses; responses arrive
//! in request order (one server answering its queue in order), so the client
//! polls the oldest one and sends a new request for each response.

use std::collections::VecDeque;
use std::hint::spin_loop;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use iceoryx2::pending_response::PendingResponse;
use iceoryx2::port::client::Client;
use iceoryx2::prelude::*;

use crate::SMALL;
use crate::child::{ChildSet, Cpus, arg, pin_to, say};
use crate::ice_peer::{last_byte, loan_retry, node, service_name};
use crate::round_trips::{INFLIGHT, RtResult, RtSpec, seconds_arg};

type Payload = [u8; SMALL];
type RrClient = Client<ipc::Service, Payload, (), Payload, ()>;
type Pending = PendingResponse<ipc::Service, Payload, (), Payload, ()>;

/// How long a client waits for one response, or for its first request to
/// reach the server, before it gives up.
const STALL: Duration = Duration::from_secs(10);

fn check_size(size: usize) -> Result<(), String> {
    if size != SMALL {
        return Err(format!("iceoryx2 round trips use {SMALL}-byte payloads, not {size}"));
    }
    Ok(())
}

/// `__child ice-rr-server <cpu> <service> <size>`: creates the service and
/// the server, prints `READY`, answers requests until its stdin closes, then
/// prints `SERVED <requests>`.
pub fn server_child(args: &[String]) -> Result<(), String> {
    let cpu: i64 = arg(args, 0, "cpu")?;
    let name = service_name(args.get(1).ok_or("missing service")?)?;
    check_size(arg(args, 2, "size")?)?;
    pin_to(cpu)?;
    let node = node()?;
    let svc = node
        .service_builder(&name)
        .request_response::<Payload, Payload>()
        .max_servers(1)
        .max_clients(1)
        .max_active_requests_per_client(INFLIGHT)
        .max_loaned_requests(1)
        .max_response_buffer_size(1)
        .max_borrowed_responses_per_pending_response(1)
        .enable_safe_overflow_for_requests(false)
        .enable_safe_overflow_for_responses(false)
        .create()
        .map_err(|x| format!("create service: {x:?}"))?;
    let server = svc
        .server_builder()
        .max_loaned_responses_per_request(1)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .map_err(|x| format!("server: {x:?}"))?;
    let stop = stop_on_stdin_close();
    say("READY");
    let mut served = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match server.receive().map_err(|x| format!("receive: {x:?}"))? {
            Some(request) => {
                let payload: Payload = *request.payload();
                let response = loan_retry(|| request.loan_uninit())?;
                response.write_payload(payload).send().map_err(|x| format!("send response: {x:?}"))?;
                served += 1;
            }
            None => spin_loop(),
        }
    }
    say(&format!("SERVED {served}"));
    Ok(())
}

/// Sends request `seq`. A request that reached no server (only possible
/// before the client's connection to the server is established) is dropped
/// and sent again.
fn send(client: &RrClient, seq: u64) -> Result<Pending, String> {
    let mut payload = [0u8; SMALL];
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    payload[SMALL - 1] = last_byte(seq);
    let mut end = None;
    loop {
        let request = loan_retry(|| client.loan_uninit())?;
        let pending = request.write_payload(payload).send().map_err(|x| format!("send request {seq}: {x:?}"))?;
        match pending.number_of_server_connections() {
            1 => return Ok(pending),
            0 if Instant::now() < *end.get_or_insert_with(|| Instant::now() + STALL) => std::thread::yield_now(),
            n => return Err(format!("request {seq} reached {n} servers, expected 1")),
        }
    }
}

/// Busy-polls `pending` until its response arrives; checks the response
/// carries sequence number `seq`.
fn wait_response(pending: &Pending, seq: u64) -> Result<(), String> {
    let mut spins = 0u32;
    let mut since = None;
    loop {
        if let Some(response) = pending.receive().map_err(|x| format!("receive response {seq}: {x:?}"))? {
            let p = response.payload();
            if p[..8] != seq.to_le_bytes() || p[SMALL - 1] != last_byte(seq) {
                return Err(format!("response to request {seq} carries another payload"));
            }
            return Ok(());
        }
        spins = spins.wrapping_add(1);
        if spins % (1 << 16) == 0 && since.get_or_insert_with(Instant::now).elapsed() > STALL {
            return Err(format!("no response to request {seq} in {STALL:?}"));
        }
        spin_loop();
    }
}

/// `INFLIGHT` requests in flight for `duration`; returns the responses
/// received until the time was up and the seconds they took. The requests
/// still in flight then are drained (not counted).
fn throughput(client: &RrClient, first_seq: u64, duration: Duration) -> Result<(u64, f64), String> {
    let mut inflight: VecDeque<(u64, Pending)> = VecDeque::with_capacity(INFLIGHT);
    let mut seq = first_seq;
    let mut done = 0u64;
    let start = Instant::now();
    let deadline = start + duration;
    let mut end = None;
    loop {
        if end.is_none() {
            while inflight.len() < INFLIGHT {
                inflight.push_back((seq, send(client, seq)?));
                seq += 1;
            }
        }
        let Some((s, pending)) = inflight.pop_front() else { break };
        wait_response(&pending, s)?;
        drop(pending);
        if end.is_none() {
            done += 1;
            if done % 16 == 0 {
                let now = Instant::now();
                if now >= deadline {
                    end = Some(now);
                }
            }
        }
    }
    let end = end.ok_or("throughput loop ended early")?;
    Ok((done, (end - start).as_secs_f64()))
}

/// `__child ice-rr-client <cpu> <service> <size> <warmup> <iterations>
/// <seconds>`: opens the service, waits for the server, measures latency,
/// then throughput; prints `RESULT ...` (`RtResult`).
pub fn client_child(args: &[String]) -> Result<(), String> {
    let cpu: i64 = arg(args, 0, "cpu")?;
    let name = service_name(args.get(1).ok_or("missing service")?)?;
    check_size(arg(args, 2, "size")?)?;
    let warmup: u64 = arg(args, 3, "warmup")?;
    let iterations: u64 = arg(args, 4, "iterations")?;
    let duration = seconds_arg(args, 5)?;
    if iterations == 0 || iterations > 10_000_000 || warmup > 10_000_000 {
        return Err("iterations must be 1..=1e7, warmup at most 1e7".into());
    }
    pin_to(cpu)?;
    let node = node()?;
    let svc = node
        .service_builder(&name)
        .request_response::<Payload, Payload>()
        .open()
        .map_err(|x| format!("open service: {x:?}"))?;
    let client = svc
        .client_builder()
        .max_active_requests(INFLIGHT)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .map_err(|x| format!("client: {x:?}"))?;
    let end = Instant::now() + STALL;
    while svc.dynamic_config().number_of_servers() < 1 {
        if Instant::now() > end {
            return Err("no server connected".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let one = |seq: u64| -> Result<(), String> {
        let pending = send(&client, seq)?;
        wait_response(&pending, seq)
    };
    for seq in 0..warmup {
        one(seq)?;
    }
    let mut samples = Vec::with_capacity(iterations as usize);
    for seq in warmup..warmup + iterations {
        let t = Instant::now();
        one(seq)?;
        samples.push(t.elapsed().as_nanos() as u64);
    }
    let (calls, secs) = throughput(&client, warmup + iterations, duration)?;
    let result = RtResult::from_samples(samples, calls, secs)?;
    say(&format!("RESULT {}", result.line()));
    Ok(())
}

/// One iceoryx2 round-trip measurement; `counter` makes the service name
/// unique in this run, the orchestrator's pid across parallel runs.
pub fn measure(set: &mut ChildSet, cpus: &Cpus, spec: RtSpec, timeout: Duration, counter: u32) -> Result<RtResult, String> {
    measure_with(set, cpus, spec, timeout, &format!("rr-{counter}"), ("ice-rr-server", "ice-rr-client"))
}

/// A round-trip measurement by a server child and a client child of the
/// given roles, over service `bench-peers/<pid>/<name>`.
pub(crate) fn measure_with(
    set: &mut ChildSet,
    cpus: &Cpus,
    spec: RtSpec,
    timeout: Duration,
    name: &str,
    (server_role, client_role): (&str, &str),
) -> Result<RtResult, String> {
    let service = format!("bench-peers/{}/{name}", std::process::id());
    let started = Instant::now();
    let server = set.spawn(
        "iceoryx2 server",
        &[server_role.into(), cpus.second().to_string(), service.clone(), spec.size.to_string()],
    )?;
    set.expect(server, "READY", started + Duration::from_secs(30))?;
    let client = set.spawn("iceoryx2 client", &spec.client_args(client_role, cpus.first(), service))?;
    let deadline = Instant::now() + timeout;
    let line = set.expect(client, "RESULT", deadline)?;
    set.wait_success(client, deadline + Duration::from_secs(10))?;
    set.close_stdin(server);
    let end = Instant::now() + Duration::from_secs(10);
    set.expect(server, "SERVED", end)?;
    set.wait_success(server, end)?;
    RtResult::parse(&line)
}

/// A flag raised when the orchestrator closes this child's stdin (it does
/// when the client is done): a thread blocked in read() (pinned to the
/// same CPU, but asleep) raises it.
pub(crate) fn stop_on_stdin_close() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        flag.store(true, Ordering::Relaxed);
    });
    stop
}
