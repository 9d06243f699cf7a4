//! Several server processes publishing one name in one runtime directory
//! are replicas of it: a channel to the name connects to each over shared
//! memory, spreads calls over them, and moves off a replica that shuts down
//! gracefully without failing a call. When one is killed, idempotent calls
//! (`pid`) fail none (they are retried on another replica); other calls
//! (`add`) fail only where they were in flight on it, with UNAVAILABLE.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchyard::{Balance, Channel, Code, Status};
use switchyard_integration_tests::{ServerProcess, TestingClient, within};

/// What one caller task saw: successes per pid, and the failures.
type Seen = (HashMap<u32, u64>, Vec<Status>);

/// Calls `pid()` (idempotent) or `add` (not) from `tasks` tasks until
/// `stop`; returns the calls that succeeded per pid (0 for `add`) and the
/// failures.
fn callers(
    client: &TestingClient,
    tasks: usize,
    idempotent: bool,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    (0..tasks)
        .map(|_| {
            let (client, stop) = (client.clone(), Arc::clone(stop));
            tokio::spawn(async move {
                let (mut ok, mut failed) = (HashMap::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let result = if idempotent {
                        client.pid().await
                    } else {
                        client.add(1, 2).await.map(|_| 0)
                    };
                    match result {
                        Ok(pid) => *ok.entry(pid).or_insert(0) += 1,
                        Err(status) => failed.push(status),
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Seen>>) -> Seen {
    let (mut ok, mut failed) = (HashMap::new(), Vec::new());
    for task in tasks {
        let (o, f) = task.await.expect("caller task");
        for (pid, n) in o {
            *ok.entry(pid).or_insert(0) += n;
        }
        failed.extend(f);
    }
    (ok, failed)
}

/// Waits up to 10 s until the channel lists exactly `n` replicas.
async fn until_replicas(channel: &Channel, n: usize) -> Duration {
    let start = Instant::now();
    loop {
        let replicas = channel.replicas();
        if replicas.len() == n && replicas.iter().all(|r| r.state == "ready") {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the channel never listed {n} ready replicas: {replicas:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replicas_share_calls_and_outlive_a_drain_and_a_kill() {
    within(Duration::from_secs(60), async {
        let first = ServerProcess::start(&[]);
        let mut second = ServerProcess::start_replica(first.dir(), &[]);
        let mut third = ServerProcess::start_replica(first.dir(), &[]);
        let mut fourth = ServerProcess::start_replica(first.dir(), &[]);
        let channel = Channel::builder()
            .runtime_dir(first.dir())
            .balance(Balance::RoundRobin)
            .resolve_interval(Duration::from_millis(100))
            .timeout(Duration::from_secs(10))
            .connect("testing")
            .await
            .expect("connects by name");
        let replicas = channel.replicas();
        assert_eq!(replicas.len(), 4, "{replicas:#?}");
        let same_host = if switchyard::Transport::Shm.is_available() {
            "shm"
        } else {
            "unix"
        };
        for replica in &replicas {
            assert_eq!(
                replica.transport.as_deref(),
                Some(same_host),
                "{replica:#?}"
            );
            assert!(replica.key.starts_with("pid "), "{replica:#?}");
        }
        let client = TestingClient::new(channel.clone());
        let mut counts: HashMap<u32, u64> = HashMap::new();
        for _ in 0..400 {
            *counts.entry(client.pid().await.expect("call")).or_insert(0) += 1;
        }
        println!("400 calls over 4 local replicas ({same_host}): {counts:?}");
        for pid in [first.pid(), second.pid(), third.pid(), fourth.pid()] {
            assert_eq!(counts.get(&pid), Some(&100), "{counts:?}");
        }

        // A graceful shutdown: no call fails, and none reaches it after.
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = callers(&client, 4, false, &stop);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let drained = second.pid();
        assert!(
            second.terminate(Duration::from_secs(10)).is_some(),
            "the replica did not exit"
        );
        let took = until_replicas(&channel, 3).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        let (ok, failed) = collect(tasks).await;
        println!(
            "during a graceful shutdown of one of 4 replicas, calls not idempotent: {} calls, {} \
             failed; the channel dropped it {took:?} after it exited",
            ok.values().sum::<u64>(),
            failed.len()
        );
        assert!(
            failed.is_empty(),
            "calls failed during a drain: {failed:#?}"
        );
        let after: u64 = {
            let mut n = 0;
            for _ in 0..100 {
                if client.pid().await.expect("call") == drained {
                    n += 1;
                }
            }
            n
        };
        assert_eq!(after, 0, "calls reached a replica that shut down");

        // A kill under idempotent calls: none fails, they are retried.
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = callers(&client, 4, true, &stop);
        tokio::time::sleep(Duration::from_millis(200)).await;
        third.kill();
        let took = until_replicas(&channel, 2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        let (ok, failed) = collect(tasks).await;
        let retries = channel.info().retries;
        println!(
            "around a SIGKILL of one of 3 replicas, idempotent calls: {} calls, {} failed, {} \
             retried; the channel dropped it {took:?} after",
            ok.values().sum::<u64>(),
            failed.len(),
            retries
        );
        assert!(failed.is_empty(), "idempotent calls failed: {failed:#?}");

        // A kill under calls that are not idempotent: only those in flight
        // on it fail, with UNAVAILABLE.
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = callers(&client, 4, false, &stop);
        tokio::time::sleep(Duration::from_millis(200)).await;
        fourth.kill();
        let took = until_replicas(&channel, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        let (ok, failed) = collect(tasks).await;
        println!(
            "around a SIGKILL of one of 2 replicas, calls not idempotent: {} calls, {} failed \
             ({:?}); the channel dropped it {took:?} after",
            ok.values().sum::<u64>(),
            failed.len(),
            failed.iter().map(Status::code).collect::<Vec<_>>()
        );
        assert!(
            failed.len() <= 4,
            "more calls failed than were in flight: {failed:#?}"
        );
        assert!(
            failed.iter().all(|s| s.code() == Code::Unavailable),
            "{failed:#?}"
        );
        let info = channel.info();
        assert!(
            info.changes
                .iter()
                .any(|c| c.contains(&format!("removed pid {}", fourth.pid()))),
            "{info:#?}"
        );
        assert_eq!(channel.replicas()[0].key, format!("pid {}", first.pid()));
    })
    .await;
}
