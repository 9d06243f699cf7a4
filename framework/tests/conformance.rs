//! The transport conformance suite: one set of generic tests over the
//! [`Link`], [`LinkTx`], [`LinkRx`] and [`Listener`] traits, run against every
//! transport. `memory` is the reference; every other transport must behave
//! the same way.
//!
//! Each transport gets a module of its own (`memory::frames_round_trip`,
//! `unix::frames_round_trip`, ...), so a failing test names its transport.
//! Run one transport with `cargo test -p switchyard --test conformance unix::`.
//!
//! # Adding a transport
//!
//! 1. Implement [`Harness`] for a unit struct: how to listen (a fresh
//!    temporary directory is passed in for socket paths and the like), how to
//!    connect, the expected [`Transport`], URL scheme and whether the kernel
//!    vouches for the peer's pid and uid.
//! 2. Add one line `name => Struct,` to the `conformance!` invocation at the
//!    bottom of this file.
//!
//! # Order across calls
//!
//! A byte-stream transport delivers frames in the order they were sent. A
//! transport that gives each call a stream of its own (QUIC) keeps that
//! order only among the frames of one call: a small frame overtakes a large
//! one of another call sent before it, which is the point. Such a harness
//! sets [`Harness::ORDERED`] to `false`, and the cases that send frames of
//! several calls at once (`frames_round_trip`, `many_frames_in_one_send`,
//! `large_frames_both_ways`, `both_directions_at_once_do_not_deadlock`,
//! `oversized_frames_are_skipped`, `clean_close_between_frames`,
//! `recv_is_cancel_safe`) then compare what arrived with what was sent
//! after a stable sort of both by call id: every frame must still arrive,
//! exactly once and intact, and the frames of one call in their order.
//!
//! Every test body runs under a [`TIME_LIMIT`] timeout, so a hang is a failure.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard::protocol::frame::{
    Decoded, Frame, FrameError, HEADER_LEN, Header, Kind, MAX_FRAME_LIMIT, finish_frame,
    start_frame,
};
use switchyard::transport::memory::{MemoryConnector, MemoryListener};
use switchyard::transport::pipe::{PipeLink, PipePair};
use switchyard::transport::tcp::TcpListener;
use switchyard::transport::unix::UnixListener;
use switchyard::transport::{self, Link, LinkError, LinkRx, LinkTx, Listener, Transport};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

/// How long any one test may take.
const TIME_LIMIT: Duration = Duration::from_secs(30);
/// The receive limit where a test does not set a smaller one.
const LIMIT: u32 = 16 << 20;

/// How the suite reaches one transport.
trait Harness: 'static {
    /// The listener under test.
    type L: Listener;
    /// What a client needs to reach the listener.
    type Dial: Send + Sync + 'static;
    /// What [`Link::transport`] must return.
    const TRANSPORT: Transport;
    /// How [`PeerInfo::addr`](switchyard::transport::PeerInfo) must start.
    const SCHEME: &'static str;
    /// Whether the peer's pid and uid are known (and must be ours).
    const CREDENTIALS: bool;
    /// Whether frames of different calls arrive in the order they were
    /// sent (see "Order across calls" above); `false` checks the order
    /// within each call only.
    const ORDERED: bool = true;
    /// Starts listening; `dir` is a fresh directory for socket files.
    async fn listen(dir: &Path) -> (Self::L, Self::Dial);
    /// Opens a link to the listener.
    async fn connect(dial: &Self::Dial) -> io::Result<LinkOf<Self>>;
}

type LinkOf<H> = <<H as Harness>::L as Listener>::Link;

struct Memory;
impl Harness for Memory {
    type L = MemoryListener;
    type Dial = MemoryConnector;
    const TRANSPORT: Transport = Transport::Memory;
    const SCHEME: &'static str = "memory://";
    const CREDENTIALS: bool = true;
    async fn listen(_: &Path) -> (Self::L, Self::Dial) {
        transport::memory::listener()
    }
    async fn connect(dial: &Self::Dial) -> io::Result<LinkOf<Self>> {
        dial.connect()
    }
}

struct Unix;
impl Harness for Unix {
    type L = UnixListener;
    type Dial = PathBuf;
    const TRANSPORT: Transport = Transport::Unix;
    const SCHEME: &'static str = "unix://";
    const CREDENTIALS: bool = true;
    async fn listen(dir: &Path) -> (Self::L, Self::Dial) {
        let path = dir.join("conformance.sock");
        (UnixListener::bind(&path).expect("bind unix socket"), path)
    }
    async fn connect(dial: &Self::Dial) -> io::Result<LinkOf<Self>> {
        transport::unix::connect(dial).await
    }
}

