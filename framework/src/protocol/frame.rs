//! Frames: a fixed 40-byte little-endian header, then metadata, then payload.
//!
//! ```text
//! offset size field
//!  0     2    magic        0x5953 (the bytes "SY")
//!  2     1    version      1
//!  3     1    kind         see [`Kind`]
//!  4     2    flags        see the `FLAG_` constants; unknown bits are ignored
//!  6     2    status       a [`Code`](super::status::Code) (Response, GoAway), else 0
//!  8     8    call id      chosen by the caller, unique among its calls in flight
//! 16     4    method id    32-bit FNV-1a of "Service.method" (Request, OneWay)
//! 20     4    metadata len bytes of metadata after the header
//! 24     4    payload len  bytes of payload after the metadata
//! 28     4    credit       stream frames granted (Credit; a streaming Request:
//!                          the caller's window for the callee's Data; a batch:
//!                          its messages), else 0
//! 32     8    deadline     remaining budget in microseconds, 0 = none (Request, OneWay)
//! ```
//!
//! The decoder checks `metadata len + payload len` against the configured
//! limit before it reserves a byte, so a hostile length costs nothing.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 40;
/// The first two bytes of every frame, little endian: `"SY"`.
pub const MAGIC: u16 = 0x5953;
/// The protocol version this implementation speaks.
pub const VERSION: u8 = 1;
/// Default limit on `metadata len + payload len`: 16 MiB.
pub const DEFAULT_FRAME_LIMIT: u32 = 16 << 20;
/// The largest hello accepted, whatever the frame limit (1 MiB).
pub const HELLO_LIMIT: u32 = 1 << 20;
/// The largest limit that may be configured: 1 GiB.
pub const MAX_FRAME_LIMIT: u32 = 1 << 30;

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum Kind {
    /// Handshake, sent once by each side first; payload is a [`Hello`](super::hello::Hello).
    Hello = 1,
    /// A call that expects a response.
    Request = 2,
    /// The response to a request: status in the header; the payload is the
    /// encoded result when the status is OK, else the UTF-8 status message.
    Response = 3,
    /// A call that expects no response.
    OneWay = 4,
    /// The caller gave up on the call with this call id.
    Cancel = 5,
    /// Liveness probe; the peer answers with [`Kind::Pong`] and the same call id.
    Ping = 6,
    /// Answer to a [`Kind::Ping`].
    Pong = 7,
    /// The sender will start no new calls and accept none; status and UTF-8
    /// message say why. Calls in flight still complete.
    GoAway = 8,
    /// One message of a streaming call: the caller's (no flag) or the
    /// callee's ([`FLAG_FROM_CALLEE`]). Sent only within the credit the
    /// receiver granted.
    Data = 9,
    /// The caller sends no more messages on this call (half-close).
    End = 10,
    /// The sender grants `credit` more messages on this call: to the
    /// callee ([`FLAG_FROM_CALLEE`] unset) or from it (set).
    Credit = 11,
}

impl Kind {
    /// The kind for a wire value.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Hello,
            2 => Self::Request,
            3 => Self::Response,
            4 => Self::OneWay,
            5 => Self::Cancel,
            6 => Self::Ping,
            7 => Self::Pong,
            8 => Self::GoAway,
            9 => Self::Data,
            10 => Self::End,
            11 => Self::Credit,
            _ => return None,
        })
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the frame is.
    pub kind: Kind,
    /// Flags (the `FLAG_` constants); unknown bits are ignored.
    pub flags: u16,
    /// Status code (Response, GoAway).
    pub status: u16,
    /// The call this frame belongs to.
    pub call_id: u64,
    /// The method called (Request, OneWay).
    pub method_id: u32,
    /// Bytes of metadata.
    pub metadata_len: u32,
    /// Bytes of payload.
    pub payload_len: u32,
    /// Stream frames granted (Credit; a streaming Request: the caller's
    /// receive window); in a batch, its messages.
    pub credit: u32,
    /// Remaining deadline budget in microseconds; 0 means none.
    pub deadline_us: u64,
}

impl Header {
    /// A header of `kind` for `call_id` with everything else zero.
    pub fn new(kind: Kind, call_id: u64) -> Self {
        Self {
            kind,
            flags: 0,
            status: 0,
            call_id,
            method_id: 0,
            metadata_len: 0,
            payload_len: 0,
            credit: 0,
            deadline_us: 0,
        }
    }

