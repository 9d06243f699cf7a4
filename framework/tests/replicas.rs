//! A channel over several replicas of one name, listed by a discovery
//! file: every policy spreads calls as it says, edits to the file add and
//! drop replicas of a running channel, a replica that drains takes no new
//! calls and fails none, and one that is down at first joins when it comes
//! up. The replicas are servers in this process, each on its own Unix
//! socket; `channel.replicas()` is what the debug views show.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use switchyard::{Balance, Channel, Server, ServerHandle};

/// The name every test's replicas serve (each test has its own file).
const NAME: &str = "inventory";

/// A replica that says which it is.
#[switchyard::service]
pub trait Replica {
    /// This replica's number.
    async fn who(&self) -> u32;
    /// This replica's number, after `millis`.
    async fn who_after(&self, millis: u64) -> u32;
    /// This replica's number, or UNAVAILABLE from a failing replica;
    /// retried.
    #[switchyard(idempotent)]
    async fn who_retried(&self) -> Result<u32, switchyard::Status>;
    /// The same, not declared idempotent: never retried.
    async fn who_once(&self) -> Result<u32, switchyard::Status>;
    /// This replica's number, after its delay; hedged where the channel
    /// hedges.
    #[switchyard(idempotent)]
    async fn who_hedged(&self) -> u32;
    /// The same with a body, not declared idempotent (hedged by name).
    async fn who_with(&self, body: Vec<u8>) -> u32;
}

struct Impl {
    id: u32,
    /// Whether the `who_*` calls that may fail do.
    failing: bool,
    /// How long every `who` takes.
    delay: Duration,
    calls: Arc<AtomicU64>,
}

impl Replica for Impl {
    async fn who(&self) -> u32 {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.id
    }

    async fn who_after(&self, millis: u64) -> u32 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.id
    }

    async fn who_hedged(&self) -> u32 {
        self.who().await
    }

    async fn who_with(&self, body: Vec<u8>) -> u32 {
        drop(body);
        self.who().await
    }

    async fn who_retried(&self) -> Result<u32, switchyard::Status> {
        self.who_once().await
    }

    async fn who_once(&self) -> Result<u32, switchyard::Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.failing {
            return Err(switchyard::Status::unavailable(format!(
                "replica {} is failing",
                self.id
            )));
        }
        Ok(self.id)
    }
}

struct Running {
    handle: ServerHandle,
    path: PathBuf,
    calls: Arc<AtomicU64>,
}

async fn replica(dir: &Path, id: u32, delay: Duration) -> Running {
    replica_failing(dir, id, delay, false).await
}

async fn replica_failing(dir: &Path, id: u32, delay: Duration, failing: bool) -> Running {
    let path = dir.join(format!("replica-{id}.sock"));
    let calls = Arc::new(AtomicU64::new(0));
    let handle = Server::builder()
        .add_service(ReplicaServer::new(Impl {
            id,
            failing,
            delay,
            calls: Arc::clone(&calls),
        }))
        .unpublished()
        .unix_path(&path)
        .grace_period(Duration::from_secs(10))
        .start()
        .await
        .expect("replica starts");
    Running {
        handle,
        path,
        calls,
    }
}

/// Replicas 1, 2 and 3, listed in `file`.
async fn three_listed(dir: &Path, file: &Path) -> Vec<Running> {
    let r: Vec<Running> =
        futures_util::future::join_all((1..=3).map(|id| replica(dir, id, Duration::ZERO))).await;
    list(file, &[&r[0].path, &r[1].path, &r[2].path]);
    r
}

/// Shuts every replica of `r` down.
async fn shut_down(r: Vec<Running>) {
    for running in r {
        running.handle.shutdown().await;
    }
}

/// Writes the discovery file listing `paths` as replicas of "inventory",
/// with a modification time after any before it.
fn list(file: &Path, paths: &[&Path]) {
    let mut text = String::new();
    for path in paths {
        text.push_str(&format!(
            "[[services.{NAME}.replicas]]\naddresses = [\"unix://{}\"]\n",
            path.display()
        ));
    }
    std::fs::write(file, text).unwrap();
    static BUMP: AtomicU64 = AtomicU64::new(1);
    let later = SystemTime::now() + Duration::from_secs(BUMP.fetch_add(1, Ordering::Relaxed));
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(later)
        .unwrap();
}

