//! The switchyard tour: starts a calculator server in a child process, calls
//! it from this process over every transport this build has, and prints one
//! line per call: the transport, the call, its result, and why that
//! transport was chosen; then streams both ways, timed, and one whose
//! reader pauses, to show the server waits for credit; then layers: a
//! server that requires a bearer token, called without it and with it; the
//! server's health, and why a connection does (not) compress.
//!
//! `cargo run --release -p switchyard-examples --bin tour`

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard::process::{self, Services, Spawner};
use switchyard::{Channel, Server, Status, Streaming, Transport};
use switchyard_examples::{Arithmetic, CALCULATOR_DESCRIPTOR, CalculatorClient, CalculatorServer};

const SERVE_FLAG: &str = "--serve";
const PIPE_WORKER_FLAG: &str = "--pipe-worker";

/// Messages in each timed stream.
const STREAM_MESSAGES: u64 = 100_000;

/// Streams of numbers, both ways.
#[switchyard::service]
pub trait Counter {
    /// The numbers `0..n`, one message each.
    async fn count(&self, n: u64) -> Streaming<u64>;
    /// How many messages `count` streams have taken so far (all calls).
    async fn produced(&self) -> u64;
    /// The sum of the numbers sent and how many there were.
    async fn sum(&self, numbers: Streaming<u64>) -> Result<(u64, u64), Status>;
}

/// The tour's `Counter`: counts what its streams produce.
#[derive(Debug, Default)]
struct Numbers {
    produced: Arc<AtomicU64>,
}

impl Counter for Numbers {
    async fn count(&self, n: u64) -> Streaming<u64> {
        let produced = Arc::clone(&self.produced);
        // A message is taken from this iterator only when the client has
        // granted credit for it: `produced` counts what was let through.
        Streaming::from_iter((0..n).inspect(move |_| {
            produced.fetch_add(1, Ordering::Relaxed);
        }))
    }

    async fn produced(&self) -> u64 {
        self.produced.load(Ordering::Relaxed)
    }

