//! Compression of frame payloads, where it pays: sans-IO.
//!
//! - **Negotiation.** Each side's hello lists the codecs it can read (a bit
//!   set, [`CODEC_ZSTD`]). A side compresses what it sends only if the peer
//!   can read it and [`decide`] finds it pays on this link: on for TCP and
//!   QUIC to another host or another network namespace, off where bytes
//!   move through memory (shared memory, pipes, Unix sockets, loopback in
//!   one namespace), where compressing costs more time than the bytes it
//!   saves. The reason goes beside the transport's in the selection.
//! - **Per frame** ([`FrameCompressor`]): the payload of a Request, OneWay,
//!   successful Response or Data frame of at least
//!   [`Compression::min_size`] bytes, whose sender did not mark it
//!   [`FLAG_INCOMPRESSIBLE`] (`#[switchyard(compress = false)]`), becomes
//!   one zstd frame that records its content size; it is kept only if it
//!   is at least a sixteenth smaller. The header gets [`FLAG_COMPRESSED`]
//!   and the compressed length. Metadata is never compressed.
//! - **On receipt** ([`inflate`]): the content size the zstd frame
//!   declares is checked against the receiver's frame limit before a byte
//!   is reserved, and decompression writes into exactly that many bytes, so
//!   a bomb (a few bytes that expand past the limit) costs nothing: it is
//!   handled as an oversized frame (ResourceExhausted for its call). A
//!   payload that is not what it claims to be is a protocol error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::frame::{
    Decoded, FLAG_BULK, FLAG_COMPRESSED, FLAG_INCOMPRESSIBLE, Frame, HEADER_LEN, Header, Kind,
};
use super::hello::Locality;

/// Codec bit of the hello's codec set: zstd (RFC 8878), one frame per
/// payload with its content size recorded.
pub const CODEC_ZSTD: u8 = 1;

/// The codecs this build can read (the `zstd` feature).
pub fn readable_codecs() -> u8 {
    if cfg!(feature = "zstd") {
        CODEC_ZSTD
    } else {
        0
    }
}

/// When a connection compresses what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionMode {
    /// Where it pays: TCP and QUIC to another host or network namespace.
    Auto,
    /// Never.
    Off,
    /// On every link whose peer can read it (for tests and for links that
    /// are slower than they look, e.g. a tunnel on loopback).
    Always,
}

/// How a client or server compresses what it sends: when
/// ([`CompressionMode`]), from what payload size, and at which zstd level.
/// The default is [`Compression::auto`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    mode: CompressionMode,
    min_size: usize,
    level: i32,
}

impl Compression {
    /// Payloads smaller than this are sent as they are by default: 1 KiB.
    pub const DEFAULT_MIN_SIZE: usize = 1024;
    /// zstd's fastest standard level, the default: compresses at several
    /// hundred MB/s per core, faster than the networks it is used on.
    pub const DEFAULT_LEVEL: i32 = 1;

    /// Compresses where it pays (the default).
    pub const fn auto() -> Self {
        Self {
            mode: CompressionMode::Auto,
            min_size: Self::DEFAULT_MIN_SIZE,
            level: Self::DEFAULT_LEVEL,
        }
    }

    /// Compresses nothing.
    pub const fn off() -> Self {
        Self {
            mode: CompressionMode::Off,
            ..Self::auto()
        }
    }

    /// Compresses on every link whose peer can decompress.
    pub const fn always() -> Self {
        Self {
            mode: CompressionMode::Always,
            ..Self::auto()
        }
    }

    /// Compresses only payloads of at least `bytes` bytes (at least 64).
    #[must_use]
    pub const fn min_size(mut self, bytes: usize) -> Self {
        self.min_size = if bytes < 64 { 64 } else { bytes };
        self
    }

    /// The zstd level, clamped to 1 (fastest) ..= 19.
    #[must_use]
    pub const fn level(mut self, level: i32) -> Self {
        self.level = if level < 1 {
            1
        } else if level > 19 {
            19
        } else {
            level
        };
        self
    }

    /// When it compresses.
    pub const fn mode(&self) -> CompressionMode {
        self.mode
    }

