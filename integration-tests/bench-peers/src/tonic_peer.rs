//! tonic over TCP loopback: a hand-written service `bench.Peers` with a server
//! streaming and a client streaming method whose messages are raw bytes (a
//! hand-written `tonic::codec::Codec`: no protoc, no prost). The same service
//! also answers the unary `Echo` method of the round-trip mode (`tonic_rt`).
//!
//! The measurement parameters travel as gRPC metadata (`bench-*` headers).
//! The sender sends `warmup + messages` messages of `size` bytes; the receiver
//! checks every size, starts its clock when the last warm-up message arrives,
//! stops it when the last message arrives and reports `messages` and the
//! elapsed seconds. For client streaming the server is the receiver and
//! returns its figures in the (unary) response.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::{BoxFuture, BoxStream, Service, http};
use tonic::metadata::MetadataMap;
use tonic::server::{ClientStreamingService, NamedService, ServerStreamingService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

use crate::child::{ChildSet, Cpus, arg, pin_to, say};
use crate::{Direction, Pattern, Spec};

const SERVER_STREAM: &str = "/bench.Peers/ServerStream";
const CLIENT_STREAM: &str = "/bench.Peers/ClientStream";
/// The unary echo method of the round-trip mode.
pub const ECHO: &str = "/bench.Peers/Echo";
/// Capacity of the `tokio::sync::mpsc` channel of the "channel" pattern.
const CHANNEL_CAPACITY: usize = 128;

// ---------------------------------------------------------------- codec

/// Messages are the raw bytes of the gRPC message (the encoder copies them
/// into tonic's buffer, the decoder splits them off without a copy).
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

// ---------------------------------------------------------------- parameters

struct Params {
    pattern: Pattern,
    size: usize,
    warmup: u64,
    total: u64,
}

impl Params {
    fn put(&self, m: &mut MetadataMap) {
        m.insert("bench-pattern", self.pattern.name().parse().unwrap());
        m.insert("bench-size", self.size.to_string().parse().unwrap());
        m.insert("bench-warmup", self.warmup.to_string().parse().unwrap());
        m.insert("bench-total", self.total.to_string().parse().unwrap());
    }

    fn get(m: &MetadataMap) -> Result<Self, Status> {
        let s = |k: &str| -> Result<String, Status> {
            m.get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| Status::invalid_argument(format!("missing {k}")))
        };
        let n = |k: &str| -> Result<u64, Status> {
            s(k)?.parse().map_err(|_| Status::invalid_argument(format!("bad {k}")))
        };
        Ok(Params {
            pattern: Pattern::parse(&s("bench-pattern")?).map_err(Status::invalid_argument)?,
            size: n("bench-size")? as usize,
            warmup: n("bench-warmup")?,
            total: n("bench-total")?,
        })
    }
}

/// The payload every sender sends (one refcounted buffer, cloned per message).
fn payload(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| i as u8).collect::<Vec<u8>>())
}

/// Sender side of both directions: the stream handed to tonic.
fn sender_stream<T: Send + 'static>(
    pattern: Pattern,
    size: usize,
    total: u64,
    wrap: fn(Bytes) -> T,
) -> std::pin::Pin<Box<dyn Stream<Item = T> + Send>> {
    let msg = payload(size);
    match pattern {
        // tonic's best case: a stream that is always ready.
        Pattern::Ready => Box::pin(futures::stream::repeat(msg).take(total as usize).map(wrap)),
        // The pattern of tonic's examples: a task sends into a bounded
        // channel, tonic reads a `ReceiverStream`.
        _ => {
            let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CAPACITY);
            tokio::spawn(async move {
                for _ in 0..total {
                    if tx.send(wrap(msg.clone())).await.is_err() {
                        break;
                    }
                }
            });
            Box::pin(ReceiverStream::new(rx))
        }
    }
}

/// Receiver side of both directions: counts, checks sizes, times.
async fn receive_all(stream: &mut Streaming<Bytes>, size: usize, warmup: u64, total: u64) -> Result<(u64, f64), Status> {
    let mut got = 0u64;
    let mut start = None;
    let mut end = None;
    while let Some(m) = stream.message().await? {
        if m.len() != size {
            return Err(Status::data_loss(format!("message {got} has {} bytes, expected {size}", m.len())));
        }
        got += 1;
        if got == warmup {
            start = Some(Instant::now());
        }
        if got == total {
            end = Some(Instant::now());
        }
    }
    match (start, end) {
        (Some(s), Some(e)) if got == total => Ok((total - warmup, (e - s).as_secs_f64())),
        _ => Err(Status::data_loss(format!("received {got} of {total} messages"))),
    }
}

// ---------------------------------------------------------------- server

#[derive(Clone, Copy)]
struct ServerStreamSvc;

impl ServerStreamingService<Bytes> for ServerStreamSvc {
    type Response = Bytes;
    type ResponseStream = BoxStream<Bytes>;
    type Future = BoxFuture<Response<BoxStream<Bytes>>, Status>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        Box::pin(async move {
            let p = Params::get(req.metadata())?;
            let s: BoxStream<Bytes> = sender_stream(p.pattern, p.size, p.total, Ok);
            Ok(Response::new(s))
        })
    }
}

#[derive(Clone, Copy)]
struct ClientStreamSvc;

impl ClientStreamingService<Bytes> for ClientStreamSvc {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;
    fn call(&mut self, req: Request<Streaming<Bytes>>) -> Self::Future {
        Box::pin(async move {
            let p = Params::get(req.metadata())?;
            let mut stream = req.into_inner();
            let (n, secs) = receive_all(&mut stream, p.size, p.warmup, p.total).await?;
            let mut out = Vec::with_capacity(16);
            out.put_u64(n);
            out.put_f64(secs);
            Ok(Response::new(Bytes::from(out)))
        })
    }
}

