//! iceoryx2 publish-subscribe (ipc, shared memory) with no drops: the service
//! has no safe overflow, the publisher's backpressure strategy is
//! `RetryUntilDelivered` (it spins while the subscriber's buffer is full) and
//! every `send` must reach the one subscriber. 64-byte messages are a
//! `[u8; 64]`, 1 MiB messages a `[u8]` slice of 1 MiB.
//!
//! The subscriber (a separate process) creates the service and busy-polls
//! `receive()`. The publisher (another process, started once the subscriber is
//! ready) writes every payload into its loaned shared-memory sample: the
//! sequence number in the first 8 bytes, and for 1 MiB a copy of a prepared
//! 1 MiB buffer. The subscriber checks size and sequence of every sample (it
//! reads 8 bytes of the payload and its last byte, not the whole payload: that
//! is the zero-copy point), starts its clock when the last warm-up sample
//! arrives and stops it when the last sample arrives.

use std::hint::spin_loop;
use std::io::Read;
use std::time::{Duration, Instant};

use iceoryx2::port::LoanError;
use iceoryx2::prelude::*;

use crate::child::{ChildSet, Cpus, arg, pin_to, say};
use crate::{SMALL, Spec};

/// Subscriber buffer (samples in flight) for 64-byte and for 1 MiB messages.
const BUFFER_SMALL: usize = 4096;
const BUFFER_LARGE: usize = 16;

pub(crate) fn node() -> Result<Node<ipc::Service>, String> {
    // Before the first config access: no "no config file" warning.
    set_log_level(LogLevel::Error);
    node_with(&Config::global_config().clone())
}

fn node_with(config: &Config) -> Result<Node<ipc::Service>, String> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .config(config)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .map_err(|e| format!("iceoryx2 node: {e:?}"))
}

pub(crate) fn service_name(s: &str) -> Result<ServiceName, String> {
    s.try_into().map_err(|e| format!("service name {s:?}: {e:?}"))
}

fn buffer_for(size: usize) -> usize {
    if size == SMALL { BUFFER_SMALL } else { BUFFER_LARGE }
}

/// The last payload byte of sample (or request) `seq`, checked by the receiver.
pub(crate) fn last_byte(seq: u64) -> u8 {
    (seq as u8) ^ 0x5a
}

/// Receiver bookkeeping shared by both payload types.
struct Counter {
    warmup: u64,
    total: u64,
    got: u64,
    start: Option<Instant>,
    end: Option<Instant>,
}

impl Counter {
    fn on(&mut self, bytes: &[u8], size: usize) -> Result<(), String> {
        if bytes.len() != size {
            return Err(format!("sample {} has {} bytes, expected {size}", self.got, bytes.len()));
        }
        let seq = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        if seq != self.got || bytes[size - 1] != last_byte(seq) {
            return Err(format!("sample {} carries sequence {seq}: lost or reordered", self.got));
        }
        self.got += 1;
        if self.got == self.warmup {
            self.start = Some(Instant::now());
        }
        if self.got == self.total {
            self.end = Some(Instant::now());
        }
        Ok(())
    }
    fn done(&self) -> bool {
        self.got >= self.total
    }
}

/// `__child ice-sub <cpu> <service> <size> <warmup> <messages>`: creates the
/// service and the subscriber, prints `READY`, receives everything, prints
/// `RESULT <messages> <seconds>`.
pub fn subscriber_child(args: &[String]) -> Result<(), String> {
    let cpu: i64 = arg(args, 0, "cpu")?;
    let name = service_name(args.get(1).ok_or("missing service")?)?;
    let size: usize = arg(args, 2, "size")?;
    let warmup: u64 = arg(args, 3, "warmup")?;
    let messages: u64 = arg(args, 4, "messages")?;
    pin_to(cpu)?;
    let node = node()?;
    let buffer = buffer_for(size);
    let mut c = Counter { warmup, total: warmup + messages, got: 0, start: None, end: None };
    if size == SMALL {
        let svc = node
            .service_builder(&name)
            .publish_subscribe::<[u8; SMALL]>()
            .max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(buffer)
            .enable_safe_overflow(false)
            .create()
            .map_err(|x| format!("create service: {x:?}"))?;
        let sub = svc.subscriber_builder().buffer_size(buffer).create().map_err(|x| format!("subscriber: {x:?}"))?;
        say("READY");
        while !c.done() {
            match sub.receive().map_err(|x| format!("receive: {x:?}"))? {
                Some(sample) => c.on(sample.payload(), size)?,
                None => spin_loop(),
            }
        }
    } else {
        let svc = node
            .service_builder(&name)
            .publish_subscribe::<[u8]>()
            .max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(buffer)
            .enable_safe_overflow(false)
            .create()
            .map_err(|x| format!("create service: {x:?}"))?;
        let sub = svc.subscriber_builder().buffer_size(buffer).create().map_err(|x| format!("subscriber: {x:?}"))?;
        say("READY");
        while !c.done() {
            match sub.receive().map_err(|x| format!("receive: {x:?}"))? {
                Some(sample) => c.on(sample.payload(), size)?,
                None => spin_loop(),
            }
        }
    }
    let secs = (c.end.unwrap() - c.start.unwrap()).as_secs_f64();
    say(&format!("RESULT {messages} {secs}"));
    Ok(())
}

/// Retries a loan while the port's samples are all in flight.
pub(crate) fn loan_retry<T>(mut f: impl FnMut() -> Result<T, LoanError>) -> Result<T, String> {
    loop {
        match f() {
            Ok(s) => return Ok(s),
            Err(LoanError::OutOfMemory | LoanError::ExceedsMaxLoans) => spin_loop(),
            Err(x) => return Err(format!("loan: {x:?}")),
        }
    }
}

