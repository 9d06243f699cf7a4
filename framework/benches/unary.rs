//! Unary round trips over Unix sockets and TCP, each beside the raw socket
//! measured in the same run.
//!
//! `cargo bench -p switchyard --bench unary` (add `-- --quick` for a short
//! run). The server side (switchyard server or raw echo) runs in a child
//! process: this binary re-executes itself with `SWITCHYARD_BENCH_CHILD` set.
//! Client and child are pinned to different CPUs when the machine has two or
//! more (`SWITCHYARD_BENCH_PIN=0` turns that off).
//!
//! Printed per transport: p50/p99 of a 64-byte round trip (one call at a
//! time), and calls/s with 32 calls in flight; the raw figure of the same
//! socket kind and the ratio switchyard/raw.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use switchyard::{Channel, Server};

/// The benchmarked service.
#[switchyard::service]
pub trait Bench {
    /// Returns its argument.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
}

struct Echo;

impl Bench for Echo {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

const MESSAGE: usize = 64;
const CONCURRENCY: usize = 32;
const CHILD_ENV: &str = "SWITCHYARD_BENCH_CHILD";

struct Settings {
    iterations: u64,
    warmup: u64,
    throughput_for: Duration,
}

fn main() {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        pin(1);
        child(&role);
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let settings = if quick {
        Settings {
            iterations: 5_000,
            warmup: 500,
            throughput_for: Duration::from_millis(500),
        }
    } else {
        Settings {
            iterations: 100_000,
            warmup: 10_000,
            throughput_for: Duration::from_secs(3),
        }
    };
    pin(0);
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "unary 64-byte round trips; {} iterations after {} warm-up; {} calls in flight for calls/s; pinned: {}",
        settings.iterations,
        settings.warmup,
        CONCURRENCY,
        pinning()
    );
    println!(
        "{:<22} {:>9} {:>9} {:>12}   {:>10} {:>10} {:>9}",
        "path", "p50 µs", "p99 µs", "calls/s", "p50 ratio", "p99 ratio", "tput ratio"
    );
    for kind in ["unix", "tcp"] {
        let raw = raw_figures(kind, dir.path(), &settings);
        let ours = switchyard_figures(kind, dir.path(), &settings);
        print_row(&format!("raw {kind} socket"), &raw, None);
        print_row(&format!("switchyard {kind}"), &ours, Some(&raw));
    }
}

struct Figures {
    p50_us: f64,
    p99_us: f64,
    calls_per_s: f64,
}

fn print_row(name: &str, f: &Figures, base: Option<&Figures>) {
    let ratios = match base {
        Some(b) => format!(
            "{:>9.2}x {:>9.2}x {:>9.2}x",
            f.p50_us / b.p50_us,
            f.p99_us / b.p99_us,
            f.calls_per_s / b.calls_per_s
        ),
        None => String::new(),
    };
    println!(
        "{name:<22} {:>9.1} {:>9.1} {:>12.0}   {ratios}",
        f.p50_us, f.p99_us, f.calls_per_s
    );
}

fn pinning() -> bool {
    // Read the machine's CPU count, not this process's affinity mask (which
    // pinning itself narrows to one CPU).
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let several = online.trim().contains(['-', ',']);
    std::env::var("SWITCHYARD_BENCH_PIN").as_deref() != Ok("0") && several
}

