//! SIGKILL mid-call, per transport, over many trials (reliability.md F2):
//!
//! - the server killed with calls in flight: every call ends with a typed
//!   error (Unavailable) long before its deadline, never hangs; a server
//!   restarted in the same runtime directory is reached again, and nothing
//!   is left behind (socket files, queue entries, fds of the client);
//! - the client killed with calls in flight: the server notices, cancels
//!   their handlers (each marks a file when dropped), keeps serving, and is
//!   back at its fd count.
//!
//! QUIC runs over UDP, which has no reset: a peer that dies is noticed when
//! the idle timeout (10 s by default, 3 s for the client here) passes
//! without a packet; the other transports see the socket or ring close at
//! once.
//!
//! Transports: shm, unix, tcp, quic (the client demands each by
//! `SWITCHYARD_TRANSPORT` or `prefer`). Pipes are covered the same way in
//! `pipes_parent_child.rs` (child killed mid-call, parent killed), queues in
//! `mqueue_oneway.rs` (durable across SIGKILL). `SWITCHYARD_KILL_TRIALS`
//! sets the trials per transport and side (default 5).

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchyard::{Channel, Code, Transport};
use switchyard_integration_tests::{ServerProcess, TestingClient, test_server_exe, within};

const TRANSPORTS: [Transport; 4] = [
    Transport::Shm,
    Transport::Unix,
    Transport::Tcp,
    Transport::Quic,
];
const SERVER_ARGS: [&str; 5] = ["--tcp", "--quic", "127.0.0.1:0", "--queues", "--grace-ms"];

/// The client's QUIC idle timeout here.
const QUIC_IDLE: Duration = Duration::from_secs(3);
/// The test server's (the default).
const SERVER_QUIC_IDLE: Duration = Duration::from_secs(10);

/// How soon a dead peer must be noticed: at once (with slack for a loaded
/// machine), or by QUIC's idle timeout.
fn noticed_within(transport: Transport) -> Duration {
    match transport {
        Transport::Quic => QUIC_IDLE + Duration::from_secs(3),
        _ => Duration::from_secs(3),
    }
}

