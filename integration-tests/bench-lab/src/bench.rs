//! The transport matrix: for every transport this build can use between
//! processes, a round trip over the raw OS path and over switchyard,
//! measured in the same run, in one table.
//!
//! `switchyard-bench` (this crate's binary) runs it. The server side runs
//! in a child process: a switchyard `Server` with an `echo`
//! service (for pipes: `process::serve_parent` in a child started by
//! `process::Spawner`; for shared memory the same server, reached by name),
//! or a raw echo loop over a socket, the child's stdin/stdout, or two
//! busy-polled shared-memory rings ([`crate::bench_shm`]). The binary
//! re-executes itself with `SWITCHYARD_BENCH_CHILD` naming the child's role.
//! Client and child are pinned to CPUs 0 and 1 when the machine has two or
//! more (`SWITCHYARD_BENCH_PIN=0` turns that off).
//!
//! Per path: p50/p99 of a 64-byte round trip (one call at a time), calls/s
//! with 32 calls in flight on one connection, the ratios to the raw path of
//! the same kind, and the CPU time each side spent per call in both phases.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use switchyard::{Channel, Server, Transport};

/// The benchmarked service.
#[switchyard::service]
pub(crate) trait Bench {
    /// Returns its argument.
    async fn echo(&self, data: switchyard::Bytes) -> switchyard::Bytes;
    /// Records how long the call took to arrive: now minus `sent_at_ns`
    /// (both [`clock_ns`]).
    #[switchyard(oneway)]
    async fn sink(&self, sent_at_ns: u64, data: Vec<u8>);
    /// `sink` calls received so far, and the p50 and p99 of their one-way
    /// latency, ns.
    async fn sunk(&self) -> (u64, u64, u64);
}

/// The server side: echoes, and keeps the one-way latencies of `sink`.
pub(crate) struct Echo {
    sunk: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl Echo {
    pub(crate) fn new() -> Result<Self, String> {
        Ok(Self {
            sunk: AtomicU64::new(0),
            latency: Mutex::new(histogram()?),
        })
    }
}

impl Bench for Echo {
    async fn echo(&self, data: switchyard::Bytes) -> switchyard::Bytes {
        data
    }

    async fn sink(&self, sent_at_ns: u64, data: Vec<u8>) {
        let latency = clock_ns().saturating_sub(sent_at_ns);
        drop(data);
        if let Ok(mut hist) = self.latency.lock() {
            let _ = hist.record(latency);
        }
        // After recording: a count that includes this call means its latency
        // is in the histogram.
        self.sunk.fetch_add(1, Ordering::Release);
    }

    async fn sunk(&self) -> (u64, u64, u64) {
        let count = self.sunk.load(Ordering::Acquire);
        match self.latency.lock() {
            Ok(hist) => (
                count,
                hist.value_at_quantile(0.5),
                hist.value_at_quantile(0.99),
            ),
            Err(_) => (count, 0, 0),
        }
    }
}

/// Wall-clock time, ns since the Unix epoch: `CLOCK_REALTIME`, one clock for
/// every process of the machine, so a time taken in one process can be
/// subtracted from one taken in another (one-way latency). `CLOCK_MONOTONIC`
/// would be immune to clock steps, but rustix's `time` feature, which reads
/// it, is not enabled in this crate.
pub(crate) fn clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The largest frame the `switchyard` child accepts (the shm bulk rows of
/// `bench_bulk` echo 64 MiB).
pub(crate) const BULK_MAX_FRAME: u32 = 128 << 20;

/// Payload size of every round trip, bytes.
pub(crate) const MESSAGE: usize = 64;
/// Calls in flight in the throughput phase.
pub(crate) const CONCURRENCY: usize = 32;
/// Set in a child process: its role (`raw-unix`, `raw-tcp`, `raw-pipe`,
/// `raw-shm`, `switchyard`, `switchyard-pipe`, and those of
/// [`crate::bench_extra`] and `bench_quic`). Roles ending in `pipe` talk over
/// their stdin and stdout.
pub(crate) const CHILD_ENV: &str = "SWITCHYARD_BENCH_CHILD";
/// Set in a child process: the scratch directory.
pub(crate) const DIR_ENV: &str = "SWITCHYARD_RUNTIME_DIR";
/// The shared-memory pool limit of the `switchyard` child's server, in
/// bytes, when set (0: no pool; the bulk table's "regions" rows).
pub(crate) const POOL_ENV: &str = "SWITCHYARD_BENCH_POOL_LIMIT";
/// The longest the shm children and clients spin before they sleep, in
/// µs, when set (e.g. 2000 to busy-poll as iceoryx2's figures do); else
/// switchyard's default.
pub(crate) const SPIN_ENV: &str = "SWITCHYARD_BENCH_SHM_SPIN_US";
/// Set (to anything) in the `switchyard` child: its server reads request
/// bodies in place (the bulk table's "loan" rows).
pub(crate) const IN_PLACE_ENV: &str = "SWITCHYARD_BENCH_READ_IN_PLACE";

/// What the raw baseline of shm is, printed and reported with its row.
pub(crate) const SPIN_RING_NOTE: &str = "raw spin ring: two shared-memory rings (switchyard's \
     own ring code), one each way, that both processes busy-poll with no system call per \
     message, each using a whole CPU: the floor for same-host IPC, not an OS facility";

/// What the raw baseline of quic is, printed and reported with its row.
pub(crate) const RAW_QUINN_NOTE: &str = "raw quinn: plain quinn with switchyard's TLS (1.3, ring, \
     ALPN switchyard/1, pinned self-signed certificate) and QUIC transport settings; per call the \
     client opens a bidirectional stream, writes the 64 bytes and finishes it, the server reads \
     to the end, writes them back and finishes, the client reads to the end; the server spawns \
     a task per stream";

/// How long to measure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// Measured round trips, one at a time.
    pub(crate) iterations: u64,
    /// Round trips before measuring.
    pub(crate) warmup: u64,
    /// How long the throughput phase runs.
    pub(crate) throughput_for: Duration,
}

impl Settings {
    /// The full run: 100 000 round trips after 10 000, 3 s of throughput.
    pub(crate) fn full() -> Self {
        Self {
            iterations: 100_000,
            warmup: 10_000,
            throughput_for: Duration::from_secs(3),
        }
    }

