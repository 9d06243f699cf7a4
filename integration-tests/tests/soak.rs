//! Soak (reliability.md F3): mixed load over every same-host transport at
//! once (shm with small and bulk bodies, unix, tcp, quic), with every
//! timer and budget on (keepalive, idle timeout, frame deadline,
//! partial-frame budget) and idle-then-busy clients beside the busy ones,
//! against one server process for `SWITCHYARD_SOAK_SECS` (default 20 s; 600 for the
//! full run). Every request carries its own id and every response must
//! bring the same bytes back to the call that sent them: zero lost, zero
//! duplicated or misrouted; no connection closes (a call caught in a
//! close would be retried on a new connection, hiding the fault). The
//! server's RSS after warm-up and at the end differ by under 5 %, and its
//! fd count and the client's are flat. The calls/s held are printed; a lost
//! call prints both sides' view of every connection.
//!
//! Full run: `SWITCHYARD_SOAK_SECS=600 cargo test --release -p
//! switchyard-integration-tests --test soak -- --nocapture`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard::debug::IntrospectionClient;
use switchyard::{Channel, Transport};
use switchyard_integration_tests::measure::{open_fds, rss_kib};
use switchyard_integration_tests::{ServerProcess, TestingClient, within};

fn fds(pid: u32) -> usize {
    open_fds(pid)
}

/// What one worker did.
#[derive(Debug, Default)]
struct Count {
    sent: u64,
    answered: u64,
    bytes: u64,
    /// Pauses past the idle timeout (idle-then-busy workers).
    pauses: u64,
}

/// Both sides' view of every connection, printed when a call is lost so
/// the report says which side dropped it: the server's `calls_started`
/// says whether the request arrived, `calls_succeeded` whether it was
/// answered.
async fn dump_connections(server_dir: &std::path::Path) {
    let print = |side: &str, snapshot: &switchyard::debug::Snapshot| {
        for c in &snapshot.connections {
            eprintln!(
                "  {side} conn {} {} {} peer {} pid {:?}: started {} ok {} failed {}, sent {} B, \
                 received {} B; last events: {:?}",
                c.id,
                c.transport,
                c.state,
                c.peer.addr,
                c.peer.pid,
                c.calls_started,
                c.calls_succeeded,
                c.calls_failed,
                c.bytes_sent,
                c.bytes_received,
                c.events.iter().rev().take(4).collect::<Vec<_>>()
            );
        }
    };
    print("client", &switchyard::debug::snapshot());
    eprintln!(
        "  client bulk: {:?}",
        switchyard::transport::shm::bulk_transfers()
    );
    let channel = Channel::builder()
        .runtime_dir(server_dir)
        .prefer(Transport::Unix)
        .timeout(Duration::from_secs(5))
        .connect("testing")
        .await;
    match channel {
        Ok(channel) => match IntrospectionClient::new(channel).snapshot().await {
            Ok(snapshot) => print("server", &snapshot),
            Err(status) => eprintln!("  the server's snapshot failed: {status}"),
        },
        Err(status) => eprintln!("  no channel for the server's snapshot: {status}"),
    }
}

/// An idle-then-busy worker's rhythm: a pause after every `every` calls,
/// longer than the server's idle timeout.
#[derive(Clone, Copy, Debug)]
struct Idle {
    every: u64,
    pause: Duration,
}