    /// The smallest payload it compresses.
    pub const fn smallest(&self) -> usize {
        self.min_size
    }

    /// The zstd level.
    pub const fn zstd_level(&self) -> i32 {
        self.level
    }
}

impl Default for Compression {
    fn default() -> Self {
        Self::auto()
    }
}

/// What [`decide`] needs to know about a link.
#[derive(Clone, Copy, Debug)]
pub struct LinkFacts<'a> {
    /// The transport's name (`tcp`, `shm`, ...).
    pub transport: &'a str,
    /// Whether its bytes cross a network stack (TCP, QUIC) rather than
    /// memory (shared memory, pipes, Unix sockets, in-process links).
    pub networked: bool,
    /// How the two processes relate.
    pub locality: Locality,
    /// Whether both are in one network namespace (same host only).
    pub same_net_ns: bool,
    /// The codecs the peer can read (its hello).
    pub peer_codecs: u8,
}

/// Whether a connection compresses what it sends, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressionChoice {
    /// The compressor to use, if it compresses.
    pub on: Option<(usize, i32)>,
    /// Why, as a sentence for the selection and the debug page.
    pub reason: String,
}

impl CompressionChoice {
    /// The compressor for this choice, counting into `counters`.
    pub fn compressor(&self, counters: Arc<CompressionCounters>) -> Option<FrameCompressor> {
        self.on.map(|(min_size, level)| FrameCompressor {
            min_size,
            level,
            counters,
        })
    }
}

/// Decides whether a connection compresses what it sends.
pub fn decide(setting: &Compression, facts: &LinkFacts<'_>) -> CompressionChoice {
    let off = |reason: String| CompressionChoice { on: None, reason };
    if setting.mode == CompressionMode::Off {
        return off("compression off: turned off in this side's configuration".to_owned());
    }
    if readable_codecs() & CODEC_ZSTD == 0 {
        return off("compression off: this build has no zstd (the `zstd` feature)".to_owned());
    }
    if facts.peer_codecs & CODEC_ZSTD == 0 {
        return off(
            "compression off: the peer cannot read zstd (its hello lists no codec)".to_owned(),
        );
    }
    let on = |why: &str| CompressionChoice {
        on: Some((setting.min_size, setting.level)),
        reason: format!(
            "zstd level {} for payloads of {} bytes or more: {why}",
            setting.level, setting.min_size
        ),
    };
    if setting.mode == CompressionMode::Always {
        return on("compression is set to always");
    }
    if !facts.networked {
        return off(format!(
            "compression off: {} moves bytes through memory, faster than zstd could shrink them",
            facts.transport
        ));
    }
    match facts.locality {
        Locality::OtherHost => on(&format!("{} to another host", facts.transport)),
        _ if !facts.same_net_ns => on(&format!(
            "{} to another network namespace (bytes cross a network link)",
            facts.transport
        )),
        _ => off(format!(
            "compression off: {} on loopback (same host and network namespace), faster than \
             zstd could shrink the bytes",
            facts.transport
        )),
    }
}

/// What a connection's compression did, both ways.
#[derive(Debug, Default)]
pub struct CompressionCounters {
    /// Payloads sent compressed.
    pub compressed: AtomicU64,
    /// Their bytes before compression.
    pub sent_raw: AtomicU64,
    /// Their bytes on the wire.
    pub sent_wire: AtomicU64,
    /// Payloads big enough to compress that were sent as they were
    /// (they did not shrink by a sixteenth).
    pub incompressible: AtomicU64,
    /// Compressed payloads received.
    pub inflated: AtomicU64,
    /// Their bytes on the wire.
    pub received_wire: AtomicU64,
    /// Their bytes after decompression.
    pub received_raw: AtomicU64,
}

/// What every connection of this process compressed and decompressed so
/// far: each connection's counts are added here too, so the totals only
/// ever grow (Prometheus counters), whenever connections close.
pub fn process_totals() -> &'static CompressionCounters {
    static TOTALS: CompressionCounters = CompressionCounters {
        compressed: AtomicU64::new(0),
        sent_raw: AtomicU64::new(0),
        sent_wire: AtomicU64::new(0),
        incompressible: AtomicU64::new(0),
        inflated: AtomicU64::new(0),
        received_wire: AtomicU64::new(0),
        received_raw: AtomicU64::new(0),
    };
    &TOTALS
}

