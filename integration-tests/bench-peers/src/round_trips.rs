//! Round-trip mode (`--round-trips`): request-response calls of 64-byte
//! payloads (tonic unary over TCP, tarpc over a Unix socket and over TCP,
//! iceoryx2 request-response), client and server in separate processes
//! pinned to different CPUs (client on the first allowed CPU, server on the
//! second, as switchyard's own benchmark pins them).
//!
//! For every peer one client process measures
//! * latency: `warmup` calls, then `iterations` calls one at a time, each
//!   timed (p50 and p99 from the sorted nanoseconds);
//! * throughput: `INFLIGHT` calls in flight for `seconds`, calls/s;
//!
//! and prints `RESULT <calls> <p50 ns> <p99 ns> <throughput calls> <seconds>`
//! (`RtResult`). The orchestrator prints one table row / one JSON line per
//! peer.

use std::time::Duration;

use crate::child::{ChildSet, Cpus};
use crate::{Options, SMALL, out};

/// The payload of the large round trips.
pub const BULK: usize = 1 << 20;

/// Calls in flight in the throughput measurement.
pub const INFLIGHT: usize = 32;

/// One round-trip measurement: a peer and the sizes of the run.
#[derive(Clone, Copy, Debug)]
pub struct RtSpec {
    pub peer: &'static str,
    pub pattern: &'static str,
    pub size: usize,
    /// Calls made one at a time before the timed ones (not counted).
    pub warmup: u64,
    /// Calls made one at a time, each timed.
    pub iterations: u64,
    /// Length of the throughput measurement.
    pub seconds: f64,
}

impl RtSpec {
    /// The arguments of a client child: `<role> <cpu> <target> <size>
    /// <warmup> <iterations> <seconds>` (the target: a port, a service).
    pub fn client_args(&self, role: &str, cpu: i64, target: String) -> Vec<String> {
        vec![
            role.to_owned(),
            cpu.to_string(),
            target,
            self.size.to_string(),
            self.warmup.to_string(),
            self.iterations.to_string(),
            self.seconds.to_string(),
        ]
    }
}

/// What a round-trip client reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RtResult {
    /// Timed calls of the latency measurement.
    pub calls: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    /// Calls completed in the throughput measurement, and its length.
    pub tput_calls: u64,
    pub tput_secs: f64,
}

impl RtResult {
    /// Builds the result from the latency samples (nanoseconds, any order).
    pub fn from_samples(mut samples: Vec<u64>, tput_calls: u64, tput_secs: f64) -> Result<Self, String> {
        if samples.is_empty() {
            return Err("no latency samples".into());
        }
        samples.sort_unstable();
        Ok(RtResult {
            calls: samples.len() as u64,
            p50_ns: percentile(&samples, 50),
            p99_ns: percentile(&samples, 99),
            tput_calls,
            tput_secs,
        })
    }

    /// The `RESULT` line's arguments.
    pub fn line(&self) -> String {
        format!("{} {} {} {} {}", self.calls, self.p50_ns, self.p99_ns, self.tput_calls, self.tput_secs)
    }

    pub fn parse(line: &str) -> Result<Self, String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("bad RESULT line {line:?}");
        if f.len() != 5 {
            return Err(bad());
        }
        let n = |i: usize| f[i].parse::<u64>().map_err(|_| bad());
        Ok(RtResult {
            calls: n(0)?,
            p50_ns: n(1)?,
            p99_ns: n(2)?,
            tput_calls: n(3)?,
            tput_secs: f[4].parse().map_err(|_| bad())?,
        })
    }

    fn calls_per_s(&self) -> f64 {
        self.tput_calls as f64 / self.tput_secs
    }
}

/// Nearest-rank percentile `p` (0..=100) of sorted, non-empty samples.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// Parses the throughput duration argument of a client child.
pub fn seconds_arg(args: &[String], i: usize) -> Result<Duration, String> {
    let s: f64 = crate::child::arg(args, i, "seconds")?;
    if !(s > 0.0 && s < 3600.0) {
        return Err(format!("bad argument seconds: {s}"));
    }
    Ok(Duration::from_secs_f64(s))
}

struct Measured {
    spec: RtSpec,
    r: RtResult,
}

impl Measured {
    fn json(&self) -> String {
        format!(
            "{{\"peer\":\"{}\",\"pattern\":\"{}\",\"size\":{},\"calls\":{},\"p50_us\":{:.2},\"p99_us\":{:.2},\"calls_per_s\":{:.1}}}",
            self.spec.peer,
            self.spec.pattern,
            self.spec.size,
            self.r.calls,
            self.r.p50_ns as f64 / 1e3,
            self.r.p99_ns as f64 / 1e3,
            self.r.calls_per_s()
        )
    }
}