fn trials() -> usize {
    std::env::var("SWITCHYARD_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn server_args() -> Vec<&'static str> {
    let mut args = SERVER_ARGS.to_vec();
    args.push("100");
    args
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Entries of /dev/mqueue whose names mention this runtime directory's
/// queues, and socket files under it.
fn leftovers(dir: &Path) -> (usize, usize) {
    let queue = switchyard::transport::mqueue::service_queue_name(dir, "Testing");
    let queues = std::fs::read_dir("/dev/mqueue").map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| format!("/{}", e.file_name().to_string_lossy()) == queue)
            .count()
    });
    let sockets = std::fs::read_dir(dir.join("sockets")).map_or(0, Iterator::count);
    (queues, sockets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_mid_call_fails_every_call_fast_and_leaves_nothing_behind() {
    let mut server = ServerProcess::start(&server_args());
    within(Duration::from_secs(600), async {
        let me = std::process::id();
        let fds_at_start = fds(me);
        let mut report = Vec::new();
        for transport in TRANSPORTS {
            let mut slowest = Duration::ZERO;
            for trial in 0..trials() {
                let mut quic = switchyard::transport::quic::QuicConfig::default();
                quic.idle_timeout = QUIC_IDLE;
                quic.keep_alive = Some(Duration::from_secs(1));
                let channel = Channel::builder()
                    .runtime_dir(server.dir())
                    .prefer(transport)
                    .quic_config(quic)
                    .timeout(Duration::from_secs(20))
                    .connect("testing")
                    .await
                    .unwrap_or_else(|s| panic!("{transport} trial {trial}: connect: {s}"));
                assert_eq!(channel.selection().transport, transport);
                let client = TestingClient::new(channel);
                assert_eq!(client.add(1, 1).await.unwrap(), 2);
                let calls: Vec<_> = (0..8)
                    .map(|_| {
                        let client = client.clone();
                        tokio::spawn(async move { client.sleep(15_000).await })
                    })
                    .collect();
                tokio::time::sleep(Duration::from_millis(50)).await;
                server.kill();
                let killed = Instant::now();
                for call in calls {
                    let status = call
                        .await
                        .expect("no panic")
                        .expect_err("the server was killed mid-call");
                    assert_eq!(
                        status.code(),
                        Code::Unavailable,
                        "{transport} trial {trial}: {status}"
                    );
                }
                // Typed, and far before the 15 s deadline.
                let took = killed.elapsed();
                assert!(took < noticed_within(transport), "{transport}: {took:?}");
                slowest = slowest.max(took);
                let restarted = server.restart(&server_args());
                drop(std::mem::replace(&mut server, restarted));
                // The same channel reaches the restarted server.
                let started = Instant::now();
                loop {
                    match client.add(2, 3).await {
                        Ok(5) => break,
                        Ok(other) => panic!("2 + 3 = {other}"),
                        Err(_) if started.elapsed() < Duration::from_secs(15) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(status) => panic!("{transport}: never reconnected: {status}"),
                    }
                }
            }
            let (queues, sockets) = leftovers(server.dir());
            assert!(queues <= 1, "{transport}: {queues} queues for one service");
            assert!(
                sockets <= 1,
                "{transport}: {sockets} socket files for one live server"
            );
            report.push(format!(
                "{transport}: {} kills, slowest end {slowest:?}",
                trials()
            ));
        }
        // The channels above are gone; their fds must be too.
        let settle = Instant::now();
        while fds(me) > fds_at_start + 8 && settle.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "server killed mid-call: {}; client fds {} -> {}",
            report.join("; "),
            fds_at_start,
            fds(me)
        );
        assert!(fds(me) <= fds_at_start + 8, "client fds grew");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_client_mid_call_cancels_its_handlers_and_the_server_goes_on() {
    // No queue here: every queue counts against the user's RLIMIT_MSGQUEUE,
    // which the tests running beside this one share.
    let server = ServerProcess::start(&["--tcp", "--quic", "127.0.0.1:0"]);
    within(Duration::from_secs(600), async {
        let polite = TestingClient::new(server.channel().await);
        assert_eq!(polite.add(1, 1).await.unwrap(), 2);
        let fds_before = fds(server.pid());
        let mut report = Vec::new();
        for transport in TRANSPORTS {
            // The trials of one transport run side by side: each is a
            // client process holding 6 calls, killed at once.
            let mut held = Vec::new();
            for trial in 0..trials() {
                let markers = tempfile::tempdir().unwrap();
                let mut child = Command::new(test_server_exe())
                    .args(["hold", "testing", "6"])
                    .arg(markers.path())
                    .env("SWITCHYARD_RUNTIME_DIR", server.dir())
                    .env("SWITCHYARD_TRANSPORT", transport.as_str())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("the client starts");
                let line = std::io::BufReader::new(child.stdout.take().unwrap())
                    .lines()
                    .next()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                assert_eq!(
                    line,
                    format!("holding {transport}"),
                    "{transport} trial {trial}"
                );
                held.push((child, markers));
            }
            for (child, _) in &mut held {
                child.kill().unwrap();
                child.wait().unwrap();
            }
            let killed = Instant::now();
            // Every handler of the dead clients is dropped: its marker
            // appears.
            let mut slowest = Duration::ZERO;
            for (trial, (_, markers)) in held.iter().enumerate() {
                loop {
                    let marked: HashSet<_> = std::fs::read_dir(markers.path())
                        .unwrap()
                        .filter_map(Result::ok)
                        .map(|e| e.file_name())
                        .collect();
                    if marked.len() == 6 {
                        break;
                    }
                    assert!(
                        killed.elapsed() < noticed_within(transport) + SERVER_QUIC_IDLE,
                        "{transport} trial {trial}: only {} of 6 handlers cancelled after the \
                         client died",
                        marked.len()
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                slowest = slowest.max(killed.elapsed());
            }
            assert_eq!(polite.add(2, 2).await.unwrap(), 4);
            report.push(format!(
                "{transport}: {} kills, handlers cancelled within {slowest:?}",
                trials()
            ));
        }
        let settle = Instant::now();
        while fds(server.pid()) > fds_before + 2 && settle.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "client killed mid-call: {}; server fds {} -> {}",
            report.join("; "),
            fds_before,
            fds(server.pid())
        );
        assert!(fds(server.pid()) <= fds_before + 2, "server fds grew");
    })
    .await;
}