impl CompressionCounters {
    /// Adds a payload sent compressed, `raw` bytes as `wire`.
    fn count_sent(&self, raw: u64, wire: u64) {
        for counters in [self, process_totals()] {
            counters.compressed.fetch_add(1, Ordering::Relaxed);
            counters.sent_raw.fetch_add(raw, Ordering::Relaxed);
            counters.sent_wire.fetch_add(wire, Ordering::Relaxed);
        }
    }

    /// Adds a payload that did not shrink enough to be sent compressed.
    fn count_incompressible(&self) {
        for counters in [self, process_totals()] {
            counters.incompressible.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds a compressed payload received, `wire` bytes inflated to `raw`.
    fn count_received(&self, wire: u64, raw: u64) {
        for counters in [self, process_totals()] {
            counters.inflated.fetch_add(1, Ordering::Relaxed);
            counters.received_wire.fetch_add(wire, Ordering::Relaxed);
            counters.received_raw.fetch_add(raw, Ordering::Relaxed);
        }
    }

    /// Bytes the compression kept off the wire, both ways.
    pub fn saved(&self) -> u64 {
        let sent = self
            .sent_raw
            .load(Ordering::Relaxed)
            .saturating_sub(self.sent_wire.load(Ordering::Relaxed));
        let received = self
            .received_raw
            .load(Ordering::Relaxed)
            .saturating_sub(self.received_wire.load(Ordering::Relaxed));
        sent + received
    }
}

/// Compresses the payloads of outgoing frames that pay.
#[derive(Debug)]
pub struct FrameCompressor {
    min_size: usize,
    level: i32,
    counters: Arc<CompressionCounters>,
}

impl FrameCompressor {
    /// A compressor of payloads of at least `min_size` bytes at zstd
    /// `level`, counting into `counters`.
    pub fn new(min_size: usize, level: i32, counters: Arc<CompressionCounters>) -> Self {
        Self {
            min_size,
            level,
            counters,
        }
    }

    /// What it counts into.
    pub fn counters(&self) -> &Arc<CompressionCounters> {
        &self.counters
    }

    /// Compresses the payloads that pay in `frames` (whole encoded frames,
    /// back to back). `None`: nothing changed (send `frames` as they are),
    /// also when the bytes do not parse as whole frames.
    pub fn compress(&self, frames: &[u8]) -> Option<Vec<u8>> {
        // A frame buffer with no payload this size cannot gain.
        if frames.len() < HEADER_LEN + self.min_size {
            return None;
        }
        let mut out: Option<Vec<u8>> = None;
        let mut at = 0;
        while at < frames.len() {
            let head: &[u8; HEADER_LEN] = frames.get(at..at + HEADER_LEN)?.try_into().ok()?;
            let header = Header::parse(head).ok()?;
            let end = at
                .checked_add(HEADER_LEN)?
                .checked_add(usize::try_from(header.body_len()).ok()?)?;
            let frame = frames.get(at..end)?;
            match self.compress_one(&header, frame) {
                Some(compressed) => {
                    let out = out.get_or_insert_with(|| {
                        let mut out = Vec::with_capacity(frames.len());
                        out.extend_from_slice(&frames[..at]);
                        out
                    });
                    out.extend_from_slice(&compressed);
                }
                None => {
                    if let Some(out) = &mut out {
                        out.extend_from_slice(frame);
                    }
                }
            }
            at = end;
        }
        out
    }

    /// The compressed form of one frame, if it pays.
    fn compress_one(&self, header: &Header, frame: &[u8]) -> Option<Vec<u8>> {
        let eligible = match header.kind {
            Kind::Request | Kind::OneWay | Kind::Data => true,
            Kind::Response => header.status == 0,
            _ => false,
        };
        let payload_len = header.payload_len as usize;
        if !eligible
            || payload_len < self.min_size
            || header.flags & (FLAG_BULK | FLAG_COMPRESSED | FLAG_INCOMPRESSIBLE) != 0
        {
            return None;
        }
        let body_at = HEADER_LEN + header.metadata_len as usize;
        let payload = &frame[body_at..];
        let mut out = Vec::with_capacity(body_at + zstd_bound(payload_len));
        out.extend_from_slice(&frame[..body_at]);
        let compressed_len = match zstd_compress(payload, self.level, &mut out) {
            Some(len) if len <= payload_len - payload_len / 16 => len,
            _ => {
                self.counters.count_incompressible();
                return None;
            }
        };
        let mut sealed = *header;
        sealed.flags |= FLAG_COMPRESSED;
        sealed.payload_len = u32::try_from(compressed_len).ok()?;
        sealed.write_to(&mut out);
        self.counters
            .count_sent(payload_len as u64, compressed_len as u64);
        Some(out)
    }
}

/// Why a compressed payload could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InflateError {
    /// This build cannot decompress, and said so in its hello.
    #[error(
        "a compressed payload arrived, but this side's hello said it reads no codec (built without the `zstd` feature)"
    )]
    Unsupported,
    /// The zstd frame does not record its size, as this protocol requires.
    #[error("a compressed payload does not record its decompressed size")]
    NoContentSize,
    /// The payload is not a valid zstd frame, or not of the size it declares.
    #[error("a compressed payload is corrupt: {0}")]
    Corrupt(String),
    /// Only the payloads of Request, OneWay, successful Response and Data
    /// frames may be compressed.
    #[error(
        "a {kind:?} frame came compressed; only requests, successful responses and stream messages may be"
    )]
    NotAllowed {
        /// The frame's kind.
        kind: Kind,
    },
    /// This side's hello listed no codec (its compression is off), yet a
    /// compressed payload came.
    #[error(
        "a compressed payload arrived, but this side's hello said it reads no codec (its compression is off)"
    )]
    Refused,
}

