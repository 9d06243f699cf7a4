//! tonic round trips over TCP loopback: the unary method `/bench.Peers/Echo`
//! of the hand-written `bench.Peers` service (`tonic_peer`, `RawCodec`)
//! returns the request's bytes.
//!
//! Server and client each run a current-thread tokio runtime in their own
//! process. The client opens one channel (default `Endpoint` settings,
//! `TCP_NODELAY` on) and measures latency one call at a time, then throughput
//! with `INFLIGHT` tasks looping on clones of the client for a fixed time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::client::Grpc;
use tonic::codegen::BoxFuture;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::server::UnaryService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::child::{ChildSet, Cpus, arg, pin_to, say};
use crate::round_trips::{INFLIGHT, RtResult, RtSpec, seconds_arg};
use crate::tonic_peer::{ECHO, RawCodec};

/// The echo method: the response is the request's bytes (no copy).
#[derive(Clone, Copy)]
pub struct EchoSvc;

impl UnaryService<Bytes> for EchoSvc {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        Box::pin(async move { Ok(Response::new(req.into_inner())) })
    }
}

/// A current-thread tokio runtime (I/O and timers enabled).
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// One echo call; checks that the reply is the request.
async fn echo(grpc: &mut Grpc<Channel>, msg: &Bytes) -> Result<(), String> {
    grpc.ready().await.map_err(|e| format!("ready: {e}"))?;
    let reply = grpc
        .unary(Request::new(msg.clone()), PathAndQuery::from_static(ECHO), RawCodec)
        .await
        .map_err(|e| format!("echo call: {e}"))?
        .into_inner();
    if reply != *msg {
        return Err(format!("echo reply of {} bytes differs from the request", reply.len()));
    }
    Ok(())
}

/// `INFLIGHT` tasks call in a loop until `duration` has passed; returns the
/// calls completed and the seconds from the start until the last one ended.
async fn throughput(grpc: &Grpc<Channel>, msg: &Bytes, duration: Duration) -> Result<(u64, f64), String> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(INFLIGHT);
    for _ in 0..INFLIGHT {
        let mut g = grpc.clone();
        let msg = msg.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                echo(&mut g, &msg).await?;
                n += 1;
            }
            Ok::<u64, String>(n)
        }));
    }
    crate::round_trips::join_counts(tasks, start).await
}

/// `__child tonic-rt-client <cpu> <port> <size> <warmup> <iterations>
/// <seconds>`: measures latency, then throughput; prints `RESULT ...`
/// (`RtResult`).
pub fn client_child(args: &[String]) -> Result<(), String> {
    let cpu: i64 = arg(args, 0, "cpu")?;
    let port: u16 = arg(args, 1, "port")?;
    let size: usize = arg(args, 2, "size")?;
    let warmup: u64 = arg(args, 3, "warmup")?;
    let iterations: u64 = arg(args, 4, "iterations")?;
    let duration = seconds_arg(args, 5)?;
    if iterations == 0 || iterations > 10_000_000 || warmup > 10_000_000 || size > 1 << 20 {
        return Err("iterations must be 1..=1e7, warmup at most 1e7, size at most 1 MiB".into());
    }
    pin_to(cpu)?;
    let msg = Bytes::from((0..size).map(|i| i as u8).collect::<Vec<u8>>());
    let result = runtime()?.block_on(async move {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .map_err(|e| format!("endpoint: {e}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut grpc = Grpc::new(channel);
        for _ in 0..warmup {
            echo(&mut grpc, &msg).await?;
        }
        let mut samples = Vec::with_capacity(iterations as usize);
        for _ in 0..iterations {
            let t = Instant::now();
            echo(&mut grpc, &msg).await?;
            samples.push(t.elapsed().as_nanos() as u64);
        }
        let (calls, secs) = throughput(&grpc, &msg, duration).await?;
        RtResult::from_samples(samples, calls, secs)
    })?;
    say(&format!("RESULT {}", result.line()));
    Ok(())
}

/// One tonic round-trip measurement: a fresh server process (current-thread
/// runtime) and a fresh client process.
pub fn measure(set: &mut ChildSet, cpus: &Cpus, spec: RtSpec, timeout: Duration) -> Result<RtResult, String> {
    let started = Instant::now();
    let server = set.spawn(
        "tonic server",
        &["tonic-server".into(), cpus.second().to_string(), "current-thread".into()],
    )?;
    let port = set.expect(server, "READY", started + Duration::from_secs(30))?;
    let client = set.spawn("tonic client", &spec.client_args("tonic-rt-client", cpus.first(), port))?;
    let deadline = Instant::now() + timeout;
    let line = set.expect(client, "RESULT", deadline)?;
    set.wait_success(client, deadline + Duration::from_secs(10))?;
    RtResult::parse(&line)
}
