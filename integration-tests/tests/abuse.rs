//! Abusive clients beside a polite one (reliability.md F9): a client that
//! starts and cancels calls as fast as it can (Rapid Reset), and garbage
//! handshakes over 10,000 connections plus silent ones. The server's memory
//! stays bounded, the abuser is disconnected, the accept loop lives, and the
//! polite client's calls all succeed (its latency is printed, not asserted:
//! speed is for benchmarks).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use switchyard::{Channel, Transport};
use switchyard_integration_tests::measure::{open_fds, percentile, polite_adds as polite, rss_kib};
use switchyard_integration_tests::{ServerProcess, TestingClient, within};

/// The server's resident memory in KiB and its open fds.
fn usage(pid: u32) -> (u64, usize) {
    (rss_kib(pid), open_fds(pid))
}

fn report(what: &str, latencies: Vec<Duration>) {
    eprintln!(
        "{what}: {} calls, p50 {:?}, p99 {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
}

async fn channel(server: &ServerProcess) -> Channel {
    Channel::builder()
        .runtime_dir(server.dir())
        .prefer(Transport::Tcp)
        .timeout(Duration::from_secs(10))
        .connect("testing")
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_flood_is_disconnected_and_a_polite_client_keeps_working() {
    let server = ServerProcess::start(&["--tcp"]);
    within(Duration::from_secs(120), async {
        let polite_client = TestingClient::new(channel(&server).await);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let baseline = {
            let (stop_now, stopped_now) = tokio::sync::watch::channel(false);
            let run = tokio::spawn(polite(polite_client.clone(), stopped_now));
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop_now.send(true).unwrap();
            run.await.unwrap()
        };
        report("polite client alone", baseline);
        let (rss_before, _) = usage(server.pid());
        let beside = tokio::spawn(polite(polite_client.clone(), stopped));

        let abuser = TestingClient::new(channel(&server).await);
        let flood_started = Instant::now();
        let mut started_calls = 0u64;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let abuser = abuser.clone();
            tasks.spawn(async move {
                let mut n = 0u64;
                while flood_started.elapsed() < Duration::from_secs(3) {
                    // Sent, then dropped at once: a Cancel follows it.
                    tokio::select! {
                        biased;
                        _ = abuser.sleep(1_000) => {}
                        _ = tokio::task::yield_now() => {}
                    }
                    n += 1;
                }
                n
            });
        }
        while let Some(n) = tasks.join_next().await {
            started_calls += n.unwrap();
        }
        stop.send(true).unwrap();
        let latencies = beside.await.unwrap();
        report("polite client beside a cancel flood", latencies);
        let (rss_after, _) = usage(server.pid());
        eprintln!(
            "the abuser started and cancelled {started_calls} calls in 3 s; server RSS {} KiB \
             -> {} KiB",
            rss_before, rss_after
        );
        // The abuser's connection was closed for it, saying why.
        let snapshot = switchyard::debug::snapshot();
        let told: Vec<_> = snapshot
            .connections
            .iter()
            .flat_map(|c| c.events.iter())
            .filter(|e| e.detail.contains("cancel flood"))
            .collect();
        assert!(
            !told.is_empty(),
            "no connection was closed as a cancel flood after {started_calls} cancels"
        );
        eprintln!("abuser told: {}", told[0].detail);
        assert!(
            rss_after < rss_before + 64 * 1024,
            "server memory grew from {rss_before} KiB to {rss_after} KiB"
        );
        // Calls after the flood work, on a fresh connection if need be.
        assert_eq!(abuser.add(1, 2).await.unwrap(), 3);
        assert_eq!(polite_client.add(2, 2).await.unwrap(), 4);
    })
    .await;
}

/// Opens a connection to `tcp`, sends `garbage`, and waits up to 10 s for
/// the server to close it; whether it did.
fn garbage_connection(addr: &str, garbage: &[u8]) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.write_all(garbage);
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            // A reset is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_handshakes_over_ten_thousand_connections_leave_the_server_serving() {
    let server = ServerProcess::start(&["--tcp"]);
    let addr = server.endpoint("tcp")["tcp://".len()..].to_owned();
    let unix = server.endpoint("unix")["unix://".len()..].to_owned();
    within(Duration::from_secs(300), async {
        let polite_client = TestingClient::new(channel(&server).await);
        polite_client.add(0, 0).await.unwrap();
        let (rss_before, fds_before) = usage(server.pid());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let beside = tokio::spawn(polite(polite_client.clone(), stopped));

        // Silent connections: the handshake timeout (5 s) closes them.
        let silent: Vec<std::net::TcpStream> = (0..50)
            .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
            .collect();

        let started = Instant::now();
        let closed = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || {
                let workers: Vec<_> = (0..16)
                    .map(|w| {
                        let addr = addr.clone();
                        std::thread::spawn(move || {
                            let mut closed = 0u32;
                            for i in 0..625u32 {
                                // Random-looking bytes, a wrong magic, a
                                // truncated header: each its own flavour.
                                let garbage: Vec<u8> = match i % 3 {
                                    0 => (0..64u32)
                                        .map(|b| (b.wrapping_mul(2_654_435_761) ^ i ^ w) as u8)
                                        .collect(),
                                    1 => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                                    _ => vec![0xff; 7],
                                };
                                if garbage_connection(&addr, &garbage) {
                                    closed += 1;
                                }
                            }
                            closed
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("worker"))
                    .sum::<u32>()
            }
        })
        .await
        .unwrap();
        eprintln!(
            "10000 garbage handshakes over TCP: {closed} closed by the server in {:?}",
            started.elapsed()
        );
        assert_eq!(closed, 10_000, "some garbage connections were left open");

        // The same over the Unix socket, where shared memory is offered.
        let mut unix_closed = 0;
        for i in 0..500u32 {
            let mut stream = std::os::unix::net::UnixStream::connect(&unix).expect("unix connect");
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = stream.write_all(&[0x5a ^ (i as u8); 48]);
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        unix_closed += 1;
                        break;
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        }
        assert_eq!(unix_closed, 500, "garbage left Unix connections open");

        // The silent ones were closed by the handshake timeout.
        for mut s in silent {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 64];
            let n = loop {
                match s.read(&mut buf) {
                    Ok(0) => break 0,
                    Ok(_) => continue,
                    Err(e) => panic!("a silent connection was not closed: {e}"),
                }
            };
            assert_eq!(n, 0);
        }

        stop.send(true).unwrap();
        report(
            "polite client beside 10,500 garbage connections",
            beside.await.unwrap(),
        );
        // The accept loop lives: a new client connects and calls.
        let fresh = TestingClient::new(channel(&server).await);
        assert_eq!(fresh.add(20, 22).await.unwrap(), 42);
        drop(fresh);
        // Memory bounded, fds back near where they were.
        let settle = Instant::now();
        let (rss_after, fds_after) = loop {
            let (rss, fds) = usage(server.pid());
            if fds <= fds_before + 4 || settle.elapsed() > Duration::from_secs(10) {
                break (rss, fds);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        eprintln!(
            "server RSS {rss_before} KiB -> {rss_after} KiB, fds {fds_before} -> {fds_after}"
        );
        assert!(
            fds_after <= fds_before + 4,
            "fds grew: {fds_before} -> {fds_after}"
        );
        assert!(
            rss_after < rss_before + 64 * 1024,
            "server memory grew from {rss_before} KiB to {rss_after} KiB"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_calls_time_out_fast_is_not_taken_for_a_flood() {
    // Its own server, so that its connections are told apart by address.
    let server = ServerProcess::start(&["--tcp"]);
    within(Duration::from_secs(120), async {
        let channel = channel(&server).await;
        let peer = channel.peer().addr;
        let hasty = TestingClient::new(channel).with_timeout(Duration::from_millis(2));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let hasty = hasty.clone();
            tasks.spawn(async move {
                let mut timed_out = 0u64;
                while started.elapsed() < Duration::from_secs(3) {
                    // Every call outlives its deadline: the client cancels
                    // each at the deadline, as the server's own timer does.
                    let status = hasty.sleep(50).await.unwrap_err();
                    assert_eq!(
                        status.code(),
                        switchyard::Code::DeadlineExceeded,
                        "{status}"
                    );
                    timed_out += 1;
                }
                timed_out
            });
        }
        let mut timed_out = 0;
        while let Some(n) = tasks.join_next().await {
            timed_out += n.unwrap();
        }
        let snapshot = switchyard::debug::snapshot();
        let flagged = snapshot
            .connections
            .iter()
            .filter(|c| c.peer.addr == peer)
            .flat_map(|c| c.events.iter())
            .any(|e| e.detail.contains("cancel flood"));
        eprintln!(
            "{timed_out} calls timed out in 3 s ({:.0}/s)",
            timed_out as f64 / 3.0
        );
        assert!(
            timed_out > 6_000,
            "too few timeouts to mean anything: {timed_out}"
        );
        assert!(
            !flagged,
            "a client with short deadlines was closed as a cancel flood"
        );
    })
    .await;
}
