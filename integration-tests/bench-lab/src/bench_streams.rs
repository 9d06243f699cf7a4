//! The streams table: server-streaming and client-streaming calls over
//! every transport, counted by the receiver, beside the raw framed path one
//! way over the same OS mechanism, measured in the same run.
//!
//! * **switchyard**: a child serving [`Streams`] (`source`: `count`
//!   messages of `size` bytes; `sink`: counts the messages it read). Server
//!   streaming: the parent calls `source` and counts what it reads, timed
//!   from the call until the stream's end. Client streaming: the parent
//!   calls `sink` with a stream of `count` messages, timed from the call
//!   until the reply, and the reply is the count. Each (transport, window)
//!   gets its own child, with the stream window set on both sides
//!   ([`WINDOW_ENV`]); a pipe child's server side takes it through
//!   `process::Services::stream_window`.
//! * **raw framed**: a child writes `count` frames (u32 little-endian
//!   length, then the payload) through a 256 KiB `BufWriter` (many frames
//!   per system call) once the parent sent a go byte; the parent reads
//!   with a 1 MiB buffer and parses the frames, counting messages and bytes,
//!   timed from the go byte until the last frame. Over a unix socket, TCP
//!   loopback, the child's stdout (a pipe enlarged as switchyard enlarges
//!   its own) and, for shm, the spin ring of [`crate::bench_shm`] (two
//!   busy-polled rings, the floor for same-host IPC); for QUIC, one stream
//!   of plain quinn with switchyard's TLS and transport settings, the
//!   frames written in 256 KiB pieces.
//!
//! Each measurement stops at its count or its time limit, whichever comes
//! first: the rate is what the receiver counted over the time it took.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchyard::{Bytes, Channel, Server, Status, Streaming, Transport};

use crate::bench::{
    ChildGuard, DIR_ENV, ScratchDir, announce, child_command, pin, pinning, spawn_announcing,
};

pub(crate) mod peers;
mod raw;

/// The streamed service.
#[switchyard::service]
pub(crate) trait Streams {
    /// `count` messages of `size` bytes.
    async fn source(&self, count: u64, size: u64) -> Streaming<Bytes>;
    /// Reads `items` to the end; returns how many messages came.
    async fn sink(&self, items: Streaming<Bytes>) -> Result<u64, Status>;
}

/// The server side of [`Streams`].
struct Source;

impl Streams for Source {
    async fn source(&self, count: u64, size: u64) -> Streaming<Bytes> {
        let payload = Bytes::from(vec![7u8; usize::try_from(size).unwrap_or(0)]);
        Streaming::from_iter((0..count).map(move |_| payload.clone()))
    }

    async fn sink(&self, mut items: Streaming<Bytes>) -> Result<u64, Status> {
        let mut count = 0u64;
        while items.message().await?.is_some() {
            count += 1;
        }
        Ok(count)
    }
}

/// Set in a child: the stream window of its server.
const WINDOW_ENV: &str = "SWITCHYARD_BENCH_STREAM_WINDOW";
/// The small message and the chunk, bytes.
const SMALL: usize = 64;
const CHUNK: usize = 1 << 20;
/// The stream windows tried: the default and a large one.
const WINDOWS: [u32; 2] = [switchyard::streaming::DEFAULT_STREAM_WINDOW, 1024];

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Messages of [`SMALL`] bytes per measurement.
    small: u64,
    /// Chunks of [`CHUNK`] bytes per measurement.
    chunks: u64,
    /// Each measurement stops here if its count is not reached.
    limit: Duration,
    /// The stream windows measured.
    windows: &'static [u32],
}

impl Plan {
    /// Full: 5 000 000 messages, 1024 chunks, at most 10 s each, both
    /// windows. Quick: 200 000 and 64, at most 2 s, the large window only.
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Self {
                small: 200_000,
                chunks: 64,
                limit: Duration::from_secs(2),
                windows: &WINDOWS[1..],
            }
        } else {
            Self {
                small: 5_000_000,
                chunks: 1024,
                limit: Duration::from_secs(10),
                windows: &WINDOWS,
            }
        }
    }

    fn count(&self, size: usize) -> u64 {
        if size == SMALL {
            self.small
        } else {
            self.chunks
        }
    }
}

/// What a receiver counted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Rate {
    messages: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Rate {
    fn per_s(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    fn gb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e9 / self.elapsed.as_secs_f64()
    }

    /// Messages/s for small messages, GB/s for chunks.
    fn value(&self, size: usize) -> f64 {
        if size == SMALL {
            self.per_s()
        } else {
            self.gb_per_s()
        }
    }
}