fn pin(cpu: usize) {
    if !pinning() {
        return;
    }
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Starts this binary as a child in `role`; it prints its address first.
fn spawn_child(role: &str, dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, role)
        .env("SWITCHYARD_RUNTIME_DIR", dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("child starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("child prints its address");
    (child, line.trim().to_owned())
}

fn child(role: &str) {
    let dir = std::env::var("SWITCHYARD_RUNTIME_DIR").expect("runtime dir set");
    match role {
        "raw-unix" => {
            let path = std::path::Path::new(&dir).join("raw.sock");
            let listener = UnixListener::bind(&path).expect("bind");
            println!("{}", path.display());
            let _ = std::io::stdout().flush();
            let (stream, _) = listener.accept().expect("accept");
            raw_echo(stream);
        }
        "raw-tcp" => {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            println!("{}", listener.local_addr().expect("addr"));
            let _ = std::io::stdout().flush();
            let (stream, _) = listener.accept().expect("accept");
            stream.set_nodelay(true).expect("nodelay");
            raw_echo(stream);
        }
        "switchyard" => {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                let server = Server::builder()
                    .add_service(BenchServer::new(Echo))
                    .tcp("127.0.0.1:0")
                    .start()
                    .await
                    .expect("server starts");
                println!("{}", server.endpoints().join(" "));
                let _ = std::io::stdout().flush();
                // Runs until the parent kills it.
                std::future::pending::<()>().await;
            });
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Echoes fixed-size messages until the peer closes.
fn raw_echo<S: Read + Write>(mut stream: S) {
    let mut buf = [0u8; MESSAGE];
    while stream.read_exact(&mut buf).is_ok() {
        if stream.write_all(&buf).is_err() {
            return;
        }
    }
}

fn raw_figures(kind: &str, dir: &std::path::Path, s: &Settings) -> Figures {
    let (mut child, addr) = spawn_child(&format!("raw-{kind}"), dir);
    let figures = match kind {
        "unix" => raw_run(UnixStream::connect(&addr).expect("connect"), s),
        _ => {
            let stream = TcpStream::connect(&addr).expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            raw_run(stream, s)
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    figures
}

fn raw_run<S: Read + Write>(mut stream: S, s: &Settings) -> Figures {
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let out = [7u8; MESSAGE];
    let mut back = [0u8; MESSAGE];
    for i in 0..s.warmup + s.iterations {
        let start = Instant::now();
        stream.write_all(&out).expect("write");
        stream.read_exact(&mut back).expect("read");
        if i >= s.warmup {
            let _ = hist.record(start.elapsed().as_nanos() as u64);
        }
    }
    // Throughput with CONCURRENCY messages in flight.
    for _ in 0..CONCURRENCY {
        stream.write_all(&out).expect("write");
    }
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < s.throughput_for {
        stream.read_exact(&mut back).expect("read");
        stream.write_all(&out).expect("write");
        done += 1;
    }
    let elapsed = start.elapsed();
    for _ in 0..CONCURRENCY {
        stream.read_exact(&mut back).expect("drain");
    }
    Figures {
        p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
        calls_per_s: done as f64 / elapsed.as_secs_f64(),
    }
}

fn switchyard_figures(kind: &str, dir: &std::path::Path, s: &Settings) -> Figures {
    let (mut child, endpoints) = spawn_child("switchyard", dir);
    let target = endpoints
        .split(' ')
        .find(|e| e.starts_with(&format!("{kind}://")))
        .expect("endpoint of this kind")
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let figures = runtime.block_on(async {
        let client = BenchClient::new(Channel::connect(&target).await.expect("connect"));
        let payload = vec![7u8; MESSAGE];
        let mut hist = Histogram::<u64>::new(3).expect("histogram");
        for i in 0..s.warmup + s.iterations {
            let start = Instant::now();
            let back = client.echo(payload.clone()).await.expect("call");
            if i >= s.warmup {
                let _ = hist.record(start.elapsed().as_nanos() as u64);
            }
            debug_assert_eq!(back.len(), MESSAGE);
        }
        let start = Instant::now();
        let until = start + s.throughput_for;
        let mut tasks = Vec::new();
        for _ in 0..CONCURRENCY {
            let client = client.clone();
            let payload = payload.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < until {
                    client.echo(payload.clone()).await.expect("call");
                    done += 1;
                }
                done
            }));
        }
        let mut done = 0;
        for task in tasks {
            done += task.await.expect("task");
        }
        Figures {
            p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
            calls_per_s: done as f64 / start.elapsed().as_secs_f64(),
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    figures
}