    /// Whether the side serving the call sent this frame (a stream frame
    /// with [`FLAG_FROM_CALLEE`]).
    pub fn from_callee(&self) -> bool {
        self.flags & FLAG_FROM_CALLEE != 0
    }

    /// Bytes that follow the header.
    pub fn body_len(&self) -> u64 {
        u64::from(self.metadata_len) + u64::from(self.payload_len)
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than [`HEADER_LEN`]: a caller bug, never peer input.
    pub fn write_to(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_LEN];
        out[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        out[2] = VERSION;
        out[3] = self.kind as u8;
        out[4..6].copy_from_slice(&self.flags.to_le_bytes());
        out[6..8].copy_from_slice(&self.status.to_le_bytes());
        out[8..16].copy_from_slice(&self.call_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.method_id.to_le_bytes());
        out[20..24].copy_from_slice(&self.metadata_len.to_le_bytes());
        out[24..28].copy_from_slice(&self.payload_len.to_le_bytes());
        out[28..32].copy_from_slice(&self.credit.to_le_bytes());
        out[32..40].copy_from_slice(&self.deadline_us.to_le_bytes());
    }

    /// Parses a header from exactly [`HEADER_LEN`] bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Self, FrameError> {
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let magic = u16_at(0);
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        if bytes[2] != VERSION {
            return Err(FrameError::UnsupportedVersion { found: bytes[2] });
        }
        let kind = Kind::from_u8(bytes[3]).ok_or(FrameError::UnknownKind { found: bytes[3] })?;
        Ok(Self {
            kind,
            flags: u16_at(4),
            status: u16_at(6),
            call_id: u64_at(8),
            method_id: u32_at(16),
            metadata_len: u32_at(20),
            payload_len: u32_at(24),
            credit: u32_at(28),
            deadline_us: u64_at(32),
        })
    }
}

/// Header flag: the body is not in the stream but in a bulk region the
/// transport passed beside it (shared memory's mmap path); the frame's
/// payload is a [`BulkDescriptor`] and its metadata is empty. Transports
/// resolve such frames before anyone else sees them.
pub const FLAG_BULK: u16 = 1;

/// Header flag of a Response: the call was refused before its handler
/// started (the server was draining), so the caller may make it again on
/// another connection without doing its work twice (HTTP/2's
/// REFUSED_STREAM). Receivers that do not know it ignore it.
pub const FLAG_NOT_STARTED: u16 = 2;

/// Header flag of a stream frame (Data, Credit): the side serving the call
/// sent it. Without it, the caller did. It tells the two directions of a
/// peer link apart, where both sides make calls with their own ids.
pub const FLAG_FROM_CALLEE: u16 = 4;

/// Header flag of a Request: the caller sends more messages (Data frames,
/// then End) once the callee grants it credit (client streaming).
pub const FLAG_CLIENT_STREAM: u16 = 8;

/// Header flag of a Request: the callee answers with any number of Data
/// frames, then the Response that carries the final status and trailers
/// (server streaming). The header's `credit` is the caller's window.
pub const FLAG_SERVER_STREAM: u16 = 16;

/// Header flag of a Request, OneWay, Response or Data frame: the payload is
/// compressed (one zstd frame that records its size; see
/// [`compress`](super::compress)); the header's payload length is the
/// compressed one. Sent only to a peer whose hello lists the codec.
/// Receivers decompress before anything else sees the frame.
pub const FLAG_COMPRESSED: u16 = 32;

/// Header flag: the sender's application said this payload does not
/// compress (`#[switchyard(compress = false)]`: it is compressed already),
/// so links that compress send it as it is. Receivers ignore it.
pub const FLAG_INCOMPRESSIBLE: u16 = 64;

/// Header flag of a Data frame: the payload holds several messages of the
/// stream, as many as the header's `credit` says (at least one), each a
/// `u32` little-endian length and then its bytes ([`BatchMessages`]). A
/// stream of small messages moves many per frame: one header, one credit
/// (a batch spends one, as any Data frame) and one hand-over for all of
/// them. Sent only to a peer whose hello
/// lists [`FEATURE_BATCHES`](super::hello::FEATURE_BATCHES).
pub const FLAG_BATCH: u16 = 128;

/// Bytes in front of each message of a [`FLAG_BATCH`] payload.
pub const BATCH_LEN_BYTES: usize = 4;