/// Which way the messages go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// `source`: the server streams, the client counts.
    Server,
    /// `sink`: the client streams, the server counts.
    Client,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Self::Server => "server stream",
            Self::Client => "client stream",
        }
    }
}

/// One line of the table.
#[derive(Clone, Debug)]
struct Line {
    transport: &'static str,
    direction: Direction,
    size: usize,
    /// Per window measured, in [`Plan::windows`] order.
    ours: Vec<Rate>,
    /// The raw framed path one way, or why there is none.
    raw: Result<Rate, &'static str>,
}

/// Measures the table for `only`'s transports (all when empty), printing
/// it at the end.
pub(crate) fn run(quick: bool, only: &[Transport]) -> Result<(), String> {
    let plan = Plan::new(quick);
    pin(0);
    let windows: Vec<String> = plan.windows.iter().map(u32::to_string).collect();
    println!(
        "\nstreams: {} messages of {SMALL} B (msgs/s) and {} chunks of 1 MiB (GB/s) per \
         measurement, at most {:.0} s each, counted by the receiver; server stream: the client \
         reads `source`, timed from the call to the stream's end; client stream: `sink` replies \
         with the count, timed from the call to the reply; stream window {} (both sides); raw framed: a child writes u32-length frames through a \
         256 KiB BufWriter, the parent reads with a 1 MiB buffer and parses them (shm: the spin \
         ring; quic: one plain quinn stream); pinned to CPUs 0 and 1: {}",
        plan.small,
        plan.chunks,
        plan.limit.as_secs_f64(),
        windows.join(" and "),
        if pinning() { "yes" } else { "no" }
    );
    let dir = ScratchDir::new()?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    let mut lines = Vec::new();
    let wanted = |t: &Transport| only.is_empty() || only.contains(t);
    let transports = [
        Transport::Pipe,
        Transport::Shm,
        Transport::Unix,
        Transport::Tcp,
        Transport::Quic,
    ];
    for transport in transports
        .into_iter()
        .filter(|t| wanted(t) && t.is_available())
    {
        let kind = transport.as_str();
        let mut ours: Vec<[Rate; 4]> = Vec::new();
        for &window in plan.windows {
            ours.push(runtime.block_on(measure_ours(kind, dir.path(), window, &plan))?);
        }
        let cases = [
            (Direction::Server, SMALL),
            (Direction::Server, CHUNK),
            (Direction::Client, SMALL),
            (Direction::Client, CHUNK),
        ];
        let raw: Vec<Result<Rate, &'static str>> = [SMALL, CHUNK]
            .into_iter()
            .map(|size| raw::raw_rate(kind, dir.path(), plan.count(size), size))
            .collect::<Result<_, String>>()?;
        for (i, (direction, size)) in cases.into_iter().enumerate() {
            lines.push(Line {
                transport: kind,
                direction,
                size,
                ours: ours.iter().map(|w| w[i]).collect(),
                raw: raw[usize::from(size != SMALL)],
            });
        }
    }
    print!("{}", text(&lines, plan.windows));
    if lines.iter().any(|l| l.transport == "shm") {
        println!(
            "shm moves a 1 MiB message as a bulk body (copied into the connection's pool by the \
             sender, out of it by the receiver), not through the ring, so its 1 MiB ratio is to \
             the ring, not to its own floor (the hand-off in the shm bulk table)"
        );
    }
    if let Some(peers) = peers::run(quick)? {
        print!("{}", peers::text(&lines, &peers));
    }
    Ok(())
}