/// Decompresses the payload of `frame` if it arrived compressed, within
/// `limit` bytes of body (metadata included). A payload that would pass the
/// limit is [`Decoded::Oversized`], its header giving the declared size,
/// without a byte reserved for it.
pub fn inflate(
    frame: Frame,
    limit: u32,
    counters: &CompressionCounters,
) -> Result<Decoded, InflateError> {
    if frame.header.flags & FLAG_COMPRESSED == 0 {
        return Ok(Decoded::Frame(frame));
    }
    let may_compress = match frame.header.kind {
        Kind::Request | Kind::OneWay | Kind::Data => true,
        Kind::Response => frame.header.status == 0,
        _ => false,
    };
    if !may_compress {
        return Err(InflateError::NotAllowed {
            kind: frame.header.kind,
        });
    }
    let declared = zstd_content_size(&frame.payload)?;
    let mut header = frame.header;
    header.flags &= !FLAG_COMPRESSED;
    let body = u64::from(header.metadata_len).saturating_add(declared);
    if body > u64::from(limit) {
        header.payload_len = u32::try_from(declared).unwrap_or(u32::MAX);
        return Ok(Decoded::Oversized(header));
    }
    // declared + metadata <= limit <= u32::MAX: it fits.
    let declared = declared as usize;
    let payload = zstd_decompress(&frame.payload, declared)?;
    counters.count_received(frame.payload.len() as u64, declared as u64);
    header.payload_len = u32::try_from(declared).unwrap_or(u32::MAX);
    Ok(Decoded::Frame(Frame {
        header,
        metadata: frame.metadata,
        payload: Bytes::from(payload),
    }))
}

#[cfg(feature = "zstd")]
mod codec {
    use std::cell::RefCell;
    use std::io::Cursor;

    use super::InflateError;

    thread_local! {
        /// One compression context per thread, with the level it is set to.
        static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { RefCell::new(None) };
        /// One decompression context per thread.
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { RefCell::new(None) };
    }

    pub(super) fn bound(len: usize) -> usize {
        zstd::zstd_safe::compress_bound(len)
    }