/// Why a [`FLAG_BATCH`] payload is not what its header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The header counts no messages.
    #[error("a batch of stream messages that counts none")]
    Empty,
    /// A message's length runs past the payload, or the payload ends
    /// inside a length.
    #[error("message {index} of a batch of {count} runs past the payload of {len} bytes")]
    Overrun {
        /// The message (from 0).
        index: u32,
        /// Messages the header counts.
        count: u32,
        /// The payload's length.
        len: usize,
    },
    /// Bytes are left after the last message.
    #[error("{left} bytes follow the last of the {count} messages of a batch")]
    Trailing {
        /// Messages the header counts.
        count: u32,
        /// Bytes after them.
        left: usize,
    },
}

/// The messages of a [`FLAG_BATCH`] payload, each as its range in the
/// payload. Checked whole by [`check`](Self::check) when it arrives, so
/// that a reader later walks it without failing.
#[derive(Clone, Debug)]
pub struct BatchMessages<'a> {
    payload: &'a [u8],
    at: usize,
}

impl<'a> BatchMessages<'a> {
    /// The messages of `payload`, from `at` (the start, or where a reader
    /// left off).
    pub fn new(payload: &'a [u8], at: usize) -> Self {
        Self { payload, at }
    }

    /// Checks that `payload` holds exactly `count` messages, at least one.
    pub fn check(payload: &[u8], count: u32) -> Result<(), BatchError> {
        if count == 0 {
            return Err(BatchError::Empty);
        }
        let mut messages = BatchMessages::new(payload, 0);
        for index in 0..count {
            if messages.next().is_none() {
                return Err(BatchError::Overrun {
                    index,
                    count,
                    len: payload.len(),
                });
            }
        }
        match payload.len() - messages.at {
            0 => Ok(()),
            left => Err(BatchError::Trailing { count, left }),
        }
    }

    /// Where the next message's length is.
    pub fn position(&self) -> usize {
        self.at
    }
}

impl Iterator for BatchMessages<'_> {
    type Item = std::ops::Range<usize>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.at.checked_add(BATCH_LEN_BYTES)?;
        let len: [u8; BATCH_LEN_BYTES] = self.payload.get(self.at..start)?.try_into().ok()?;
        let end = start.checked_add(usize::try_from(u32::from_le_bytes(len)).ok()?)?;
        if end > self.payload.len() {
            return None;
        }
        self.at = end;
        Some(start..end)
    }
}

/// Where the body of a [`FLAG_BULK`] frame is: the sequence number of the
/// region the transport passed (regions go in order) and the lengths of
/// the metadata and payload the region holds, back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkDescriptor {
    /// The region's sequence number on this link, counting from 0.
    pub seq: u64,
    /// Bytes of metadata at the start of the region.
    pub metadata_len: u32,
    /// Bytes of payload after them.
    pub payload_len: u32,
}

impl BulkDescriptor {
    /// The encoded length.
    pub const LEN: usize = 16;

    /// The encoding: three little-endian integers.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..12].copy_from_slice(&self.metadata_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.payload_len.to_le_bytes());
        out
    }

    /// Parses a descriptor; `None` unless `bytes` is exactly one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::LEN] = bytes.try_into().ok()?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[0..8]);
        Some(Self {
            seq: u64::from_le_bytes(seq),
            metadata_len: u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            payload_len: u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
        })
    }

    /// The header of the frame that stands for `header`'s frame.
    pub fn stand_in(header: &Header) -> Header {
        stand_in(header, Self::LEN)
    }
}

/// The header of a bulk stand-in for `header`'s frame, whose payload is a
/// descriptor of `len` bytes.
fn stand_in(header: &Header, len: usize) -> Header {
    Header {
        flags: header.flags | FLAG_BULK,
        metadata_len: 0,
        payload_len: len as u32,
        ..*header
    }
}

/// What stands in the ring for a frame body that went into the sender's
/// shared-memory pool: where it is (segment and offset), how long its parts
/// are, its number among the link's pooled bodies (they are released in
/// that order), and the oldest segment the sender still holds (the receiver
/// may unmap older ones). The stand-in frame's payload is this, 32 bytes;
/// a [`BulkDescriptor`] is 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolDescriptor {
    /// The body's number among the pooled bodies of this link, from 0.
    pub seq: u64,
    /// Its offset in the segment.
    pub offset: u64,
    /// The segment it is in.
    pub segment: u32,
    /// The oldest segment the sender still holds.
    pub oldest: u32,
    /// Bytes of metadata at the start of the body.
    pub metadata_len: u32,
    /// Bytes of payload after them.
    pub payload_len: u32,
}

