//! Child processes: spawning (the binary re-executes itself), CPU pinning,
//! line protocol on the child's stdout with deadlines, and stopping.
//!
//! Every child gets `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the
//! orchestrator even if that one is killed itself; the orchestrator kills
//! (SIGKILL) and reaps every child it started when a measurement ends, fails
//! or times out (`ChildSet::stop_all`, also run by `Drop`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use crate::PARENT_ENV;

/// The CPUs the orchestrator may use, from its own affinity mask.
pub struct Cpus {
    allowed: Vec<usize>,
    pin: bool,
}

impl Cpus {
    pub fn detect() -> Self {
        let mut allowed = Vec::new();
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                for cpu in 0..libc::CPU_SETSIZE as usize {
                    if libc::CPU_ISSET(cpu, &set) {
                        allowed.push(cpu);
                    }
                }
            }
        }
        let pin = allowed.len() >= 2 && std::env::var_os("BENCH_PEERS_NO_PIN").is_none();
        Cpus { allowed, pin }
    }

    /// CPU of the receiving/serving side (tonic server, iceoryx2 subscriber),
    /// or -1 for "not pinned".
    pub fn first(&self) -> i64 {
        if self.pin { self.allowed[0] as i64 } else { -1 }
    }

    /// CPU of the other side (tonic client, iceoryx2 publisher).
    pub fn second(&self) -> i64 {
        if self.pin { self.allowed[1] as i64 } else { -1 }
    }

    /// The round trips pin the other way round, as switchyard's own
    /// benchmark does: client on `first()`, server on `second()`.
    pub fn describe_round_trips(&self) -> String {
        if self.pin {
            format!(
                "clients pinned to CPU {}, servers to CPU {} ({} CPUs allowed)",
                self.allowed[0],
                self.allowed[1],
                self.allowed.len()
            )
        } else {
            format!("processes not pinned ({} CPUs allowed)", self.allowed.len())
        }
    }

    pub fn describe(&self) -> String {
        if self.pin {
            format!(
                "tonic server / iceoryx2 subscriber pinned to CPU {}, tonic client / iceoryx2 publisher to CPU {} ({} CPUs allowed)",
                self.allowed[0],
                self.allowed[1],
                self.allowed.len()
            )
        } else {
            format!("processes not pinned ({} CPUs allowed)", self.allowed.len())
        }
    }
}