    /// A short run for a quick look (noisier).
    pub(crate) fn quick() -> Self {
        Self {
            iterations: 5_000,
            warmup: 500,
            throughput_for: Duration::from_millis(500),
        }
    }

    /// One sentence on what is measured.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{MESSAGE}-byte round trips: {} measured one at a time after {} warm-up; \
             calls/s over {:.1} s with {CONCURRENCY} calls in flight on one connection",
            self.iterations,
            self.warmup,
            self.throughput_for.as_secs_f64()
        )
    }
}

/// CPU time per call, µs, of each side (None where /proc could not tell).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Cpu {
    /// The calling process.
    pub(crate) client_us: Option<f64>,
    /// The serving child.
    pub(crate) server_us: Option<f64>,
}

impl Cpu {
    /// `client+server`, e.g. `4.1+4.3`.
    pub(crate) fn text(&self) -> String {
        let one = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.1}"));
        format!("{}+{}", one(self.client_us), one(self.server_us))
    }
}

/// What one path measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Figures {
    /// Median round trip, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile round trip, µs.
    pub(crate) p99_us: f64,
    /// Calls per second with [`CONCURRENCY`] in flight.
    pub(crate) calls_per_s: f64,
    /// CPU per call, one call at a time.
    pub(crate) cpu_one: Cpu,
    /// CPU per call, [`CONCURRENCY`] in flight.
    pub(crate) cpu_many: Cpu,
}

impl Figures {
    /// The figures of a run: round trips in `hist` (ns), `done` calls in
    /// `elapsed` with [`CONCURRENCY`] in flight, and the CPU per call.
    fn measured(
        hist: &Histogram<u64>,
        done: u64,
        elapsed: Duration,
        cpu_one: Cpu,
        cpu_many: Cpu,
    ) -> Self {
        Self {
            p50_us: micros(hist, 0.5),
            p99_us: micros(hist, 0.99),
            calls_per_s: done as f64 / elapsed.as_secs_f64(),
            cpu_one,
            cpu_many,
        }
    }
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Row {
    /// `raw unix socket`, `switchyard unix`, ...
    pub(crate) path: String,
    /// The transport's lower-case name.
    pub(crate) transport: &'static str,
    /// The figures.
    pub(crate) figures: Figures,
    /// The raw path of the same kind, for switchyard rows.
    pub(crate) base: Option<Figures>,
}

impl Row {
    /// Whether this is a raw OS path.
    pub(crate) fn is_raw(&self) -> bool {
        self.base.is_none()
    }

    /// p50, p99 and calls/s, each over the raw path's.
    pub(crate) fn ratios(&self) -> Option<[f64; 3]> {
        let (f, b) = (&self.figures, self.base.as_ref()?);
        Some([
            f.p50_us / b.p50_us,
            f.p99_us / b.p99_us,
            f.calls_per_s / b.calls_per_s,
        ])
    }
}

/// A whole run.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// What was measured.
    pub(crate) settings: Settings,
    /// Whether client and server were pinned to CPUs 0 and 1.
    pub(crate) pinned: bool,
    /// Raw, then switchyard, per transport.
    pub(crate) rows: Vec<Row>,
    /// Transports not measured, and why.
    pub(crate) skipped: Vec<(Transport, &'static str)>,
}

/// In a child process (the environment names its role): serves, and returns
/// true once done. In the parent: returns false at once.
pub(crate) fn run_child_if_asked() -> bool {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return false;
    };
    // Children that announce an address get a stdin the parent holds open:
    // when it goes (even killed), so do they. The pipe children end with
    // their pipes.
    if !role.ends_with("pipe") {
        std::thread::spawn(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(0);
        });
    }
    pin(1);
    if let Err(err) = child(&role) {
        eprintln!("switchyard-bench child {role}: {err}");
        std::process::exit(1);
    }
    true
}