/// Sends sample `i` until it reaches the one subscriber. A send reaches no
/// subscriber only while the subscriber has not yet attached its side of the
/// connection (at start-up, once the connection's queue is full: iceoryx2 then
/// refuses to block); that sample went nowhere, so the same sequence number is
/// sent again. The subscriber checks that no sequence number is missing.
fn send_retry(i: u64, mut send: impl FnMut() -> Result<usize, String>) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match send()? {
            1 => return Ok(()),
            0 if Instant::now() < end => std::thread::yield_now(),
            n => return Err(format!("sample {i} reached {n} subscribers, expected 1")),
        }
    }
}

/// `__child ice-pub <cpu> <service> <size> <warmup> <messages>`: opens the
/// service, waits for the subscriber, sends `warmup + messages` samples,
/// prints `SENT`, then waits for its stdin to close before it leaves (so its
/// samples stay valid until the subscriber has counted them).
pub fn publisher_child(args: &[String]) -> Result<(), String> {
    let cpu: i64 = arg(args, 0, "cpu")?;
    let name = service_name(args.get(1).ok_or("missing service")?)?;
    let size: usize = arg(args, 2, "size")?;
    let warmup: u64 = arg(args, 3, "warmup")?;
    let messages: u64 = arg(args, 4, "messages")?;
    pin_to(cpu)?;
    let node = node()?;
    let total = warmup + messages;
    let wait_subscriber = |count: &dyn Fn() -> usize| -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(10);
        while count() < 1 {
            if Instant::now() > end {
                return Err("no subscriber connected".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    };
    if size == SMALL {
        let svc = node
            .service_builder(&name)
            .publish_subscribe::<[u8; SMALL]>()
            .open()
            .map_err(|x| format!("open service: {x:?}"))?;
        let publisher = svc
            .publisher_builder()
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(|x| format!("publisher: {x:?}"))?;
        wait_subscriber(&|| svc.dynamic_config().number_of_subscribers())?;
        let mut payload = [0u8; SMALL];
        for i in 0..total {
            payload[..8].copy_from_slice(&i.to_le_bytes());
            payload[SMALL - 1] = last_byte(i);
            send_retry(i, || {
                let sample = loan_retry(|| publisher.loan_uninit())?;
                sample.write_payload(payload).send().map_err(|x| format!("send: {x:?}"))
            })?;
        }
        say("SENT");
        wait_for_stdin_eof();
    } else {
        let svc = node
            .service_builder(&name)
            .publish_subscribe::<[u8]>()
            .open()
            .map_err(|x| format!("open service: {x:?}"))?;
        let publisher = svc
            .publisher_builder()
            .initial_max_slice_len(size)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(|x| format!("publisher: {x:?}"))?;
        wait_subscriber(&|| svc.dynamic_config().number_of_subscribers())?;
        let data: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        for i in 0..total {
            send_retry(i, || {
                let sample = loan_retry(|| publisher.loan_slice_uninit(size))?;
                let mut sample = sample.write_from_slice(&data);
                let p = sample.payload_mut();
                p[..8].copy_from_slice(&i.to_le_bytes());
                p[size - 1] = last_byte(i);
                sample.send().map_err(|x| format!("send: {x:?}"))
            })?;
        }
        say("SENT");
        wait_for_stdin_eof();
    }
    Ok(())
}

fn wait_for_stdin_eof() {
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin();
    while let Ok(n) = stdin.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// One iceoryx2 measurement; `counter` makes the service name unique in this
/// run, the orchestrator's pid across parallel runs.
pub fn measure(set: &mut ChildSet, cpus: &Cpus, spec: Spec, timeout: Duration, counter: u32) -> Result<(u64, f64), String> {
    let service = format!("bench-peers/{}/{}", std::process::id(), counter);
    let common = |role: &str, cpu: i64| -> Vec<String> {
        vec![
            role.into(),
            cpu.to_string(),
            service.clone(),
            spec.size.to_string(),
            spec.warmup.to_string(),
            spec.messages.to_string(),
        ]
    };
    let started = Instant::now();
    let sub = set.spawn("iceoryx2 subscriber", &common("ice-sub", cpus.first()))?;
    set.expect(sub, "READY", started + Duration::from_secs(30))?;
    let publ = set.spawn("iceoryx2 publisher", &common("ice-pub", cpus.second()))?;
    let deadline = Instant::now() + timeout;
    let line = set.expect(sub, "RESULT", deadline)?;
    set.wait_success(sub, deadline + Duration::from_secs(10))?;
    set.expect(publ, "SENT", deadline)?;
    set.close_stdin(publ);
    set.wait_success(publ, deadline + Duration::from_secs(10))?;
    crate::tonic_peer::parse_result(&line)
}

/// Removes the shared-memory resources of dead iceoryx2 nodes (children that
/// had to be killed); a no-op when both sides exited normally.
pub fn cleanup_dead_nodes() {
    // Node creation would clean up silently by default; do it explicitly to
    // report it.
    set_log_level(LogLevel::Error);
    let mut config = Config::global_config().clone();
    config.global.node.cleanup_dead_nodes_on_creation = false;
    match node_with(&config) {
        Ok(n) => {
            let st = n.try_cleanup_dead_nodes();
            if st.cleanups > 0 || st.failed_cleanups > 0 {
                eprintln!(
                    "bench-peers: iceoryx2 cleanup of dead nodes: {} removed, {} failed",
                    st.cleanups, st.failed_cleanups
                );
            }
        }
        Err(e) => eprintln!("bench-peers: iceoryx2 cleanup skipped: {e}"),
    }
}
