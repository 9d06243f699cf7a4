//! Three replicas of one service on three hosts (network namespaces), a
//! client on a fourth making calls at a steady rate through a discovery
//! file that lists them: calls spread over all three; a SIGKILLed replica
//! fails no idempotent call (retried on another, the dead one dropped);
//! calls not idempotent fail only where they were in flight on it
//! (UNAVAILABLE); a rolling restart of all three with graceful drain fails
//! no call at all.
//!
//! Needs root and iproute2; elsewhere each test prints why it skips.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchyard::{Backoff, Balance, Channel, Code, Status};
use switchyard_integration_tests::netns::{Host, Lan};
use switchyard_integration_tests::{ServerProcess, TestingClient, test_server_exe};

/// The port every replica listens on, in its own namespace.
const PORT: u16 = 7000;

/// The test server on `host`, on TCP port [`PORT`] of every address.
fn replica(host: &Host) -> ServerProcess {
    let dir = tempfile::Builder::new()
        .prefix("sy-netns-")
        .tempdir()
        .expect("a temp dir");
    ServerProcess::start_command(
        host.command(&test_server_exe()),
        dir,
        &[
            "--tcp-at",
            &format!("0.0.0.0:{PORT}"),
            "--no-unix",
            "--grace-ms",
            "5000",
        ],
    )
}

/// A replica on each of `hosts`, and a directory holding
/// `discovery.toml`, which lists them as the replicas of "testing".
fn replicas_listed(hosts: &[Host]) -> (Vec<ServerProcess>, tempfile::TempDir) {
    let servers = hosts.iter().map(replica).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut toml = String::new();
    for host in hosts {
        toml.push_str(&format!(
            "[[services.testing.replicas]]\naddresses = [\"tcp://{}:{PORT}\"]\n",
            host.ip
        ));
    }
    std::fs::write(dir.path().join("discovery.toml"), toml).unwrap();
    (servers, dir)
}

/// What the calls of one phase saw: successes per replica ip (by pid) and
/// the failures.
#[derive(Debug, Default)]
struct Phase {
    ok: HashMap<u32, u64>,
    failed: Vec<Status>,
}