/// Pins the calling thread (and so every thread it creates afterwards) to one
/// CPU; `cpu < 0` leaves the affinity alone.
pub fn pin_to(cpu: i64) -> Result<(), String> {
    if cpu < 0 {
        return Ok(());
    }
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("sched_setaffinity(CPU {cpu}): {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

struct Proc {
    name: String,
    child: Child,
    lines: Receiver<String>,
    stdin: Option<ChildStdin>,
    reaped: bool,
}

/// The children of one measurement.
pub struct ChildSet {
    procs: Vec<Proc>,
}

impl ChildSet {
    pub fn new() -> Self {
        ChildSet { procs: Vec::new() }
    }

    /// Starts `bench-peers __child <args>`; returns its index in the set.
    pub fn spawn(&mut self, name: &str, args: &[String]) -> Result<usize, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("__child")
            .args(args)
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        unsafe {
            cmd.pre_exec(|| {
                // Die with the orchestrator, whatever kills it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawning {name}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        self.procs.push(Proc { name: name.to_string(), child, lines: rx, stdin, reaped: false });
        Ok(self.procs.len() - 1)
    }

    /// Waits until child `idx` prints a line starting with `prefix`; returns
    /// the rest of that line (trimmed).
    pub fn expect(&mut self, idx: usize, prefix: &str, deadline: Instant) -> Result<String, String> {
        loop {
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now).min(Duration::from_millis(50));
            let p = &mut self.procs[idx];
            match p.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_string());
                    }
                    eprintln!("[{}] {line}", p.name);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if Instant::now() >= deadline {
                        return Err(format!("timed out waiting for {prefix:?} from {}", p.name));
                    }
                    // Fail fast when another child of the set has failed.
                    let waiting_for = self.procs[idx].name.clone();
                    for (i, o) in self.procs.iter_mut().enumerate() {
                        if i == idx {
                            continue;
                        }
                        if let Ok(Some(st)) = o.child.try_wait() {
                            o.reaped = true;
                            if !st.success() {
                                return Err(format!(
                                    "{} exited with {st} while waiting for {prefix:?} from {}",
                                    o.name, waiting_for
                                ));
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let p = &mut self.procs[idx];
                    // stdout closed: the child exited (or is exiting).
                    let status = wait_bounded(&mut p.child, Duration::from_secs(5));
                    return Err(format!("{} ended before printing {prefix:?} ({status})", p.name));
                }
            }
        }
    }

    /// Closes the stdin of child `idx` (the signal for a publisher to exit).
    pub fn close_stdin(&mut self, idx: usize) {
        self.procs[idx].stdin.take();
    }

    /// Waits for child `idx` to exit with success before `deadline`.
    pub fn wait_success(&mut self, idx: usize, deadline: Instant) -> Result<(), String> {
        let p = &mut self.procs[idx];
        loop {
            match p.child.try_wait() {
                Ok(Some(st)) => {
                    p.reaped = true;
                    return if st.success() { Ok(()) } else { Err(format!("{} exited with {st}", p.name)) };
                }
                Ok(None) => {}
                Err(e) => return Err(format!("waiting for {}: {e}", p.name)),
            }
            if Instant::now() >= deadline {
                return Err(format!("{} did not exit in time", p.name));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills (SIGKILL) and reaps every child still running.
    pub fn stop_all(&mut self) {
        for p in &mut self.procs {
            p.stdin.take();
            if p.reaped {
                continue;
            }
            if let Ok(Some(_)) = p.child.try_wait() {
                p.reaped = true;
                continue;
            }
            let _ = p.child.kill();
            // SIGKILL cannot be caught: the wait is short.
            let _ = p.child.wait();
            p.reaped = true;
        }
    }
}

impl Drop for ChildSet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return format!("{st}"),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => return "still running".to_string(),
            Err(e) => return format!("wait error: {e}"),
        }
    }
}

/// Prints one protocol line to the orchestrator and flushes it.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .ok_or_else(|| format!("missing argument {what}"))?
        .parse()
        .map_err(|_| format!("bad argument {what}: {:?}", args[i]))
}

/// Entry point of `bench-peers __child <role> ...`.
pub fn child_main(args: &[String]) -> Result<(), String> {
    let parent: u32 = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or("the __child roles are started by bench-peers itself")?;
    // PR_SET_PDEATHSIG was set before exec; if the parent died before that,
    // we were re-parented: stop now.
    if unsafe { libc::getppid() } as u32 != parent {
        return Err("parent is gone".into());
    }
    let role = args.first().ok_or("missing role")?;
    let rest = &args[1..];
    match role.as_str() {
        "tonic-server" => crate::tonic_peer::server_child(rest),
        "tonic-client" => crate::tonic_peer::client_child(rest),
        "ice-sub" => crate::ice_peer::subscriber_child(rest),
        "ice-pub" => crate::ice_peer::publisher_child(rest),
        "tonic-rt-client" => crate::tonic_rt::client_child(rest),
        "ice-rr-server" => crate::ice_rr::server_child(rest),
        "ice-rr-client" => crate::ice_rr::client_child(rest),
        "ice-bulk-server" => crate::ice_rr_bulk::server_child(rest),
        "ice-bulk-client" => crate::ice_rr_bulk::client_child(rest),
        "tarpc-server" => crate::tarpc_rt::server_child(rest),
        "tarpc-rt-client" => crate::tarpc_rt::client_child(rest),
        _ => Err(format!("unknown role {role:?}")),
    }
}
