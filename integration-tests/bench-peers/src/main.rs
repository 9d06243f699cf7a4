//! bench-peers: one-way streaming throughput of peers of switchyard, counted
//! by the receiver, with sender and receiver in separate processes; with
//! `--round-trips`, request-response latency and throughput instead
//! (`round_trips`: tonic unary calls, tarpc calls over a Unix socket and over
//! TCP, iceoryx2 request-response).
//!
//! * tonic (gRPC over HTTP/2 over TCP loopback): server streaming and client
//!   streaming, with an always-ready sender stream ("ready") and with the
//!   `tokio::sync::mpsc` + `ReceiverStream` pattern of tonic's examples
//!   ("channel").
//! * iceoryx2 publish-subscribe (shared memory, no drops: the publisher retries
//!   until delivered), busy-polling subscriber ("pubsub").
//!
//! The binary is its own orchestrator: the parent process re-executes itself
//! (`bench-peers __child <role> ...`) for each side of each measurement, pins
//! the two sides to two different CPUs, reads their `READY`/`RESULT` lines with
//! deadlines and kills and reaps every child on every path.

mod child;
mod ice_peer;
mod ice_rr;
mod ice_rr_bulk;
mod round_trips;
mod tarpc_rt;
mod tonic_peer;
mod tonic_rt;

use std::process::ExitCode;
use std::time::Duration;

use child::{ChildSet, Cpus};

/// Environment variable a child uses to check that its parent is the
/// orchestrator that started it (and is still alive).
pub const PARENT_ENV: &str = "BENCH_PEERS_PARENT";

pub const SMALL: usize = 64;
pub const LARGE: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Ready,
    Channel,
    Pubsub,
}

impl Pattern {
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Ready => "ready",
            Pattern::Channel => "channel",
            Pattern::Pubsub => "pubsub",
        }
    }
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "ready" => Ok(Pattern::Ready),
            "channel" => Ok(Pattern::Channel),
            "pubsub" => Ok(Pattern::Pubsub),
            _ => Err(format!("unknown pattern {s:?}")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ServerStreaming,
    ClientStreaming,
    Publish,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::ServerStreaming => "server-streaming",
            Direction::ClientStreaming => "client-streaming",
            Direction::Publish => "publish",
        }
    }
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "server-streaming" => Ok(Direction::ServerStreaming),
            "client-streaming" => Ok(Direction::ClientStreaming),
            "publish" => Ok(Direction::Publish),
            _ => Err(format!("unknown direction {s:?}")),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub peer: &'static str,
    pub pattern: Pattern,
    pub direction: Direction,
    pub size: usize,
    /// Messages sent before the receiver starts its clock (not counted).
    pub warmup: u64,
    /// Messages counted by the receiver once its clock runs.
    pub messages: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub spec: Spec,
    pub messages: u64,
    pub seconds: f64,
}

impl Measured {
    fn messages_per_s(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
    fn gb_per_s(&self) -> f64 {
        self.messages as f64 * self.spec.size as f64 / self.seconds / 1e9
    }
    fn json(&self) -> String {
        format!(
            "{{\"peer\":\"{}\",\"pattern\":\"{}\",\"direction\":\"{}\",\"size\":{},\"messages\":{},\"seconds\":{:.6},\"messages_per_s\":{:.1},\"gb_per_s\":{:.4}}}",
            self.spec.peer,
            self.spec.pattern.name(),
            self.spec.direction.name(),
            self.spec.size,
            self.messages,
            self.seconds,
            self.messages_per_s(),
            self.gb_per_s()
        )
    }
}

struct Options {
    quick: bool,
    json: bool,
    only: Option<String>,
    round_trips: bool,
}

const USAGE: &str = "usage: bench-peers [--round-trips] [--quick] [--json] [--only tonic|tarpc|iceoryx2]

One-way streaming throughput of tonic (gRPC over TCP loopback) and iceoryx2
(shared-memory publish-subscribe), sender and receiver in separate processes
pinned to different CPUs, counted by the receiver.