impl PoolDescriptor {
    /// The encoded length.
    pub const LEN: usize = 32;

    /// The encoding: six little-endian integers in field order.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.offset.to_le_bytes());
        out[16..20].copy_from_slice(&self.segment.to_le_bytes());
        out[20..24].copy_from_slice(&self.oldest.to_le_bytes());
        out[24..28].copy_from_slice(&self.metadata_len.to_le_bytes());
        out[28..32].copy_from_slice(&self.payload_len.to_le_bytes());
        out
    }

    /// Parses a descriptor; `None` unless `bytes` is exactly one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::LEN] = bytes.try_into().ok()?;
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        Some(Self {
            seq: u64_at(0),
            offset: u64_at(8),
            segment: u32_at(16),
            oldest: u32_at(20),
            metadata_len: u32_at(24),
            payload_len: u32_at(28),
        })
    }

    /// The header of the frame that stands for `header`'s frame.
    pub fn stand_in(header: &Header) -> Header {
        stand_in(header, Self::LEN)
    }
}

/// A whole frame as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// Encoded metadata (see [`Metadata`](super::metadata::Metadata)).
    pub metadata: Bytes,
    /// The payload.
    pub payload: Bytes,
}

impl Frame {
    /// A frame with this header and body; lengths in the header are set from
    /// the body.
    pub fn new(mut header: Header, metadata: Bytes, payload: Bytes) -> Self {
        header.metadata_len = len_u32(metadata.len());
        header.payload_len = len_u32(payload.len());
        Self {
            header,
            metadata,
            payload,
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + HEADER_LEN, 0);
        self.header.write_to(&mut out[start..]);
        out.extend_from_slice(&self.metadata);
        out.extend_from_slice(&self.payload);
    }
}

/// Reserves room for a header at the end of `out` and returns where the
/// frame starts; append metadata and payload, then call [`finish_frame`].
pub fn start_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    start
}

/// Writes the header of the frame begun at `start` by [`start_frame`],
/// taking the body lengths from what was appended since (`metadata_len`
/// bytes of metadata, the rest payload).
///
/// Fails with [`FrameError::TooLarge`] when the body exceeds `limit`; the
/// caller should then truncate `out` to `start` and report the error.
pub fn finish_frame(
    out: &mut [u8],
    start: usize,
    mut header: Header,
    metadata_len: usize,
    limit: u32,
) -> Result<(), FrameError> {
    let body = out.len() - start - HEADER_LEN;
    if body > limit as usize {
        return Err(FrameError::TooLarge {
            len: body as u64,
            limit,
        });
    }
    header.metadata_len = len_u32(metadata_len);
    header.payload_len = len_u32(body - metadata_len);
    header.write_to(&mut out[start..]);
    Ok(())
}

/// Converts a buffer length to a wire length.
///
/// # Panics
/// If `len` exceeds `u32::MAX`; callers check lengths against the frame
/// limit (at most [`MAX_FRAME_LIMIT`]) before encoding.
pub fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("frame bodies are limited to MAX_FRAME_LIMIT before encoding")
}

/// Why bytes are not a valid frame. Every variant is fatal to the connection
/// except [`FrameError::TooLarge`], which the decoder recovers from by
/// skipping the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The first two bytes are not `"SY"`: the peer does not speak switchyard.
    #[error(
        "bad magic {found:#06x} (expected {MAGIC:#06x}): the peer does not speak the switchyard protocol"
    )]
    BadMagic {
        /// What was found.
        found: u16,
    },
    /// The version byte is not one this implementation speaks.
    #[error(
        "unsupported protocol version {found} (this side speaks {VERSION}): upgrade the older side"
    )]
    UnsupportedVersion {
        /// What was found.
        found: u8,
    },
    /// The kind byte is not a known frame kind.
    #[error("unknown frame kind {found}")]
    UnknownKind {
        /// What was found.
        found: u8,
    },
    /// The body is longer than the configured limit.
    #[error("frame body of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The length the header claims.
        len: u64,
        /// The configured limit.
        limit: u32,
    },
}