/// The server's keepalive interval and timeout in the soak.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// The server's idle timeout in the soak.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends echo calls with ids `(worker, seq)` until `stop`; every answer
/// must be its own request's bytes. A lost call stops every worker and is
/// returned, with the time it took to fail.
async fn worker(
    client: TestingClient,
    worker: u64,
    bulk_every: u64,
    idle: Option<Idle>,
    stop: Arc<AtomicBool>,
    total: Arc<AtomicU64>,
) -> Result<Count, String> {
    let mut count = Count::default();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Some(idle) = &idle
            && seq > 0
            && seq.is_multiple_of(idle.every)
        {
            tokio::time::sleep(idle.pause).await;
            count.pauses += 1;
        }
        seq += 1;
        // An id, then filler whose length varies with it.
        let len = if bulk_every > 0 && seq.is_multiple_of(bulk_every) {
            300 << 10
        } else {
            16 + (seq % 200) as usize
        };
        let mut payload = Vec::with_capacity(len);
        payload.extend_from_slice(&worker.to_le_bytes());
        payload.extend_from_slice(&seq.to_le_bytes());
        payload.resize(len, (seq % 251) as u8);
        count.sent += 1;
        let began = Instant::now();
        match client.echo(payload.clone()).await {
            Ok(back) => {
                assert!(
                    back == payload,
                    "worker {worker} call {seq}: the response is not its request's bytes \
                     (misrouted or corrupted)"
                );
                count.answered += 1;
                count.bytes += len as u64;
                total.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => {
                stop.store(true, Ordering::Relaxed);
                return Err(format!(
                    "worker {worker} call {seq} ({len} B) lost after {:?}: {status}",
                    began.elapsed()
                ));
            }
        }
    }
    Ok(count)
}