/// What tonic-build would generate for `service Peers` in package `bench`.
#[derive(Clone, Copy)]
struct PeersServer;

impl NamedService for PeersServer {
    const NAME: &'static str = "bench.Peers";
}

impl Service<http::Request<tonic::body::Body>> for PeersServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        match req.uri().path() {
            SERVER_STREAM => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(RawCodec);
                Ok(grpc.server_streaming(ServerStreamSvc, req).await)
            }),
            CLIENT_STREAM => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(RawCodec);
                Ok(grpc.client_streaming(ClientStreamSvc, req).await)
            }),
            ECHO => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(RawCodec);
                Ok(grpc.unary(crate::tonic_rt::EchoSvc, req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    // What `#[tokio::main]` builds; after pinning, tokio sees one CPU and
    // starts one worker thread.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// `__child tonic-server <cpu> [current-thread]`: serves on
/// 127.0.0.1:<ephemeral>, prints `READY <port>`, runs until killed. The
/// streaming measurements use the runtime of `#[tokio::main]`, the round trips
/// (`current-thread`) a current-thread runtime.
pub fn server_child(args: &[String]) -> Result<(), String> {
    let cpu: i64 = arg(args, 0, "cpu")?;
    let rt = match args.get(1).map(String::as_str) {
        None => runtime,
        Some("current-thread") => crate::tonic_rt::runtime,
        Some(other) => return Err(format!("unknown runtime {other:?}")),
    };
    pin_to(cpu)?;
    rt()?.block_on(async {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
            .map_err(|e| format!("bind: {e}"))?
            .with_nodelay(Some(true));
        let port = incoming.local_addr().map_err(|e| format!("local_addr: {e}"))?.port();
        say(&format!("READY {port}"));
        Server::builder()
            .add_service(PeersServer)
            .serve_with_incoming(incoming)
            .await
            .map_err(|e| format!("server: {e}"))
    })
}

/// `__child tonic-client <cpu> <port> <pattern> <direction> <size> <warmup>
/// <messages>`: runs one measurement, prints `RESULT <messages> <seconds>`.
pub fn client_child(args: &[String]) -> Result<(), String> {
    let cpu: i64 = arg(args, 0, "cpu")?;
    let port: u16 = arg(args, 1, "port")?;
    let pattern = Pattern::parse(args.get(2).ok_or("missing pattern")?)?;
    let direction = Direction::parse(args.get(3).ok_or("missing direction")?)?;
    let size: usize = arg(args, 4, "size")?;
    let warmup: u64 = arg(args, 5, "warmup")?;
    let messages: u64 = arg(args, 6, "messages")?;
    pin_to(cpu)?;
    let p = Params { pattern, size, warmup, total: warmup + messages };
    let (n, secs) = runtime()?.block_on(async move {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .map_err(|e| format!("endpoint: {e}"))?
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| format!("ready: {e}"))?;
        match direction {
            Direction::ServerStreaming => {
                let mut req = Request::new(Bytes::new());
                p.put(req.metadata_mut());
                let mut stream = grpc
                    .server_streaming(req, PathAndQuery::from_static(SERVER_STREAM), RawCodec)
                    .await
                    .map_err(|e| format!("server streaming call: {e}"))?
                    .into_inner();
                receive_all(&mut stream, p.size, p.warmup, p.total)
                    .await
                    .map_err(|e| format!("server streaming: {e}"))
            }
            Direction::ClientStreaming => {
                let mut req = Request::new(sender_stream(p.pattern, p.size, p.total, |b| b));
                p.put(req.metadata_mut());
                let mut reply = grpc
                    .client_streaming(req, PathAndQuery::from_static(CLIENT_STREAM), RawCodec)
                    .await
                    .map_err(|e| format!("client streaming: {e}"))?
                    .into_inner();
                if reply.len() != 16 {
                    return Err(format!("client streaming: reply of {} bytes", reply.len()));
                }
                Ok((reply.get_u64(), reply.get_f64()))
            }
            Direction::Publish => Err("publish is not a tonic direction".to_string()),
        }
    })?;
    say(&format!("RESULT {n} {secs}"));
    Ok(())
}

// ---------------------------------------------------------------- orchestrator

/// One tonic measurement: a fresh server process and a fresh client process.
pub fn measure(set: &mut ChildSet, cpus: &Cpus, spec: Spec, timeout: Duration) -> Result<(u64, f64), String> {
    let started = Instant::now();
    let server = set.spawn("tonic server", &["tonic-server".into(), cpus.first().to_string()])?;
    let port = set.expect(server, "READY", started + Duration::from_secs(30))?;
    let client = set.spawn(
        "tonic client",
        &[
            "tonic-client".into(),
            cpus.second().to_string(),
            port,
            spec.pattern.name().into(),
            spec.direction.name().into(),
            spec.size.to_string(),
            spec.warmup.to_string(),
            spec.messages.to_string(),
        ],
    )?;
    let deadline = Instant::now() + timeout;
    let line = set.expect(client, "RESULT", deadline)?;
    set.wait_success(client, deadline + Duration::from_secs(10))?;
    parse_result(&line)
}

pub fn parse_result(line: &str) -> Result<(u64, f64), String> {
    let mut it = line.split_whitespace();
    let n = it.next().and_then(|s| s.parse().ok());
    let s = it.next().and_then(|s| s.parse().ok());
    match (n, s) {
        (Some(n), Some(s)) => Ok((n, s)),
        _ => Err(format!("bad RESULT line {line:?}")),
    }
}
