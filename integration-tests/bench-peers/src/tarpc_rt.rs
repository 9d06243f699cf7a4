//! tarpc round trips over a Unix domain socket and over TCP loopback: the
//! method `echo` of the service `Echo` returns the request's bytes.
//!
//! tarpc's serde transport: length-delimited frames (tokio-util's
//! `LengthDelimitedCodec`, default settings) carrying tarpc's messages
//! encoded by tokio-serde's bincode codec; the payload is a `ByteBuf` (bytes
//! for serde, a `Vec<u8>` underneath). Server and client each run a
//! current-thread tokio runtime in their own process. The server spawns a
//! task per connection that drives `BaseChannel::with_defaults(..).execute(..)`
//! and spawns each request's response future, as tarpc's examples do. The
//! client is tarpc's generated `EchoClient` (`client::Config::default()`: up
//! to 1 000 requests in flight) over one connection; every call carries
//! `context::current()` (a 10 s deadline). Over TCP, `TCP_NODELAY` is set on
//! both sides, as for tonic. The client measures latency one call at a time,
//! then throughput with `INFLIGHT` tasks looping on clones of the client.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_bytes::ByteBuf;
use tarpc::serde_transport::Transport;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::child::{ChildSet, Cpus, arg, pin_to, say};
use crate::round_trips::{INFLIGHT, RtResult, RtSpec, seconds_arg};
use crate::tonic_rt::runtime;

#[tarpc::service]
pub trait Echo {
    /// Returns the request's bytes.
    async fn echo(payload: ByteBuf) -> ByteBuf;
}

/// The echo method: the response is the request's buffer (no copy).
#[derive(Clone, Copy)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: context::Context, payload: ByteBuf) -> ByteBuf {
        payload
    }
}

/// Serves one accepted connection in a task of its own.
fn serve<S>(io: S)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let channel = BaseChannel::with_defaults(Transport::from((io, Bincode::default())));
    tokio::spawn(channel.execute(EchoServer.serve()).for_each(|response| async move {
        tokio::spawn(response);
    }));
}

/// `__child tarpc-server <cpu> tcp` or `__child tarpc-server <cpu> unix
/// <socket path>`: listens (TCP: on 127.0.0.1, port 0), prints `READY
/// <port>` (TCP) or `READY` (unix) and serves until it is killed.
pub fn server_child(args: &[String]) -> Result<(), String> {
    let cpu: i64 = arg(args, 0, "cpu")?;
    let kind = args.get(1).ok_or("missing transport")?.clone();
    let path = args.get(2).cloned();
    pin_to(cpu)?;
    runtime()?.block_on(async move {
        match kind.as_str() {
            "tcp" => {
                let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
                let port = listener.local_addr().map_err(|e| format!("local_addr: {e}"))?.port();
                say(&format!("READY {port}"));
                loop {
                    let (stream, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
                    stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
                    serve(stream);
                }
            }
            "unix" => {
                let path = path.ok_or("missing socket path")?;
                let listener = UnixListener::bind(&path).map_err(|e| format!("bind {path}: {e}"))?;
                say("READY");
                loop {
                    let (stream, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
                    serve(stream);
                }
            }
            other => Err(format!("unknown transport {other:?}")),
        }
    })
}

/// The client's configuration: tarpc's defaults, which allow far more than
/// `INFLIGHT` requests in flight (checked here all the same).
fn config() -> client::Config {
    let mut config = client::Config::default();
    config.max_in_flight_requests = config.max_in_flight_requests.max(INFLIGHT);
    config
}

/// Connects to `tcp:<port>` (127.0.0.1) or `unix:<socket path>`.
async fn connect(target: &str) -> Result<EchoClient, String> {
    if let Some(port) = target.strip_prefix("tcp:") {
        let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
        let stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
        Ok(EchoClient::new(config(), Transport::from((stream, Bincode::default()))).spawn())
    } else if let Some(path) = target.strip_prefix("unix:") {
        let stream = UnixStream::connect(path).await.map_err(|e| format!("connect {path}: {e}"))?;
        Ok(EchoClient::new(config(), Transport::from((stream, Bincode::default()))).spawn())
    } else {
        Err(format!("bad target {target:?} (expected tcp:<port> or unix:<path>)"))
    }
}

/// One echo call; checks that the reply is the request. tarpc takes the
/// arguments by value, so each call copies the 64 bytes into a new buffer.
async fn call(client: &EchoClient, msg: &[u8]) -> Result<(), String> {
    let reply = client
        .echo(context::current(), ByteBuf::from(msg.to_vec()))
        .await
        .map_err(|e| format!("echo call: {e}"))?;
    if reply.as_slice() != msg {
        return Err(format!("echo reply of {} bytes differs from the request", reply.len()));
    }
    Ok(())
}

/// `INFLIGHT` tasks call in a loop until `duration` has passed; returns the
/// calls completed and the seconds from the start until the last one ended.
async fn throughput(client: &EchoClient, msg: &[u8], duration: Duration) -> Result<(u64, f64), String> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(INFLIGHT);
    for _ in 0..INFLIGHT {
        let c = client.clone();
        let msg = msg.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                call(&c, &msg).await?;
                n += 1;
            }
            Ok::<u64, String>(n)
        }));
    }
    crate::round_trips::join_counts(tasks, start).await
}

