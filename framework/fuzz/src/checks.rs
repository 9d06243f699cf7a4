//! What the fuzz targets check, one function per target, and the seed
//! inputs they start from.
//!
//! This file is the fuzz package's library and is also compiled into
//! `framework/tests/fuzz_regressions.rs`, which runs the committed seed
//! corpus and every input that once failed through the same functions: a
//! check fails by panicking, which libFuzzer reports as a crash.
//!
//! Input formats (the first bytes steer, the rest is what is fuzzed):
//!
//! - `frame_decoder`: `[limit selector, chunking seed, stream...]`;
//!   see [`FRAME_LIMITS`] and [`chunk_sizes`].
//! - `hello`: the hello payload itself.
//! - `codec`: `[type selector, bincode bytes...]`; see [`codec`].
//! - `shm_ring`: `[mode, ops...]`; see [`shm_ring`].
//! - `shm_pool`: `[limits, ops...]`; see [`shm_pool`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Debug;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use switchyard::codec::{Bincode, Codec, CodecError};
use switchyard::payload::SHARE_AT_LEAST;
use switchyard::protocol::call::deadline_from_budget;
use switchyard::protocol::endpoint::Endpoint;
use switchyard::protocol::frame::{
    BATCH_LEN_BYTES, BatchMessages, Decoded, Frame, FrameDecoder, FrameError, HEADER_LEN,
    HELLO_LIMIT, Header, Kind, PoolDescriptor,
};
use switchyard::protocol::hello::{Hello, HostIdentity, MethodInfo, Role, ServiceInfo};
use switchyard::protocol::metadata::Metadata;
use switchyard::sys::pool::SenderSegment;
use switchyard::sys::shm;
use switchyard::transport::shm::peer_pool::{PeerSegments, Resolved};
use switchyard::transport::shm::ring::{
    Consumer, Producer, RING_MAGIC, RING_VERSION, ReadOutcome, RegionError, Ring, RingError,
    Role as RingRole, WriteOutcome, layout, region_len,
};

// ------------------------------------------------------------ allocations

/// A global allocator that counts the bytes each thread has allocated and
/// not freed, so a check can bound what decoding one input allocates. A
/// binary opts in with `#[global_allocator]`; without it [`peak_during`]
/// reports 0 and the bounds hold trivially.
#[derive(Debug)]
pub struct CountingAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // Const-initialised thread locals without destructors never allocate
    // and are never torn down, so this cannot recurse or fail.
    if delta > 0 {
        let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(delta as usize)));
    }
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(delta);
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

