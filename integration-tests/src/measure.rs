//! What the abuse, soak and hostile-peer tests measure of a server process
//! (from `/proc`), and the polite client they run beside an attack.

use std::time::{Duration, Instant};

use crate::TestingClient;

/// The process's resident memory in KiB (0 if it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The process's open file descriptors.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The CPU time (user + system) the process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) follow ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after ')'.
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / hz as f64)
}

/// The `p` quantile (0 to 1) of `latencies`, sorted or not.
pub fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Calls `add` every millisecond until `stop`, returning each call's
/// latency; panics on any failure (a polite client must lose nothing).
pub async fn polite_adds(
    client: TestingClient,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut i = 0i64;
    while !*stop.borrow() {
        let started = Instant::now();
        let sum = client.add(i, 1).await.expect("the polite client's call");
        assert_eq!(sum, i + 1);
        latencies.push(started.elapsed());
        i += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    latencies
}
