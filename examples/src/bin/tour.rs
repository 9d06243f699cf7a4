//! The switchyard tour: starts a calculator server in a child process, calls
//! it from this process over every transport this build has, and prints one
//! line per call: the transport, the call, its result, and why that
//! transport was chosen.
//!
//! `cargo run --release -p switchyard-examples --bin tour`

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use switchyard::process::{self, Services, Spawner};
use switchyard::{Channel, Server, Status, Transport};
use switchyard_examples::{Arithmetic, CALCULATOR_DESCRIPTOR, CalculatorClient, CalculatorServer};

const SERVE_FLAG: &str = "--serve";
const PIPE_WORKER_FLAG: &str = "--pipe-worker";

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