struct Tcp;
impl Harness for Tcp {
    type L = TcpListener;
    type Dial = String;
    const TRANSPORT: Transport = Transport::Tcp;
    const SCHEME: &'static str = "tcp://";
    const CREDENTIALS: bool = false;
    async fn listen(_: &Path) -> (Self::L, Self::Dial) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let dial = listener.local_addr().to_string();
        (listener, dial)
    }
    async fn connect(dial: &Self::Dial) -> io::Result<LinkOf<Self>> {
        transport::tcp::connect(dial).await
    }
}

/// Pipes have no listener of their own (a parent hands them to the child it
/// spawns); this one hands out the parent's end of each pair the "dial"
/// makes, so the same cases run over real kernel pipes.
struct PipeListener {
    incoming: tokio::sync::mpsc::UnboundedReceiver<PipeLink>,
}

impl Listener for PipeListener {
    type Link = PipeLink;
    async fn accept(&mut self) -> io::Result<PipeLink> {
        self.incoming
            .recv()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "no more pipes"))
    }
    fn local_url(&self) -> String {
        PIPE_URL.to_owned()
    }
}

const PIPE_URL: &str = "pipe://conformance";

fn pipe_peer() -> transport::PeerInfo {
    transport::PeerInfo {
        addr: PIPE_URL.to_owned(),
        pid: Some(std::process::id()),
        uid: Some(switchyard::sys::uid()),
    }
}

struct Pipe;
impl Harness for Pipe {
    type L = PipeListener;
    type Dial = tokio::sync::mpsc::UnboundedSender<PipeLink>;
    const TRANSPORT: Transport = Transport::Pipe;
    const SCHEME: &'static str = "pipe://";
    const CREDENTIALS: bool = true;
    async fn listen(_: &Path) -> (Self::L, Self::Dial) {
        let (dial, incoming) = tokio::sync::mpsc::unbounded_channel();
        (PipeListener { incoming }, dial)
    }
    async fn connect(dial: &Self::Dial) -> io::Result<LinkOf<Self>> {
        let pair = PipePair::new()?;
        let parent = PipeLink::from_fds(pair.parent_read, pair.parent_write, pipe_peer())?;
        let child = PipeLink::from_fds(pair.child_read, pair.child_write, pipe_peer())?;
        dial.send(parent)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "listener gone"))?;
        Ok(child)
    }
}

/// Shared memory is set up over a Unix socket: this listener accepts on
/// one and runs the server's side of the set-up.
#[cfg(target_os = "linux")]
struct ShmListener {
    unix: UnixListener,
}

#[cfg(target_os = "linux")]
impl Listener for ShmListener {
    type Link = transport::shm::ShmLink;
    async fn accept(&mut self) -> io::Result<Self::Link> {
        use switchyard::transport::shm::{Accepted, accept};
        let (stream, peer) = self.unix.accept().await?.into_parts();
        match accept(stream, peer).await? {
            Accepted::Shm(link) => Ok(link),
            Accepted::Stream(..) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the client did not offer shared memory",
            )),
        }
    }
    fn local_url(&self) -> String {
        self.unix.local_url().replacen("unix://", "shm://", 1)
    }
}

#[cfg(feature = "quic")]
struct Quic;
#[cfg(feature = "quic")]
impl Harness for Quic {
    type L = transport::quic::QuicListener;
    type Dial = (String, transport::quic::Fingerprint);
    const TRANSPORT: Transport = Transport::Quic;
    const SCHEME: &'static str = "quic://";
    const CREDENTIALS: bool = false;
    // One stream per call.
    const ORDERED: bool = false;
    async fn listen(_: &Path) -> (Self::L, Self::Dial) {
        let listener = transport::quic::QuicListener::bind("127.0.0.1:0")
            .await
            .expect("bind quic");
        let dial = (listener.local_addr().to_string(), listener.fingerprint());
        (listener, dial)
    }
    async fn connect(dial: &Self::Dial) -> io::Result<LinkOf<Self>> {
        Ok(transport::quic::connect(&dial.0, &dial.1).await?)
    }
}