async fn channel(dir: &Path, file: &Path, balance: Balance) -> ReplicaClient {
    channel_with(dir, file, balance, |b| b).await
}

async fn channel_with(
    dir: &Path,
    file: &Path,
    balance: Balance,
    settings: impl FnOnce(switchyard::ChannelBuilder) -> switchyard::ChannelBuilder,
) -> ReplicaClient {
    let builder = Channel::builder()
        .runtime_dir(dir)
        .discovery_file(file)
        .balance(balance)
        .resolve_interval(Duration::from_millis(50))
        .reconnect_backoff(switchyard::Backoff {
            initial: Duration::from_millis(50),
            multiplier: 1.0,
            max: Duration::from_millis(50),
            jitter: 0.0,
        })
        .timeout(Duration::from_secs(10));
    let channel = settings(builder).connect(NAME).await.expect("connects");
    ReplicaClient::new(channel)
}

/// Which replica answered each of `n` calls, counted.
async fn spread(client: &ReplicaClient, n: usize) -> HashMap<u32, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts.entry(client.who().await.expect("call")).or_default() += 1;
    }
    counts
}

/// Waits up to 10 s until the channel shows `ready` replicas ready; returns
/// how long that took.
async fn until_ready(client: &ReplicaClient, ready: usize) -> Duration {
    let start = Instant::now();
    loop {
        let replicas = client.channel().replicas();
        if replicas.iter().filter(|r| r.state == "ready").count() == ready
            && replicas.len() == ready
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the channel never showed {ready} ready replicas: {replicas:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn round_robin_spreads_calls_over_every_replica_the_file_lists() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let r = three_listed(dir.path(), &file).await;
    let client = channel(dir.path(), &file, Balance::RoundRobin).await;
    let info = client.channel().info();
    assert_eq!(info.balance, "round_robin");
    assert!(
        info.source
            .as_deref()
            .is_some_and(|s| s.contains("discovery.toml")),
        "{info:#?}"
    );
    assert_eq!(info.replicas.len(), 3, "{info:#?}");
    for replica in &info.replicas {
        assert_eq!(replica.state, "ready", "{replica:#?}");
        assert_eq!(replica.transport.as_deref(), Some("unix"), "{replica:#?}");
        assert!(
            replica
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("discovery.toml")),
            "{replica:#?}"
        );
        assert!(replica.connection.is_some());
    }
    let counts = spread(&client, 300).await;
    println!("round robin over 3 replicas, 300 calls: {counts:?}");
    for id in 1..=3 {
        assert_eq!(counts.get(&id), Some(&100), "{counts:?}");
    }
    // The debug snapshot shows the channel with its replicas.
    let snapshot = switchyard::debug::snapshot();
    let shown = snapshot
        .channels
        .iter()
        .find(|c| {
            c.balance == "round_robin"
                && c.source == Some(format!("the discovery file {}", file.display()))
        })
        .expect("the channel is in the snapshot");
    assert!(
        shown.replicas.iter().all(|r| r.calls_started >= 100),
        "{shown:#?}"
    );
    let metrics = switchyard::debug::render_prometheus(&snapshot);
    for running in &r {
        let series = format!(
            "switchyard_replica_in_flight{{target=\"inventory\",replica=\"unix://{}\"}} 0",
            running.path.display()
        );
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
    assert!(
        metrics.contains("# TYPE switchyard_channel_replicas gauge")
            && metrics.contains("switchyard_channel_retries_total{target=\"inventory\"}"),
        "{metrics}"
    );
    let table = switchyard::debug::table::connections_table(&snapshot);
    assert!(
        table.contains("channel inventory (round_robin, replicas from the discovery file"),
        "{table}"
    );
    shut_down(r).await;
}

#[tokio::test]
async fn pick_first_sticks_to_one_replica_and_moves_when_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let first = replica(dir.path(), 1, Duration::ZERO).await;
    let second = replica(dir.path(), 2, Duration::ZERO).await;
    list(&file, &[&first.path, &second.path]);
    let client = channel(dir.path(), &file, Balance::PickFirst).await;
    assert_eq!(spread(&client, 50).await, HashMap::from([(1, 50)]));
    // Only the first has a connection.
    let states: Vec<String> = client
        .channel()
        .replicas()
        .into_iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(states, ["ready", "idle"]);
    // The first drains: its calls move to the second, none fails.
    first.handle.shutdown().await;
    assert_eq!(spread(&client, 50).await, HashMap::from([(2, 50)]));
    second.handle.shutdown().await;
}

#[tokio::test]
async fn edits_to_the_file_add_and_drop_replicas_of_a_running_channel() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let r: Vec<Running> =
        futures_util::future::join_all((1..=3).map(|id| replica(dir.path(), id, Duration::ZERO)))
            .await;
    list(&file, &[&r[0].path, &r[1].path]);
    let client = channel(dir.path(), &file, Balance::RoundRobin).await;
    let counts = spread(&client, 100).await;
    assert_eq!(counts.get(&3), None, "{counts:?}");

    list(&file, &[&r[0].path, &r[1].path, &r[2].path]);
    let took = until_ready(&client, 3).await;
    println!(
        "a replica added to the file was ready for calls after {took:?} (resolve interval 50 ms)"
    );
    let counts = spread(&client, 300).await;
    assert_eq!(counts.get(&3), Some(&100), "{counts:?}");

    list(&file, &[&r[1].path, &r[2].path]);
    let took = until_ready(&client, 2).await;
    println!("a replica removed from the file was dropped after {took:?}");
    let before = r[0].calls.load(Ordering::Relaxed);
    let counts = spread(&client, 100).await;
    assert_eq!(counts.get(&1), None, "{counts:?}");
    assert_eq!(r[0].calls.load(Ordering::Relaxed), before);
    let changes = client.channel().info().changes;
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("added unix://") && c.contains("replica-3")),
        "{changes:#?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("removed unix://") && c.contains("replica-1")),
        "{changes:#?}"
    );
    shut_down(r).await;
}