/// The transports measured, in table order, and those skipped with why.
/// A non-empty `only` keeps just those transports (the rest are left out
/// of both lists).
fn matrix(only: &[Transport]) -> (Vec<Transport>, Vec<(Transport, &'static str)>) {
    let mut measured = Vec::new();
    let mut skipped = Vec::new();
    let wanted = |t: &Transport| only.is_empty() || only.contains(t);
    for transport in Transport::ALL.into_iter().filter(wanted) {
        match transport {
            // In-process only: there is no OS path between processes to compare.
            Transport::Memory => {}
            Transport::Pipe
            | Transport::Shm
            | Transport::Unix
            | Transport::Tcp
            | Transport::Quic
                if transport.is_available() =>
            {
                measured.push(transport);
            }
            Transport::MessageQueue if transport.is_available() => {
                skipped.push((transport, "one-way only: see the message-queue table"));
            }
            Transport::Mmap if transport.is_available() => {
                skipped.push((transport, "large bodies only: see the shm bulk table"));
            }
            _ if transport.is_available() => {
                skipped.push((transport, "the bench has no raw baseline for it yet"));
            }
            _ => skipped.push((transport, "not implemented in this version")),
        }
    }
    (measured, skipped)
}

/// Runs the matrix (only the transports in `only`, unless it is empty),
/// printing each row as it is measured.
pub(crate) fn run(settings: Settings, only: &[Transport]) -> Result<Outcome, String> {
    let pinned = pinning();
    pin(0);
    let dir = ScratchDir::new()?;
    let (measured, skipped) = matrix(only);
    println!(
        "{}; pinned to CPUs 0 and 1: {}",
        settings.describe(),
        if pinned { "yes" } else { "no" }
    );
    println!(
        "cpu µs/call: CPU time per call of client+server, one call at a time (@1) \
         and with {CONCURRENCY} in flight (@{CONCURRENCY})"
    );
    if measured.contains(&Transport::Shm) {
        println!("{SPIN_RING_NOTE}");
    }
    if measured.contains(&Transport::Quic) {
        println!("{RAW_QUINN_NOTE}");
    }
    println!("{}", text_header());
    let mut rows = Vec::new();
    for &transport in &measured {
        let kind = transport.as_str();
        let raw = raw_figures(kind, dir.path(), &settings)?;
        let raw_row = Row {
            path: raw_path(transport),
            transport: kind,
            figures: raw,
            base: None,
        };
        println!("{}", text_row(&raw_row));
        let ours = switchyard_figures(kind, dir.path(), &settings)?;
        let row = Row {
            path: format!("switchyard {kind}"),
            transport: kind,
            figures: ours,
            base: Some(raw),
        };
        println!("{}", text_row(&row));
        rows.push(raw_row);
        rows.push(row);
        if transport == Transport::Shm {
            println!("{}", crate::bench_parked::line(dir.path(), &settings)?);
        }
    }
    #[cfg(all(feature = "quic", target_os = "linux"))]
    if measured.contains(&Transport::Quic) {
        match crate::bench_quic::veth_rows(&settings) {
            Ok(pair) => {
                for row in pair {
                    println!("{}", text_row(&row));
                    rows.push(row);
                }
            }
            Err(why) => println!("quic over veth not measured: {why}"),
        }
    }
    let not_measured = skipped_text(&skipped);
    if !not_measured.is_empty() {
        println!("not measured: {}", not_measured.join("; "));
    }
    Ok(Outcome {
        settings,
        pinned,
        rows,
        skipped,
    })
}

/// The name of the raw path a transport is compared with: the same OS
/// mechanism without switchyard, or for shared memory the best a same-host
/// IPC can do (two busy-polled rings).
fn raw_path(transport: Transport) -> String {
    match transport {
        Transport::Pipe => "raw pipe pair".to_owned(),
        Transport::Shm => "raw spin ring".to_owned(),
        Transport::Quic => "raw quinn".to_owned(),
        other => format!("raw {other} socket"),
    }
}

/// The skipped transports grouped by reason: `shm, quic (not implemented in
/// this version)`.
pub(crate) fn skipped_text(skipped: &[(Transport, &'static str)]) -> Vec<String> {
    let mut reasons: Vec<&str> = skipped.iter().map(|(_, why)| *why).collect();
    reasons.sort_unstable();
    reasons.dedup();
    reasons
        .into_iter()
        .map(|why| {
            let names: Vec<&str> = skipped
                .iter()
                .filter(|(_, w)| *w == why)
                .map(|(t, _)| t.as_str())
                .collect();
            format!("{} ({why})", names.join(", "))
        })
        .collect()
}

const TEXT_WIDTHS: [usize; 9] = [22, 9, 9, 12, 10, 10, 10, 12, 12];

fn text_line(cells: [&str; 9]) -> String {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(TEXT_WIDTHS).enumerate() {
        if i == 0 {
            let _ = write!(line, "{cell:<width$}");
        } else {
            let _ = write!(line, " {cell:>width$}");
        }
    }
    line.trim_end().to_owned()
}

fn text_header() -> String {
    let many = format!("cpu@{CONCURRENCY}");
    text_line([
        "path",
        "p50 µs",
        "p99 µs",
        "calls/s",
        "p50 ratio",
        "p99 ratio",
        "tput ratio",
        "cpu@1",
        &many,
    ])
}

fn text_row(row: &Row) -> String {
    let f = &row.figures;
    let ratios = row
        .ratios()
        .map(|r| r.map(|x| format!("{x:.2}x")))
        .unwrap_or_default();
    text_line([
        &row.path,
        &format!("{:.1}", f.p50_us),
        &format!("{:.1}", f.p99_us),
        &format!("{:.0}", f.calls_per_s),
        &ratios[0],
        &ratios[1],
        &ratios[2],
        &f.cpu_one.text(),
        &f.cpu_many.text(),
    ])
}

pub(crate) fn pinning() -> bool {
    // The machine's CPU count, not this process's affinity mask (which
    // pinning itself narrows to one CPU).
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let several = online.trim().contains(['-', ',']);
    std::env::var("SWITCHYARD_BENCH_PIN").as_deref() != Ok("0") && several
}

pub(crate) fn pin(cpu: usize) {
    if !pinning() {
        return;
    }
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Lets this thread (and the processes it starts from now on) run on every
/// CPU again, undoing [`pin`].
pub(crate) fn unpin() {
    // Every CPU the set can name (the kernel keeps those that exist;
    // available_parallelism would count only the pinned one).
    let mut set = rustix::thread::CpuSet::new();
    for cpu in 0..rustix::thread::CpuSet::MAX_CPU {
        set.set(cpu);
    }
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// A private directory for the children's sockets and registry, removed on
/// drop, with the message queue the `switchyard` children made for it.
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(crate) fn new() -> Result<Self, String> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("switchyard-bench-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|err| {
                format!(
                    "creating a scratch directory {}: {err}; set TMPDIR to a writable directory",
                    path.display()
                )
            })?;
        Ok(Self(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // The servers are killed, so they leave their queue behind (queues
        // outlive their server by design).
        #[cfg(target_os = "linux")]
        let _ = switchyard::sys::mqueue::unlink(
            &switchyard::transport::mqueue::service_queue_name(&self.0, BENCH_DESCRIPTOR.name),
        );
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed and reaped on drop.
pub(crate) struct ChildGuard(pub(crate) Child);

impl ChildGuard {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The child's stdin, to write to it; closing it ends the child.
    pub(crate) fn take_stdin(&mut self) -> Result<ChildStdin, String> {
        self.0
            .stdin
            .take()
            .ok_or_else(|| "the child's stdin is not piped".to_owned())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This binary, set up to run as a child in `role`.
pub(crate) fn child_command(role: &str) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|err| format!("finding this binary: {err}"))?;
    let mut command = Command::new(exe);
    command.env(CHILD_ENV, role);
    Ok(command)
}

/// Starts this binary as a child in `role` with `env` added, its stdin and
/// stdout piped; returns it (holding its stdin: see
/// [`ChildGuard::take_stdin`]) and its stdout.
pub(crate) fn spawn_role(
    role: &str,
    env: &[(&str, &OsStr)],
) -> Result<(ChildGuard, ChildStdout), String> {
    spawn_command(child_command(role)?, role, env)
}

/// [`spawn_role`] with `command` (one that runs this binary as a child in
/// `role`, perhaps through a wrapper such as `ip netns exec`).
fn spawn_command(
    mut command: Command,
    role: &str,
    env: &[(&str, &OsStr)],
) -> Result<(ChildGuard, ChildStdout), String> {
    command.envs(env.iter().copied());
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map(ChildGuard)
        .map_err(|err| format!("starting the {role} child: {err}"))?;
    let stdout = child
        .0
        .stdout
        .take()
        .ok_or("the child's stdout is not piped")?;
    Ok((child, stdout))
}

/// Starts this binary as a child in `role` with `env` added, and waits for
/// the first line it prints (`what`: its address, its queue...). Its stdin
/// stays open in the guard: when that closes (even killed), the child exits.
pub(crate) fn spawn_announcing(
    role: &str,
    env: &[(&str, &OsStr)],
    what: &str,
) -> Result<(ChildGuard, BufReader<ChildStdout>, String), String> {
    announcing(child_command(role)?, role, env, what)
}

/// [`spawn_announcing`] with `command` (see [`spawn_command`]).
pub(crate) fn announcing(
    command: Command,
    role: &str,
    env: &[(&str, &OsStr)],
    what: &str,
) -> Result<(ChildGuard, BufReader<ChildStdout>, String), String> {
    let (child, stdout) = spawn_command(command, role, env)?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    let line = line.trim().to_owned();
    if line.is_empty() {
        return Err(format!(
            "the {role} child exited before printing {what}; its error is above"
        ));
    }
    Ok((child, stdout, line))
}

/// Starts this binary as a child in `role` serving in the scratch
/// directory `dir`; it prints its address first.
pub(crate) fn spawn_child(role: &str, dir: &Path) -> Result<(ChildGuard, String), String> {
    spawn_child_with(role, dir, &[])
}

/// [`spawn_child`] with more environment for the child.
pub(crate) fn spawn_child_with(
    role: &str,
    dir: &Path,
    env: &[(&str, &OsStr)],
) -> Result<(ChildGuard, String), String> {
    let mut all = vec![(DIR_ENV, dir.as_os_str())];
    all.extend_from_slice(env);
    let (child, _stdout, addr) = spawn_announcing(role, &all, "its address")?;
    Ok((child, addr))
}

/// Starts this binary as a `process::Spawner` child serving `echo` to its
/// parent over inherited pipes.
pub(crate) async fn spawn_switchyard_pipe() -> Result<switchyard::process::ChildProcess, String> {
    let mut command = child_command("switchyard-pipe")?;
    command.stdin(Stdio::null());
    switchyard::process::Spawner::new(command)
        .spawn()
        .await
        .map_err(|e| format!("starting the switchyard-pipe child: {e}"))
}

/// Prints a line for the parent, which reads it (see [`spawn_announcing`]),
/// and flushes it.
pub(crate) fn announce(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn child(role: &str) -> Result<(), String> {
    let dir = || {
        std::env::var_os(DIR_ENV)
            .map(PathBuf::from)
            .ok_or("SWITCHYARD_RUNTIME_DIR is not set")
    };
    match role {
        "raw-unix" => {
            let path = dir()?.join("raw.sock");
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).map_err(|e| format!("bind: {e}"))?;
            announce(&path.display().to_string());
            let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            raw_echo(stream);
        }
        "raw-tcp" => {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
            let addr = listener.local_addr().map_err(|e| format!("address: {e}"))?;
            announce(&addr.to_string());
            let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            stream
                .set_nodelay(true)
                .map_err(|e| format!("nodelay: {e}"))?;
            raw_echo(stream);
        }
        "raw-pipe" => {
            // Unbuffered copies of stdin and stdout (std's are buffered).
            let input = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("stdin: {e}"))?;
            let output = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("stdout: {e}"))?;
            raw_echo(Duplex(File::from(input), File::from(output)));
        }
        #[cfg(target_os = "linux")]
        "raw-shm" => {
            let rings = crate::bench_shm::attach()?;
            announce("attached");
            raw_echo(rings);
        }
        "switchyard-pipe" => {
            let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
            runtime.block_on(async {
                switchyard::process::serve_parent(
                    switchyard::process::Services::new()
                        .add_service(BenchServer::new(Echo::new()?)),
                )
                .await
                .map_err(|e| format!("serving the parent: {e}"))?;
                switchyard::process::parent_gone().await;
                Ok::<(), String>(())
            })?;
        }
        "switchyard" => {
            let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
            runtime.block_on(async {
                let mut server = Server::builder()
                    .add_service(BenchServer::new(Echo::new()?))
                    .tcp("127.0.0.1:0")
                    .runtime_dir(dir()?)
                    // The shm bulk rows echo 64 MiB.
                    .max_frame(BULK_MAX_FRAME);
                if let Some(limit) = std::env::var(POOL_ENV).ok().and_then(|v| v.parse().ok()) {
                    server = server.shm_pool_limit(limit);
                }
                if let Some(us) = std::env::var(SPIN_ENV).ok().and_then(|v| v.parse().ok()) {
                    server = server.shm_spin(Duration::from_micros(us));
                }
                if std::env::var_os(IN_PLACE_ENV).is_some() {
                    server = server.shm_read_in_place(true);
                }
                let server = server.start().await.map_err(|e| format!("server: {e}"))?;
                announce(&server.endpoints().join(" "));
                // Runs until the parent kills it or closes our stdin.
                std::future::pending::<()>().await;
                Ok::<(), String>(())
            })?;
        }
        #[cfg(feature = "quic")]
        "raw-quic" | "switchyard-quic" => return crate::bench_quic::child(role),
        streams if streams.starts_with("streams-") => return crate::bench_streams::child(streams),
        layers if layers.starts_with("layers-") => return crate::bench_layers::child(layers),
        compress if compress.starts_with("compress-") => {
            return crate::bench_compress::child(compress);
        }
        other => return crate::bench_extra::child(other),
    }
    Ok(())
}

/// A reading half and a writing half as one stream.
pub(crate) struct Duplex<R, W>(pub(crate) R, pub(crate) W);

impl<R: Read, W> Read for Duplex<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R, W: Write> Write for Duplex<R, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.1.flush()
    }
}

/// Echoes fixed-size messages until the peer closes.
pub(crate) fn raw_echo<S: Read + Write>(mut stream: S) {
    let mut buf = [0u8; MESSAGE];
    while stream.read_exact(&mut buf).is_ok() {
        if stream.write_all(&buf).is_err() {
            return;
        }
    }
}

/// CPU time a process has used, ns: the sum of its threads' run time from
/// `/proc/<pid>/task/*/schedstat` (ns resolution), else utime+stime from
/// `/proc/<pid>/stat` (clock ticks). The threads of both sides live through
/// a whole phase, so differences between two readings are exact.
fn cpu_ns(pid: u32) -> Option<u64> {
    let from_schedstat = || -> Option<u64> {
        let mut total = 0u64;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(total)
    };
    from_schedstat().or_else(|| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised name, which may hold spaces; utime
        // and stime are fields 14 and 15 of the whole line.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let per_s = rustix::param::clock_ticks_per_second().max(1);
        Some(ticks * 1_000_000_000 / per_s)
    })
}

/// CPU readings of both sides at one moment.
#[derive(Clone, Copy)]
pub(crate) struct CpuMark {
    client: Option<u64>,
    server: Option<u64>,
}

impl CpuMark {
    pub(crate) fn now(child: u32) -> Self {
        Self {
            client: cpu_ns(std::process::id()),
            server: cpu_ns(child),
        }
    }

    /// CPU per call since `self`.
    pub(crate) fn per_call(self, later: Self, calls: u64) -> Cpu {
        let per = |a: Option<u64>, b: Option<u64>| {
            let (a, b) = (a?, b?);
            (calls > 0).then(|| b.saturating_sub(a) as f64 / 1000.0 / calls as f64)
        };
        Cpu {
            client_us: per(self.client, later.client),
            server_us: per(self.server, later.server),
        }
    }
}

pub(crate) fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new(3).map_err(|e| format!("histogram: {e}"))
}