  --round-trips
            request-response instead: tonic unary echo calls (TCP), tarpc
            echo calls (Unix socket, TCP) and iceoryx2 request-response,
            64 B (and iceoryx2 1 MiB), client and server pinned to
            different CPUs; p50/p99 latency one call at a time, then
            calls/s with 32 calls in flight
  --quick   200k small (64 B) and 64 large (1 MiB) messages per measurement
            (default: 5M small, 2048 large); with --round-trips 1k warm-up
            and 5k timed calls, 0.5 s of throughput (default: 10k, 100k, 3 s)
  --json    one JSON object per measurement per line on stdout; the human
            table then goes to stderr
  --only    run the measurements of one peer only (tarpc: --round-trips
            only)";

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options { quick: false, json: false, only: None, round_trips: false };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--json" => o.json = true,
            "--round-trips" => o.round_trips = true,
            "--only" => {
                let v = it.next().ok_or("--only needs tonic, tarpc or iceoryx2")?;
                if v != "tonic" && v != "tarpc" && v != "iceoryx2" {
                    return Err(format!("--only: expected tonic, tarpc or iceoryx2, got {v:?}"));
                }
                o.only = Some(v.clone());
            }
            "-h" | "--help" => {
                let _ = out(&format!("{USAGE}\n"));
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    if o.only.as_deref() == Some("tarpc") && !o.round_trips {
        return Err("--only tarpc: tarpc is measured by --round-trips only".into());
    }
    Ok(o)
}

fn specs(o: &Options) -> Vec<Spec> {
    let (small, large) = if o.quick { (200_000u64, 64u64) } else { (5_000_000, 2048) };
    let warm = |n: u64, size: usize| {
        if size == SMALL { (n / 10).clamp(8, 100_000) } else { (n / 8).clamp(8, 64) }
    };
    let mut v = Vec::new();
    if o.only.as_deref() != Some("iceoryx2") {
        for pattern in [Pattern::Ready, Pattern::Channel] {
            for direction in [Direction::ServerStreaming, Direction::ClientStreaming] {
                for (size, n) in [(SMALL, small), (LARGE, large)] {
                    v.push(Spec { peer: "tonic-tcp", pattern, direction, size, warmup: warm(n, size), messages: n });
                }
            }
        }
    }
    if o.only.as_deref() != Some("tonic") {
        for (size, n) in [(SMALL, small), (LARGE, large)] {
            v.push(Spec {
                peer: "iceoryx2",
                pattern: Pattern::Pubsub,
                direction: Direction::Publish,
                size,
                warmup: warm(n, size),
                messages: n,
            });
        }
    }
    v
}

fn fmt_rate(m: &Measured) -> String {
    if m.spec.size == SMALL {
        format!("{:>8.3} M msg/s", m.messages_per_s() / 1e6)
    } else {
        format!("{:>8.3} GB/s   ", m.gb_per_s())
    }
}

fn table(results: &[Measured], cpus: &Cpus) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "bench-peers: one-way streaming, counted by the receiver; {}\n",
        cpus.describe()
    ));
    s.push_str(&format!(
        "{:<10} {:<8} {:<17} {:>8} {:>9} {:>9}  {:<16} {:>10}\n",
        "peer", "pattern", "direction", "size", "messages", "seconds", "rate", "msg/s"
    ));
    for m in results {
        let size = if m.spec.size == SMALL { "64 B".to_string() } else { "1 MiB".to_string() };
        s.push_str(&format!(
            "{:<10} {:<8} {:<17} {:>8} {:>9} {:>9.3}  {:<16} {:>10.0}\n",
            m.spec.peer,
            m.spec.pattern.name(),
            m.spec.direction.name(),
            size,
            m.messages,
            m.seconds,
            fmt_rate(m),
            m.messages_per_s()
        ));
    }
    s.push_str("GB = 1e9 bytes of payload; M = 1e6 messages.\n");
    s
}

fn run_main(o: Options) -> Result<(), String> {
    let cpus = Cpus::detect();
    let specs = specs(&o);
    let timeout = if o.quick { Duration::from_secs(60) } else { Duration::from_secs(240) };
    let mut results = Vec::new();
    let mut counter = 0u32;
    for spec in specs {
        eprintln!(
            "bench-peers: {} {} {} {} B x {} (+{} warm-up)...",
            spec.peer,
            spec.pattern.name(),
            spec.direction.name(),
            spec.size,
            spec.messages,
            spec.warmup
        );
        counter += 1;
        let mut set = ChildSet::new();
        let r = match spec.peer {
            "tonic-tcp" => tonic_peer::measure(&mut set, &cpus, spec, timeout),
            _ => ice_peer::measure(&mut set, &cpus, spec, timeout, counter),
        };
        // Every child is killed and reaped here, whatever the outcome.
        set.stop_all();
        if spec.peer == "iceoryx2" {
            ice_peer::cleanup_dead_nodes();
        }
        let (messages, seconds) = r.map_err(|e| {
            format!(
                "measurement {} {} {} size {} failed: {e}",
                spec.peer,
                spec.pattern.name(),
                spec.direction.name(),
                spec.size
            )
        })?;
        if messages != spec.messages || !(seconds > 0.0) {
            return Err(format!(
                "measurement {} {} {} size {}: receiver counted {messages} of {} messages in {seconds} s",
                spec.peer,
                spec.pattern.name(),
                spec.direction.name(),
                spec.size,
                spec.messages
            ));
        }
        let m = Measured { spec, messages, seconds };
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

/// Writes to stdout; a closed stdout is an error, not a panic.
fn out(s: &str) -> Result<(), String> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes()).and_then(|_| o.flush()).map_err(|e| format!("writing to stdout: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__child") {
        return match child::child_main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench-peers child {:?}: error: {e}", args.get(1));
                ExitCode::from(2)
            }
        };
    }
    let o = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-peers: {e}");
            return ExitCode::from(2);
        }
    };
    let r = if o.round_trips { round_trips::run(&o) } else { run_main(o) };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-peers: error: {e}");
            ExitCode::FAILURE
        }
    }
}
