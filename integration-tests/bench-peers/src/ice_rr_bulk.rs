//! iceoryx2 request-response round trips of large payloads (1 MiB by
//! default), `[u8]` slices, both sides busy-polling, copying in and out as
//! an application that owns its bytes does: the client copies its buffer
//! into a loaned request and the response out into its own buffer; the
//! server copies the request out, then into a loaned response. The same
//! work as switchyard's pooled bodies (copied in while encoded, copied out
//! by the receiver), so the bench lab can set the two side by side.
//!
//! Latency only: one request at a time (`warmup`, then `iterations` timed);
//! the `RESULT` line's throughput fields are the timed calls and the time
//! they took together.

use std::hint::spin_loop;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;

use crate::child::{ChildSet, Cpus, arg, pin_to, say};
use crate::ice_peer::{loan_retry, node, service_name};
use crate::round_trips::{RtResult, RtSpec};

/// How long a client waits for one response before it gives up.
const STALL: Duration = Duration::from_secs(10);

fn check_size(size: usize) -> Result<usize, String> {
    if !(1..=64 << 20).contains(&size) {
        return Err(format!("large round trips take 1 B to 64 MiB, not {size}"));
    }
    Ok(size)
}

/// `__child ice-bulk-server <cpu> <service> <size>`: serves until its stdin
/// closes, then prints `SERVED <requests>`.
pub fn server_child(args: &[String]) -> Result<(), String> {
    let cpu: i64 = arg(args, 0, "cpu")?;
    let name = service_name(args.get(1).ok_or("missing service")?)?;
    let size = check_size(arg(args, 2, "size")?)?;
    pin_to(cpu)?;
    let node = node()?;
    let svc = node
        .service_builder(&name)
        .request_response::<[u8], [u8]>()
        .max_servers(1)
        .max_clients(1)
        .max_active_requests_per_client(1)
        .max_loaned_requests(1)
        .max_response_buffer_size(1)
        .max_borrowed_responses_per_pending_response(1)
        .enable_safe_overflow_for_requests(false)
        .enable_safe_overflow_for_responses(false)
        .create()
        .map_err(|x| format!("create service: {x:?}"))?;
    let server = svc
        .server_builder()
        .initial_max_slice_len(size)
        .max_loaned_responses_per_request(1)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .map_err(|x| format!("server: {x:?}"))?;
    let stop = crate::ice_rr::stop_on_stdin_close();
    say("READY");
    let mut mine = vec![0u8; size];
    let mut served = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match server.receive().map_err(|x| format!("receive: {x:?}"))? {
            Some(request) => {
                // Copy out: the application's own bytes.
                let len = request.payload().len().min(size);
                mine[..len].copy_from_slice(&request.payload()[..len]);
                // Copy in: the answer.
                let response = loan_retry(|| request.loan_slice_uninit(len))?;
                response
                    .write_from_slice(&mine[..len])
                    .send()
                    .map_err(|x| format!("send response: {x:?}"))?;
                served += 1;
            }
            None => spin_loop(),
        }
    }
    say(&format!("SERVED {served}"));
    Ok(())
}

/// `__child ice-bulk-client <cpu> <service> <size> <warmup> <iterations>
/// <seconds>`: prints `RESULT ...` (`RtResult`; `seconds` is not used).
pub fn client_child(args: &[String]) -> Result<(), String> {
    let cpu: i64 = arg(args, 0, "cpu")?;
    let name = service_name(args.get(1).ok_or("missing service")?)?;
    let size = check_size(arg(args, 2, "size")?)?;
    let warmup: u64 = arg(args, 3, "warmup")?;
    let iterations: u64 = arg(args, 4, "iterations")?;
    if iterations == 0 || iterations > 1_000_000 || warmup > 1_000_000 {
        return Err("iterations must be 1..=1e6, warmup at most 1e6".into());
    }
    pin_to(cpu)?;
    let node = node()?;
    let svc = node
        .service_builder(&name)
        .request_response::<[u8], [u8]>()
        .open()
        .map_err(|x| format!("open service: {x:?}"))?;
    let client = svc
        .client_builder()
        .initial_max_slice_len(size)
        .max_active_requests(1)
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
    let mut sent: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut back = vec![0u8; size];
    let mut one = |seq: u64| -> Result<(), String> {
        sent[..8.min(size)].copy_from_slice(&seq.to_le_bytes()[..8.min(size)]);
        let pending = loop {
            let request = loan_retry(|| client.loan_slice_uninit(size))?;
            let pending = request
                .write_from_slice(&sent)
                .send()
                .map_err(|x| format!("send request {seq}: {x:?}"))?;
            if pending.number_of_server_connections() == 1 {
                break pending;
            }
            if Instant::now() > end + STALL {
                return Err(format!("request {seq} reached no server"));
            }
            std::thread::yield_now();
        };
        let since = Instant::now();
        loop {
            if let Some(response) = pending
                .receive()
                .map_err(|x| format!("receive response {seq}: {x:?}"))?
            {
                let p = response.payload();
                if p.len() != size {
                    return Err(format!("a {} B response to a {size} B request", p.len()));
                }
                back.copy_from_slice(p);
                if back[..8.min(size)] != sent[..8.min(size)] {
                    return Err(format!("response to request {seq} carries another payload"));
                }
                return Ok(());
            }
            if since.elapsed() > STALL {
                return Err(format!("no response to request {seq} in {STALL:?}"));
            }
            spin_loop();
        }
    };
    for seq in 0..warmup {
        one(seq)?;
    }
    let mut samples = Vec::with_capacity(iterations as usize);
    let started = Instant::now();
    for seq in warmup..warmup + iterations {
        let t = Instant::now();
        one(seq)?;
        samples.push(t.elapsed().as_nanos() as u64);
    }
    let secs = started.elapsed().as_secs_f64();
    let result = RtResult::from_samples(samples, iterations, secs)?;
    say(&format!("RESULT {}", result.line()));
    Ok(())
}

/// One large round-trip measurement (see the module docs).
pub fn measure(set: &mut ChildSet, cpus: &Cpus, spec: RtSpec, timeout: Duration, counter: u32) -> Result<RtResult, String> {
    crate::ice_rr::measure_with(set, cpus, spec, timeout, &format!("rr-bulk-{counter}"), ("ice-bulk-server", "ice-bulk-client"))
}