pub(crate) fn micros(hist: &Histogram<u64>, q: f64) -> f64 {
    hist.value_at_quantile(q) as f64 / 1000.0
}

fn raw_figures(kind: &str, dir: &Path, s: &Settings) -> Result<Figures, String> {
    if kind == "pipe" {
        // The child echoes its stdin to its stdout.
        let (mut child, output) = spawn_role("raw-pipe", &[])?;
        let input = child.take_stdin()?;
        return raw_run(Duplex(output, input), &child, s);
    }
    #[cfg(target_os = "linux")]
    if kind == "shm" {
        return crate::bench_shm::raw_figures(s);
    }
    #[cfg(feature = "quic")]
    if kind == "quic" {
        return crate::bench_quic::raw_figures(s);
    }
    let (child, addr) = spawn_child(&format!("raw-{kind}"), dir)?;
    let connect_err =
        |e: std::io::Error| format!("connecting to the raw {kind} child at {addr}: {e}");
    match kind {
        "unix" => raw_run(UnixStream::connect(&addr).map_err(connect_err)?, &child, s),
        _ => {
            let stream = TcpStream::connect(&addr).map_err(connect_err)?;
            stream
                .set_nodelay(true)
                .map_err(|e| format!("nodelay: {e}"))?;
            raw_run(stream, &child, s)
        }
    }
}