/// Calls from 4 tasks until `stop`: `pid()` (idempotent) or `add` (not).
fn callers(
    client: &TestingClient,
    idempotent: bool,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Phase>> {
    (0..4)
        .map(|_| {
            let (client, stop) = (client.clone(), Arc::clone(stop));
            tokio::spawn(async move {
                let mut phase = Phase::default();
                while !stop.load(Ordering::Relaxed) {
                    let result = if idempotent {
                        client.pid().await
                    } else {
                        client.add(1, 2).await.map(|_| 0)
                    };
                    match result {
                        Ok(pid) => *phase.ok.entry(pid).or_insert(0) += 1,
                        Err(status) => phase.failed.push(status),
                    }
                    // A steady rate, not a flood.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                phase
            })
        })
        .collect()
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Phase>>) -> Phase {
    let mut all = Phase::default();
    for task in tasks {
        let phase = task.await.expect("caller task");
        for (pid, n) in phase.ok {
            *all.ok.entry(pid).or_insert(0) += n;
        }
        all.failed.extend(phase.failed);
    }
    all
}

/// Waits up to 15 s until `ready` replicas are ready; returns how long.
async fn until_ready(channel: &Channel, ready: usize) -> Duration {
    let start = Instant::now();
    loop {
        let replicas = channel.replicas();
        if replicas.iter().filter(|r| r.state == "ready").count() == ready {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never {ready} ready replicas: {replicas:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn channel_builder(file: &std::path::Path) -> switchyard::ChannelBuilder {
    Channel::builder()
        .discovery_file(file)
        .balance(Balance::RoundRobin)
        .resolve_interval(Duration::from_millis(200))
        .reconnect_backoff(Backoff {
            initial: Duration::from_millis(100),
            multiplier: 1.6,
            max: Duration::from_secs(1),
            jitter: 0.2,
        })
        .timeout(Duration::from_secs(5))
}

#[test]
fn replicas_on_three_hosts_share_calls_and_a_killed_one_fails_no_idempotent_call() {
    let Some(lan) = Lan::or_skip(
        4,
        "replicas_on_three_hosts_share_calls_and_a_killed_one_fails_no_idempotent_call",
    ) else {
        return;
    };
    let client_host = &lan.hosts[0];
    let (mut servers, dir) = replicas_listed(&lan.hosts[1..]);
    let file = dir.path().join("discovery.toml");
    let pids: Vec<u32> = servers.iter().map(ServerProcess::pid).collect();
    client_host.run(Duration::from_secs(90), async {
        let channel = channel_builder(&file)
            .connect("testing")
            .await
            .expect("connects to the replicas");
        let replicas = channel.replicas();
        assert_eq!(replicas.len(), 3, "{replicas:#?}");
        for replica in &replicas {
            assert_eq!(replica.transport.as_deref(), Some("tcp"), "{replica:#?}");
        }
        let client = TestingClient::new(channel.clone());

        // Idempotent calls at a steady rate; one replica is SIGKILLed.
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = callers(&client, true, &stop);
        tokio::time::sleep(Duration::from_millis(500)).await;
        servers[0].kill();
        let dropped = until_ready(&channel, 2).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let phase = collect(tasks).await;
        let info = channel.info();
        println!(
            "3 replicas on 3 hosts, idempotent calls, one SIGKILLed: {} calls ({:?} by pid), {} \
             failed, {} retries; the channel left it out after {dropped:?}",
            phase.ok.values().sum::<u64>(),
            phase.ok,
            phase.failed.len(),
            info.retries
        );
        assert!(phase.failed.is_empty(), "{:#?}", phase.failed);
        for pid in &pids {
            assert!(
                phase.ok.get(pid).copied().unwrap_or(0) > 0,
                "{pid}: {:?}",
                phase.ok
            );
        }

        // Calls not idempotent; another replica is SIGKILLed.
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = callers(&client, false, &stop);
        tokio::time::sleep(Duration::from_millis(500)).await;
        servers[1].kill();
        let dropped = until_ready(&channel, 1).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let phase = collect(tasks).await;
        println!(
            "the same, calls not idempotent, one of the two left SIGKILLed: {} calls, {} failed \
             ({:?}); left out after {dropped:?}",
            phase.ok.values().sum::<u64>(),
            phase.failed.len(),
            phase.failed.iter().map(Status::code).collect::<Vec<_>>()
        );
        assert!(
            phase.failed.len() <= 4,
            "more failed than were in flight: {:#?}",
            phase.failed
        );
        assert!(
            phase.failed.iter().all(|s| s.code() == Code::Unavailable),
            "{:#?}",
            phase.failed
        );
    });
}

#[test]
fn a_rolling_restart_of_three_replicas_with_graceful_drain_fails_no_call() {
    let Some(lan) = Lan::or_skip(
        4,
        "a_rolling_restart_of_three_replicas_with_graceful_drain_fails_no_call",
    ) else {
        return;
    };
    let client_host = &lan.hosts[0];
    let (mut servers, dir) = replicas_listed(&lan.hosts[1..]);
    let file = dir.path().join("discovery.toml");
    client_host.run(Duration::from_secs(120), async {
        let channel = channel_builder(&file)
            .connect("testing")
            .await
            .expect("connects to the replicas");
        let client = TestingClient::new(channel.clone());
        // Calls that are not idempotent: a drain must fail none anyway.
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = callers(&client, false, &stop);
        let mut back_after = Vec::new();
        for (i, host) in lan.hosts[1..].iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // SIGTERM, then wait for the exit without blocking the calls.
            servers[i].signal_terminate();
            let asked = Instant::now();
            while servers[i].try_wait().is_none() {
                assert!(
                    asked.elapsed() < Duration::from_secs(10),
                    "replica {i} did not exit after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            servers[i] = replica(host);
            back_after.push(until_ready(&channel, 3).await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let phase = collect(tasks).await;
        println!(
            "a rolling restart of 3 replicas on 3 hosts (SIGTERM, graceful drain, start again): \
             {} calls, {} failed; each back in the channel after {back_after:?}",
            phase.ok.values().sum::<u64>(),
            phase.failed.len()
        );
        assert!(phase.failed.is_empty(), "calls failed: {:#?}", phase.failed);
    });
}
