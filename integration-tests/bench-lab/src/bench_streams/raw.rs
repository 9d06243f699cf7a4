//! The raw framed path of the streams table, one way over the same OS
//! mechanism as each transport: a child writes u32-length frames through a
//! 256 KiB buffer once the parent sent a go byte; the parent reads with a
//! 1 MiB buffer and parses them, counting messages and bytes.

use std::ffi::OsStr;
use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Instant;

use super::Rate;
use crate::bench::{DIR_ENV, Duplex, announce, spawn_announcing, spawn_role};

/// Set in a raw child: how many frames to write.
const COUNT_ENV: &str = "SWITCHYARD_BENCH_STREAM_COUNT";
/// Set in a raw child: the payload of each frame, bytes.
const SIZE_ENV: &str = "SWITCHYARD_BENCH_STREAM_SIZE";
/// The raw writer's buffer.
const WRITE_BUFFER: usize = 256 << 10;
/// The raw reader's buffer.
const READ_BUFFER: usize = 1 << 20;

/// The raw framed path over `kind` for `count` frames of `size` bytes, or
/// why there is none.
pub(super) fn raw_rate(
    kind: &str,
    dir: &Path,
    count: u64,
    size: usize,
) -> Result<Result<Rate, &'static str>, String> {
    let count_text = count.to_string();
    let size_text = size.to_string();
    let env = [
        (COUNT_ENV, OsStr::new(&count_text)),
        (SIZE_ENV, OsStr::new(&size_text)),
        (DIR_ENV, dir.as_os_str()),
    ];
    let rate = match kind {
        "pipe" => {
            let (mut child, output) = spawn_role("streams-raw-pipe", &env)?;
            let input = child.take_stdin()?;
            read_frames(Duplex(output, input), count)?
        }
        #[cfg(target_os = "linux")]
        "shm" => {
            let (stream, child) = crate::bench_shm::spawn_with_rings("streams-raw-shm", &env)?;
            let rate = read_frames(stream, count)?;
            drop(child);
            rate
        }
        "unix" | "tcp" => {
            let (child, _stdout, addr) =
                spawn_announcing(&format!("streams-raw-{kind}"), &env, "its address")?;
            let connect_err = |e: std::io::Error| format!("connecting to {addr}: {e}");
            let rate = if kind == "unix" {
                read_frames(UnixStream::connect(&addr).map_err(connect_err)?, count)?
            } else {
                read_frames(TcpStream::connect(&addr).map_err(connect_err)?, count)?
            };
            drop(child);
            rate
        }
        #[cfg(feature = "quic")]
        "quic" => raw_quic(&env, count)?,
        _ => return Ok(Err("no raw framed path")),
    };
    Ok(Ok(rate))
}

/// Sends the go byte, then reads and parses frames until `count` came.
fn read_frames<S: Read + Write>(mut stream: S, count: u64) -> Result<Rate, String> {
    let io = |e: std::io::Error| format!("raw framed read: {e}");
    let mut buf = vec![0u8; READ_BUFFER];
    let mut frames = Frames::default();
    stream.write_all(&[1]).map_err(io)?;
    stream.flush().map_err(io)?;
    let start = Instant::now();
    while frames.messages < count {
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Err(format!(
                "the raw writer stopped after {} of {count} frames",
                frames.messages
            ));
        }
        frames.feed(&buf[..n]);
    }
    Ok(Rate {
        messages: frames.messages,
        bytes: frames.bytes,
        elapsed: start.elapsed(),
    })
}

/// A parser of u32-length frames fed in arbitrary pieces: counts them.
#[derive(Debug, Default)]
struct Frames {
    header: [u8; 4],
    /// Header bytes held (0 to 3) while no payload is pending.
    have: usize,
    /// Payload bytes of the current frame still to come.
    remaining: usize,
    /// Whole frames seen.
    messages: u64,
    /// Their payload bytes.
    bytes: u64,
}

impl Frames {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                data = &data[n..];
                self.remaining -= n;
                self.bytes += n as u64;
                if self.remaining == 0 {
                    self.messages += 1;
                }
                continue;
            }
            let n = (4 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 4 {
                self.have = 0;
                self.remaining = u32::from_le_bytes(self.header) as usize;
                if self.remaining == 0 {
                    self.messages += 1;
                }
            }
        }
    }
}