/// Round trips of [`MESSAGE`] bytes over `stream` to `child`, which echoes
/// them: one at a time, then [`CONCURRENCY`] in flight.
pub(crate) fn raw_run<S: Read + Write>(
    mut stream: S,
    child: &ChildGuard,
    s: &Settings,
) -> Result<Figures, String> {
    let io = |e: std::io::Error| format!("raw round trip: {e}");
    let mut hist = histogram()?;
    let out = [7u8; MESSAGE];
    let mut back = [0u8; MESSAGE];
    let before = CpuMark::now(child.pid());
    for i in 0..s.warmup + s.iterations {
        let start = Instant::now();
        stream.write_all(&out).map_err(io)?;
        stream.read_exact(&mut back).map_err(io)?;
        if i >= s.warmup {
            let _ = hist.record(start.elapsed().as_nanos() as u64);
        }
    }
    let cpu_one = before.per_call(CpuMark::now(child.pid()), s.warmup + s.iterations);
    // Throughput with CONCURRENCY messages in flight.
    for _ in 0..CONCURRENCY {
        stream.write_all(&out).map_err(io)?;
    }
    let before = CpuMark::now(child.pid());
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < s.throughput_for {
        stream.read_exact(&mut back).map_err(io)?;
        stream.write_all(&out).map_err(io)?;
        done += 1;
    }
    let elapsed = start.elapsed();
    let cpu_many = before.per_call(CpuMark::now(child.pid()), done);
    for _ in 0..CONCURRENCY {
        stream.read_exact(&mut back).map_err(io)?;
    }
    Ok(Figures::measured(&hist, done, elapsed, cpu_one, cpu_many))
}