    /// Appends the zstd frame of `payload` to `out`; its length, or `None`
    /// if zstd failed.
    pub(super) fn compress(payload: &[u8], level: i32, out: &mut Vec<u8>) -> Option<usize> {
        COMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = Some((level, zstd::bulk::Compressor::new(level).ok()?));
            }
            let (set, compressor) = cell.as_mut()?;
            if *set != level {
                // One context per thread, whatever the levels of the
                // connections it serves.
                compressor.set_compression_level(level).ok()?;
                *set = level;
            }
            let start = out.len();
            out.reserve(bound(payload.len()));
            let mut cursor = Cursor::new(out);
            cursor.set_position(start as u64);
            compressor.compress_to_buffer(payload, &mut cursor).ok()
        })
    }

    pub(super) fn content_size(payload: &[u8]) -> Result<u64, InflateError> {
        match zstd::zstd_safe::get_frame_content_size(payload) {
            Ok(Some(size)) => Ok(size),
            Ok(None) => Err(InflateError::NoContentSize),
            Err(_) => Err(InflateError::Corrupt("no zstd frame header".to_owned())),
        }
    }

    /// Decompresses `payload` into exactly `size` bytes.
    pub(super) fn decompress(payload: &[u8], size: usize) -> Result<Vec<u8>, InflateError> {
        DECOMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = Some(
                    zstd::bulk::Decompressor::new()
                        .map_err(|err| InflateError::Corrupt(err.to_string()))?,
                );
            }
            let Some(decompressor) = cell.as_mut() else {
                return Err(InflateError::Unsupported);
            };
            let mut out = Vec::with_capacity(size);
            let written = decompressor
                .decompress_to_buffer(payload, &mut out)
                .map_err(|err| InflateError::Corrupt(err.to_string()))?;
            if written != size {
                return Err(InflateError::Corrupt(format!(
                    "it declares {size} bytes but holds {written}"
                )));
            }
            Ok(out)
        })
    }
}

#[cfg(feature = "zstd")]
use codec::{
    bound as zstd_bound, compress as zstd_compress, content_size as zstd_content_size,
    decompress as zstd_decompress,
};

#[cfg(not(feature = "zstd"))]
fn zstd_bound(len: usize) -> usize {
    len
}

#[cfg(not(feature = "zstd"))]
fn zstd_compress(_payload: &[u8], _level: i32, _out: &mut Vec<u8>) -> Option<usize> {
    None
}

#[cfg(not(feature = "zstd"))]
fn zstd_content_size(_payload: &[u8]) -> Result<u64, InflateError> {
    Err(InflateError::Unsupported)
}

#[cfg(not(feature = "zstd"))]
fn zstd_decompress(_payload: &[u8], _size: usize) -> Result<Vec<u8>, InflateError> {
    Err(InflateError::Unsupported)
}

#[cfg(all(test, feature = "zstd"))]
mod tests {
    use super::*;
    use crate::protocol::frame::{DEFAULT_FRAME_LIMIT, FrameDecoder};
    use bytes::BytesMut;

    fn request(call_id: u64, flags: u16, metadata: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut header = Header::new(Kind::Request, call_id);
        header.flags = flags;
        let frame = Frame::new(
            header,
            Bytes::copy_from_slice(metadata),
            Bytes::copy_from_slice(payload),
        );
        let mut out = Vec::new();
        frame.encode_into(&mut out);
        out
    }

    fn compressor() -> FrameCompressor {
        FrameCompressor::new(1024, 1, Arc::default())
    }

    fn decode_all(bytes: &[u8]) -> Vec<Decoded> {
        let mut decoder = FrameDecoder::new(DEFAULT_FRAME_LIMIT);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(decoded) = decoder.decode(&mut buf).unwrap() {
            out.push(decoded);
        }
        out
    }