fn specs(o: &Options) -> Vec<RtSpec> {
    let (warmup, iterations, seconds) = if o.quick { (1_000, 5_000, 0.5) } else { (10_000, 100_000, 3.0) };
    let spec = |peer, pattern| RtSpec { peer, pattern, size: SMALL, warmup, iterations, seconds };
    let runs = |peer: &str| o.only.as_deref().is_none_or(|only| only == peer);
    let mut v = Vec::new();
    if runs("tonic") {
        v.push(spec("tonic-tcp", "unary"));
    }
    if runs("tarpc") {
        v.push(spec("tarpc-unix", "unary"));
        v.push(spec("tarpc-tcp", "unary"));
    }
    if runs("iceoryx2") {
        v.push(spec("iceoryx2", "request-response"));
        // 1 MiB, copied in and out, one at a time: the bench lab's shm bulk
        // table sets switchyard's pooled bodies beside it.
        let (warmup, iterations) = if o.quick { (20, 200) } else { (100, 2_000) };
        v.push(RtSpec { peer: "iceoryx2", pattern: "request-response", size: BULK, warmup, iterations, seconds });
    }
    v
}

fn table(results: &[Measured], cpus: &Cpus) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "bench-peers: round trips, {SMALL} B request and response; {}\n",
        cpus.describe_round_trips()
    ));
    s.push_str(&format!(
        "{:<10} {:<17} {:>7} {:>7} {:>9} {:>9}  {:>9} {:>7} {:>11}\n",
        "peer", "pattern", "size", "calls", "p50 µs", "p99 µs", "in flight", "seconds", "calls/s"
    ));
    for m in results {
        s.push_str(&format!(
            "{:<10} {:<17} {:>7} {:>7} {:>9.2} {:>9.2}  {:>9} {:>7.3} {:>11.0}\n",
            m.spec.peer,
            m.spec.pattern,
            if m.spec.size >= 1 << 20 { format!("{} MiB", m.spec.size >> 20) } else { format!("{} B", m.spec.size) },
            m.r.calls,
            m.r.p50_ns as f64 / 1e3,
            m.r.p99_ns as f64 / 1e3,
            if m.spec.size == SMALL { INFLIGHT } else { 1 },
            m.r.tput_secs,
            m.r.calls_per_s()
        ));
    }
    s.push_str("p50/p99: one call at a time, after the warm-up calls; calls/s: 32 calls in flight (1 MiB: one at a time, copied in and out).\n");
    s
}

/// Runs the round-trip measurements of `o` and prints them.
pub fn run(o: &Options) -> Result<(), String> {
    let cpus = Cpus::detect();
    let timeout = if o.quick { Duration::from_secs(60) } else { Duration::from_secs(240) };
    let mut results = Vec::new();
    for (n, spec) in specs(o).into_iter().enumerate() {
        let then = if spec.size == SMALL { format!(", then {INFLIGHT} in flight for {} s", spec.seconds) } else { String::new() };
        eprintln!(
            "bench-peers: {} {} {} B: {} calls (+{} warm-up) one at a time{then}...",
            spec.peer, spec.pattern, spec.size, spec.iterations, spec.warmup
        );
        let mut set = ChildSet::new();
        let r = match spec.peer {
            "tonic-tcp" => crate::tonic_rt::measure(&mut set, &cpus, spec, timeout),
            "tarpc-unix" | "tarpc-tcp" => crate::tarpc_rt::measure(&mut set, &cpus, spec, timeout, n as u32),
            "iceoryx2" if spec.size != SMALL => crate::ice_rr_bulk::measure(&mut set, &cpus, spec, timeout, n as u32),
            _ => crate::ice_rr::measure(&mut set, &cpus, spec, timeout, n as u32),
        };
        // Every child is killed and reaped here, whatever the outcome.
        set.stop_all();
        if spec.peer == "iceoryx2" {
            crate::ice_peer::cleanup_dead_nodes();
        }
        let r = r.map_err(|e| format!("round trips {} {} failed: {e}", spec.peer, spec.pattern))?;
        if r.calls != spec.iterations
            || r.p50_ns == 0
            || r.p99_ns < r.p50_ns
            || r.tput_calls == 0
            || !(r.tput_secs > 0.0)
        {
            return Err(format!(
                "round trips {} {}: implausible result {r:?} (expected {} timed calls)",
                spec.peer, spec.pattern, spec.iterations
            ));
        }
        let m = Measured { spec, r };
        if o.json {
            out(&format!("{}\n", m.json()))?;
        }
        results.push(m);
    }
    let t = table(&results, &cpus);
    if o.json {
        eprint!("{t}");
        Ok(())
    } else {
        out(&t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        let r = RtResult { calls: 5, p50_ns: 1, p99_ns: 2, tput_calls: 3, tput_secs: 0.5 };
        assert_eq!(RtResult::parse(&r.line()), Ok(r));
    }
}

/// Joins the throughput tasks, each returning the calls it completed:
/// the calls in all and the seconds since `start`, or the first error.
pub async fn join_counts(
    tasks: Vec<tokio::task::JoinHandle<Result<u64, String>>>,
    start: std::time::Instant,
) -> Result<(u64, f64), String> {
    let mut total = 0u64;
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(e) => first_err = first_err.or(Some(format!("task: {e}"))),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    match first_err {
        Some(e) => Err(e),
        None => Ok((total, secs)),
    }
}