#[tokio::test]
async fn a_draining_replica_takes_no_new_calls_and_fails_none() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let mut r = three_listed(dir.path(), &file).await;
    let client = channel(dir.path(), &file, Balance::RoundRobin).await;
    // Calls keep coming from 8 tasks while replica 1 shuts down.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        callers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match client.who_after(1).await {
                    Ok(_) => ok += 1,
                    Err(status) => failed.push(status),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let draining = r.remove(0);
    draining.handle.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for caller in callers {
        let (o, f) = caller.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    println!(
        "{ok} calls during replica 1's graceful shutdown, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "calls failed during a drain: {failed:#?}"
    );
    assert!(ok > 100, "{ok}");
    assert_eq!(spread(&client, 60).await.get(&1), None);
    shut_down(r).await;
}

#[tokio::test]
async fn a_replica_down_at_first_joins_when_it_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let up = replica(dir.path(), 1, Duration::ZERO).await;
    let later = dir.path().join("replica-2.sock");
    list(&file, &[&up.path, &later]);
    let client = channel(dir.path(), &file, Balance::RoundRobin).await;
    let replicas = client.channel().replicas();
    assert_eq!(replicas[1].state, "failed", "{replicas:#?}");
    assert!(
        replicas[1]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("replica-2.sock")),
        "{replicas:#?}"
    );
    assert_eq!(spread(&client, 20).await, HashMap::from([(1, 20)]));
    let second = replica(dir.path(), 2, Duration::ZERO).await;
    let took = until_ready(&client, 2).await;
    println!("a replica that came up was ready for calls after {took:?} (backoff 50 ms)");
    let counts = spread(&client, 100).await;
    assert_eq!(counts.get(&2), Some(&50), "{counts:?}");
    up.handle.shutdown().await;
    second.handle.shutdown().await;
}

