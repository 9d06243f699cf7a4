//! Hostile remote peers against a server in its own process, each bound
//! asserted (docs/reliability.md, "Hostile peers"): metadata floods and
//! connections reset before they are accepted. Beside each attack a polite
//! client must see every call succeed; its latency is printed, not asserted
//! (speed is for benchmarks).

use std::time::{Duration, Instant};

use switchyard::{Channel, Code, Metadata, Transport};
use switchyard_integration_tests::measure::{cpu_time, percentile, polite_adds, rss_kib};
use switchyard_integration_tests::{ServerProcess, TestingClient, within};

/// A TCP channel to the server (no move to shared memory).
async fn tcp_channel(server: &ServerProcess) -> Channel {
    Channel::builder()
        .runtime_dir(server.dir())
        .prefer(Transport::Tcp)
        .timeout(Duration::from_secs(20))
        .connect("testing")
        .await
        .expect("connect over tcp")
}

/// 16 MiB of one-byte metadata keys (2.4 million entries) in one call,
/// just under the frame limit: refused with RESOURCE_EXHAUSTED naming the
/// knob, for at most 20 ms of server CPU a call and 17 MiB of server
/// memory, while a polite client's calls go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_flood_is_refused_cheaply() {
    let server = ServerProcess::start(&["--tcp"]);
    within(Duration::from_secs(180), async {
        // 7 bytes of wire form each: 2-byte key length, the key, a 4-byte
        // empty value length.
        let entries = (16 << 20) / 7 - 16 * 1024;
        let mut flood = Metadata::new();
        for i in 0..entries {
            let key = [b'!' + (i % 90) as u8];
            flood
                .insert(String::from_utf8_lossy(&key).into_owned(), Vec::new())
                .unwrap();
        }
        let polite_client = TestingClient::new(tcp_channel(&server).await);
        assert_eq!(polite_client.add(1, 1).await.unwrap(), 2);
        let abuser = TestingClient::new(tcp_channel(&server).await).with_all_metadata(&flood);
        // One refused call first, so buffers that are reused are counted
        // in the baseline only once they exist.
        let err = abuser.add(1, 2).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(
            err.message().contains("ServerBuilder::max_metadata")
                && err.message().contains("exceed the limit of 16384 bytes"),
            "{err}"
        );
        // The flood alone: what refusing it costs the server.
        const CALLS: u32 = 10;
        let rss_before = rss_kib(server.pid());
        let cpu_before = cpu_time(server.pid());
        let mut peak = rss_before;
        for _ in 0..CALLS {
            let err = abuser.add(1, 2).await.unwrap_err();
            assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
            peak = peak.max(rss_kib(server.pid()));
        }
        let per_call = cpu_time(server.pid()).saturating_sub(cpu_before) / CALLS;
        let grown = peak.saturating_sub(rss_before);
        // Then beside a polite client, whose calls must all succeed.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let beside = tokio::spawn(polite_adds(polite_client.clone(), stopped));
        for _ in 0..CALLS {
            let err = abuser.add(1, 2).await.unwrap_err();
            assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        }
        stop.send(true).unwrap();
        let latencies = beside.await.unwrap();
        eprintln!(
            "metadata flood: {entries} entries ({} MiB) a call; server CPU {per_call:?} a \
             refused call, RSS {rss_before} KiB -> peak {peak} KiB (+{grown} KiB); polite \
             client beside it: {} calls, 0 failed, p50 {:?}, p99 {:?}",
            (entries * 7) >> 20,
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
        assert!(
            per_call <= Duration::from_millis(20),
            "refusing the flood cost {per_call:?} of server CPU a call"
        );
        assert!(
            grown <= 17 * 1024,
            "the server grew by {grown} KiB while refusing the flood"
        );
        assert!(!latencies.is_empty());
        // Metadata within the limit still works.
        let fine = polite_client.with_metadata("x-small", "value");
        assert_eq!(fine.add(2, 2).await.unwrap(), 4);
    })
    .await;
}

/// Opens a TCP connection and resets it at once (SO_LINGER 0), usually
/// before the server has accepted it.
fn connect_and_reset(addr: std::net::SocketAddr) {
    if let Ok(stream) = std::net::TcpStream::connect(addr) {
        let _ = rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
        drop(stream);
    }
}

/// 1000 connections reset before accept cost the accept loop nothing: new
/// clients connect and call as fast as before (p50 <= 100 ms; before the
/// fix each reset cost 10 ms of accept-loop sleep, seconds in all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_before_accept_do_not_slow_new_clients() {
    let server = ServerProcess::start(&["--tcp"]);
    within(Duration::from_secs(120), async {
        let tcp = server.endpoint("tcp");
        let addr: std::net::SocketAddr = tcp.trim_start_matches("tcp://").parse().unwrap();
        // Stop the server from accepting for a moment, so the resets queue
        // in its backlog: SIGSTOP, 1000 resets, SIGCONT.
        let pid = rustix::process::Pid::from_raw(server.pid() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
        let resets = tokio::task::spawn_blocking(move || {
            for _ in 0..1000 {
                connect_and_reset(addr);
            }
        });
        resets.await.unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
        let mut connects = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let channel = Channel::builder()
                .prefer(Transport::Tcp)
                .timeout(Duration::from_secs(30))
                .connect(&tcp)
                .await
                .expect("a new client connects");
            let client = TestingClient::new(channel);
            assert_eq!(client.add(20, 22).await.unwrap(), 42);
            connects.push(started.elapsed());
        }
        let p50 = percentile(&connects, 0.5);
        let max = percentile(&connects, 1.0);
        eprintln!("after 1000 resets before accept: connect + first call p50 {p50:?}, max {max:?}");
        assert!(
            p50 <= Duration::from_millis(100) && max <= Duration::from_secs(1),
            "new clients waited p50 {p50:?}, max {max:?} behind the resets"
        );
    })
    .await;
}