#[cfg(target_os = "linux")]
struct Shm;
#[cfg(target_os = "linux")]
impl Harness for Shm {
    type L = ShmListener;
    type Dial = PathBuf;
    const TRANSPORT: Transport = Transport::Shm;
    const SCHEME: &'static str = "shm://";
    const CREDENTIALS: bool = true;
    async fn listen(dir: &Path) -> (Self::L, Self::Dial) {
        let path = dir.join("conformance-shm.sock");
        let unix = UnixListener::bind(&path).expect("bind unix socket");
        (ShmListener { unix }, path)
    }
    async fn connect(dial: &Self::Dial) -> io::Result<LinkOf<Self>> {
        // A small ring, so large frames wrap and wait for the reader.
        transport::shm::connect(dial, 64 * 1024).await
    }
}

// ---------------------------------------------------------------- helpers

/// A listener in a fresh directory (kept alive by the returned guard).
struct Setup<H: Harness> {
    listener: H::L,
    dial: H::Dial,
    _dir: tempfile::TempDir,
}

impl<H: Harness> Setup<H> {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (listener, dial) = H::listen(dir.path()).await;
        Self {
            listener,
            dial,
            _dir: dir,
        }
    }

    /// A connected `(client, server)` pair.
    async fn pair(&mut self) -> (LinkOf<H>, LinkOf<H>) {
        let (server, client) = tokio::join!(self.listener.accept(), H::connect(&self.dial));
        (client.expect("connect"), server.expect("accept"))
    }
    /// Connects, sends `bytes` from the client in one call, closes it if
    /// `close`, drops it, and receives at the server (body limit `limit`)
    /// until the link ends: what arrived, and how it ended.
    async fn send_and_hang_up(
        &mut self,
        bytes: &[u8],
        close: bool,
        limit: u32,
    ) -> (Vec<Decoded>, Result<bool, LinkError>) {
        let (client, server) = self.pair().await;
        let (mut ctx, crx) = client.split(LIMIT);
        let (_stx, mut srx) = server.split(limit);
        ctx.send(bytes).await.expect("send");
        if close {
            ctx.close().await.expect("close");
        }
        drop((ctx, crx));
        recv_to_end(&mut srx).await
    }
}

/// Deterministic bytes; the prime modulus makes shifted or spliced data show.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(7)) % 251) as u8)
        .collect()
}

/// A frame with every header field set to something recognisable.
fn frame(kind: Kind, call_id: u64, metadata_len: usize, payload_len: usize) -> Frame {
    let mut header = Header::new(kind, call_id);
    header.status = (call_id % 17) as u16;
    header.method_id = 0x9e37_79b9 ^ call_id as u32;
    header.deadline_us = call_id.wrapping_mul(1_000_003);
    let metadata = pattern(call_id ^ 0x55, metadata_len).into();
    Frame::new(header, metadata, pattern(call_id, payload_len).into())
}

/// Encodes frames back to back, as a session does.
fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        let start = start_frame(&mut out);
        out.extend_from_slice(&frame.metadata);
        out.extend_from_slice(&frame.payload);
        finish_frame(
            &mut out,
            start,
            frame.header,
            frame.metadata.len(),
            MAX_FRAME_LIMIT,
        )
        .expect("encode");
    }
    out
}

/// Sends each chunk with one `send` call, then closes; the half is handed
/// back so that the caller decides when it is dropped.
fn spawn_send<T: LinkTx>(mut tx: T, chunks: Vec<Vec<u8>>) -> JoinHandle<T> {
    tokio::spawn(async move {
        for chunk in chunks {
            tx.send(&chunk).await.expect("send");
        }
        tx.close().await.expect("close");
        tx
    })
}

/// Receives until the link ends: what arrived, and how it ended.
async fn recv_to_end<R: LinkRx>(rx: &mut R) -> (Vec<Decoded>, Result<bool, LinkError>) {
    let mut out = Vec::new();
    loop {
        match rx.recv(&mut out).await {
            Ok(true) => {}
            end => return (out, end),
        }
    }
}

/// Receives until the peer closes cleanly.
async fn recv_all<R: LinkRx>(rx: &mut R) -> Vec<Decoded> {
    let (out, end) = recv_to_end(rx).await;
    assert!(
        matches!(end, Ok(false)),
        "{end:?} after {} items",
        out.len()
    );
    out
}