#[tokio::test]
async fn peak_ewma_sends_most_calls_to_the_faster_replica() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let slow = replica(dir.path(), 1, Duration::from_millis(20)).await;
    let fast = replica(dir.path(), 2, Duration::ZERO).await;
    list(&file, &[&slow.path, &fast.path]);
    let client = channel(dir.path(), &file, Balance::PeakEwma).await;
    let counts = spread(&client, 200).await;
    println!("peak EWMA, a 20 ms replica and an instant one, 200 calls: {counts:?}");
    assert!(counts.get(&2).copied().unwrap_or(0) >= 190, "{counts:?}");
    let replicas = client.channel().replicas();
    let ewma: Vec<Option<f64>> = replicas.iter().map(|r| r.latency_ewma_us).collect();
    assert!(
        ewma[0].is_some_and(|slow| slow >= 15_000.0) && ewma[1].is_some_and(|fast| fast < 15_000.0),
        "{replicas:#?}"
    );
    slow.handle.shutdown().await;
    fast.handle.shutdown().await;
}

#[tokio::test]
async fn least_in_flight_avoids_a_replica_with_calls_stuck_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let r = three_listed(dir.path(), &file).await;
    let client = channel(dir.path(), &file, Balance::LeastInFlight).await;
    // 30 long calls, spread as they start; the ones that land on replica
    // 1 stay there, the rest are counted out.
    let mut long = Vec::new();
    for _ in 0..30 {
        let client = client.clone();
        long.push(tokio::spawn(async move { client.who_after(3_000).await }));
    }
    let start = Instant::now();
    while client
        .channel()
        .replicas()
        .iter()
        .map(|r| r.in_flight)
        .sum::<u64>()
        < 30
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the long calls never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let loads: Vec<u64> = client
        .channel()
        .replicas()
        .iter()
        .map(|r| r.in_flight)
        .collect();
    println!("in flight per replica after 30 long calls: {loads:?}");
    // Each started where fewer were in flight: they spread evenly.
    assert!(loads.iter().all(|&n| (5..=15).contains(&n)), "{loads:?}");
    for call in long {
        call.await.unwrap().unwrap();
    }
    shut_down(r).await;
}

/// Replica 1 failing its `who_*` calls and replica 2 healthy, and a round
/// robin channel to them with no ejection and a budget that allows a retry
/// for every call (so each retried call made on replica 1 is retried on
/// replica 2), set up further by `settings`.
async fn failing_and_healthy(
    dir: &Path,
    settings: impl FnOnce(switchyard::ChannelBuilder) -> switchyard::ChannelBuilder,
) -> (Running, Running, ReplicaClient) {
    let file = dir.join("discovery.toml");
    let failing = replica_failing(dir, 1, Duration::ZERO, true).await;
    let healthy = replica(dir, 2, Duration::ZERO).await;
    list(&file, &[&failing.path, &healthy.path]);
    let client = channel_with(dir, &file, Balance::RoundRobin, |b| {
        settings(
            b.outlier_ejection(switchyard::OutlierEjection::off())
                .retry_budget(switchyard::RetryBudget {
                    max_tokens: 1000.0,
                    token_ratio: 1.0,
                }),
        )
    })
    .await;
    (failing, healthy, client)
}

#[tokio::test]
async fn idempotent_calls_are_retried_on_another_replica_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let (failing, healthy, client) = failing_and_healthy(dir.path(), |b| b).await;
    for _ in 0..100 {
        assert_eq!(client.who_retried().await.expect("retried on replica 2"), 2);
    }
    let info = client.channel().info();
    println!(
        "100 idempotent calls, one of two replicas failing: 0 failed, {} retries",
        info.retries
    );
    assert!((40..=60).contains(&info.retries), "{info:#?}");
    assert_eq!(info.retries_throttled, 0, "{info:#?}");
    let mut failed = 0;
    for _ in 0..100 {
        if let Err(status) = client.who_once().await {
            assert_eq!(status.code(), switchyard::Code::Unavailable, "{status}");
            assert!(
                status.message().contains("replica 1 is failing"),
                "{status}"
            );
            failed += 1;
        }
    }
    assert_eq!(
        failed, 50,
        "a method not declared idempotent is never retried"
    );
    assert_eq!(client.channel().info().retries, info.retries);
    failing.handle.shutdown().await;
    healthy.handle.shutdown().await;
}