/// Keeps the serving child alive while measuring; kills it on drop.
pub(crate) enum Serving {
    /// Started by `spawn_child`, reached by address or name.
    Addressed(ChildGuard),
    /// Started by `process::Spawner`, reached over inherited pipes.
    Piped(switchyard::process::ChildProcess),
}

impl Serving {
    pub(crate) fn pid(&self) -> u32 {
        match self {
            Self::Addressed(child) => child.pid(),
            Self::Piped(child) => child.id(),
        }
    }
}

/// Starts the serving child for `kind` and connects to it: the child, the
/// channel, and what it was reached at (for messages).
pub(crate) async fn connect_switchyard(
    kind: &str,
    dir: &Path,
) -> Result<(Serving, Channel, String), String> {
    if kind == "pipe" {
        let child = spawn_switchyard_pipe().await?;
        let channel = child.channel();
        return Ok((Serving::Piped(child), channel, "the pipes".to_owned()));
    }
    #[cfg(feature = "quic")]
    if kind == "quic" {
        return crate::bench_quic::connect_switchyard(None).await;
    }
    let (child, endpoints) = spawn_child("switchyard", dir)?;
    let (channel, target) = if kind == "shm" {
        connect_shm(dir).await?
    } else {
        connect_endpoint(kind, &endpoints).await?
    };
    Ok((Serving::Addressed(child), channel, target))
}