    async fn sum(&self, mut numbers: Streaming<u64>) -> Result<(u64, u64), Status> {
        let (mut sum, mut count) = (0u64, 0u64);
        while let Some(number) = numbers.message().await? {
            sum = sum.wrapping_add(number);
            count += 1;
        }
        Ok((sum, count))
    }
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let result = match std::env::args().nth(1).as_deref() {
        Some(SERVE_FLAG) => runtime.block_on(serve()),
        Some(PIPE_WORKER_FLAG) => runtime.block_on(pipe_worker()),
        _ => runtime.block_on(tour()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tour: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The child: serve the calculator on a Unix socket and TCP until SIGTERM.
async fn serve() -> Result<(), String> {
    let server = Server::builder()
        .add_service(CalculatorServer::new(Arithmetic))
        .add_service(CounterServer::new(Numbers::default()))
        .tcp("127.0.0.1:0")
        .quic("127.0.0.1:0")
        .start()
        .await
        .map_err(|s| s.to_string())?;
    server.run_until_signal().await;
    Ok(())
}

/// The pipe child: serves the calculator to its parent until the parent is
/// gone.
async fn pipe_worker() -> Result<(), String> {
    let services = Services::new().add_service(CalculatorServer::new(Arithmetic));
    process::serve_parent(services)
        .await
        .map_err(|s| s.to_string())?;
    process::parent_gone().await;
    Ok(())
}

/// Stops and reaps the server child however the tour ends.
struct ServerProcess {
    child: Child,
    runtime_dir: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGTERM asks for a graceful shutdown; give it a moment, then kill.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A stopped server keeps its message queue for its next start; the
        // tour is over, so it goes with the runtime directory.
        #[cfg(target_os = "linux")]
        let _ = switchyard::transport::mqueue::remove(
            &switchyard::transport::mqueue::service_queue_name(&self.runtime_dir, "Calculator"),
        );
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

async fn tour() -> Result<(), String> {
    let runtime_dir = std::env::temp_dir().join(format!("switchyard-tour-{}", std::process::id()));
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .arg(SERVE_FLAG)
        .env("SWITCHYARD_RUNTIME_DIR", &runtime_dir)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("could not start the server process: {e}"))?;
    let server = ServerProcess { child, runtime_dir };
    println!(
        "switchyard tour: calculator server started as pid {}",
        server.child.id()
    );

    // This process's own debug endpoint (loopback, any free port).
    let debug = switchyard::debug::DebugEndpoint::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("debug endpoint: {e}"))?;
    let debug_url = debug.url();

    let by_name = connect_when_published(&server.runtime_dir, None).await?;
    let calc = CalculatorClient::new(by_name.clone());
    let sum = calc.add(2, 3).await.map_err(|s| s.to_string())?;
    line(&by_name, "add(2, 3)", &sum.to_string());
    let quotient = calc.div(7, 0).await.map_err(|s| s.to_string())?;
    line(&by_name, "div(7, 0)", &format!("{quotient:?}"));
    calc.log("hello from the tour".into())
        .await
        .map_err(|s| s.to_string())?;
    let oneway = by_name.oneway_selection(&CALCULATOR_DESCRIPTOR);
    println!(
        "{:<7} {:<44} {}",
        oneway.transport, "log(\"hello from the tour\") = sent (one-way)", oneway.reason
    );

    bulk_line(&by_name, &calc).await?;
    stream_lines(&by_name).await?;
    // Kept until the end, so that the debug table lists their layers.
    let _layered = layer_lines().await?;

    let unix = connect_when_published(&server.runtime_dir, Some(Transport::Unix)).await?;
    let sum = CalculatorClient::new(unix.clone())
        .add(10, 20)
        .await
        .map_err(|s| s.to_string())?;
    line(&unix, "add(10, 20)", &sum.to_string());

    let tcp = connect_when_published(&server.runtime_dir, Some(Transport::Tcp)).await?;
    let calc_tcp = CalculatorClient::new(tcp.clone());
    let sum = calc_tcp.add(40, 2).await.map_err(|s| s.to_string())?;
    line(&tcp, "add(40, 2)", &sum.to_string());
    // Every server answers the health service; each connection says
    // whether it compresses, and why (loopback: no).
    let health = switchyard::health::HealthClient::new(tcp.clone())
        .check(String::new())
        .await
        .map_err(|s| s.to_string())?;
    line(&tcp, "health.check(\"\")", &format!("{health:?}"));
    println!(
        "{:<7} {:<44} {}",
        "",
        "compression of what this side sends",
        tcp.compression().reason
    );

    // QUIC, the track between machines: TLS 1.3 with the certificate's
    // fingerprint pinned from the registry entry, one stream per call.
    let quic = connect_when_published(&server.runtime_dir, Some(Transport::Quic)).await?;
    let sum = CalculatorClient::new(quic.clone())
        .add(6, 7)
        .await
        .map_err(|s| s.to_string())?;
    line(&quic, "add(6, 7) over TLS 1.3", &sum.to_string());

    // The same tcp:// address without demanding TCP: the handshake shows
    // the server on this host, so the connection moves to shared memory.
    let address = tcp.peer().addr;
    let upgraded = Channel::connect(&address)
        .await
        .map_err(|s| s.to_string())?;
    let sum = CalculatorClient::new(upgraded.clone())
        .add(1, 2)
        .await
        .map_err(|s| s.to_string())?;
    line(
        &upgraded,
        &format!("add(1, 2) via {address}"),
        &sum.to_string(),
    );

    let late = calc
        .with_timeout(Duration::ZERO)
        .add(1, 1)
        .await
        .map(|v| v.to_string())
        .unwrap_or_else(|status| status.code().to_string());
    line(&by_name, "add(1, 1) with a deadline already past", &late);

    let mut command = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    command.arg(PIPE_WORKER_FLAG);
    let worker = Spawner::new(command)
        .spawn()
        .await
        .map_err(|s| s.to_string())?;
    let piped = CalculatorClient::new(worker.channel());
    let sum = piped.add(20, 22).await.map_err(|s| s.to_string())?;
    line(
        &worker.channel(),
        "add(20, 22) in a child process",
        &sum.to_string(),
    );
    worker.shutdown(Duration::from_secs(5)).await;

    println!("\nthis process's connections, as its debug endpoint {debug_url} shows them:");
    print!(
        "{}",
        switchyard::debug::table::connections_table(&switchyard::debug::snapshot())
    );
    println!("tour: done; stopping the server");
    drop(server);
    Ok(())
}

/// The token of the tour's layered server (a demo secret, not a real one).
const TOUR_TOKEN: &str = "tour-demo-token";

/// A server in this process, over the in-memory link, whose layers require
/// a bearer token and limit each method's calls in flight: a call without
/// the token is refused before the handler runs; a channel whose
/// `layers::Bearer` sends it is served. Returns what keeps them running.
async fn layer_lines() -> Result<(switchyard::ServerHandle, Channel, Channel), String> {
    use switchyard::layers::{Bearer, ConcurrencyLimit, RequireBearer};
    use switchyard::transport::memory;
    let server = Server::builder()
        .add_service(CalculatorServer::new(Arithmetic))
        .layer(RequireBearer::new(TOUR_TOKEN))
        .layer(ConcurrencyLimit::per_method(64))
        .no_unix()
        .unpublished()
        .message_queues(false)
        .introspection(false)
        .start()
        .await
        .map_err(|s| s.to_string())?;
    let (client_end, server_end) = memory::pair();
    server.serve_link(server_end);
    let without = Channel::builder()
        .connect_link(client_end)
        .await
        .map_err(|s| s.to_string())?;
    let refused = CalculatorClient::new(without.clone())
        .add(1, 2)
        .await
        .map(|v| v.to_string())
        .unwrap_or_else(|status| status.code().to_string());
    line(&without, "add(1, 2) without a token (layers)", &refused);
    let (client_end, server_end) = memory::pair();
    server.serve_link(server_end);
    let with = Channel::builder()
        .layer(Bearer::new(TOUR_TOKEN))
        .connect_link(client_end)
        .await
        .map_err(|s| s.to_string())?;
    let sum = CalculatorClient::new(with.clone())
        .add(1, 2)
        .await
        .map_err(|s| s.to_string())?;
    line(&with, "add(1, 2) with layers::Bearer", &sum.to_string());
    Ok((server, without, with))
}

fn line(channel: &Channel, call: &str, result: &str) {
    let selection = channel.selection();
    println!(
        "{:<7} {:<44} {}",
        selection.transport,
        format!("{call} = {result}"),
        selection.reason
    );
}

/// A call whose argument is over the shared-memory bulk threshold: it goes
/// as a sealed memfd the server maps (the `mmap` track), which this
/// process's bulk counters confirm.
async fn bulk_line(channel: &Channel, calc: &CalculatorClient) -> Result<(), String> {
    let data = switchyard::Bytes::from(vec![1u8; 8 << 20]);
    #[cfg(target_os = "linux")]
    let before = switchyard::transport::shm::bulk_transfers();
    let started = Instant::now();
    let (sum, len) = calc.checksum(data).await.map_err(|s| s.to_string())?;
    let took = started.elapsed();
    let call = format!("checksum(8 MiB) = {sum} over {len} bytes");
    #[cfg(target_os = "linux")]
    {
        let after = switchyard::transport::shm::bulk_transfers();
        if after.sent > before.sent {
            println!(
                "{:<7} {:<44} the 8 MiB argument went as a sealed memfd the server mapped \
                 and read in place ({} MiB, {took:.1?}), over the {} KiB bulk threshold of the \
                 shm connection",
                Transport::Mmap,
                call,
                (after.bytes_sent - before.bytes_sent) >> 20,
                switchyard::transport::shm::DEFAULT_BULK_THRESHOLD >> 10
            );
            return Ok(());
        }
    }
    let _ = took;
    line(
        channel,
        "checksum(8 MiB)",
        &format!("{sum} over {len} bytes"),
    );
    Ok(())
}

/// Streams over `channel`: numbers from the server and to it, timed; then a
/// stream whose reader stops after a few messages, to show that the server
/// stops too once the credit it was granted is used up.
async fn stream_lines(channel: &Channel) -> Result<(), String> {
    let counter = CounterClient::new(channel.clone());
    let transport = channel.selection().transport;
    let started = Instant::now();
    let mut numbers = counter
        .count(STREAM_MESSAGES)
        .await
        .map_err(|s| s.to_string())?;
    let mut received = 0u64;
    while numbers
        .message()
        .await
        .map_err(|s| s.to_string())?
        .is_some()
    {
        received += 1;
    }
    println!(
        "{transport:<7} {:<44} server streaming, {}",
        format!("count({STREAM_MESSAGES}) = {received} messages"),
        per_second(received, started.elapsed())
    );

    let started = Instant::now();
    let (sum, count) = counter
        .sum(futures_util::stream::iter(0..STREAM_MESSAGES))
        .await
        .map_err(|s| s.to_string())?;
    println!(
        "{transport:<7} {:<44} client streaming, {}",
        format!("sum(0..{STREAM_MESSAGES}) = {sum}"),
        per_second(count, started.elapsed())
    );

    let before = counter.produced().await.map_err(|s| s.to_string())?;
    let mut paused = counter.count(u64::MAX).await.map_err(|s| s.to_string())?;
    const READ: u64 = 10;
    for _ in 0..READ {
        paused.message().await.map_err(|s| s.to_string())?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = counter.produced().await.map_err(|s| s.to_string())? - before;
    drop(paused); // cancels the call: the server stops streaming
    println!(
        "{transport:<7} {:<44} flow controlled: the server waits for credit (a window of {} \
         frames, granted back as they are read)",
        format!("count(endless), {READ} read, paused = {sent} sent"),
        switchyard::streaming::DEFAULT_STREAM_WINDOW
    );
    Ok(())
}

/// `messages` over `elapsed` as "1.23M msg/s".
fn per_second(messages: u64, elapsed: Duration) -> String {
    let rate = messages as f64 / elapsed.as_secs_f64().max(1e-9);
    if rate >= 1e6 {
        format!("{:.2}M msg/s", rate / 1e6)
    } else {
        format!("{:.0}k msg/s", rate / 1e3)
    }
}

/// Waits until the child has published itself, then connects by name.
async fn connect_when_published(
    runtime_dir: &Path,
    prefer: Option<Transport>,
) -> Result<Channel, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut builder = Channel::builder().runtime_dir(runtime_dir);
        if let Some(transport) = prefer {
            builder = builder.prefer(transport);
        }
        match builder.connect("calculator").await {
            // A server that is starting may have created its message queue
            // but not yet published itself: the channel is then a stand-in
            // that takes one-way calls only. Wait for the server itself.
            Ok(channel) if channel.serves(&CALCULATOR_DESCRIPTOR) => return Ok(channel),
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(_) => return Err("the calculator server did not publish itself within 10 s".into()),
            Err(status) if retryable(&status) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => return Err(status.to_string()),
        }
    }
}

fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        switchyard::Code::NotFound | switchyard::Code::Unavailable
    )
}