#[tokio::test]
async fn a_per_method_policy_retries_a_method_it_names_and_turns_retries_off_for_another() {
    let dir = tempfile::tempdir().unwrap();
    // who_once is not declared idempotent: naming it makes it retried;
    // who_retried is, and RetryPolicy::off() for the service turns that off.
    let (failing, healthy, client) = failing_and_healthy(dir.path(), |b| {
        b.retry_method("Replica", switchyard::RetryPolicy::off())
            .retry_method("Replica.who_once", switchyard::RetryPolicy::default())
    })
    .await;
    for _ in 0..20 {
        assert_eq!(client.who_once().await.expect("retried by its policy"), 2);
    }
    let retried = client.channel().info().retries;
    assert!((5..=15).contains(&retried), "{retried}");
    let mut failed = 0;
    for _ in 0..20 {
        if let Err(status) = client.who_retried().await {
            assert_eq!(status.code(), switchyard::Code::Unavailable, "{status}");
            failed += 1;
        }
    }
    assert_eq!(failed, 10, "the service's policy turned its retries off");
    assert_eq!(client.channel().info().retries, retried);
    failing.handle.shutdown().await;
    healthy.handle.shutdown().await;
}

#[tokio::test]
async fn prefer_local_keeps_calls_on_this_host_while_a_replica_here_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let here = replica(dir.path(), 1, Duration::ZERO).await;
    // Reached over TCP only (no Unix socket to move to): as if elsewhere.
    let calls = Arc::new(AtomicU64::new(0));
    let elsewhere = Server::builder()
        .add_service(ReplicaServer::new(Impl {
            id: 2,
            failing: false,
            delay: Duration::ZERO,
            calls: Arc::clone(&calls),
        }))
        .unpublished()
        .no_unix()
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    std::fs::write(
        &file,
        format!(
            "[[services.{NAME}.replicas]]\naddresses = [\"unix://{}\"]\n\
             [[services.{NAME}.replicas]]\naddresses = [\"tcp://{}\"]\n",
            here.path.display(),
            elsewhere.tcp_addr().unwrap()
        ),
    )
    .unwrap();
    let spread_over = |client: ReplicaClient| async move {
        until_ready(&client, 2).await;
        let counts = spread(&client, 20).await;
        (client, counts)
    };
    let (client, counts) = spread_over(
        channel_with(dir.path(), &file, Balance::RoundRobin, |b| {
            b.prefer_local(true)
        })
        .await,
    )
    .await;
    assert_eq!(counts, HashMap::from([(1, 20)]), "only the replica here");
    let info = client.channel().info();
    assert_eq!(
        info.balance,
        "round_robin, preferring replicas on this host"
    );
    let preferred: Vec<bool> = info
        .replicas
        .iter()
        .map(|r| {
            r.reason
                .as_deref()
                .is_some_and(|why| why.contains("preferred: on this host"))
        })
        .collect();
    assert_eq!(preferred, [true, false], "{info:#?}");
    // The replica here gone, the other takes the calls.
    here.handle.shutdown().await;
    let start = Instant::now();
    while client.channel().replicas()[0].state == "ready" {
        assert!(start.elapsed() < Duration::from_secs(10), "never left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(spread(&client, 5).await, HashMap::from([(2, 5)]));
    // Without the preference, both take calls.
    let here = replica(dir.path(), 1, Duration::ZERO).await;
    let (_client, counts) =
        spread_over(channel(dir.path(), &file, Balance::RoundRobin).await).await;
    assert_eq!(counts, HashMap::from([(1, 10), (2, 10)]));
    here.handle.shutdown().await;
    elsewhere.shutdown().await;
}

#[tokio::test]
async fn the_retry_budget_keeps_attempts_near_the_calls_when_every_replica_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let a = replica_failing(dir.path(), 1, Duration::ZERO, true).await;
    let b = replica_failing(dir.path(), 2, Duration::ZERO, true).await;
    list(&file, &[&a.path, &b.path]);
    let client = channel(dir.path(), &file, Balance::RoundRobin).await;
    const CALLS: u64 = 200;
    let mut last = None;
    for _ in 0..CALLS {
        last = Some(client.who_retried().await.expect_err("every replica fails"));
    }
    let attempts = a.calls.load(Ordering::Relaxed) + b.calls.load(Ordering::Relaxed);
    let info = client.channel().info();
    println!(
        "{CALLS} idempotent calls, every replica failing: {attempts} attempts ({} retries, {} \
         held back by the budget)",
        info.retries, info.retries_throttled
    );
    // The budget's ratio is 0.1: attempts stay under 1.1 x calls.
    assert!(
        attempts < CALLS * 11 / 10,
        "{attempts} attempts for {CALLS} calls"
    );
    assert!(info.retries_throttled > 0, "{info:#?}");
    let last = last.unwrap();
    assert!(last.message().contains("retry budget"), "{last}");
    a.handle.shutdown().await;
    b.handle.shutdown().await;
}