/// Connects to the `kind` endpoint among the child's `endpoints`.
async fn connect_endpoint(kind: &str, endpoints: &str) -> Result<(Channel, String), String> {
    let target = endpoints
        .split(' ')
        .find(|e| switchyard::transport::Endpoint::scheme_of(e) == Some(kind))
        .ok_or_else(|| format!("the switchyard child offers no {kind} endpoint: {endpoints}"))?
        .to_owned();
    // Demanded: a same-host tcp:// connection would otherwise move to
    // shared memory after the handshake.
    let transport =
        Transport::from_name(kind).ok_or_else(|| format!("{kind} is not a transport"))?;
    let channel = Channel::builder()
        .prefer(transport)
        .connect(&target)
        .await
        .map_err(|e| format!("connecting to {target}: {e}"))?;
    let selection = channel.selection();
    if selection.transport != transport {
        return Err(format!(
            "the {kind} row needs {kind}, but connecting to {target} selected {selection}"
        ));
    }
    Ok((channel, target))
}

/// Connects to the child by the name it published in `dir`'s registry,
/// which on the same host selects shared memory; an error if it did not.
pub(crate) async fn connect_shm(dir: &Path) -> Result<(Channel, String), String> {
    connect_shm_with(dir, None, false).await
}

/// [`connect_shm`] with the client's shared-memory pool limited to
/// `pool_limit` bytes (0: no pool), when given, reading the server's
/// bodies in place if `in_place`.
pub(crate) async fn connect_shm_with(
    dir: &Path,
    pool_limit: Option<usize>,
    in_place: bool,
) -> Result<(Channel, String), String> {
    let name = BENCH_DESCRIPTOR.name;
    let mut builder = Channel::builder()
        .runtime_dir(dir)
        // The shm bulk rows (`bench_bulk`) echo 64 MiB.
        .max_frame(BULK_MAX_FRAME);
    if let Some(limit) = pool_limit {
        builder = builder.shm_pool_limit(limit);
    }
    if in_place {
        builder = builder.shm_read_in_place(true);
    }
    if let Some(us) = std::env::var(SPIN_ENV).ok().and_then(|v| v.parse().ok()) {
        builder = builder.shm_spin(Duration::from_micros(us));
    }
    let channel = builder
        .connect(name)
        .await
        .map_err(|e| format!("connecting to {name} by name: {e}"))?;
    let selection = channel.selection();
    if selection.transport != Transport::Shm {
        return Err(format!(
            "the shm rows need shared memory, but connecting to {name} by name selected \
             {selection}"
        ));
    }
    Ok((channel, format!("shm (by name {name})")))
}

fn switchyard_figures(kind: &str, dir: &Path, s: &Settings) -> Result<Figures, String> {
    echo_figures(s, connect_switchyard(kind, dir))
}