/// A channel to the soak's server over `transport`, with keepalive on.
async fn soak_channel(dir: &std::path::Path, transport: Transport) -> Channel {
    let channel = Channel::builder()
        .runtime_dir(dir)
        .prefer(transport)
        .timeout(Duration::from_secs(30))
        .keepalive(KEEPALIVE, KEEPALIVE)
        .connect("testing")
        .await
        .unwrap_or_else(|s| panic!("{transport}: {s}"));
    assert_eq!(channel.selection().transport, transport);
    channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_over_every_local_transport_loses_nothing_and_grows_nothing() {
    let secs: u64 = std::env::var("SWITCHYARD_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let duration = Duration::from_secs(secs);
    // Every timer and budget on, and short, so that they fire all through
    // the run: keepalive pings every second of silence, an idle timeout of
    // 3 s (the idle-then-busy workers below meet it every cycle), the frame
    // deadline and the partial-frame budget (on by default).
    let server = ServerProcess::start(&[
        "--tcp",
        "--quic",
        "127.0.0.1:0",
        "--keepalive-ms",
        "1000",
        "--idle-ms",
        "3000",
    ]);
    within(duration + Duration::from_secs(120), async {
        let me = std::process::id();
        let stop = Arc::new(AtomicBool::new(false));
        let total = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        let mut id = 0u64;
        // (transport, workers, a bulk body every n calls)
        let plan = [
            (Transport::Shm, 4, 0),
            (Transport::Shm, 1, 50),
            (Transport::Unix, 2, 0),
            (Transport::Tcp, 2, 0),
            (Transport::Quic, 2, 0),
        ];
        for (transport, workers, bulk_every) in plan {
            let channel = soak_channel(server.dir(), transport).await;
            for _ in 0..workers {
                id += 1;
                let client = TestingClient::new(channel.clone());
                tasks.spawn(worker(
                    client,
                    id,
                    bulk_every,
                    None,
                    Arc::clone(&stop),
                    Arc::clone(&total),
                ));
            }
        }
        // The busy workers' connections: none of them may close.
        let busy: Vec<u64> = switchyard::debug::snapshot()
            .connections
            .into_iter()
            .filter(|c| c.role == "client" && c.closed_unix_ms.is_none())
            .map(|c| c.id)
            .collect();
        // Idle-then-busy workers: 20 calls, then a pause past the idle
        // timeout, so the server lets their connection go each cycle and
        // the next call opens a new one (a call crossing the GoAway is made
        // again): none may be lost.
        let idle = Idle {
            every: 20,
            pause: IDLE_TIMEOUT + Duration::from_secs(1),
        };
        for transport in [Transport::Shm, Transport::Unix, Transport::Tcp] {
            id += 1;
            let client = TestingClient::new(soak_channel(server.dir(), transport).await);
            tasks.spawn(worker(
                client,
                id,
                0,
                Some(idle),
                Arc::clone(&stop),
                Arc::clone(&total),
            ));
        }
        // Allocator pools and buffers reach their working size first.
        let warm_up = (duration / 2).max(Duration::from_secs(2));
        tokio::time::sleep(warm_up).await;
        let (rss_warm, server_fds, client_fds) =
            (rss_kib(server.pid()), fds(server.pid()), fds(me));
        let counted_at_warm = total.load(Ordering::Relaxed);
        let measured = Instant::now();
        tokio::time::sleep(duration.saturating_sub(warm_up)).await;
        let (rss_end, server_fds_end, client_fds_end) =
            (rss_kib(server.pid()), fds(server.pid()), fds(me));
        let held = (total.load(Ordering::Relaxed) - counted_at_warm) as f64
            / measured.elapsed().as_secs_f64();
        // Nothing in the run closes a connection: a reconnect would hide a
        // fault (a call caught in the close is retried on the new one).
        let snapshot = switchyard::debug::snapshot();
        let idled = snapshot
            .connections
            .iter()
            .filter(|c| c.role == "client" && c.closed_unix_ms.is_some())
            .count();
        let closed: Vec<String> = snapshot
            .connections
            .into_iter()
            .filter(|c| busy.contains(&c.id) && c.closed_unix_ms.is_some())
            .map(|c| format!("{} {}: {:?}", c.transport, c.peer.addr, c.events))
            .collect();
        stop.store(true, Ordering::Relaxed);
        let mut sum = Count::default();
        let mut lost = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let count = match done.expect("a worker panicked") {
                Ok(count) => count,
                Err(what) => {
                    lost.push(what);
                    continue;
                }
            };
            sum.sent += count.sent;
            sum.answered += count.answered;
            sum.bytes += count.bytes;
            sum.pauses += count.pauses;
        }
        if !lost.is_empty() {
            eprintln!("calls lost: {lost:#?}");
            dump_connections(server.dir()).await;
            panic!("{} calls lost: {lost:?}", lost.len());
        }
        assert!(
            closed.is_empty(),
            "connections closed during the soak: {closed:#?}"
        );
        let growth = (rss_end as f64 - rss_warm as f64) / rss_warm.max(1) as f64;
        eprintln!(
            "soak {secs} s over shm (+ bulk), unix, tcp, quic: {} calls sent, {} answered, \
             0 lost, 0 misrouted; {:.0} calls/s held after warm-up; {:.1} MiB echoed; server \
             RSS {rss_warm} -> {rss_end} KiB ({:+.1} %), fds {server_fds} -> {server_fds_end}; \
             client fds {client_fds} -> {client_fds_end}; {} busy connections closed; {} \
             pauses past the idle timeout by the idle-then-busy workers ({idled} of their \
             connections let go among the last closed ones the recorder keeps)",
            sum.sent,
            sum.answered,
            held,
            sum.bytes as f64 / f64::from(1 << 20),
            growth * 100.0,
            closed.len(),
            sum.pauses
        );
        assert_eq!(sum.sent, sum.answered, "calls lost");
        // A short run (CI's 20 s) measures over ~10 s, where the allocator
        // keeping a few 300 KiB bulk buffers in a thread's arena is already
        // 5 % of a 20 MiB server: up to 2 MiB is allowed there. The long
        // runs (a leak's test) keep the 5 % bound alone.
        let slack_kib = if secs < 60 { 2048 } else { 0 };
        assert!(
            growth < 0.05 || rss_end <= rss_warm + slack_kib,
            "server RSS grew {:.1} % after warm-up ({rss_warm} -> {rss_end} KiB)",
            growth * 100.0
        );
        assert!(server_fds_end <= server_fds + 2, "server fds grew");
        assert!(client_fds_end <= client_fds + 2, "client fds grew");
    })
    .await;
}