#[tokio::test]
async fn a_replica_failing_call_after_call_is_ejected_and_no_call_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let failing = replica_failing(dir.path(), 1, Duration::ZERO, true).await;
    let healthy = replica(dir.path(), 2, Duration::ZERO).await;
    list(&file, &[&failing.path, &healthy.path]);
    // The defaults: 5 failures in a row eject; the budget allows the
    // retries until then.
    let client = channel(dir.path(), &file, Balance::RoundRobin).await;
    for _ in 0..100 {
        assert_eq!(client.who_retried().await.expect("no call fails"), 2);
    }
    let info = client.channel().info();
    println!(
        "100 idempotent calls, one of two replicas failing, default settings: 0 failed, {} \
         retries, replica 1 {} ({} ejection, {:?} ms left)",
        info.retries,
        info.replicas[0].state,
        info.replicas[0].ejections,
        info.replicas[0].ejected_for_ms
    );
    assert_eq!(info.retries, 5, "{info:#?}");
    assert_eq!(info.replicas[0].state, "ejected", "{info:#?}");
    assert_eq!(info.replicas[0].ejections, 1, "{info:#?}");
    assert!(
        info.replicas[0]
            .ejected_for_ms
            .is_some_and(|ms| ms > 5_000 && ms <= 10_000),
        "{info:#?}"
    );
    assert_eq!(failing.calls.load(Ordering::Relaxed), 5);
    let metrics = switchyard::debug::render_prometheus(&switchyard::debug::snapshot());
    let series = format!(
        "switchyard_replica_ejections_total{{target=\"inventory\",replica=\"unix://{}\"}} 1",
        failing.path.display()
    );
    assert!(metrics.contains(&series), "{series} in\n{metrics}");
    // Not idempotent, and still no failure: the ejected replica gets none.
    for _ in 0..20 {
        assert_eq!(client.who_once().await.expect("replica 2 answers"), 2);
    }
    failing.handle.shutdown().await;
    healthy.handle.shutdown().await;
}