/// Round trips of `echo` calls over the channel `connect` opens to its
/// serving child.
pub(crate) fn echo_figures(
    s: &Settings,
    connect: impl Future<Output = Result<(Serving, Channel, String), String>>,
) -> Result<Figures, String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async move {
        let (serving, channel, target) = connect.await?;
        let client = BenchClient::new(channel);
        let payload = switchyard::Bytes::from(vec![7u8; MESSAGE]);
        let target = std::sync::Arc::new(target);
        let figures = measure_calls(serving.pid(), s, move || {
            let (client, payload, target) = (client.clone(), payload.clone(), target.clone());
            async move {
                let back = client
                    .echo(payload)
                    .await
                    .map_err(|e| format!("echo over {target}: {e}"))?;
                debug_assert_eq!(back.len(), MESSAGE);
                Ok(())
            }
        })
        .await;
        drop(serving);
        figures
    })
}

/// Round trips made by `call` (each one whole call) to the child
/// `child_pid`: one at a time, then [`CONCURRENCY`] tokio tasks calling
/// in a loop for the throughput phase.
pub(crate) async fn measure_calls<C, F>(
    child_pid: u32,
    s: &Settings,
    call: C,
) -> Result<Figures, String>
where
    C: Fn() -> F + Clone + Send + 'static,
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut hist = histogram()?;
    let before = CpuMark::now(child_pid);
    for i in 0..s.warmup + s.iterations {
        let start = Instant::now();
        call().await?;
        if i >= s.warmup {
            let _ = hist.record(start.elapsed().as_nanos() as u64);
        }
    }
    let cpu_one = before.per_call(CpuMark::now(child_pid), s.warmup + s.iterations);
    let before = CpuMark::now(child_pid);
    let start = Instant::now();
    let until = start + s.throughput_for;
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < until {
                call().await?;
                done += 1;
            }
            Ok::<u64, String>(done)
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += task
            .await
            .map_err(|e| format!("a calling task failed: {e}"))??;
    }
    let elapsed = start.elapsed();
    let cpu_many = before.per_call(CpuMark::now(child_pid), done);
    Ok(Figures::measured(&hist, done, elapsed, cpu_one, cpu_many))
}

#[cfg(test)]
mod tests {
    // No `use super::*`: `cargo clippy --all-targets` also compiles this file
    // into the `unary` bench with cfg(test) but without the test harness,
    // where the tests vanish and the import would be unused.

    #[test]
    fn the_matrix_measures_what_is_available_and_names_the_rest() {
        use switchyard::Transport;
        let (measured, skipped) = super::matrix(&[]);
        let expected: Vec<Transport> = [
            Transport::Pipe,
            Transport::Shm,
            Transport::Unix,
            Transport::Tcp,
            Transport::Quic,
        ]
        .into_iter()
        .filter(|t| t.is_available())
        .collect();
        assert_eq!(measured, expected);
        assert_eq!(
            measured.contains(&Transport::Shm),
            cfg!(target_os = "linux")
        );
        assert!(!skipped.iter().any(|(t, _)| measured.contains(t)));
        assert!(!skipped.iter().any(|(t, _)| *t == Transport::Memory));
        let (only_tcp, none_skipped) = super::matrix(&[Transport::Tcp]);
        assert_eq!((only_tcp, none_skipped), (vec![Transport::Tcp], vec![]));
        assert_eq!(super::raw_path(Transport::Shm), "raw spin ring");
        assert_eq!(super::raw_path(Transport::Unix), "raw unix socket");
        assert_eq!(super::raw_path(Transport::Pipe), "raw pipe pair");
        assert_eq!(super::raw_path(Transport::Quic), "raw quinn");
        assert_eq!(
            super::skipped_text(&[
                (Transport::Shm, "not implemented in this version"),
                (Transport::Quic, "not implemented in this version"),
                (Transport::Pipe, "no baseline"),
            ]),
            [
                "pipe (no baseline)",
                "shm, quic (not implemented in this version)"
            ]
        );
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let a = super::cpu_ns(std::process::id()).expect("/proc readable");
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = super::cpu_ns(std::process::id()).expect("/proc readable");
        assert!(b >= a);
    }

    #[test]
    fn rows_compute_ratios_against_raw() {
        let raw = super::Figures {
            p50_us: 50.0,
            p99_us: 100.0,
            calls_per_s: 1000.0,
            ..super::Figures::default()
        };
        let ours = super::Figures {
            p50_us: 60.0,
            p99_us: 100.0,
            calls_per_s: 500.0,
            cpu_one: super::Cpu {
                client_us: Some(4.0),
                server_us: None,
            },
            ..super::Figures::default()
        };
        let row = super::Row {
            path: "switchyard unix".into(),
            transport: "unix",
            figures: ours,
            base: Some(raw),
        };
        assert_eq!(row.ratios(), Some([1.2, 1.0, 0.5]));
        assert!(!row.is_raw());
        let line = super::text_row(&row);
        assert!(line.contains("1.20x") && line.contains("4.0+?"), "{line}");
    }
}