    #[test]
    fn a_compressible_payload_shrinks_and_comes_back_the_same() {
        let payload: Vec<u8> = b"inventory item 42; ".repeat(4000);
        let mut wire = request(1, 0, b"md", &payload);
        wire.extend(request(2, 0, b"", b"small"));
        let compressor = compressor();
        let compressed = compressor.compress(&wire).expect("it pays");
        assert!(
            compressed.len() < wire.len() / 10,
            "{} bytes",
            compressed.len()
        );
        let counters = Arc::clone(compressor.counters());
        assert_eq!(counters.compressed.load(Ordering::Relaxed), 1);
        assert_eq!(
            counters.sent_raw.load(Ordering::Relaxed),
            payload.len() as u64
        );
        let frames = decode_all(&compressed);
        assert_eq!(frames.len(), 2, "the small frame follows unchanged");
        let mut got = Vec::new();
        for decoded in frames {
            let Decoded::Frame(frame) = decoded else {
                panic!("oversized")
            };
            match inflate(frame, DEFAULT_FRAME_LIMIT, &counters).unwrap() {
                Decoded::Frame(frame) => got.push(frame),
                Decoded::Oversized(_) => panic!("oversized"),
            }
        }
        assert_eq!(got[0].header.flags & FLAG_COMPRESSED, 0);
        assert_eq!(&got[0].metadata[..], b"md");
        assert_eq!(&got[0].payload[..], &payload[..]);
        assert_eq!(got[0].header.payload_len as usize, payload.len());
        assert_eq!(&got[1].payload[..], b"small");
        assert_eq!(
            counters.received_raw.load(Ordering::Relaxed),
            payload.len() as u64
        );
        assert!(counters.saved() > 2 * (payload.len() as u64 * 9 / 10));
    }

    #[test]
    fn small_marked_and_incompressible_payloads_are_left_alone() {
        let compressor = compressor();
        assert_eq!(compressor.compress(&request(1, 0, b"", &[7; 1000])), None);
        assert_eq!(
            compressor.compress(&request(1, FLAG_INCOMPRESSIBLE, b"", &[7; 100_000])),
            None
        );
        // Noise does not shrink: counted, sent as it is.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..50_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert_eq!(compressor.compress(&request(1, 0, b"", &noise)), None);
        assert_eq!(
            compressor.counters().incompressible.load(Ordering::Relaxed),
            1
        );
        // Error responses and control frames are never compressed.
        let mut header = Header::new(Kind::Response, 3);
        header.status = 13;
        let mut wire = Vec::new();
        Frame::new(header, Bytes::new(), Bytes::from(vec![b'x'; 5000])).encode_into(&mut wire);
        assert_eq!(compressor.compress(&wire), None);
        // Bytes that are not whole frames are not touched.
        let whole = request(1, 0, b"", &[7; 100_000]);
        assert_eq!(compressor.compress(&whole[..whole.len() - 1]), None);
    }

    fn compressed_frame(
        declared_payload: &[u8],
        limit_check: u32,
    ) -> Result<Decoded, InflateError> {
        let wire = request(9, 0, b"", declared_payload);
        let compressed = compressor().compress(&wire).expect("it pays");
        let Decoded::Frame(frame) = decode_all(&compressed).remove(0) else {
            panic!("oversized")
        };
        inflate(frame, limit_check, &CompressionCounters::default())
    }

    #[test]
    fn a_bomb_is_oversized_before_anything_is_reserved() {
        // 64 MiB of zeros compress to a few KiB; the limit is 1 MiB.
        let zeros = vec![0u8; 64 << 20];
        match compressed_frame(&zeros, 1 << 20).unwrap() {
            Decoded::Oversized(header) => {
                assert_eq!(header.payload_len, 64 << 20);
                assert_eq!(header.call_id, 9);
                assert_eq!(header.flags & FLAG_COMPRESSED, 0);
            }
            Decoded::Frame(_) => panic!("a bomb was inflated"),
        }
    }