/// Waits for the go byte, then writes `count` frames of `size` bytes
/// through a [`WRITE_BUFFER`] buffer.
fn write_frames<S: Read + Write>(mut stream: S, count: u64, size: usize) -> Result<(), String> {
    let io = |e: std::io::Error| format!("raw framed write: {e}");
    let mut go = [0u8; 1];
    stream.read_exact(&mut go).map_err(io)?;
    let header = u32::try_from(size)
        .map_err(|_| format!("{size} bytes do not fit a frame"))?
        .to_le_bytes();
    let payload = vec![7u8; size];
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, &mut stream);
    for _ in 0..count {
        out.write_all(&header).map_err(io)?;
        out.write_all(&payload).map_err(io)?;
    }
    out.flush().map_err(io)?;
    drop(out);
    // Until the parent has read everything (a spin ring has no end of
    // stream: leaving at once is fine, the ring outlives this process).
    Ok(())
}

/// In a child process: the raw writers (`streams-raw-*`).
pub(super) fn child(role: &str) -> Result<(), String> {
    let number = |name: &str| -> Result<u64, String> {
        std::env::var(name)
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{name} is not set to a number"))
    };
    let dir = || {
        std::env::var_os(DIR_ENV)
            .map(std::path::PathBuf::from)
            .ok_or("SWITCHYARD_RUNTIME_DIR is not set")
    };
    let (count, size) = (number(COUNT_ENV)?, number(SIZE_ENV)?);
    let size = usize::try_from(size).map_err(|e| format!("{SIZE_ENV}: {e}"))?;
    match role {
        "streams-raw-pipe" => {
            let clone = |fd: std::os::fd::BorrowedFd<'_>| {
                fd.try_clone_to_owned()
                    .map(std::fs::File::from)
                    .map_err(|e| format!("stdin/stdout: {e}"))
            };
            let output = clone(std::io::stdout().as_fd())?;
            // As switchyard's own pipes.
            switchyard::transport::pipe::enlarge(&output);
            write_frames(
                Duplex(clone(std::io::stdin().as_fd())?, output),
                count,
                size,
            )
        }
        #[cfg(target_os = "linux")]
        "streams-raw-shm" => {
            let rings = crate::bench_shm::attach()?;
            announce("attached");
            write_frames(rings, count, size)
        }
        "streams-raw-unix" => {
            let path = dir()?.join("raw-streams.sock");
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).map_err(|e| format!("bind: {e}"))?;
            announce(&path.display().to_string());
            let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            write_frames(stream, count, size)
        }
        "streams-raw-tcp" => {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
            let addr = listener.local_addr().map_err(|e| format!("address: {e}"))?;
            announce(&addr.to_string());
            let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            write_frames(stream, count, size)
        }
        #[cfg(feature = "quic")]
        "streams-raw-quic" => {
            let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
            runtime.block_on(raw_quic_child(count, size))
        }
        other => Err(format!("unknown child role {other}")),
    }
}

/// The raw framed path over one quinn stream: the parent opens it and
/// sends the go byte, the `streams-raw-quic` child writes the frames back.
#[cfg(feature = "quic")]
fn raw_quic(env: &[(&str, &OsStr)], count: u64) -> Result<Rate, String> {
    use switchyard::transport::quic::{self, QuicConfig};
    let (child, addr, pin) = crate::bench_quic::spawn("streams-raw-quic", None, env)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    let rate = runtime.block_on(async move {
        let client =
            quic::quinn_client_config(&quic::ClientTls::pinned(pin), &QuicConfig::default())
                .map_err(|e| format!("quinn client configuration: {e}"))?;
        let mut endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::UNSPECIFIED, 0).into())
            .map_err(|e| format!("a UDP socket for quinn: {e}"))?;
        endpoint.set_default_client_config(client);
        let conn = endpoint
            .connect(addr, "switchyard")
            .map_err(|e| format!("connecting to the raw quic child at {addr}: {e}"))?
            .await
            .map_err(|e| format!("the QUIC handshake with the raw quic child at {addr}: {e}"))?;
        let quinn_err = |e: &dyn std::fmt::Display| format!("raw quinn stream: {e}");
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| quinn_err(&e))?;
        let mut buf = vec![0u8; READ_BUFFER];
        let mut frames = Frames::default();
        send.write_all(&[1]).await.map_err(|e| quinn_err(&e))?;
        let start = Instant::now();
        while frames.messages < count {
            match recv.read(&mut buf).await.map_err(|e| quinn_err(&e))? {
                Some(n) => frames.feed(&buf[..n]),
                None => {
                    return Err(format!(
                        "the raw quinn writer stopped after {} of {count} frames",
                        frames.messages
                    ));
                }
            }
        }
        let elapsed = start.elapsed();
        endpoint.close(0u32.into(), b"done");
        Ok::<_, String>(Rate {
            messages: frames.messages,
            bytes: frames.bytes,
            elapsed,
        })
    })?;
    drop(child);
    Ok(rate)
}