/// The table: a column per window, the raw path, and the better window's
/// ratio to it.
fn text(lines: &[Line], windows: &[u32]) -> String {
    let mut header = vec![
        "transport".to_owned(),
        "direction".to_owned(),
        "size".to_owned(),
    ];
    header.extend(windows.iter().map(|w| format!("window {w}")));
    header.extend(["raw framed".to_owned(), "ratio".to_owned()]);
    let mut rows = vec![header];
    for line in lines {
        let unit = if line.size == SMALL { "msgs/s" } else { "GB/s" };
        let show = |v: f64| {
            if line.size == SMALL {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        let mut row = vec![
            line.transport.to_owned(),
            line.direction.name().to_owned(),
            format!(
                "{} ({unit})",
                if line.size == SMALL { "64 B" } else { "1 MiB" }
            ),
        ];
        row.extend(line.ours.iter().map(|r| show(r.value(line.size))));
        let best = line
            .ours
            .iter()
            .map(|r| r.value(line.size))
            .fold(0.0, f64::max);
        match line.raw {
            Ok(raw) => {
                row.push(show(raw.value(line.size)));
                row.push(format!("{:.2}x", best / raw.value(line.size)));
            }
            Err(why) => {
                row.push(format!("n/a ({why})"));
                row.push(String::new());
            }
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut text = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i < 3 {
                let _ = write!(text, "{cell:<width$} ");
            } else {
                let _ = write!(text, "{cell:>width$} ");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    }
    out
}

/// Starts a child serving [`Streams`] over `kind` with `window`, and
/// measures both directions at both sizes: server 64 B, server 1 MiB,
/// client 64 B, client 1 MiB. The child is killed before returning.
async fn measure_ours(
    kind: &str,
    dir: &Path,
    window: u32,
    plan: &Plan,
) -> Result<[Rate; 4], String> {
    let (serving, channel) = connect(kind, dir, window).await?;
    let client = StreamsClient::new(channel);
    let mut rates = [Rate::default(); 4];
    let cases = [
        (Direction::Server, SMALL),
        (Direction::Server, CHUNK),
        (Direction::Client, SMALL),
        (Direction::Client, CHUNK),
    ];
    for (rate, (direction, size)) in rates.iter_mut().zip(cases) {
        let count = plan.count(size);
        let what = format!("{kind} {} of {size} B", direction.name());
        // Warm-up: connection state, buffers, the pages of the chunks.
        let warmup = (count / 20).max(4);
        one(&client, direction, warmup, size, plan.limit)
            .await
            .map_err(|e| format!("{what} (warm-up): {e}"))?;
        *rate = one(&client, direction, count, size, plan.limit)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
    }
    drop(client);
    drop(serving);
    Ok(rates)
}

/// One stream of up to `count` messages of `size` bytes, stopped after
/// `limit`: what the receiver counted.
async fn one(
    client: &StreamsClient,
    direction: Direction,
    count: u64,
    size: usize,
    limit: Duration,
) -> Result<Rate, Status> {
    let start = Instant::now();
    let until = start + limit;
    let messages = match direction {
        Direction::Server => {
            let mut stream = client.source(count, size as u64).await?;
            let mut read = 0u64;
            while let Some(message) = stream.message().await? {
                debug_assert_eq!(message.len(), size);
                read += 1;
                // The clock every 256 small messages, every chunk.
                if (size != SMALL || read.is_multiple_of(256)) && Instant::now() >= until {
                    // Dropping the stream cancels the rest.
                    break;
                }
            }
            read
        }
        Direction::Client => {
            let payload = Bytes::from(vec![7u8; size]);
            let items = (0..count).map_while(move |i| {
                let go = (size == SMALL && !i.is_multiple_of(256)) || Instant::now() < until;
                go.then(|| payload.clone())
            });
            client.sink(futures_util::stream::iter(items)).await?
        }
    };
    Ok(Rate {
        messages,
        bytes: messages * size as u64,
        elapsed: start.elapsed(),
    })
}

/// What keeps a serving child alive; dropping it kills the child.
enum Serving {
    /// Reached by address or name.
    Addressed { _child: ChildGuard },
    /// Reached over inherited pipes.
    Piped {
        _child: switchyard::process::ChildProcess,
    },
}

/// Starts the child serving [`Streams`] for `kind` with `window` and
/// connects to it over `kind`, the channel's window `window` too.
async fn connect(kind: &str, dir: &Path, window: u32) -> Result<(Serving, Channel), String> {
    let number = window.to_string();
    let builder = || Channel::builder().stream_window(window);
    if kind == "pipe" {
        let mut command = child_command("streams-pipe")?;
        command.env(WINDOW_ENV, &number).stdin(Stdio::null());
        let child = switchyard::process::Spawner::new(command)
            .channel_settings(builder())
            .spawn()
            .await
            .map_err(|e| format!("starting the streams-pipe child: {e}"))?;
        let channel = child.channel();
        return Ok((Serving::Piped { _child: child }, channel));
    }
    #[cfg(feature = "quic")]
    if kind == "quic" {
        return connect_quic(window).await;
    }
    let (child, endpoints) = spawn_child_with_window("streams-server", dir, &number)?;
    let transport =
        Transport::from_name(kind).ok_or_else(|| format!("{kind} is not a transport"))?;
    let channel = if kind == "shm" {
        builder()
            .runtime_dir(dir)
            .connect(STREAMS_DESCRIPTOR.name)
            .await
    } else {
        let target = endpoints
            .split(' ')
            .find(|e| switchyard::transport::Endpoint::scheme_of(e) == Some(kind))
            .ok_or_else(|| format!("the streams child offers no {kind} endpoint: {endpoints}"))?;
        builder().prefer(transport).connect(target).await
    }
    .map_err(|e| format!("connecting to the streams child over {kind}: {e}"))?;
    let selection = channel.selection();
    if selection.transport != transport {
        return Err(format!(
            "the {kind} streams need {kind}, but connecting selected {selection}"
        ));
    }
    Ok((Serving::Addressed { _child: child }, channel))
}

/// Starts this binary as a child in `role` serving in `dir` with `window`;
/// returns it and the endpoints it announced.
fn spawn_child_with_window(
    role: &str,
    dir: &Path,
    window: &str,
) -> Result<(ChildGuard, String), String> {
    let (child, _stdout, addr) = spawn_announcing(
        role,
        &[(DIR_ENV, dir.as_os_str()), (WINDOW_ENV, OsStr::new(window))],
        "its endpoints",
    )?;
    Ok((child, addr))
}

#[cfg(feature = "quic")]
async fn connect_quic(window: u32) -> Result<(Serving, Channel), String> {
    use switchyard::transport::quic;
    let number = window.to_string();
    let (child, addr, pin) =
        crate::bench_quic::spawn("streams-quic", None, &[(WINDOW_ENV, OsStr::new(&number))])?;
    let target = quic::url(addr);
    let link = quic::connect(&addr.to_string(), &pin)
        .await
        .map_err(|e| format!("connecting to {target}: {e}"))?;
    let channel = Channel::builder()
        .stream_window(window)
        .connect_link(link)
        .await
        .map_err(|e| format!("the handshake over {target}: {e}"))?;
    Ok((Serving::Addressed { _child: child }, channel))
}

/// In a child process: the roles of this file.
pub(crate) fn child(role: &str) -> Result<(), String> {
    let window = || -> u32 {
        std::env::var(WINDOW_ENV)
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(switchyard::streaming::DEFAULT_STREAM_WINDOW)
    };
    let dir = || {
        std::env::var_os(DIR_ENV)
            .map(std::path::PathBuf::from)
            .ok_or("SWITCHYARD_RUNTIME_DIR is not set")
    };
    match role {
        "streams-server" | "streams-pipe" | "streams-quic" => {
            let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
            runtime.block_on(async {
                match role {
                    "streams-pipe" => {
                        switchyard::process::serve_parent(
                            switchyard::process::Services::new()
                                .stream_window(window())
                                .add_service(StreamsServer::new(Source)),
                        )
                        .await
                        .map_err(|e| format!("serving the parent: {e}"))?;
                        switchyard::process::parent_gone().await;
                        Ok(())
                    }
                    #[cfg(feature = "quic")]
                    "streams-quic" => quic_child(window()).await,
                    _ => {
                        let server = Server::builder()
                            .add_service(StreamsServer::new(Source))
                            .tcp("127.0.0.1:0")
                            .runtime_dir(dir()?)
                            .message_queues(false)
                            .stream_window(window())
                            .start()
                            .await
                            .map_err(|e| format!("server: {e}"))?;
                        announce(&server.endpoints().join(" "));
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                }
            })
        }
        raw if raw.starts_with("streams-raw-") => raw::child(raw),
        other => Err(format!("unknown child role {other}")),
    }
}

#[cfg(feature = "quic")]
async fn quic_child(window: u32) -> Result<(), String> {
    use switchyard::transport::Listener;
    use switchyard::transport::quic::QuicListener;
    let server = Server::builder()
        .add_service(StreamsServer::new(Source))
        .unpublished()
        .no_unix()
        .message_queues(false)
        .stream_window(window)
        .start()
        .await
        .map_err(|e| format!("server: {e}"))?;
    let mut listener = QuicListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    announce(&format!(
        "{} {}",
        listener.local_addr(),
        listener.fingerprint()
    ));
    loop {
        match listener.accept().await {
            Ok(link) => server.serve_link(link),
            Err(err) => eprintln!("streams-quic child: {err}"),
        }
    }
}