/// Asserts `got` is exactly `want`, naming the first difference.
fn assert_frames(got: &[Decoded], want: &[Frame]) {
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        match got {
            Decoded::Frame(got) if got == want => {}
            Decoded::Frame(got) => panic!(
                "frame {i} differs: got {:?} ({} + {} bytes), want {:?} ({} + {} bytes)",
                got.header,
                got.metadata.len(),
                got.payload.len(),
                want.header,
                want.metadata.len(),
                want.payload.len(),
            ),
            other => panic!("item {i}: expected a frame, got {other:?}"),
        }
    }
    assert_eq!(got.len(), want.len(), "number of frames received");
}

/// `frames` in the order the suite compares them for transport `H`: as
/// they are, or sorted by call id (stably) where calls overtake each other.
fn call_order<H: Harness, T: Clone>(frames: &[T], call_id: impl Fn(&T) -> u64) -> Vec<T> {
    let mut frames = frames.to_vec();
    if !H::ORDERED {
        frames.sort_by_key(call_id);
    }
    frames
}

/// The call id of what arrived.
fn decoded_call(decoded: &Decoded) -> u64 {
    match decoded {
        Decoded::Frame(frame) => frame.header.call_id,
        Decoded::Oversized(header) => header.call_id,
    }
}

/// Asserts `got` is `want`, in the order [`call_order`] gives both.
fn assert_calls<H: Harness>(got: &[Decoded], want: &[Frame]) {
    assert_frames(
        &call_order::<H, _>(got, decoded_call),
        &call_order::<H, _>(want, |f| f.header.call_id),
    );
}

/// Sends `c2s` from client to server and `s2c` back at the same time, each
/// chunk in one `send`, and checks both sides receive exactly those frames.
async fn exchange<H: Harness>(c2s: &[Frame], s2c: &[Frame], chunk: usize) {
    let mut setup = Setup::<H>::new().await;
    let (client, server) = setup.pair().await;
    let (ctx, mut crx) = client.split(LIMIT);
    let (stx, mut srx) = server.split(LIMIT);
    let chunks = |frames: &[Frame]| frames.chunks(chunk).map(encode).collect();
    let sending = (spawn_send(ctx, chunks(c2s)), spawn_send(stx, chunks(s2c)));
    let (at_client, at_server) = tokio::join!(recv_all(&mut crx), recv_all(&mut srx));
    assert_calls::<H>(&at_server, c2s);
    assert_calls::<H>(&at_client, s2c);
    let _halves = (sending.0.await.unwrap(), sending.1.await.unwrap());
}

// ------------------------------------------------------------------ cases

/// Case 1: a request and a response arrive intact, every header field too.
async fn frames_round_trip<H: Harness>() {
    let mut request = frame(Kind::Request, u64::MAX - 1, 23, 100);
    request.header.status = 0;
    let response = frame(Kind::Response, u64::MAX - 1, 7, 321);
    let ping = frame(Kind::Ping, 42, 0, 0);
    exchange::<H>(&[request, ping], &[response], 1).await;
}

/// Case 2: 1000 frames (some empty) in one `send` arrive, all, in order.
async fn many_frames_in_one_send<H: Harness>() {
    let frames = |seed: u64| -> Vec<Frame> {
        (0..1000u64)
            .map(|i| {
                let payload = if i % 10 == 0 {
                    0
                } else {
                    ((i * 7919 + seed) % 3000) as usize
                };
                frame(Kind::OneWay, i, (i % 3 * 5) as usize, payload)
            })
            .collect()
    };
    exchange::<H>(&frames(0), &frames(1), usize::MAX).await;
}

/// Case 3: large payloads, up to 4 MiB, arrive byte-exact both ways.
async fn large_frames_both_ways<H: Harness>() {
    let sizes = [271_828, 314_159, 4 << 20];
    let frames = |base: u64| -> Vec<Frame> {
        (base..)
            .zip(sizes)
            .map(|(id, len)| frame(Kind::Request, id, 3, len))
            .collect()
    };
    exchange::<H>(&frames(10), &frames(20), 1).await;
}

/// Case 4: both sides send 8 MiB while reading; it completes.
async fn both_directions_at_once_do_not_deadlock<H: Harness>() {
    // 8 MiB each way in frames of varying size, a few frames per send.
    let sizes = [65_536, 1, 200_000, 0, 131_072, 7_777];
    let frames = |base: u64| -> Vec<Frame> {
        let mut total = 0;
        (base..)
            .zip(sizes.into_iter().cycle())
            .map_while(|(id, len)| {
                (total < 8 << 20).then(|| {
                    total += len;
                    frame(Kind::OneWay, id, 0, len)
                })
            })
            .collect()
    };
    exchange::<H>(&frames(0), &frames(1 << 32), 5).await;
}