/// What [`FrameDecoder::decode`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame.
    Frame(Frame),
    /// A frame whose body exceeds the limit. Its body is being skipped
    /// without being stored; answer the call (if it is one) with
    /// ResourceExhausted.
    Oversized(Header),
}

impl Decoded {
    /// Whether this is a whole Data frame (a stream's message): a session
    /// may take a run of them before its events are polled
    /// ([`Session::handle_frame`](super::session::Session::handle_frame)).
    pub fn is_stream_data(&self) -> bool {
        matches!(self, Self::Frame(frame) if frame.header.kind == Kind::Data)
    }
}

/// Splits a byte stream into frames. Sans-IO: feed it the bytes read so far.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    limit: u32,
    skip: u64,
    pending: Option<Header>,
}

impl FrameDecoder {
    /// A decoder that accepts bodies up to `limit` bytes (clamped to
    /// [`MAX_FRAME_LIMIT`]).
    pub fn new(limit: u32) -> Self {
        Self {
            limit: limit.min(MAX_FRAME_LIMIT),
            skip: 0,
            pending: None,
        }
    }

    /// The body limit.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Whether the decoder is between frames: nothing half-read, nothing
    /// being skipped. A stream that ends here ended cleanly.
    pub fn at_frame_boundary(&self) -> bool {
        self.pending.is_none() && self.skip == 0
    }

    /// The whole length (header included) of the frame being read, once
    /// its header is in.
    pub fn frame_len(&self) -> Option<u64> {
        self.pending
            .map(|header| HEADER_LEN as u64 + header.body_len())
    }

    /// How many more bytes `buf` needs before the next call can make
    /// progress; a hint for sizing reads.
    pub fn wanted(&self, buf: &BytesMut) -> usize {
        let need = match &self.pending {
            Some(header) => HEADER_LEN as u64 + header.body_len(),
            None if self.skip > 0 => self.skip,
            None => HEADER_LEN as u64,
        };
        usize::try_from(need)
            .unwrap_or(usize::MAX)
            .saturating_sub(buf.len())
    }