// SAFETY: every method forwards to `System` with the caller's arguments,
// which uphold `GlobalAlloc`'s contract; the counting touches only
// thread-local integers and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            note(signed(layout.size()));
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            note(signed(layout.size()));
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded; `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        note(-signed(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // A moving realloc briefly holds both blocks: count the new one
            // in full before releasing the old.
            note(signed(new_size));
            note(-signed(layout.size()));
        }
        new
    }
}

/// Runs `f` and returns its result with the most bytes this thread had
/// allocated at once meanwhile, above what was live when it started.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let (result, usage) = usage_during(f);
    (result, usage.peak)
}

/// What a piece of code allocated.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// The most bytes allocated at once, above what was live at the start.
    pub peak: usize,
    /// The largest single allocation (or growth by `realloc`).
    pub largest: usize,
}

/// Runs `f` and returns its result with what this thread allocated
/// meanwhile.
pub fn usage_during<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    LARGEST.with(|largest| largest.set(0));
    let result = f();
    let peak = PEAK.with(Cell::get);
    let usage = Usage {
        peak: usize::try_from(peak.wrapping_sub(start)).unwrap_or(0),
        largest: LARGEST.with(Cell::get),
    };
    (result, usage)
}

/// A little reader over the steering bytes of an input: past the end
/// every read is zero (so short inputs still mean something).
#[derive(Debug)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// The next byte, `None` at the end.
    pub fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    /// The next byte, 0 at the end.
    pub fn u8(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = rest;
        head
    }

    /// A little-endian `u32` (zero-padded at the end).
    pub fn u32(&mut self) -> u32 {
        let mut word = [0u8; 4];
        let head = self.take(4);
        word[..head.len()].copy_from_slice(head);
        u32::from_le_bytes(word)
    }

    /// A little-endian `u64` (zero-padded at the end).
    pub fn u64(&mut self) -> u64 {
        let mut word = [0u8; 8];
        let head = self.take(8);
        word[..head.len()].copy_from_slice(head);
        u64::from_le_bytes(word)
    }
}

// ------------------------------------------------------------ frame_decoder

/// The decoder limits the first input byte selects (`& 7`): tiny ones so
/// that most lengths exceed them, one (40) equal to the header, the rest
/// realistic.
pub const FRAME_LIMITS: [u32; 8] = [0, 1, 16, 40, 100, 1024, 4096, 65536];

/// The chunk lengths the second input byte selects: its low nibble picks
/// the largest chunk, the high nibble seeds a xorshift that draws each
/// chunk's length from 1 to that.
pub fn chunk_sizes(seed: u8) -> impl Iterator<Item = usize> {
    const LARGEST: [usize; 16] = [
        1,
        1,
        2,
        3,
        5,
        8,
        13,
        39,
        40,
        41,
        64,
        100,
        255,
        1000,
        4096,
        1 << 20,
    ];
    let largest = LARGEST[usize::from(seed & 15)];
    let mut state = 0x9e37_79b9 ^ u32::from(seed >> 4).wrapping_mul(0x0100_0193);
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        1 + state as usize % largest
    })
}

/// How a stream ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The decoder failed (the connection would be closed).
    Error(FrameError),
    /// All bytes were fed; the decoder waits for more.
    Waiting {
        buffered: usize,
        at_boundary: bool,
        wanted: usize,
    },
}

/// What a decoder made of a stream.
#[derive(Debug, PartialEq)]
struct Outcome {
    items: Vec<Decoded>,
    end: End,
}

/// The most a body may be for a frame of this kind under `limit`.
fn body_cap(limit: u32, hello: bool) -> u64 {
    if hello {
        u64::from(limit.max(HELLO_LIMIT))
    } else {
        u64::from(limit)
    }
}

/// Feeds `stream` to a fresh decoder in chunks of the given lengths,
/// decoding after each, and checks every decoded item and every call's
/// allocations.
fn decode_stream(limit: u32, stream: &[u8], chunks: impl Iterator<Item = usize>) -> Outcome {
    let limit = limit.min(switchyard::protocol::frame::MAX_FRAME_LIMIT);
    let mut decoder = FrameDecoder::new(limit);
    assert_eq!(decoder.limit(), limit);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut rest = stream;
    let mut chunks = chunks;
    // Whether the frame being assembled is a hello (which may be larger
    // than the limit), as known from its header.
    let mut hello_pending = false;
    loop {
        let n = chunks.next().unwrap_or(rest.len()).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        buf.extend_from_slice(chunk);
        rest = tail;
        loop {
            if decoder.at_frame_boundary() {
                hello_pending = buf.len() >= HEADER_LEN && buf[3] == Kind::Hello as u8;
            }
            let cap = body_cap(limit, hello_pending) as usize;
            let (result, peak) = peak_during(|| decoder.decode(&mut buf));
            // The decoder reserves room for at most one whole frame it has
            // accepted the header of; growth can double what is there.
            let bound = 2 * (stream.len() + HEADER_LEN + cap) + (128 << 10);
            assert!(
                peak <= bound,
                "one decode call allocated {peak} bytes (bound {bound}, limit {limit}, stream {} bytes)",
                stream.len()
            );
            match result {
                Err(error) => {
                    if let FrameError::TooLarge { len, limit: said } = &error {
                        assert!(
                            *len > u64::from(*said),
                            "TooLarge for a body within the limit"
                        );
                    }
                    return Outcome {
                        items,
                        end: End::Error(error),
                    };
                }
                Ok(None) => break,
                Ok(Some(item)) => {
                    check_item(limit, &item);
                    items.push(item);
                }
            }
        }
        if rest.is_empty() {
            return Outcome {
                items,
                end: End::Waiting {
                    buffered: buf.len(),
                    at_boundary: decoder.at_frame_boundary(),
                    wanted: decoder.wanted(&buf),
                },
            };
        }
    }
}

/// What holds for every item a decoder yields, and what the runtime does
/// next with a frame's parts must not panic.
fn check_item(limit: u32, item: &Decoded) {
    match item {
        Decoded::Frame(frame) => {
            let header = &frame.header;
            assert_eq!(frame.metadata.len(), header.metadata_len as usize);
            assert_eq!(frame.payload.len(), header.payload_len as usize);
            assert!(header.body_len() <= body_cap(limit, header.kind == Kind::Hello));
            // The server derives a deadline from the peer's budget.
            let _ = deadline_from_budget(Instant::now(), header.deadline_us);
            if let Ok(metadata) = Metadata::decode(&frame.metadata) {
                let mut wire = Vec::new();
                metadata.encode_into(&mut wire);
                assert_eq!(wire.len(), metadata.encoded_len());
                assert_eq!(Metadata::decode(&wire).as_ref(), Ok(&metadata));
            }
            if header.kind == Kind::Hello {
                hello(&frame.payload);
            }
        }
        Decoded::Oversized(header) => {
            assert_ne!(
                header.kind,
                Kind::Hello,
                "an oversized hello must be an error"
            );
            assert!(header.body_len() > u64::from(limit));
        }
    }
}

/// `frame_decoder`: the decoder never panics, allocates no more than the
/// limit allows, yields the same items and ending however the stream is
/// chunked, and every frame it yields encodes back to bytes that decode
/// to the same frame (alone, and all of them back to back).
pub fn frame_decoder(data: &[u8]) {
    let [selector, seed, stream @ ..] = data else {
        return;
    };
    let limit = FRAME_LIMITS[usize::from(selector & 7)];
    let whole = decode_stream(limit, stream, std::iter::empty());
    let chunked = decode_stream(limit, stream, chunk_sizes(*seed));
    assert_eq!(whole, chunked, "chunking changed what was decoded");

    let frames: Vec<&Frame> = whole
        .items
        .iter()
        .filter_map(|item| match item {
            Decoded::Frame(frame) => Some(frame),
            Decoded::Oversized(_) => None,
        })
        .collect();
    let mut all = Vec::new();
    for frame in &frames {
        let mut wire = Vec::new();
        frame.encode_into(&mut wire);
        assert_eq!(
            wire.len() as u64,
            HEADER_LEN as u64 + frame.header.body_len()
        );
        let again = decode_stream(limit, &wire, std::iter::empty());
        assert_eq!(again.items, [Decoded::Frame((*frame).clone())]);
        assert!(matches!(
            again.end,
            End::Waiting {
                buffered: 0,
                at_boundary: true,
                ..
            }
        ));
        all.extend_from_slice(&wire);
        batch(&frame.payload, frame.header.credit);
    }
    let again = decode_stream(limit, &all, chunk_sizes(seed.rotate_left(4)));
    let again: Vec<&Frame> = again
        .items
        .iter()
        .map(|item| match item {
            Decoded::Frame(frame) => frame,
            Decoded::Oversized(header) => {
                panic!("re-encoded frame came back oversized: {header:?}")
            }
        })
        .collect();
    assert_eq!(again, frames);
}

/// A payload read as a batch of `count` stream messages (what a session
/// does with a `FLAG_BATCH` Data frame): checking never panics, and a batch
/// that passes walks as exactly `count` messages, in order, within the
/// payload, ending at its end.
fn batch(payload: &[u8], count: u32) {
    let checked = BatchMessages::check(payload, count);
    let mut end = 0;
    let mut walked = 0u32;
    for range in BatchMessages::new(payload, 0) {
        assert!(range.start >= end + BATCH_LEN_BYTES && range.end <= payload.len());
        end = range.end;
        walked += 1;
        if walked == count {
            break;
        }
    }
    if checked.is_ok() {
        assert_eq!(walked, count);
        assert_eq!(end, payload.len());
    } else {
        assert!(count == 0 || walked < count || end < payload.len());
    }
}

// ------------------------------------------------------------ hello

/// `hello`: decoding never panics and allocates at most a fixed multiple
/// of the input; a decoded hello encodes to bytes that decode to the same
/// hello and encode to the same bytes again, and unknown bytes appended
/// to that encoding are ignored.
pub fn hello(data: &[u8]) {
    let (decoded, peak) = peak_during(|| Hello::decode(data));
    let bound = 32 * data.len() + 4096;
    assert!(
        peak <= bound,
        "decoding a {}-byte hello allocated {peak} bytes (bound {bound})",
        data.len()
    );
    let Ok(hello) = decoded else {
        return;
    };
    let mut wire = Vec::new();
    hello.encode_into(&mut wire);
    let again = Hello::decode(&wire).expect("a re-encoded hello decodes");
    assert_eq!(again, hello);
    let mut wire2 = Vec::new();
    again.encode_into(&mut wire2);
    assert_eq!(wire2, wire, "encoding is not stable");
    // Only the optional fields can add bytes (two counts, the codecs and
    // the features).
    assert!(wire.len() <= data.len() + 6, "re-encoding grew the hello");
    // A later version may append fields: they are ignored.
    let mut longer = wire.clone();
    longer.extend_from_slice(data);
    assert_eq!(Hello::decode(&longer).as_ref(), Ok(&hello));
}

// ------------------------------------------------------------ inflate

/// The frame limit the `inflate` target decompresses within.
pub const INFLATE_LIMIT: u32 = 64 * 1024;

/// `compress::inflate` on an arbitrary payload flagged compressed: never a
/// panic; a payload that declares more than the limit is oversized with
/// nothing reserved for it; one that inflates is exactly its declared size
/// and within the limit; and `data` itself, compressed by the sender's
/// `FrameCompressor`, inflates back to `data`.
pub fn inflate(data: &[u8]) {
    use switchyard::protocol::compress::{self, CompressionCounters, FrameCompressor};
    let counters = CompressionCounters::default();
    let mut header = Header::new(Kind::Request, 1);
    header.flags = switchyard::protocol::frame::FLAG_COMPRESSED;
    let frame = Frame::new(header, Bytes::new(), Bytes::copy_from_slice(data));
    let (result, usage) = usage_during(|| compress::inflate(frame, INFLATE_LIMIT, &counters));
    // The output (at most the limit) and little else; zstd's own context
    // comes from its allocator, not this one.
    let bound = INFLATE_LIMIT as usize + 4096;
    assert!(
        usage.peak <= bound,
        "inflating {} bytes allocated {} (bound {bound})",
        data.len(),
        usage.peak
    );
    match result {
        Ok(Decoded::Frame(frame)) => {
            assert_eq!(frame.payload.len(), frame.header.payload_len as usize);
            assert!(frame.payload.len() <= INFLATE_LIMIT as usize);
            assert_eq!(
                frame.header.flags & switchyard::protocol::frame::FLAG_COMPRESSED,
                0
            );
        }
        Ok(Decoded::Oversized(header)) => {
            assert!(header.payload_len > INFLATE_LIMIT, "{header:?}");
            assert!(
                usage.peak < 4096,
                "an oversized payload reserved {}",
                usage.peak
            );
        }
        Err(_) => {}
    }
    // The round trip.
    let mut wire = Vec::new();
    Frame::new(
        Header::new(Kind::Request, 2),
        Bytes::new(),
        Bytes::copy_from_slice(data),
    )
    .encode_into(&mut wire);
    let compressor = FrameCompressor::new(64, 1, Arc::default());
    if let Some(compressed) = compressor.compress(&wire) {
        let mut decoder = FrameDecoder::new(u32::MAX);
        let mut buf = BytesMut::from(&compressed[..]);
        let Ok(Some(Decoded::Frame(frame))) = decoder.decode(&mut buf) else {
            panic!("a compressed frame does not decode as a frame");
        };
        match compress::inflate(frame, u32::MAX, &counters) {
            Ok(Decoded::Frame(frame)) => assert_eq!(&frame.payload[..], data),
            other => panic!("a compressed payload did not come back: {other:?}"),
        }
    }
}

// ------------------------------------------------------------ codec

/// A line of an [`Order`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    /// Stock-keeping unit.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// Price per unit.
    pub price_cents: i64,
}

/// Where an [`Order`] is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OrderState {
    /// Just placed.
    New,
    /// Paid at a time.
    Paid {
        /// Unix seconds.
        at: u64,
    },
    /// Shipped with a carrier and parcel count.
    Shipped(String, u16),
    /// Cancelled, maybe with a reason.
    Cancelled {
        /// Why.
        reason: Option<String>,
    },
}

/// A response type of the kind a service returns: nested vectors, a map,
/// an enum, options and a byte buffer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Order id.
    pub id: u64,
    /// Who ordered.
    pub customer: String,
    /// What.
    pub lines: Vec<OrderLine>,
    /// Labels with numeric values.
    pub tags: HashMap<String, Vec<u32>>,
    /// Where it is.
    pub state: OrderState,
    /// A note.
    pub note: Option<String>,
    /// An attachment.
    pub attachment: Option<switchyard::Bytes>,
}

/// A float compared by its bits, so NaN equals itself after a round trip.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bits(pub f64);

impl PartialEq for Bits {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

/// Scalars whose decoding validates (bool, char) or is wide (u128).
pub type Scalars = (bool, char, u128, i8, Bits, Option<()>);
/// Arguments of `fn mixed(n: u32, order: Order, blobs: Vec<Bytes>)`.
pub type Mixed = (u32, Order, Vec<switchyard::Bytes>);

/// The [`switchyard::Bytes`] values inside a decoded value, to check
/// where they point.
pub trait ByteStrings {
    /// Calls `f` on each.
    fn byte_strings(&self, _f: &mut dyn FnMut(&switchyard::Bytes)) {}
}

impl ByteStrings for (i64, i64) {}
impl ByteStrings for (String, Vec<u8>) {}
impl ByteStrings for Option<String> {}
impl ByteStrings for () {}
impl ByteStrings for Scalars {}

impl ByteStrings for (switchyard::Bytes,) {
    fn byte_strings(&self, f: &mut dyn FnMut(&switchyard::Bytes)) {
        f(&self.0);
    }
}

impl ByteStrings for Order {
    fn byte_strings(&self, f: &mut dyn FnMut(&switchyard::Bytes)) {
        if let Some(attachment) = &self.attachment {
            f(attachment);
        }
    }
}

impl ByteStrings for Mixed {
    fn byte_strings(&self, f: &mut dyn FnMut(&switchyard::Bytes)) {
        self.1.byte_strings(f);
        self.2.iter().for_each(f);
    }
}

/// The types the `codec` target decodes, by the first input byte (`% 8`).
pub const CODEC_TYPES: [&str; 8] = [
    "(i64, i64)",
    "(String, Vec<u8>)",
    "(Bytes,)",
    "Option<String>",
    "()",
    "Order",
    "Mixed",
    "Scalars",
];

/// `codec`: bincode decoding of argument and result types never panics
/// and allocates a bounded amount; `decode_shared` agrees with `decode`
/// (and shares only large byte strings, only from its buffer); a decoded
/// value encodes to bytes no longer than the input that decode to an equal
/// value.
pub fn codec(data: &[u8]) {
    let [selector, body @ ..] = data else {
        return;
    };
    match selector % 8 {
        0 => codec_round_trip::<(i64, i64)>(body),
        1 => codec_round_trip::<(String, Vec<u8>)>(body),
        2 => codec_round_trip::<(switchyard::Bytes,)>(body),
        3 => codec_round_trip::<Option<String>>(body),
        4 => codec_round_trip::<()>(body),
        5 => codec_round_trip::<Order>(body),
        6 => codec_round_trip::<Mixed>(body),
        _ => codec_round_trip::<Scalars>(body),
    }
}

/// serde preallocates at most 1 MiB per collection, and the types above
/// nest collections at most three deep; beyond that, what decoding
/// allocates must be proportional to the input.
pub fn codec_alloc_bound(len: usize) -> usize {
    (8 << 20) + 128 * len
}

/// The first finding (docs/fuzzing.md, "Findings"), fixed: bincode 2.0.1
/// allocates an owned `String`'s claimed length before reading it, and
/// `Bincode::decode` now bounds claims by the input's size. Set
/// `SWITCHYARD_FUZZ_TOLERATE=1` to tolerate one allocation up to
/// `codec::DECODE_LIMIT` per input (for builds from before the fix).
pub fn tolerate_string_claims() -> bool {
    static TOLERATE: OnceLock<bool> = OnceLock::new();
    *TOLERATE.get_or_init(|| std::env::var_os("SWITCHYARD_FUZZ_TOLERATE").is_some_and(|v| v == "1"))
}

fn codec_round_trip<T>(body: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + ByteStrings,
{
    let (plain, usage) = usage_during(|| Bincode::decode::<T>(body));
    let bound = codec_alloc_bound(body.len());
    let mut peak = usage.peak;
    if tolerate_string_claims() && usage.largest <= switchyard::codec::DECODE_LIMIT {
        peak = peak.saturating_sub(usage.largest);
    }
    assert!(
        peak <= bound,
        "decoding {} from {} bytes allocated {} bytes at once, {} in one block (bound {bound})",
        std::any::type_name::<T>(),
        body.len(),
        usage.peak,
        usage.largest,
    );
    let source = Bytes::copy_from_slice(body);
    let shared = Bincode::decode_shared::<T>(&source);
    let value = match (plain, shared) {
        (Ok(plain), Ok(shared)) => {
            assert_eq!(plain, shared, "decode and decode_shared disagree");
            plain.byte_strings(&mut |b| assert!(!inside(b, body), "decode shared its input"));
            shared.byte_strings(&mut |b| {
                assert_eq!(
                    inside(b, &source),
                    b.len() >= SHARE_AT_LEAST,
                    "decode_shared shares exactly the byte strings of at least {SHARE_AT_LEAST} bytes"
                );
            });
            plain
        }
        (Err(plain), Err(shared)) => {
            assert_eq!(
                error_kind(&plain),
                error_kind(&shared),
                "decode and decode_shared fail differently: {plain} / {shared}"
            );
            assert_eq!(plain.to_string(), shared.to_string());
            return;
        }
        (plain, shared) => panic!("decode and decode_shared disagree: {plain:?} / {shared:?}"),
    };
    let mut wire = Vec::new();
    Bincode::encode(&value, &mut wire).expect("a decoded value encodes");
    assert!(
        wire.len() <= body.len(),
        "re-encoding grew {} from {} to {} bytes",
        std::any::type_name::<T>(),
        body.len(),
        wire.len()
    );
    let again: T = Bincode::decode(&wire).expect("a re-encoded value decodes");
    assert_eq!(again, value);
}

fn inside(part: &[u8], whole: &[u8]) -> bool {
    let start = part.as_ptr() as usize;
    let base = whole.as_ptr() as usize;
    !part.is_empty() && start >= base && start + part.len() <= base + whole.len()
}

fn error_kind(error: &CodecError) -> &'static str {
    match error {
        CodecError::Encode { .. } => "encode",
        CodecError::Decode { .. } => "decode",
        CodecError::TrailingBytes { .. } => "trailing",
        _ => "other",
    }
}

// ------------------------------------------------------------ shm_ring

/// Bytes of the memfd the `shm_ring` target maps: two pages. Each input's
/// ring is placed at its end, so a read past the ring's region runs off
/// the mapping; the bytes before the ring hold [`SENTINEL`].
pub const SHM_MAP_LEN: usize = 8192;
/// What fills the mapping before the ring; it must still be there after
/// every input.
pub const SENTINEL: u8 = 0xA5;

struct Shm {
    file: File,
    map: Arc<memmap2::MmapRaw>,
}

/// One memfd and mapping for the whole process: rings over it are opened
/// and dropped one input at a time (the lock serialises tests).
fn shm_region() -> &'static Mutex<Shm> {
    static SHM: OnceLock<Mutex<Shm>> = OnceLock::new();
    SHM.get_or_init(|| {
        let fd = shm::create_memfd("switchyard-fuzz-ring", SHM_MAP_LEN as u64)
            .expect("create a sealed memfd");
        let map =
            shm::map_sealed(std::os::fd::AsFd::as_fd(&fd), SHM_MAP_LEN).expect("map the memfd");
        Mutex::new(Shm {
            file: File::from(fd),
            map: Arc::new(map),
        })
    })
}

/// The peer's view of the ring: what every shared word and data byte
/// holds, and what each end keeps privately. Each operation on the real
/// ring is first predicted here; the two must agree exactly.
#[derive(Debug)]
struct Model {
    /// The ring's capacity (as attached).
    capacity: usize,
    /// The whole data area of the region (the ring may use a prefix).
    data: Vec<u8>,
    tail_word: u64,
    head_word: u64,
    consumer_waiting: u32,
    producer_waiting: u32,
    p_tail: u64,
    p_head: u64,
    p_seq: u32,
    p_woken: u32,
    c_head: u64,
    c_seq: u32,
    c_woken: u32,
}

fn must_wake(word: u32, woken: &mut u32) -> bool {
    if word & 1 == 1 && word != *woken {
        *woken = word;
        true
    } else {
        false
    }
}

fn sleep_begin(seq: &mut u32, word: &mut u32) {
    *seq = seq.wrapping_add(if *seq & 1 == 1 { 2 } else { 1 });
    *word = *seq;
}

fn sleep_end(seq: &mut u32, word: &mut u32) {
    if *seq & 1 == 1 {
        *seq = seq.wrapping_add(1);
        *word = *seq;
    }
}

impl Model {
    fn new(capacity: usize, area: usize, tail: u64, head: u64, cw: u32, pw: u32) -> Self {
        Self {
            capacity,
            data: vec![0; area],
            tail_word: tail,
            head_word: head,
            consumer_waiting: cw,
            producer_waiting: pw,
            p_tail: tail,
            p_head: tail.wrapping_sub(capacity as u64),
            p_seq: pw,
            p_woken: 0,
            c_head: head,
            c_seq: cw,
            c_woken: 0,
        }
    }

    fn at(&self, pos: u64) -> usize {
        (pos % self.capacity as u64) as usize
    }

    /// `Consumer::readable`: `Some(available)` or `None` for corrupt.
    fn readable(&self) -> Option<usize> {
        let available = self.tail_word.wrapping_sub(self.c_head);
        (available <= self.capacity as u64).then_some(available as usize)
    }

    /// `Producer::reload_head`: `Some(in use)` or `None` for corrupt.
    fn reload_head(&mut self) -> Option<usize> {
        let in_use = self.p_tail.wrapping_sub(self.head_word);
        if in_use > self.capacity as u64 {
            return None;
        }
        self.p_head = self.head_word;
        Some(in_use as usize)
    }

    fn write(&mut self, bytes: &[u8]) -> Option<WriteOutcome> {
        let used = self.p_tail.wrapping_sub(self.p_head).min(usize::MAX as u64) as usize;
        let mut free = self.capacity.saturating_sub(used);
        if free < bytes.len() {
            free = self.capacity - self.reload_head()?;
        }
        let n = free.min(bytes.len());
        if n == 0 {
            return Some(WriteOutcome::default());
        }
        for (i, &byte) in bytes[..n].iter().enumerate() {
            let at = self.at(self.p_tail.wrapping_add(i as u64));
            self.data[at] = byte;
        }
        self.p_tail = self.p_tail.wrapping_add(n as u64);
        self.tail_word = self.p_tail;
        Some(WriteOutcome {
            written: n,
            wake_peer: must_wake(self.consumer_waiting, &mut self.p_woken),
        })
    }

    /// `Consumer::read` of at most `max` bytes: the outcome and the bytes.
    fn read(&mut self, max: usize) -> Option<(ReadOutcome, Vec<u8>)> {
        let n = self.readable()?.min(max);
        if n == 0 {
            return Some((ReadOutcome::default(), Vec::new()));
        }
        let bytes = (0..n)
            .map(|i| self.data[self.at(self.c_head.wrapping_add(i as u64))])
            .collect();
        self.c_head = self.c_head.wrapping_add(n as u64);
        self.head_word = self.c_head;
        let outcome = ReadOutcome {
            read: n,
            wake_peer: must_wake(self.producer_waiting, &mut self.c_woken),
        };
        Some((outcome, bytes))
    }
}

/// A header word the fuzzer may overwrite.
#[derive(Clone, Copy, Debug)]
enum Word {
    Magic,
    Version,
    Capacity,
    Tail,
    Head,
    ConsumerWaiting,
    ProducerWaiting,
}

impl Word {
    fn pick(byte: u8) -> Self {
        match byte % 7 {
            0 => Self::Magic,
            1 => Self::Version,
            2 => Self::Capacity,
            3 => Self::Tail,
            4 => Self::Head,
            5 => Self::ConsumerWaiting,
            _ => Self::ProducerWaiting,
        }
    }

    fn offset(self) -> usize {
        match self {
            Self::Magic => layout::MAGIC,
            Self::Version => layout::VERSION,
            Self::Capacity => layout::CAPACITY,
            Self::Tail => layout::TAIL,
            Self::Head => layout::HEAD,
            Self::ConsumerWaiting => layout::CONSUMER_WAITING,
            Self::ProducerWaiting => layout::PRODUCER_WAITING,
        }
    }

    fn is_u32(self) -> bool {
        matches!(
            self,
            Self::Version | Self::ConsumerWaiting | Self::ProducerWaiting
        )
    }
}

/// The hostile peer: writes through the memfd (`pwrite`), as another
/// process would through its own mapping.
struct Peer<'a> {
    file: &'a File,
    offset: usize,
}

impl Peer<'_> {
    fn write(&self, at: usize, bytes: &[u8]) {
        self.file
            .write_all_at(bytes, (self.offset + at) as u64)
            .expect("pwrite to the memfd");
    }

    fn read(&self, at: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.file
            .read_exact_at(&mut out, (self.offset + at) as u64)
            .expect("pread from the memfd");
        out
    }

    fn word(&self, word: Word) -> u64 {
        let bytes = self.read(word.offset(), if word.is_u32() { 4 } else { 8 });
        let mut le = [0u8; 8];
        le[..bytes.len()].copy_from_slice(&bytes);
        u64::from_le_bytes(le)
    }

    /// Writes `value` (truncated for 32-bit words); returns what was written.
    fn set(&self, word: Word, value: u64) -> u64 {
        if word.is_u32() {
            self.write(word.offset(), &(value as u32).to_le_bytes());
            u64::from(value as u32)
        } else {
            self.write(word.offset(), &value.to_le_bytes());
            value
        }
    }
}

/// A value for a header word: absolute, or near an index the ring holds
/// (where off-by-one and just-past-capacity bugs live).
fn scribble_value(input: &mut Cursor<'_>, model: &Model) -> u64 {
    let near = |base: u64, delta: u8| base.wrapping_add(i64::from(delta as i8) as u64);
    let cap = model.capacity as u64;
    match input.u8() % 6 {
        0 => input.u64(),
        1 => near(model.tail_word, input.u8()),
        2 => near(model.c_head.wrapping_add(cap), input.u8()),
        3 => near(model.p_tail.wrapping_sub(cap), input.u8()),
        4 => near(model.head_word, input.u8()),
        _ => u64::from(input.u32()),
    }
}

/// `shm_ring`: a ring in a real memfd mapping whose peer is the fuzzer.
/// Between operations on the two ends the fuzzer overwrites header words
/// (indices, sleep words, magic/version/capacity) and data bytes through
/// the memfd. Every operation's result must be exactly what a model of
/// the protocol predicts (corruption is reported as `RingError::Corrupt`,
/// never a panic), reads return the bytes the model says are there, and
/// nothing outside the ring's words and data area changes.
///
/// Input: `mode` (`& 7`: capacity `8 << n`; `& 0x80`: attach to a header
/// the fuzzer edits first, after `mode >> 3 & 3` edits), then operations,
/// one byte each plus arguments, until the input ends (see `ring_op`).
pub fn shm_ring(data: &[u8]) {
    let region = shm_region().lock().unwrap_or_else(|e| e.into_inner());
    let mut input = Cursor::new(data);
    let mode = input.u8();
    let init_capacity = 8usize << (mode & 7);
    let len = region_len(init_capacity);
    let offset = SHM_MAP_LEN - len;
    let peer = Peer {
        file: &region.file,
        offset,
    };
    // An attached ring may claim a larger capacity than the one it was
    // made with, as long as it fits the region (whose end is padded).
    let area = len - layout::DATA;
    let mut fresh = vec![SENTINEL; SHM_MAP_LEN];
    fresh[offset..].fill(0);
    region
        .file
        .write_all_at(&fresh, 0)
        .expect("reset the memfd");

    let init = Ring::from_mmap(
        region.map.clone(),
        offset,
        len,
        RingRole::Init {
            capacity: init_capacity,
        },
    )
    .expect("a ring fits the mapping");
    assert_eq!(init.capacity(), init_capacity);
    let ring = if mode & 0x80 == 0 {
        init
    } else {
        drop(init);
        for _ in 0..(mode >> 3 & 3) {
            let word = Word::pick(input.u8());
            let value = match input.u8() % 3 {
                0 => input.u64(),
                1 => 1u64 << (input.u8() % 64),
                _ => u64::from(input.u8()),
            };
            peer.set(word, value);
        }
        let expected = attach_verdict(&peer, len);
        match Ring::from_mmap(region.map.clone(), offset, len, RingRole::Attach) {
            Ok(ring) => {
                assert_eq!(
                    expected,
                    Ok(ring.capacity()),
                    "attach accepted a bad header"
                );
                ring
            }
            Err(error) => {
                let expected =
                    expected.expect_err(&format!("attach refused a good header: {error}"));
                assert_eq!(expected, region_error_kind(&error), "{error}");
                return;
            }
        }
    };
    let capacity = ring.capacity();
    let mut model = Model::new(
        capacity,
        area,
        peer.word(Word::Tail),
        peer.word(Word::Head),
        peer.word(Word::ConsumerWaiting) as u32,
        peer.word(Word::ProducerWaiting) as u32,
    );
    let (producer, consumer) = ring.split();
    let mut counter = 0u8;
    while let Some(op) = input.byte() {
        ring_op(
            op,
            &mut input,
            &mut model,
            &peer,
            &producer,
            &consumer,
            &mut counter,
        );
    }
    drop((producer, consumer));

    // Nothing but the ring's words and data may have changed.
    let after = peer.read(0, len);
    let mut expected = fresh[offset..].to_vec();
    for (word, value) in [
        (Word::Tail, model.tail_word),
        (Word::Head, model.head_word),
        (Word::ConsumerWaiting, u64::from(model.consumer_waiting)),
        (Word::ProducerWaiting, u64::from(model.producer_waiting)),
    ] {
        let at = word.offset();
        let width = if word.is_u32() { 4 } else { 8 };
        expected[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
    }
    expected[layout::DATA..layout::DATA + area].copy_from_slice(&model.data);
    // The constant words hold whatever was last written there; compare the
    // rest of the region.
    for word in [Word::Magic, Word::Version, Word::Capacity] {
        let at = word.offset();
        let width = if word.is_u32() { 4 } else { 8 };
        expected[at..at + width].copy_from_slice(&after[at..at + width]);
    }
    assert!(after == expected, "the region differs from the model");
    let before = peer_read_absolute(&region.file, 0, offset);
    assert!(
        before.iter().all(|&b| b == SENTINEL),
        "bytes before the ring changed"
    );
}

fn peer_read_absolute(file: &File, at: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    file.read_exact_at(&mut out, at as u64)
        .expect("pread from the memfd");
    out
}

/// What `Ring::from_mmap(.., Role::Attach)` must say about the header
/// the peer left: the capacity, or which error.
fn attach_verdict(peer: &Peer<'_>, len: usize) -> Result<usize, &'static str> {
    if peer.word(Word::Magic) != RING_MAGIC {
        return Err("magic");
    }
    if peer.word(Word::Version) != u64::from(RING_VERSION) {
        return Err("version");
    }
    let capacity = peer.word(Word::Capacity);
    if !capacity.is_power_of_two() || !(8..=1 << 30).contains(&capacity) {
        return Err("capacity");
    }
    if region_len(capacity as usize) > len {
        return Err("short");
    }
    Ok(capacity as usize)
}

fn region_error_kind(error: &RegionError) -> &'static str {
    match error {
        RegionError::BadMagic { .. } => "magic",
        RegionError::BadVersion { .. } => "version",
        RegionError::BadCapacity { .. } => "capacity",
        RegionError::TooShort { .. } => "short",
        _ => "other",
    }
}

fn corrupt<T: Debug>(result: Result<T, RingError>) {
    match result {
        Err(RingError::Corrupt { .. }) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[allow(clippy::too_many_arguments)]
fn ring_op(
    op: u8,
    input: &mut Cursor<'_>,
    model: &mut Model,
    peer: &Peer<'_>,
    producer: &Producer,
    consumer: &Consumer,
    counter: &mut u8,
) {
    let cap = model.capacity;
    match (op & 0x7f) % 12 {
        // Produce up to twice the capacity: bytes from the input when the
        // op's top bit is set, else (and when the input runs out) a pattern.
        0 | 1 => {
            let n = usize::from(input.u8()) % (2 * cap + 1);
            let mut bytes = if op & 0x80 != 0 {
                input.take(n).to_vec()
            } else {
                Vec::new()
            };
            while bytes.len() < n {
                *counter = counter.wrapping_add(1);
                bytes.push(*counter);
            }
            match model.write(&bytes) {
                Some(expected) => assert_eq!(producer.write(&bytes), Ok(expected)),
                None => corrupt(producer.write(&bytes)),
            }
        }
        // Consume into a slice; bytes past what was read stay untouched.
        2 | 3 => {
            let n = usize::from(input.u8()) % (2 * cap + 1);
            let mut out = vec![0x5A; n];
            match model.read(n) {
                Some((expected, bytes)) => {
                    assert_eq!(consumer.read(&mut out), Ok(expected));
                    assert_eq!(&out[..expected.read], &bytes[..], "read the wrong bytes");
                    assert!(out[expected.read..].iter().all(|&b| b == 0x5A));
                }
                None => corrupt(consumer.read(&mut out)),
            }
        }
        // Consume into a buffer that already holds something.
        4 => {
            let max = usize::from(input.u8()) % (2 * cap + 1);
            let mut buf = BytesMut::from(&b"kept"[..]);
            match model.read(max) {
                Some((expected, bytes)) => {
                    assert_eq!(consumer.read_buf(&mut buf, max), Ok(expected));
                    assert_eq!(&buf[..4], b"kept");
                    assert_eq!(&buf[4..], &bytes[..], "read_buf read the wrong bytes");
                }
                None => corrupt(consumer.read_buf(&mut buf, max)),
            }
        }
        5 => match model.readable() {
            Some(available) => assert_eq!(consumer.available(), Ok(available)),
            None => corrupt(consumer.available()),
        },
        6 => {
            if input.u8() & 1 == 0 {
                sleep_begin(&mut model.c_seq, &mut model.consumer_waiting);
                let empty = model.readable() == Some(0);
                if !empty {
                    sleep_end(&mut model.c_seq, &mut model.consumer_waiting);
                }
                assert_eq!(consumer.prepare_to_wait(), empty);
            } else {
                sleep_end(&mut model.c_seq, &mut model.consumer_waiting);
                consumer.cancel_wait();
            }
        }
        7 => match input.u8() % 3 {
            0 => {
                sleep_begin(&mut model.p_seq, &mut model.producer_waiting);
                let full = model.reload_head() == Some(cap);
                if !full {
                    sleep_end(&mut model.p_seq, &mut model.producer_waiting);
                }
                assert_eq!(producer.prepare_to_wait(), full);
            }
            1 => {
                sleep_end(&mut model.p_seq, &mut model.producer_waiting);
                producer.cancel_wait();
            }
            _ => match model.reload_head() {
                Some(in_use) => assert_eq!(producer.free_space(), Ok(cap - in_use)),
                None => corrupt(producer.free_space()),
            },
        },
        // The peer rewrites a header word.
        8 | 9 => {
            let word = Word::pick(input.u8());
            let value = scribble_value(input, model);
            let value = peer.set(word, value);
            match word {
                Word::Tail => model.tail_word = value,
                Word::Head => model.head_word = value,
                Word::ConsumerWaiting => model.consumer_waiting = value as u32,
                Word::ProducerWaiting => model.producer_waiting = value as u32,
                // Read once at attach: rewriting them must change nothing.
                Word::Magic | Word::Version | Word::Capacity => {}
            }
        }
        // The peer rewrites data bytes (anywhere in the data area).
        _ => {
            let at = usize::from(input.u8()) * 257 % model.data.len();
            let n = usize::from(input.u8() % 16).min(model.data.len() - at);
            let mut bytes = input.take(n).to_vec();
            bytes.resize(n, 0xEE);
            peer.write(layout::DATA + at, &bytes);
            model.data[at..at + n].copy_from_slice(&bytes);
        }
    }
}

// ------------------------------------------------------------ seeds

// ------------------------------------------------------------ shm_pool

/// A segment the fuzzer made, as the sender holds it, and what it holds.
struct SentSegment {
    segment: SenderSegment,
    contents: Vec<u8>,
}

impl SentSegment {
    fn new(len: usize, fill: u8) -> Self {
        let segment = SenderSegment::new(len).expect("create a pool segment");
        let contents: Vec<u8> = (0..segment.len())
            .map(|i| fill.wrapping_add((i % 251) as u8))
            .collect();
        assert!(segment.write(0, &contents));
        Self { segment, contents }
    }

    /// The sender writes `bytes` at `at` (wrapped into the segment).
    fn scribble(&mut self, at: usize, bytes: &[u8]) {
        let at = at % self.contents.len();
        let bytes = &bytes[..bytes.len().min(self.contents.len() - at)];
        assert!(self.segment.write(at, bytes));
        self.contents[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

/// What comes on the region socket with a descriptor, if anything.
enum Arrival {
    /// Nothing (the peer sent a descriptor without its segment).
    Nothing,
    /// A sealed segment, announced as `id` of `claimed` bytes.
    Sealed {
        id: u32,
        claimed: u64,
        sent: SentSegment,
    },
    /// A memfd sealed against resizing but still writable by anyone
    /// (the ring's seals, not a segment's), announced as `id` of its size.
    Writable { id: u32, len: u64, fd: OwnedFd },
}

/// A small id, mostly near `near`.
fn segment_id(input: &mut Cursor<'_>, near: u32) -> u32 {
    match input.u8() % 8 {
        0 => input.u32(),
        n => near.wrapping_add(u32::from(n)).wrapping_sub(3),
    }
}

/// An offset or length, mostly inside a segment of `len` bytes.
fn pool_span(input: &mut Cursor<'_>, len: usize) -> u64 {
    match input.u8() % 4 {
        0 => input.u64(),
        1 => len as u64 + u64::from(input.u8()),
        _ => u64::from(input.u32()) % (len as u64 + 1),
    }
}

/// `shm_pool`: the receiving side of a shm connection's pool
/// (`transport::shm::peer_pool::PeerSegments`) with the fuzzer as the
/// sending peer. Input: `[limits, ops...]`; `limits` sets the frame limit
/// and how many segments and bytes may be mapped. Each op is a descriptor
/// (its number, segment, oldest segment, offset and lengths steered by the
/// input) with what arrives on the region socket for it: nothing, a real
/// sealed segment (sometimes announced with the wrong id or size), or an
/// memfd anyone may still write; or the sender scribbling on a segment it already sent.
///
/// Checks: every verdict (a body, oversized, or the error that closes the
/// connection) matches a model of the rules in `docs/wire-protocol.md`
/// §1.1; a body is exactly the bytes the sender had there when it was
/// taken, and stays so whatever the sender writes afterwards; the segment
/// socket is read exactly when the body's segment is new; nothing panics.
pub fn shm_pool(data: &[u8]) {
    let mut input = Cursor::new(data);
    let limits = input.u8();
    let max_segments = 1 + usize::from(limits & 7);
    let max_mapped = 4096 * (1 + usize::from(limits >> 3 & 15));
    let frame_limit = 64u64 << ((limits >> 7) * 8); // 64 B or 16 KiB
    let mut pool = PeerSegments::new(max_mapped, max_segments);
    // The model: what the receiver should have mapped, by id.
    let mut mapped: Vec<(u32, SentSegment)> = Vec::new();
    let mut received = 0u64;
    // Bodies handed out, with what they must still hold.
    let mut bodies: Vec<(Bytes, Vec<u8>)> = Vec::new();
    let mut next_fill = 0u8;
    while let Some(op) = input.byte() {
        if op % 8 == 7 {
            // The sender scribbles on a segment the receiver has mapped.
            if let Some((_, sent)) = mapped.get_mut(usize::from(input.u8()) % 8) {
                let at = input.u32() as usize;
                let len = usize::from(input.u8());
                let bytes = vec![input.u8(); len];
                sent.scribble(at, &bytes);
            }
            continue;
        }
        let newest = mapped.last().map_or(0, |(id, _)| *id);
        let descriptor = PoolDescriptor {
            seq: if op & 0x80 == 0 {
                received
            } else {
                input.u64()
            },
            segment: segment_id(&mut input, newest.wrapping_add(1)),
            oldest: match input.u8() % 4 {
                0 => segment_id(&mut input, newest),
                _ => mapped.first().map_or(0, |(id, _)| *id),
            },
            offset: 0,
            metadata_len: 0,
            payload_len: 0,
        };
        let arrival = match op % 8 {
            0..=3 => {
                next_fill = next_fill.wrapping_add(37);
                let sent = SentSegment::new(4096 << (input.u8() % 3), next_fill);
                let real = sent.contents.len() as u64;
                let claimed = match input.u8() % 8 {
                    0 => real + 4096,
                    1 => real / 2,
                    _ => real,
                };
                let id = match input.u8() % 8 {
                    0 => segment_id(&mut input, descriptor.segment),
                    _ => descriptor.segment,
                };
                Arrival::Sealed { id, claimed, sent }
            }
            4 => {
                let fd = shm::create_memfd("switchyard-fuzz", 4096).expect("create a memfd");
                Arrival::Writable {
                    id: descriptor.segment,
                    len: 4096,
                    fd,
                }
            }
            _ => Arrival::Nothing,
        };
        // Where the body lies, steered toward the segment it names.
        let target_len = mapped
            .iter()
            .find(|(id, _)| *id == descriptor.segment)
            .map(|(_, s)| s.contents.len())
            .or(match &arrival {
                Arrival::Sealed { sent, .. } => Some(sent.contents.len()),
                _ => None,
            })
            .unwrap_or(4096);
        let offset = pool_span(&mut input, target_len);
        let body_len = pool_span(&mut input, target_len);
        let metadata_len = (input.u32() as u64).min(body_len).min(u64::from(u32::MAX)) as u32;
        let descriptor = PoolDescriptor {
            offset,
            metadata_len,
            payload_len: u32::try_from(body_len - u64::from(metadata_len)).unwrap_or(u32::MAX),
            ..descriptor
        };

        // The model's verdict, and what it maps.
        let body_len = u64::from(descriptor.metadata_len) + u64::from(descriptor.payload_len);
        let mut kept = std::mem::take(&mut mapped);
        let expected: Result<Option<Vec<u8>>, &str> = 'verdict: {
            if descriptor.seq != received {
                mapped = kept;
                break 'verdict Err("out of order");
            }
            kept.retain(|(id, _)| *id >= descriptor.oldest);
            mapped = kept;
            let expect_read = !mapped.iter().any(|(id, _)| *id == descriptor.segment);
            if expect_read {
                let bytes: usize = mapped.iter().map(|(_, s)| s.contents.len()).sum();
                match &arrival {
                    Arrival::Nothing => break 'verdict Err("no segment"),
                    Arrival::Writable { .. } => break 'verdict Err("writable"),
                    Arrival::Sealed { id, claimed, sent } => {
                        if *id != descriptor.segment
                            || mapped.len() >= max_segments
                            || bytes as u64 + claimed > max_mapped as u64
                            || *claimed != sent.contents.len() as u64
                        {
                            break 'verdict Err("bad segment");
                        }
                    }
                }
            }
            if body_len > frame_limit {
                break 'verdict Ok(None);
            }
            let contents = match mapped.iter().find(|(id, _)| *id == descriptor.segment) {
                Some((_, sent)) => &sent.contents,
                None => match &arrival {
                    Arrival::Sealed { sent, .. } => &sent.contents,
                    _ => unreachable!("a new segment is checked above"),
                },
            };
            match descriptor.offset.checked_add(body_len) {
                Some(end) if end <= contents.len() as u64 => Ok(Some(
                    contents[descriptor.offset as usize..end as usize].to_vec(),
                )),
                _ => Err("outside"),
            }
        };
        let expect_read =
            descriptor.seq == received && !mapped.iter().any(|(id, _)| *id == descriptor.segment);

        let read = Cell::new(false);
        let (arriving, sent) = match arrival {
            Arrival::Nothing => (None, None),
            Arrival::Writable { id, len, fd } => (Some((id, len, fd)), None),
            Arrival::Sealed { id, claimed, sent } => {
                let fd = sent.segment.fd().try_clone_to_owned().expect("dup");
                (Some((id, claimed, fd)), Some((id, sent)))
            }
        };
        let verdict = pool.resolve(&descriptor, frame_limit, || {
            read.set(true);
            Ok(arriving)
        });
        assert_eq!(
            read.get(),
            expect_read,
            "segment socket read: {descriptor:?}"
        );
        match (verdict, expected) {
            (Ok(Resolved::Body(body)), Ok(Some(bytes))) => {
                assert!(body[..] == bytes[..], "a body differs: {descriptor:?}");
                received += 1;
                bodies.push((body, bytes));
            }
            (Ok(Resolved::Oversized), Ok(None)) => received += 1,
            (Err(message), Err(_)) => {
                assert!(!message.is_empty());
                assert_eq!(pool.received(), received, "an error counted a body");
                break;
            }
            (verdict, expected) => {
                panic!("{descriptor:?}: got {verdict:?}, the model says {expected:?}")
            }
        }
        if expect_read && let Some((id, sent)) = sent {
            mapped.push((id, sent));
        }
        assert_eq!(pool.received(), received);
        let (count, bytes) = pool.mapped();
        assert_eq!(count, mapped.len(), "segments mapped");
        assert_eq!(
            bytes,
            mapped.iter().map(|(_, s)| s.contents.len()).sum::<usize>()
        );
        assert!(count <= max_segments && bytes <= max_mapped);
    }
    for (body, bytes) in &bodies {
        assert!(body[..] == bytes[..], "a body changed after it was taken");
    }
}

/// A request frame with metadata, for seeds.
fn request(call_id: u64, metadata: &Metadata, payload: &[u8]) -> Frame {
    let mut header = Header::new(Kind::Request, call_id);
    header.method_id = 0x1234_5678;
    header.deadline_us = 250_000;
    let mut wire = Vec::new();
    metadata.encode_into(&mut wire);
    Frame::new(header, Bytes::from(wire), Bytes::copy_from_slice(payload))
}

/// A hello like a server sends, for seeds.
pub fn sample_hello() -> Hello {
    Hello {
        role: Role::Server,
        host: HostIdentity {
            boot_id: "6f1c2a0e-boot".into(),
            machine_id: "machine".into(),
            hostname: "host-a".into(),
            ipc_ns: 4_026_531_839,
            net_ns: 4_026_531_840,
        },
        pid: 4242,
        uid: 1000,
        process_name: "calc".into(),
        max_frame: 16 << 20,
        max_in_flight: 1024,
        services: vec![ServiceInfo {
            name: "Calc".into(),
            fingerprint: 0xfeed_beef_dead_f00d,
            methods: vec![
                MethodInfo {
                    id: 0x0a0b_0c0d,
                    oneway: false,
                    name: "add".into(),
                    signature: "add(i64,i64) -> i64".into(),
                    fingerprint: 77,
                },
                MethodInfo {
                    id: 9,
                    oneway: true,
                    name: "log".into(),
                    signature: "log(String)".into(),
                    fingerprint: 78,
                },
            ],
        }],
        queues: vec![("Calc".into(), "/switchyard-calc".into())],
        endpoints: vec![
            Endpoint::Unix("/run/calc.sock".into()),
            Endpoint::Tcp("127.0.0.1:4000".into()),
        ],
        codecs: switchyard::protocol::compress::CODEC_ZSTD,
        features: switchyard::protocol::hello::FEATURES,
    }
}

fn sample_order() -> Order {
    Order {
        id: 7,
        customer: "Ada".into(),
        lines: vec![
            OrderLine {
                sku: "A-1".into(),
                quantity: 2,
                price_cents: 1999,
            },
            OrderLine {
                sku: "B-2".into(),
                quantity: 1,
                price_cents: -5,
            },
        ],
        tags: HashMap::from([("prio".to_string(), vec![1, 2, 300])]),
        state: OrderState::Shipped("post".into(), 2),
        note: Some("ring twice".into()),
        attachment: Some(switchyard::Bytes::from(vec![1u8, 2, 3])),
    }
}

fn encoded<T: Serialize>(selector: u8, value: &T) -> Vec<u8> {
    let mut out = vec![selector];
    Bincode::encode(value, &mut out).expect("seed encodes");
    out
}

/// The seed corpus: `(target, file name, bytes)`. Committed under
/// `framework/fuzz/corpus/<target>/`; `fuzz_regressions.rs` checks that
/// the files are these bytes (and rewrites them when asked).
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut seeds = Vec::new();

    let mut metadata = Metadata::new();
    metadata
        .insert("trace-id", b"abc123".to_vec())
        .expect("valid key");
    metadata
        .insert("x-bin", vec![0, 255, 7])
        .expect("valid key");
    let mut hello_wire = Vec::new();
    sample_hello().encode_into(&mut hello_wire);
    let hello_frame = Frame::new(
        Header::new(Kind::Hello, 0),
        Bytes::new(),
        Bytes::from(hello_wire.clone()),
    );
    let mut response = Header::new(Kind::Response, 1);
    response.status = 0;
    let response = Frame::new(response, Bytes::new(), Bytes::from_static(b"\x0e"));
    let mut goaway = Header::new(Kind::GoAway, 0);
    goaway.status = 14;
    let goaway = Frame::new(goaway, Bytes::new(), Bytes::from_static(b"shutting down"));
    let frames = |list: &[&Frame]| {
        let mut out = Vec::new();
        for frame in list {
            frame.encode_into(&mut out);
        }
        out
    };
    let with = |selector: u8, seed: u8, stream: Vec<u8>| {
        let mut out = vec![selector, seed];
        out.extend(stream);
        out
    };
    let req = request(1, &metadata, &[2, 4, 6]);
    let ping = Frame::new(Header::new(Kind::Ping, 5), Bytes::new(), Bytes::new());
    let mut oversized = Header::new(Kind::Request, 9);
    oversized.payload_len = 200;
    let mut skipped = vec![0u8; HEADER_LEN];
    oversized.write_to(&mut skipped);
    skipped.extend(std::iter::repeat_n(0xAB, 200));
    skipped.extend(frames(&[&ping]));
    seeds.push(("frame_decoder", "request", with(5, 0x31, frames(&[&req]))));
    // A batch of three stream messages (one of them empty).
    let mut batch = Header::new(Kind::Data, 3);
    batch.flags = switchyard::protocol::frame::FLAG_BATCH;
    batch.credit = 3;
    let batch = Frame::new(
        batch,
        Bytes::new(),
        Bytes::from_static(b"\x02\0\0\0hi\0\0\0\0\x03\0\0\0abc"),
    );
    seeds.push((
        "frame_decoder",
        "batch-of-three",
        with(5, 0x52, frames(&[&batch])),
    ));
    seeds.push((
        "frame_decoder",
        "hello-frame",
        with(2, 0x07, frames(&[&hello_frame])),
    ));
    seeds.push((
        "frame_decoder",
        "three-frames",
        with(6, 0x4a, frames(&[&req, &response, &goaway])),
    ));
    seeds.push((
        "frame_decoder",
        "oversized-then-ping",
        with(2, 0x13, skipped),
    ));
    seeds.push((
        "frame_decoder",
        "foreign",
        with(5, 0x00, b"GET / HTTP/1.1\r\n\r\n".to_vec()),
    ));

    seeds.push(("hello", "server", hello_wire.clone()));
    let mut old = sample_hello();
    old.queues.clear();
    old.endpoints.clear();
    old.codecs = 0;
    old.features = 0;
    let mut old_wire = Vec::new();
    old.encode_into(&mut old_wire);
    old_wire.truncate(old_wire.len() - 6); // an older peer sends no lists, no codecs, no features
    seeds.push(("hello", "old-without-lists", old_wire));
    let mut client = sample_hello();
    client.role = Role::Client;
    client.services.clear();
    let mut client_wire = Vec::new();
    client.encode_into(&mut client_wire);
    seeds.push(("hello", "client", client_wire));

    // A compressed payload as a sender makes it, and a bomb (64 MiB of
    // zeros declared in a few bytes).
    let compressed_payload = |plain: &[u8]| {
        let mut wire = Vec::new();
        Frame::new(
            Header::new(Kind::Request, 1),
            Bytes::new(),
            Bytes::copy_from_slice(plain),
        )
        .encode_into(&mut wire);
        let compressor =
            switchyard::protocol::compress::FrameCompressor::new(64, 1, Arc::default());
        let compressed = compressor.compress(&wire).expect("the seed compresses");
        compressed[HEADER_LEN..].to_vec()
    };
    seeds.push((
        "inflate",
        "text",
        compressed_payload(&b"{\"sku\":\"A-1\",\"stock\":7}\n".repeat(200)),
    ));
    seeds.push(("inflate", "bomb", compressed_payload(&vec![0u8; 64 << 20])));

    seeds.push(("codec", "i64-pair", encoded(0, &(-3i64, 1i64 << 40))));
    seeds.push((
        "codec",
        "string-vec",
        encoded(1, &("héllo".to_string(), vec![0u8, 1, 255])),
    ));
    seeds.push((
        "codec",
        "bytes-small",
        encoded(2, &(switchyard::Bytes::from(vec![7u8; 10]),)),
    ));
    seeds.push((
        "codec",
        "bytes-shared",
        encoded(
            2,
            &(switchyard::Bytes::from(vec![9u8; SHARE_AT_LEAST + 10]),),
        ),
    ));
    seeds.push(("codec", "option-string", encoded(3, &Some("x".to_string()))));
    seeds.push(("codec", "unit", encoded(4, &())));
    seeds.push(("codec", "order", encoded(5, &sample_order())));
    seeds.push((
        "codec",
        "mixed",
        encoded(
            6,
            &(
                3u32,
                sample_order(),
                vec![switchyard::Bytes::from(vec![5u8; 3])],
            ),
        ),
    ));
    seeds.push((
        "codec",
        "scalars",
        encoded(7, &(true, 'λ', u128::MAX, -1i8, Bits(f64::NAN), Some(()))),
    ));

    // shm_ring: capacity 16, write 11 / read 11 four times (wraps), then
    // the peer moves tail past the capacity and the consumer reads.
    let mut wraps = vec![1u8];
    for _ in 0..4 {
        wraps.extend([0x80, 11]);
        wraps.extend(b"hello ring!");
        wraps.extend([2, 11]);
    }
    wraps.extend([8, 3, 2, 40]); // tail := c_head + capacity + 40
    wraps.extend([2, 8]);
    seeds.push(("shm_ring", "wrap-then-corrupt-tail", wraps));
    // capacity 64: fill, producer sleeps, consumer reads and must wake it;
    // consumer sleeps, producer writes and must wake it.
    seeds.push((
        "shm_ring",
        "sleep-and-wake",
        vec![3, 0, 64, 7, 0, 3, 10, 6, 1, 3, 60, 6, 0, 0, 5, 4, 9],
    ));
    // attach after two edits: capacity := 1 << 5, magic kept; then use it.
    seeds.push((
        "shm_ring",
        "attach-smaller-capacity",
        vec![
            0x80 | (2 << 3) | 4,
            2,
            1,
            5,
            3,
            2,
            0,
            0,
            20,
            2,
            20,
            11,
            50,
            4,
            1,
            2,
            3,
            4,
        ],
    ));
    // The peer scribbles data and head between reads.
    seeds.push((
        "shm_ring",
        "scribble-data-and-head",
        vec![
            2, 0, 30, 11, 3, 4, 9, 9, 9, 9, 2, 10, 9, 4, 4, 7, 2, 2, 31, 5,
        ],
    ));

    // shm_pool: each op below is `[op, segment, oldest, (size, claimed,
    // id: ops 0-3), offset span, length span, metadata length]`; a span is
    // `[2, u32]` (an amount inside the segment).
    let span = |n: u32| {
        let mut out = vec![2u8];
        out.extend(n.to_le_bytes());
        out
    };
    let op = |op: u8, segment: u8, offset: u32, len: u32, metadata: u32| {
        let mut out = vec![op, segment, 1];
        if op % 8 <= 3 {
            out.extend([0, 2, 1]);
        }
        out.extend(span(offset));
        out.extend(span(len));
        out.extend(metadata.to_le_bytes());
        out
    };
    // 4 segments, 32 KiB, 16 KiB frames: two bodies from segment 1, the
    // sender scribbles over the first, a third body reads the scribble,
    // then a descriptor out of order closes the link.
    let mut bodies = vec![0x80 | (7 << 3) | 3];
    bodies.extend(op(0, 3, 100, 200, 10));
    bodies.extend(op(1, 2, 1000, 3000, 0));
    bodies.extend([7, 0]);
    bodies.extend(150u32.to_le_bytes());
    bodies.extend([50, 0xEE]);
    bodies.extend(op(2, 2, 100, 200, 0));
    bodies.push(0x80 | 5);
    bodies.extend(99u64.to_le_bytes());
    bodies.extend([2, 1]);
    seeds.push(("shm_pool", "bodies-scribble-out-of-order", bodies));
    // 64-byte frames: an oversized body is released without a copy, then a
    // body that fits, then one past the segment's end.
    let mut oversized = vec![7 << 3 | 3];
    oversized.extend(op(0, 3, 0, 100, 0));
    oversized.extend(op(5, 2, 64, 64, 8));
    oversized.extend(op(5, 2, 4090, 10, 0));
    seeds.push(("shm_pool", "oversized-then-outside", oversized));
    // At most 2 segments, 12 KiB: segments 1 and 2; then 4, whose
    // descriptor gives 1 up (oldest 2); then 5 is refused (2 mapped).
    let mut limits = vec![0x80 | (2 << 3) | 1];
    limits.extend(op(0, 3, 0, 16, 0));
    limits.extend(op(0, 3, 0, 16, 0));
    let mut third = op(0, 4, 0, 16, 0);
    third[2] = 0; // oldest: an id near the newest, 2 + 3 - 3 = 2
    third.insert(3, 3);
    limits.extend(third);
    limits.extend(op(0, 3, 0, 16, 0));
    seeds.push(("shm_pool", "segment-limits-and-oldest", limits));
    // A segment announced at half its size is refused.
    let mut wrong = vec![0x80 | (7 << 3) | 3, 0, 3, 1, 0, 1, 1];
    wrong.extend(span(0));
    wrong.extend(span(16));
    wrong.extend(0u32.to_le_bytes());
    seeds.push(("shm_pool", "segment-wrong-size", wrong));
    // A memfd anyone may write is refused as a segment.
    let mut writable = vec![0x80 | (7 << 3) | 3];
    writable.extend(op(4, 3, 0, 16, 0));
    seeds.push(("shm_pool", "segment-writable", writable));
    seeds
}