/// Case 5: bodies over the limit are `Oversized`; the stream goes on.
async fn oversized_frames_are_skipped<H: Harness>() {
    let mut setup = Setup::<H>::new().await;
    let (client, server) = setup.pair().await;
    let (ctx, _crx) = client.split(LIMIT);
    let (_stx, mut srx) = server.split(1024);
    let frames = [
        frame(Kind::Request, 1, 5, 1020), // 1025 bytes of body: one too many
        frame(Kind::Request, 2, 4, 10),   // fine
        frame(Kind::Request, 3, 0, 3 << 20), // spans many reads
        frame(Kind::Request, 4, 0, 0),    // fine
        frame(Kind::Request, 5, 24, 1000), // exactly at the limit
    ];
    let sending = spawn_send(ctx, vec![encode(&frames)]);
    let got = call_order::<H, _>(&recv_all(&mut srx).await, decoded_call);
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0], Decoded::Oversized(frames[0].header));
    assert_frames(&got[1..2], &frames[1..2]);
    assert_eq!(got[2], Decoded::Oversized(frames[2].header));
    assert_frames(&got[3..], &frames[3..]);
    let _tx = sending.await.unwrap();
}

/// Case 6: bytes that are not frames are an error, not a panic.
async fn garbage_is_a_frame_error<H: Harness>() {
    let mut setup = Setup::<H>::new().await;
    let good = frame(Kind::Request, 9, 1, 2);
    for leading in [vec![], vec![good]] {
        let mut bytes = encode(&leading);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: switchyard.invalid\r\n\r\nmore garbage");
        let (got, end) = setup.send_and_hang_up(&bytes, false, LIMIT).await;
        let bad_magic = FrameError::BadMagic { found: 0x4547 };
        assert!(
            matches!(&end, Err(LinkError::Frame(e)) if *e == bad_magic),
            "{end:?}"
        );
        // Frames before the garbage are delivered, in `out` at the latest.
        assert_frames(&got, &leading);
    }
}

/// Case 7a: a peer gone between frames (closed or dropped) is `Ok(false)`.
async fn clean_close_between_frames<H: Harness>() {
    let mut setup = Setup::<H>::new().await;
    let frames = [frame(Kind::OneWay, 1, 2, 3), frame(Kind::OneWay, 2, 0, 0)];
    for close in [true, false] {
        let (got, end) = setup.send_and_hang_up(&encode(&frames), close, LIMIT).await;
        assert!(matches!(end, Ok(false)), "close: {close}: {end:?}");
        assert_calls::<H>(&got, &frames);
    }
}

/// Case 7b: a peer gone mid-frame is `TruncatedFrame`, counting the bytes.
async fn close_mid_frame_is_truncated<H: Harness>() {
    let mut setup = Setup::<H>::new().await;
    let first = [frame(Kind::Request, 1, 0, 10)];
    let cut = encode(&[frame(Kind::Request, 2, 8, 100)]);
    let h = HEADER_LEN;
    for at in [1, 10, h - 1, h, h + 4, h + 60] {
        let mut bytes = encode(&first);
        bytes.extend_from_slice(&cut[..at]);
        let (got, end) = setup.send_and_hang_up(&bytes, false, LIMIT).await;
        assert!(
            matches!(end, Err(LinkError::TruncatedFrame { buffered }) if buffered == at),
            "cut after {at} bytes: {end:?}"
        );
        assert_frames(&got, &first);
    }
    // Closing while the receiver skips an oversized body is truncation too.
    let big = frame(Kind::Request, 3, 0, 1000);
    let bytes = encode(std::slice::from_ref(&big));
    let (got, end) = setup
        .send_and_hang_up(&bytes[..HEADER_LEN + 500], true, 64)
        .await;
    assert!(
        matches!(end, Err(LinkError::TruncatedFrame { .. })),
        "{end:?}"
    );
    assert_eq!(got, [Decoded::Oversized(big.header)]);
}

