//! The framing shared by every byte-stream transport (Unix, TCP, pipes,
//! in-memory): frames are written back to back and split again by the
//! sans-IO [`FrameDecoder`].

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::intake::{Due, FREE_PER_RECEIVER, Intake, IntakeLimits};
use super::{LinkError, LinkRx, LinkTx};
use crate::protocol::frame::{Decoded, FrameDecoder};

/// How much a receiver asks the kernel for at least, per read.
const READ_CHUNK: usize = 64 * 1024;

/// The sending half of a byte-stream link.
#[derive(Debug)]
pub struct StreamTx<W> {
    /// `None` once closed: dropping the writer is what ends the stream for
    /// transports whose shutdown is a no-op (pipes).
    writer: Option<W>,
}

impl<W> StreamTx<W> {
    /// Wraps a writer.
    pub fn new(writer: W) -> Self {
        Self {
            writer: Some(writer),
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "this side closed the link")
}

impl<W: AsyncWrite + Unpin + Send + 'static> LinkTx for StreamTx<W> {
    async fn send(&mut self, frames: &[u8]) -> io::Result<()> {
        match &mut self.writer {
            Some(writer) => writer.write_all(frames).await,
            None => Err(closed()),
        }
    }

    async fn close(&mut self) -> io::Result<()> {
        match self.writer.take() {
            Some(mut writer) => writer.shutdown().await,
            None => Ok(()),
        }
    }
}

/// The receiving half of a byte-stream link.
#[derive(Debug)]
pub struct StreamRx<R> {
    reader: R,
    buf: BytesMut,
    decoder: FrameDecoder,
    intake: Intake,
}

impl<R> StreamRx<R> {
    /// Wraps a reader; bodies over `frame_limit` bytes are skipped and
    /// reported as [`Decoded::Oversized`].
    pub fn new(reader: R, frame_limit: u32) -> Self {
        Self::with_prefix(reader, frame_limit, &[])
    }

    /// Like [`new`](Self::new), with bytes already read from the stream
    /// (for example while checking how a connection starts).
    pub fn with_prefix(reader: R, frame_limit: u32, prefix: &[u8]) -> Self {
        let mut buf = BytesMut::with_capacity(READ_CHUNK.max(prefix.len()));
        buf.extend_from_slice(prefix);
        Self {
            reader,
            buf,
            decoder: FrameDecoder::new(frame_limit),
            intake: Intake::new(IntakeLimits::default(), 0),
        }
    }

    /// Holds partial frames under `limits` (a deadline for each frame, a
    /// budget shared with other receivers).
    pub fn with_limits(mut self, limits: IntakeLimits) -> Self {
        self.intake = Intake::new(limits, FREE_PER_RECEIVER);
        self
    }
}

/// Appends every whole frame in `buf` to `out`; whether there was one.
/// Shared by every transport that carries the byte stream of frames.
pub(crate) fn decode_available(
    decoder: &mut FrameDecoder,
    buf: &mut BytesMut,
    out: &mut Vec<Decoded>,
) -> Result<bool, LinkError> {
    let before = out.len();
    while let Some(decoded) = decoder.decode(buf)? {
        out.push(decoded);
    }
    Ok(out.len() > before)
}

/// How a byte stream that ended with `buf` undecoded ended: cleanly between
/// frames (`Ok(false)`), or in the middle of one.
pub(crate) fn end_of_stream(decoder: &FrameDecoder, buf: &BytesMut) -> Result<bool, LinkError> {
    if buf.is_empty() && decoder.at_frame_boundary() {
        Ok(false)
    } else {
        Err(LinkError::TruncatedFrame {
            buffered: buf.len(),
        })
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> LinkRx for StreamRx<R> {
    async fn recv(&mut self, out: &mut Vec<Decoded>) -> Result<bool, LinkError> {
        loop {
            if decode_available(&mut self.decoder, &mut self.buf, out)? {
                self.intake.settle(true, &self.decoder, &self.buf);
                return Ok(true);
            }
            self.intake.settle(false, &self.decoder, &self.buf);
            // Grow toward the frame as its bytes come (Vec's doubling), not
            // by what its header claims.
            let want = self
                .decoder
                .wanted(&self.buf)
                .clamp(READ_CHUNK, 4 * READ_CHUNK);
            let due = self.intake.due();
            let read = Due::run(due, async {
                self.intake.room(&self.buf, want).await?;
                self.buf.reserve(want);
                Ok(self.reader.read_buf(&mut self.buf).await?)
            })
            .await;
            match read {
                Ok(0) => return end_of_stream(&self.decoder, &self.buf),
                Ok(_) => {}
                Err(err @ LinkError::FrameTimeout { .. }) => {
                    // What arrived of it is of no use: free it now.
                    self.buf = BytesMut::new();
                    self.intake.abandon();
                    return Err(err);
                }
                Err(err) => return Err(err),
            }
        }
    }
}