/// Waits up to 10 s until replica `i` of the channel reports `not_serving`;
/// returns how long that took.
async fn until_not_serving(client: &ReplicaClient, i: usize, not_serving: &[&str]) -> Duration {
    let start = Instant::now();
    loop {
        let replicas = client.channel().replicas();
        if replicas[i].not_serving == not_serving {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "replica {i} never reported {not_serving:?}: {replicas:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_replica_not_serving_gets_no_calls_until_it_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let r = three_listed(dir.path(), &file).await;
    let client = channel(dir.path(), &file, Balance::RoundRobin).await;
    assert_eq!(spread(&client, 30).await.get(&1), Some(&10));

    r[0].handle.health().set_not_serving("Replica").unwrap();
    let took = until_not_serving(&client, 0, &["Replica"]).await;
    println!("a replica set NOT_SERVING was left out after {took:?}");
    let counts = spread(&client, 60).await;
    assert_eq!(counts.get(&1), None, "{counts:?}");
    assert_eq!(counts.get(&2), Some(&30), "{counts:?}");

    r[0].handle.health().set_serving("Replica").unwrap();
    let took = until_not_serving(&client, 0, &[]).await;
    println!("back to SERVING, it was picked again after {took:?}");
    assert_eq!(spread(&client, 90).await.get(&1), Some(&30));

    // The server as a whole not serving counts for every service.
    r[1].handle.health().set_not_serving("").unwrap();
    until_not_serving(&client, 1, &[""]).await;
    let counts = spread(&client, 60).await;
    assert_eq!(counts.get(&2), None, "{counts:?}");
    // With none serving, calls go to all of them again: the servers decide.
    r[0].handle.health().set_not_serving("").unwrap();
    r[2].handle.health().set_not_serving("").unwrap();
    until_not_serving(&client, 0, &[""]).await;
    until_not_serving(&client, 2, &[""]).await;
    assert_eq!(spread(&client, 30).await.len(), 3);
    shut_down(r).await;
}

#[tokio::test]
async fn a_hedged_call_is_answered_by_the_replica_that_answers_first() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let slow = replica(dir.path(), 1, Duration::from_secs(3)).await;
    let fast = replica(dir.path(), 2, Duration::ZERO).await;
    list(&file, &[&slow.path, &fast.path]);
    let hedging = channel_with(dir.path(), &file, Balance::RoundRobin, |b| {
        b.hedge(switchyard::HedgePolicy::new(2, Duration::from_millis(50)))
            .timeout(Duration::from_secs(1))
    })
    .await;
    for _ in 0..20 {
        let who = hedging
            .who_hedged()
            .await
            .expect("the fast replica answers within the deadline");
        assert_eq!(who, 2);
    }
    let info = hedging.channel().info();
    println!(
        "20 hedged calls, one of two replicas taking 3 s: all answered by the fast one, {} hedges",
        info.hedges
    );
    assert!((8..=20).contains(&info.hedges), "{info:#?}");
    assert_eq!(info.retries, 0, "{info:#?}");
    // Without hedging, the calls round robin sends to the slow replica
    // miss their deadline.
    let plain = channel_with(dir.path(), &file, Balance::RoundRobin, |b| {
        b.timeout(Duration::from_secs(1))
    })
    .await;
    let mut missed = 0;
    for _ in 0..4 {
        if let Err(status) = plain.who_hedged().await {
            assert_eq!(
                status.code(),
                switchyard::Code::DeadlineExceeded,
                "{status}"
            );
            missed += 1;
        }
    }
    assert_eq!(missed, 2);
    slow.handle.shutdown().await;
    fast.handle.shutdown().await;
}

#[tokio::test]
async fn a_method_hedged_by_name_keeps_its_large_arguments_for_the_hedge() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.toml");
    let slow = replica(dir.path(), 1, Duration::from_secs(3)).await;
    let fast = replica(dir.path(), 2, Duration::ZERO).await;
    list(&file, &[&slow.path, &fast.path]);
    // Not idempotent, not retried (RetryPolicy::off for the service), but
    // hedged by name: a first attempt on the slow replica is raced on the
    // fast one with the same 200 KB of arguments.
    let client = channel_with(dir.path(), &file, Balance::RoundRobin, |b| {
        b.retry_method("Replica", switchyard::RetryPolicy::off())
            .hedge_method(
                "Replica.who_with",
                switchyard::HedgePolicy::new(2, Duration::from_millis(50)),
            )
            .timeout(Duration::from_secs(1))
    })
    .await;
    for _ in 0..6 {
        let who = client
            .who_with(vec![7; 200_000])
            .await
            .expect("the hedge on the fast replica answers");
        assert_eq!(who, 2);
    }
    assert!(client.channel().info().hedges >= 2);
    slow.handle.shutdown().await;
    fast.handle.shutdown().await;
}