/// Case 8: `transport()`, peer address scheme, kernel-vouched credentials.
async fn transport_and_peer_info<H: Harness>() {
    let mut setup = Setup::<H>::new().await;
    let local_url = setup.listener.local_url();
    assert!(local_url.starts_with(H::SCHEME), "listener url {local_url}");
    let (client, server) = setup.pair().await;
    for (side, link) in [("client", &client), ("server", &server)] {
        assert_eq!(link.transport(), H::TRANSPORT, "{side} transport");
        let peer = link.peer();
        assert!(peer.addr.starts_with(H::SCHEME), "{side}: {peer:?}");
        if H::CREDENTIALS {
            assert_eq!(peer.pid, Some(std::process::id()), "{side} peer pid");
            assert_eq!(peer.uid, Some(switchyard::sys::uid()), "{side} peer uid");
        } else {
            assert_eq!((peer.pid, peer.uid), (None, None), "{side}: unverifiable");
        }
    }
    assert_eq!(client.peer().addr, local_url, "client's peer");
}

/// Case 9: clients that connect and vanish do not break the listener.
async fn listener_survives_dropped_clients<H: Harness>() {
    let mut setup = Setup::<H>::new().await;
    for attempt in 0..3 {
        // Connect and accept together: setting up shared memory needs the
        // server's side of the handshake before `connect` returns.
        let (client, server) = setup.pair().await;
        drop(client);
        let (_stx, mut srx) = server.split(LIMIT);
        let got = recv_all(&mut srx).await;
        assert!(got.is_empty(), "attempt {attempt}: {got:?}");
    }
    // And the listener still carries traffic.
    let (client, server) = setup.pair().await;
    let (ctx, _crx) = client.split(LIMIT);
    let (_stx, mut srx) = server.split(LIMIT);
    let frames = [frame(Kind::Request, 77, 1, 1)];
    let sending = spawn_send(ctx, vec![encode(&frames)]);
    assert_frames(&recv_all(&mut srx).await, &frames);
    let _tx = sending.await.unwrap();
}

/// Case 10: cancelling `recv` while a frame trickles in loses no bytes.
async fn recv_is_cancel_safe<H: Harness>() {
    let mut setup = Setup::<H>::new().await;
    let (client, server) = setup.pair().await;
    let (mut ctx, _crx) = client.split(LIMIT);
    let (_stx, mut srx) = server.split(LIMIT);
    let frames = [
        frame(Kind::Request, 1, 6, 5000),
        frame(Kind::Request, 2, 0, 3),
    ];
    let bytes = encode(&frames);
    let (h, n) = (HEADER_LEN, bytes.len());
    // Pieces end mid-header, mid-metadata, mid-payload and mid-second-frame.
    let cuts = [7, h + 3, h + 2000, n - 20, n];
    let sending = tokio::spawn(async move {
        let mut from = 0;
        for to in cuts {
            ctx.send(&bytes[from..to]).await.expect("send");
            from = to;
            sleep(Duration::from_millis(30)).await;
        }
        ctx.close().await.expect("close");
        ctx
    });
    let mut out = Vec::new();
    let mut cancelled = 0;
    loop {
        match timeout(Duration::from_millis(1), srx.recv(&mut out)).await {
            Err(_) => cancelled += 1,
            Ok(result) => {
                if !result.expect("recv") {
                    break;
                }
            }
        }
    }
    assert!(cancelled > 0, "no recv was cancelled: proves nothing");
    assert_calls::<H>(&out, &frames);
    let _tx = sending.await.unwrap();
}

// -------------------------------------------------------- instantiation

/// Runs a case under the time limit.
async fn bounded(case: impl Future<Output = ()>) {
    timeout(TIME_LIMIT, case)
        .await
        .unwrap_or_else(|_| panic!("did not finish within {TIME_LIMIT:?} (deadlock?)"));
}

/// `conformance! { module => Harness, ... }`: one module of tests per
/// transport, one test per case.
macro_rules! conformance {
    ($($module:ident => $harness:ident),* $(,)?) => {$(
        mod $module {
            conformance!(@cases $harness:
                frames_round_trip,
                many_frames_in_one_send,
                large_frames_both_ways,
                both_directions_at_once_do_not_deadlock,
                oversized_frames_are_skipped,
                garbage_is_a_frame_error,
                clean_close_between_frames,
                close_mid_frame_is_truncated,
                transport_and_peer_info,
                listener_survives_dropped_clients,
                recv_is_cancel_safe,
            );
        }
    )*};
    (@cases $harness:ident: $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            super::bounded(super::$case::<super::$harness>()).await;
        }
    )*};
}

conformance! {
    memory => Memory,
    pipe => Pipe,
    unix => Unix,
    tcp => Tcp,
}

#[cfg(target_os = "linux")]
conformance! {
    shm => Shm,
}

#[cfg(feature = "quic")]
conformance! {
    quic => Quic,
}