/// `__child tarpc-rt-client <cpu> <tcp:port | unix:path> <size> <warmup>
/// <iterations> <seconds>`: measures latency, then throughput; prints
/// `RESULT ...` (`RtResult`).
pub fn client_child(args: &[String]) -> Result<(), String> {
    let cpu: i64 = arg(args, 0, "cpu")?;
    let target = args.get(1).ok_or("missing target")?.clone();
    let size: usize = arg(args, 2, "size")?;
    let warmup: u64 = arg(args, 3, "warmup")?;
    let iterations: u64 = arg(args, 4, "iterations")?;
    let duration = seconds_arg(args, 5)?;
    if iterations == 0 || iterations > 10_000_000 || warmup > 10_000_000 || size > 1 << 20 {
        return Err("iterations must be 1..=1e7, warmup at most 1e7, size at most 1 MiB".into());
    }
    pin_to(cpu)?;
    let msg: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let result = runtime()?.block_on(async move {
        let client = connect(&target).await?;
        for _ in 0..warmup {
            call(&client, &msg).await?;
        }
        let mut samples = Vec::with_capacity(iterations as usize);
        for _ in 0..iterations {
            let t = Instant::now();
            call(&client, &msg).await?;
            samples.push(t.elapsed().as_nanos() as u64);
        }
        let (calls, secs) = throughput(&client, &msg, duration).await?;
        RtResult::from_samples(samples, calls, secs)
    })?;
    say(&format!("RESULT {}", result.line()));
    Ok(())
}

/// A directory of its own for the server's socket, removed (with the
/// socket) when dropped.
struct SocketDir(PathBuf);

impl SocketDir {
    /// `<temp dir>/bench-peers-<orchestrator pid>-tarpc-<counter>`, mode 0700.
    fn create(counter: u32) -> Result<Self, String> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("bench-peers-{}-tarpc-{counter}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(SocketDir(dir))
    }

    fn socket(&self) -> Result<String, String> {
        let path = self.0.join("echo.sock");
        path.to_str().map(str::to_owned).ok_or_else(|| format!("socket path {} is not UTF-8", path.display()))
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One tarpc round-trip measurement (`spec.peer`: `tarpc-unix` or
/// `tarpc-tcp`): a fresh server process and a fresh client process;
/// `counter` makes the socket's directory unique in this run, the
/// orchestrator's pid across parallel runs.
pub fn measure(set: &mut ChildSet, cpus: &Cpus, spec: RtSpec, timeout: Duration, counter: u32) -> Result<RtResult, String> {
    match spec.peer {
        "tarpc-tcp" => measure_with(set, cpus, spec, timeout, None),
        "tarpc-unix" => {
            let dir = SocketDir::create(counter)?;
            let r = measure_with(set, cpus, spec, timeout, Some(dir.socket()?));
            // The server listens until it is killed: stop it before its
            // socket's directory is removed (when `dir` drops).
            set.stop_all();
            r
        }
        other => Err(format!("not a tarpc peer: {other:?}")),
    }
}

fn measure_with(
    set: &mut ChildSet,
    cpus: &Cpus,
    spec: RtSpec,
    timeout: Duration,
    socket: Option<String>,
) -> Result<RtResult, String> {
    let started = Instant::now();
    let mut server_args = vec!["tarpc-server".to_owned(), cpus.second().to_string()];
    match &socket {
        Some(path) => server_args.extend(["unix".to_owned(), path.clone()]),
        None => server_args.push("tcp".to_owned()),
    }
    let server = set.spawn("tarpc server", &server_args)?;
    let ready = set.expect(server, "READY", started + Duration::from_secs(30))?;
    let target = match socket {
        Some(path) => format!("unix:{path}"),
        None => format!("tcp:{ready}"),
    };
    let client = set.spawn("tarpc client", &spec.client_args("tarpc-rt-client", cpus.first(), target))?;
    let deadline = Instant::now() + timeout;
    let line = set.expect(client, "RESULT", deadline)?;
    set.wait_success(client, deadline + Duration::from_secs(10))?;
    RtResult::parse(&line)
}