    /// Takes the next frame off the front of `buf`, if it is all there.
    ///
    /// Returns `Ok(None)` when more bytes are needed. An error means the
    /// stream cannot be resynchronised: close the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, FrameError> {
        self.skip_buffered(buf);
        if self.skip > 0 {
            return Ok(None);
        }
        let header = match self.pending {
            Some(header) => header,
            None => {
                let Some(head) = buf.get(..HEADER_LEN) else {
                    // Reject a stream that is not switchyard as soon as its
                    // first bytes show it, not after 40 of them.
                    if let [a, b, ..] = buf[..] {
                        let magic = u16::from_le_bytes([a, b]);
                        if magic != MAGIC {
                            return Err(FrameError::BadMagic { found: magic });
                        }
                    }
                    return Ok(None);
                };
                let mut bytes = [0u8; HEADER_LEN];
                bytes.copy_from_slice(head);
                let header = Header::parse(&bytes)?;
                // A hello is read whatever the configured limit (a client
                // that takes tiny responses still has to learn who it
                // talks to), up to its own cap.
                let limit = match header.kind {
                    Kind::Hello => self.limit.max(HELLO_LIMIT),
                    _ => self.limit,
                };
                if header.body_len() > u64::from(limit) {
                    buf.advance(HEADER_LEN);
                    self.skip = header.body_len();
                    if header.kind == Kind::Hello {
                        return Err(FrameError::TooLarge {
                            len: header.body_len(),
                            limit,
                        });
                    }
                    self.skip_buffered(buf);
                    return Ok(Some(Decoded::Oversized(header)));
                }
                self.pending = Some(header);
                header
            }
        };
        // body_len <= limit <= MAX_FRAME_LIMIT, so this fits in usize.
        let total = HEADER_LEN + header.body_len() as usize;
        if buf.len() < total {
            // Nothing is reserved for the rest: the receiver grows its
            // buffer as the bytes come, under its own limits, never by
            // what a header claims.
            return Ok(None);
        }
        self.pending = None;
        let mut frame = buf.split_to(total);
        frame.advance(HEADER_LEN);
        // No metadata (a stream's message, most replies): no share of the
        // buffer to count for it.
        let metadata = match header.metadata_len {
            0 => Bytes::new(),
            len => frame.split_to(len as usize).freeze(),
        };
        let payload = frame.freeze();
        Ok(Some(Decoded::Frame(Frame {
            header,
            metadata,
            payload,
        })))
    }

    /// Drops the part of a skipped body that is already buffered.
    fn skip_buffered(&mut self, buf: &mut BytesMut) {
        let n = usize::try_from(self.skip)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        buf.advance(n);
        self.skip -= n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_checked_whole_and_walked_by_its_lengths() {
        let mut payload = Vec::new();
        for message in [&b"ab"[..], b"", b"cde"] {
            payload.extend_from_slice(&(message.len() as u32).to_le_bytes());
            payload.extend_from_slice(message);
        }
        assert_eq!(BatchMessages::check(&payload, 3), Ok(()));
        let ranges: Vec<_> = BatchMessages::new(&payload, 0).collect();
        assert_eq!(ranges, [4..6, 10..10, 14..17]);
        // Read from where a reader left off.
        let mut rest = BatchMessages::new(&payload, 6);
        assert_eq!(rest.next(), Some(10..10));
        assert_eq!(rest.position(), 10);
        assert_eq!(BatchMessages::check(&payload, 0), Err(BatchError::Empty));
        assert_eq!(
            BatchMessages::check(&payload, 4),
            Err(BatchError::Overrun {
                index: 3,
                count: 4,
                len: 17
            })
        );
        assert_eq!(
            BatchMessages::check(&payload, 2),
            Err(BatchError::Trailing { count: 2, left: 7 })
        );
        // A length that runs past the end, or a cut length.
        let mut long = payload.clone();
        long[0] = 200;
        assert!(BatchMessages::check(&long, 3).is_err());
        assert!(BatchMessages::check(&payload[..2], 1).is_err());
        let huge = u32::MAX.to_le_bytes();
        assert!(BatchMessages::check(&huge, 1).is_err());
    }

    #[test]
    fn bulk_descriptors_round_trip_and_reject_other_lengths() {
        let descriptor = BulkDescriptor {
            seq: 7,
            metadata_len: 12,
            payload_len: 271_828,
        };
        assert_eq!(
            BulkDescriptor::parse(&descriptor.to_bytes()),
            Some(descriptor)
        );
        assert_eq!(BulkDescriptor::parse(&[0; 15]), None);
        assert_eq!(BulkDescriptor::parse(&[0; 17]), None);
        let mut header = Header::new(Kind::Request, 3);
        header.metadata_len = 12;
        header.payload_len = 271_828;
        let stand_in = BulkDescriptor::stand_in(&header);
        assert_eq!(stand_in.flags & FLAG_BULK, FLAG_BULK);
        assert_eq!(stand_in.body_len(), BulkDescriptor::LEN as u64);
        assert_eq!(stand_in.call_id, 3);
    }

    fn request(call_id: u64, payload: &'static [u8]) -> Frame {
        let mut header = Header::new(Kind::Request, call_id);
        header.method_id = 0xdead_beef;
        header.deadline_us = 1_500_000;
        Frame::new(
            header,
            Bytes::from_static(b"k"),
            Bytes::from_static(payload),
        )
    }

    #[test]
    fn a_frame_round_trips_byte_by_byte() {
        let frame = request(7, b"hello");
        let mut wire = Vec::new();
        frame.encode_into(&mut wire);
        assert_eq!(wire.len(), HEADER_LEN + 6);
        let mut decoder = FrameDecoder::new(DEFAULT_FRAME_LIMIT);
        let mut buf = BytesMut::new();
        let mut got = None;
        for byte in wire {
            buf.extend_from_slice(&[byte]);
            if let Some(decoded) = decoder.decode(&mut buf).unwrap() {
                got = Some(decoded);
            }
        }
        assert_eq!(got, Some(Decoded::Frame(frame)));
        assert!(buf.is_empty());
    }

    #[test]
    fn several_frames_in_one_read_decode_in_order() {
        let mut wire = Vec::new();
        for id in 0..3 {
            request(id, b"xyz").encode_into(&mut wire);
        }
        let mut buf = BytesMut::from(&wire[..]);
        let mut decoder = FrameDecoder::new(DEFAULT_FRAME_LIMIT);
        for id in 0..3 {
            match decoder.decode(&mut buf).unwrap() {
                Some(Decoded::Frame(frame)) => assert_eq!(frame.header.call_id, id),
                other => panic!("expected frame {id}, got {other:?}"),
            }
        }
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn bad_magic_version_and_kind_are_errors() {
        let mut wire = Vec::new();
        request(1, b"").encode_into(&mut wire);
        let mut bad = wire.clone();
        bad[0] = b'X';
        let err = FrameDecoder::new(1024)
            .decode(&mut BytesMut::from(&bad[..]))
            .unwrap_err();
        assert!(matches!(err, FrameError::BadMagic { .. }), "{err}");
        let mut bad = wire.clone();
        bad[2] = 9;
        let err = FrameDecoder::new(1024)
            .decode(&mut BytesMut::from(&bad[..]))
            .unwrap_err();
        assert_eq!(err, FrameError::UnsupportedVersion { found: 9 });
        let mut bad = wire;
        bad[3] = 200;
        let err = FrameDecoder::new(1024)
            .decode(&mut BytesMut::from(&bad[..]))
            .unwrap_err();
        assert_eq!(err, FrameError::UnknownKind { found: 200 });
    }

    #[test]
    fn a_length_of_u32_max_is_skipped_without_allocating() {
        let mut header = Header::new(Kind::Request, 9);
        header.payload_len = u32::MAX;
        let mut wire = vec![0u8; HEADER_LEN];
        header.write_to(&mut wire);
        wire.extend_from_slice(&[0xAA; 100]);
        let mut buf = BytesMut::from(&wire[..]);
        let before = buf.capacity();
        let mut decoder = FrameDecoder::new(DEFAULT_FRAME_LIMIT);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Decoded::Oversized(header))
        );
        assert!(buf.is_empty(), "the skipped body is dropped as it arrives");
        assert!(
            buf.capacity() <= before,
            "nothing was reserved for the body"
        );
        // The rest of the claimed body is skipped, then the stream goes on.
        let remaining = u64::from(u32::MAX) - 100;
        assert_eq!(decoder.wanted(&buf) as u64, remaining);
        let mut chunk = BytesMut::from(&[0u8; 4096][..]);
        assert_eq!(decoder.decode(&mut chunk).unwrap(), None);
        assert!(chunk.is_empty());
    }

    #[test]
    fn the_stream_continues_after_an_oversized_frame() {
        let mut decoder = FrameDecoder::new(8);
        let mut wire = Vec::new();
        request(1, b"this payload is too long").encode_into(&mut wire);
        request(2, b"ok").encode_into(&mut wire);
        let mut buf = BytesMut::from(&wire[..]);
        assert!(matches!(
            decoder.decode(&mut buf).unwrap(),
            Some(Decoded::Oversized(h)) if h.call_id == 1
        ));
        assert!(matches!(
            decoder.decode(&mut buf).unwrap(),
            Some(Decoded::Frame(f)) if f.header.call_id == 2 && &f.payload[..] == b"ok"
        ));
    }

    #[test]
    fn an_oversized_hello_is_fatal() {
        let mut header = Header::new(Kind::Hello, 0);
        header.payload_len = HELLO_LIMIT + 1;
        let mut wire = vec![0u8; HEADER_LEN];
        header.write_to(&mut wire);
        let err = FrameDecoder::new(1024)
            .decode(&mut BytesMut::from(&wire[..]))
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn a_hello_over_a_small_frame_limit_is_still_read() {
        let hello = Frame::new(
            Header::new(Kind::Hello, 0),
            Bytes::new(),
            Bytes::from(vec![1u8; 4000]),
        );
        let mut wire = Vec::new();
        hello.encode_into(&mut wire);
        let decoded = FrameDecoder::new(1024)
            .decode(&mut BytesMut::from(&wire[..]))
            .unwrap();
        assert_eq!(decoded, Some(Decoded::Frame(hello)));
    }

    #[test]
    fn a_foreign_protocol_is_rejected_from_its_first_two_bytes() {
        let err = FrameDecoder::new(1024)
            .decode(&mut BytesMut::from(&b"GE"[..]))
            .unwrap_err();
        assert_eq!(err, FrameError::BadMagic { found: 0x4547 });
        assert_eq!(
            FrameDecoder::new(1024).decode(&mut BytesMut::from(&b"S"[..])),
            Ok(None)
        );
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(FrameDecoder::new(u32::MAX).limit(), MAX_FRAME_LIMIT);
    }
}