    #[test]
    fn a_payload_that_lies_about_its_size_or_is_garbage_is_refused() {
        let payload = b"abcdefgh".repeat(1000);
        let wire = request(1, 0, b"", &payload);
        let compressed = compressor().compress(&wire).unwrap();
        let Decoded::Frame(mut frame) = decode_all(&compressed).remove(0) else {
            panic!()
        };
        // Claim a smaller size in the zstd frame header: the single-segment
        // frame's 2-byte size field follows the magic and the descriptor.
        let mut lying = frame.payload.to_vec();
        let declared = zstd_content_size(&lying).unwrap();
        assert_eq!(declared, payload.len() as u64);
        lying[5] ^= 0x01;
        assert_ne!(
            zstd_content_size(&lying).unwrap(),
            declared,
            "the size field moved"
        );
        frame.payload = Bytes::from(lying);
        let counters = CompressionCounters::default();
        let result = inflate(frame.clone(), DEFAULT_FRAME_LIMIT, &counters);
        assert!(
            matches!(result, Err(InflateError::Corrupt(_))),
            "{result:?}"
        );
        frame.payload = Bytes::from_static(b"not zstd at all");
        assert!(matches!(
            inflate(frame, DEFAULT_FRAME_LIMIT, &counters),
            Err(InflateError::Corrupt(_))
        ));
    }

    #[test]
    fn only_requests_successful_responses_and_stream_messages_may_come_compressed() {
        let counters = CompressionCounters::default();
        for (kind, status) in [
            (Kind::Ping, 0),
            (Kind::Cancel, 1),
            (Kind::GoAway, 14),
            (Kind::Response, 13),
        ] {
            let mut header = Header::new(kind, 1);
            header.flags = FLAG_COMPRESSED;
            header.status = status;
            let frame = Frame::new(header, Bytes::new(), Bytes::from_static(b"x"));
            assert_eq!(
                inflate(frame, DEFAULT_FRAME_LIMIT, &counters),
                Err(InflateError::NotAllowed { kind }),
                "{kind:?}"
            );
        }
        let before = process_totals().inflated.load(Ordering::Relaxed);
        let wire = request(1, 0, b"", &b"abc".repeat(1000));
        let compressed = compressor().compress(&wire).unwrap();
        let Decoded::Frame(frame) = decode_all(&compressed).remove(0) else {
            panic!()
        };
        inflate(frame, DEFAULT_FRAME_LIMIT, &counters).unwrap();
        assert_eq!(counters.inflated.load(Ordering::Relaxed), 1);
        assert!(
            process_totals().inflated.load(Ordering::Relaxed) > before,
            "the process totals count it too"
        );
    }

    #[test]
    fn auto_compresses_only_across_a_network() {
        let facts = |transport, networked, locality, same_net_ns| LinkFacts {
            transport,
            networked,
            locality,
            same_net_ns,
            peer_codecs: CODEC_ZSTD,
        };
        let auto = Compression::auto();
        let shm = decide(&auto, &facts("shm", false, Locality::SameHostSameIpc, true));
        assert_eq!(shm.on, None);
        assert!(
            shm.reason.contains("shm moves bytes through memory"),
            "{}",
            shm.reason
        );
        let loopback = decide(&auto, &facts("tcp", true, Locality::SameHostSameIpc, true));
        assert_eq!(loopback.on, None);
        assert!(loopback.reason.contains("loopback"), "{}", loopback.reason);
        let netns = decide(
            &auto,
            &facts("tcp", true, Locality::SameHostOtherIpc, false),
        );
        assert_eq!(netns.on, Some((1024, 1)));
        assert!(
            netns.reason.contains("another network namespace"),
            "{}",
            netns.reason
        );
        let remote = decide(&auto, &facts("quic", true, Locality::OtherHost, false));
        assert!(
            remote.reason.contains("quic to another host"),
            "{}",
            remote.reason
        );
        let mut old_peer = facts("quic", true, Locality::OtherHost, false);
        old_peer.peer_codecs = 0;
        assert_eq!(decide(&auto, &old_peer).on, None);
        let off = decide(
            &Compression::off(),
            &facts("quic", true, Locality::OtherHost, false),
        );
        assert_eq!(off.on, None);
        let always = Compression::always().min_size(10).level(40);
        let forced = decide(
            &always,
            &facts("unix", false, Locality::SameHostSameIpc, true),
        );
        assert_eq!(forced.on, Some((64, 19)));
    }
}