/// The `streams-raw-quic` child: accepts one connection and one stream,
/// waits for the go byte, writes `count` frames of `size` bytes in pieces
/// of up to [`WRITE_BUFFER`] (as a `BufWriter` would), and stays until the
/// parent closes the connection.
#[cfg(feature = "quic")]
async fn raw_quic_child(count: u64, size: usize) -> Result<(), String> {
    use switchyard::transport::quic::{self, Identity, QuicConfig};
    let identity = Identity::self_signed(&["localhost"]).map_err(|e| e.to_string())?;
    let server = quic::quinn_server_config(
        &quic::ServerTls::new(identity.clone()),
        &QuicConfig::default(),
    )
    .map_err(|e| format!("quinn server configuration: {e}"))?;
    let endpoint = quinn::Endpoint::server(server, (std::net::Ipv4Addr::LOCALHOST, 0).into())
        .map_err(|e| format!("bind: {e}"))?;
    let addr = endpoint.local_addr().map_err(|e| format!("address: {e}"))?;
    announce(&format!("{addr} {}", identity.fingerprint()));
    let quinn_err = |e: &dyn std::fmt::Display| format!("raw quinn writer: {e}");
    let conn = endpoint
        .accept()
        .await
        .ok_or("the endpoint closed before a connection came")?
        .await
        .map_err(|e| quinn_err(&e))?;
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| quinn_err(&e))?;
    let mut go = [0u8; 1];
    recv.read_exact(&mut go).await.map_err(|e| quinn_err(&e))?;
    let header = u32::try_from(size)
        .map_err(|_| format!("{size} bytes do not fit a frame"))?
        .to_le_bytes();
    let payload = vec![7u8; size];
    let mut buf = Vec::with_capacity(WRITE_BUFFER);
    for _ in 0..count {
        if buf.len() + header.len() + size > WRITE_BUFFER {
            send.write_all(&buf).await.map_err(|e| quinn_err(&e))?;
            buf.clear();
        }
        if header.len() + size > WRITE_BUFFER {
            send.write_all(&header).await.map_err(|e| quinn_err(&e))?;
            send.write_all(&payload).await.map_err(|e| quinn_err(&e))?;
        } else {
            buf.extend_from_slice(&header);
            buf.extend_from_slice(&payload);
        }
    }
    send.write_all(&buf).await.map_err(|e| quinn_err(&e))?;
    send.finish().map_err(|e| quinn_err(&e))?;
    // Until the parent has read it all and closes.
    conn.closed().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    // Full paths, no imports: see the note in bench.rs's tests.

    #[test]
    fn frames_are_counted_whatever_the_pieces() {
        let mut wire = Vec::new();
        for size in [64usize, 1, 300, 64] {
            wire.extend_from_slice(&(size as u32).to_le_bytes());
            wire.extend(std::iter::repeat_n(9u8, size));
        }
        for piece in [1, 3, 4, 5, 64, 67, 1000] {
            let mut frames = super::Frames::default();
            for chunk in wire.chunks(piece) {
                frames.feed(chunk);
            }
            assert_eq!(
                (frames.messages, frames.bytes),
                (4, 429),
                "pieces of {piece}"
            );
        }
    }
}
