//! Serialization of call arguments and results.
//!
//! A [`Codec`] turns serde values into bytes and back. Every transport carries
//! the same bytes, so one codec serves all of them. The default, [`Bincode`],
//! is bincode 2 in its standard configuration.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest payload any codec is asked to decode: the hard cap on the
/// configurable frame limit (see `protocol::frame::MAX_FRAME_LIMIT`).
pub const DECODE_LIMIT: usize = crate::protocol::frame::MAX_FRAME_LIMIT as usize;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be serialized.
    #[error("could not encode {type_name}: {reason}")]
    Encode {
        /// The Rust type being encoded.
        type_name: &'static str,
        /// What the serializer reported.
        reason: String,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("could not decode {type_name} from {len} bytes: {reason}")]
    Decode {
        /// The Rust type being decoded.
        type_name: &'static str,
        /// How many bytes were offered.
        len: usize,
        /// What the deserializer reported.
        reason: String,
    },
    /// The value decoded but bytes were left over: a sign that the two ends
    /// disagree on the type.
    #[error("decoded {type_name} from {used} of {len} bytes; {extra} trailing bytes suggest the peer encoded a different type", extra = len - used)]
    TrailingBytes {
        /// The Rust type decoded.
        type_name: &'static str,
        /// Bytes used by the value.
        used: usize,
        /// Bytes offered.
        len: usize,
    },
}

/// Turns serde values into bytes and back.
///
/// Implementations must be deterministic and must never allocate more than a
/// bounded multiple of `bytes.len()` while decoding hostile input.
pub trait Codec: Send + Sync + 'static {
    /// A short name for logs and the handshake, e.g. `bincode`.
    const NAME: &'static str;

    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Writes the encoding of `value` to `out` (the runtime passes a writer
    /// that moves large bodies into shared memory as they are written).
    fn encode_to<T: Serialize + ?Sized, W: std::io::Write>(
        value: &T,
        out: &mut W,
    ) -> Result<(), CodecError>;

    /// Decodes a `T` that must use all of `bytes`.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;

    /// [`decode`](Self::decode) from a shared buffer: large
    /// [`Bytes`](crate::Bytes) values in `T` share `bytes` instead of
    /// copying out of it (when the codec hands serde borrowed byte strings,
    /// as [`Bincode`] does).
    fn decode_shared<T: DeserializeOwned>(bytes: &bytes::Bytes) -> Result<T, CodecError> {
        crate::payload::sharing(bytes, || Self::decode(bytes))
    }

    /// [`decode_shared`](Self::decode_shared) of the part `range` of
    /// `bytes` (one message of a batch): a `T` that must use all of it.
    ///
    /// # Panics
    /// If `range` is not within `bytes`: a caller bug, never peer input.
    fn decode_shared_part<T: DeserializeOwned>(
        bytes: &bytes::Bytes,
        range: std::ops::Range<usize>,
    ) -> Result<T, CodecError> {
        let part = &bytes[range];
        if part.len() < crate::payload::SHARE_AT_LEAST {
            // Nothing in it is worth sharing.
            return Self::decode(part);
        }
        crate::payload::sharing(bytes, || Self::decode(part))
    }
}

/// bincode 2 (`=2.0.1`) through its serde layer, standard configuration
/// (little endian, variable-length integers), rejecting trailing bytes.
/// Each allocation of a decode claims at most a memory limit that grows
/// with the input (512 KiB for inputs up to 4 KiB, up to [`DECODE_LIMIT`]
/// for the largest), so a length prefix cannot make the receiver allocate
/// more than the input can justify.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

impl Codec for Bincode {
    const NAME: &'static str = "bincode";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        Self::encode_to(value, out)
    }

    fn encode_to<T: Serialize + ?Sized, W: std::io::Write>(
        value: &T,
        out: &mut W,
    ) -> Result<(), CodecError> {
        bincode::serde::encode_into_std_write(value, out, bincode_config())
            .map(|_| ())
            .map_err(|err| CodecError::Encode {
                type_name: std::any::type_name::<T>(),
                reason: err.to_string(),
            })
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let class = size_class(bytes.len());
        let limit = class.map_or(DECODE_LIMIT, |class| MEMORY_LIMITS[class]);
        let decoded = match class {
            Some(0) => decode_within::<T, { MEMORY_LIMITS[0] }>(bytes),
            Some(1) => decode_within::<T, { MEMORY_LIMITS[1] }>(bytes),
            Some(2) => decode_within::<T, { MEMORY_LIMITS[2] }>(bytes),
            Some(3) => decode_within::<T, { MEMORY_LIMITS[3] }>(bytes),
            Some(4) => decode_within::<T, { MEMORY_LIMITS[4] }>(bytes),
            _ => decode_within::<T, DECODE_LIMIT>(bytes),
        };
        let (value, used) = decoded.map_err(|err| CodecError::Decode {
            type_name: std::any::type_name::<T>(),
            len: bytes.len(),
            reason: match err {
                bincode::error::DecodeError::LimitExceeded => format!(
                    "decoding would take more than {limit} bytes of memory for {} bytes of \
                     input (a length the input cannot hold, or a value that expands more than \
                     32-fold); refused before allocating — if the value is genuine, send it in \
                     smaller pieces",
                    bytes.len()
                ),
                other => other.to_string(),
            },
        })?;
        if used != bytes.len() {
            return Err(CodecError::TrailingBytes {
                type_name: std::any::type_name::<T>(),
                used,
                len: bytes.len(),
            });
        }
        Ok(value)
    }
}

/// The memory one allocation of a decode may claim (bincode checks every
/// claimed length against it before allocating), for inputs up to each of
/// [`INPUT_SIZES`]; larger inputs get [`DECODE_LIMIT`]. A few bytes cannot
/// make the receiver allocate a gigabyte, while a value may still take 32
/// times (small inputs: 128 times) its encoded size in memory.
const MEMORY_LIMITS: [usize; 5] = [512 << 10, 4 << 20, 8 << 20, 64 << 20, 512 << 20];
/// The input sizes [`MEMORY_LIMITS`] apply up to.
const INPUT_SIZES: [usize; 5] = [4 << 10, 32 << 10, 256 << 10, 2 << 20, 16 << 20];

/// Which of [`INPUT_SIZES`] `len` bytes fall under (`None`: larger).
fn size_class(len: usize) -> Option<usize> {
    INPUT_SIZES.iter().position(|size| len <= *size)
}

/// The memory limit for decoding `len` bytes.
#[cfg(test)]
fn memory_limit(len: usize) -> usize {
    size_class(len).map_or(DECODE_LIMIT, |class| MEMORY_LIMITS[class])
}

/// Decodes borrowing from `bytes` (byte strings reach serde as slices of
/// it, so `Bytes` can share them: see `decode_shared`), claiming at most
/// `LIMIT` bytes of memory.
fn decode_within<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::borrow_decode_from_slice(
        bytes,
        bincode::config::standard().with_limit::<LIMIT>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Point {
        x: i64,
        label: String,
        tags: Vec<u8>,
    }

    #[test]
    fn round_trips_a_struct() {
        let point = Point {
            x: -5,
            label: "α\tβ\n🚀".into(),
            tags: vec![1, 2, 3],
        };
        let mut buf = Vec::new();
        Bincode::encode(&point, &mut buf).unwrap();
        assert_eq!(Bincode::decode::<Point>(&buf).unwrap(), point);
    }

    #[test]
    fn a_small_input_cannot_claim_a_large_allocation() {
        // A string claiming 50 MB in a few bytes: refused as over the limit.
        let mut claim = vec![0xfc_u8];
        claim.extend_from_slice(&50_000_000u32.to_le_bytes());
        let err = Bincode::decode::<String>(&claim).unwrap_err();
        assert!(
            err.to_string().contains("refused before allocating"),
            "{err}"
        );
        // A value that expands (u64s take 1 byte encoded, 8 in memory) of a
        // realistic size still decodes.
        let many: Vec<u64> = (0..100_000).map(|i| i % 100).collect();
        let mut buf = Vec::new();
        Bincode::encode(&many, &mut buf).unwrap();
        assert_eq!(Bincode::decode::<Vec<u64>>(&buf).unwrap(), many);
        assert_eq!(memory_limit(0), MEMORY_LIMITS[0]);
        assert_eq!(memory_limit(4 << 10), MEMORY_LIMITS[0]);
        assert_eq!(memory_limit((4 << 10) + 1), MEMORY_LIMITS[1]);
        assert_eq!(memory_limit(40 << 20), DECODE_LIMIT);
    }

    #[test]
    fn rejects_truncated_input() {
        let mut buf = Vec::new();
        Bincode::encode(&(1u64, "hello".to_string()), &mut buf).unwrap();
        buf.truncate(buf.len() - 1);
        let err = Bincode::decode::<(u64, String)>(&buf).unwrap_err();
        assert!(matches!(err, CodecError::Decode { .. }), "{err}");
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut buf = Vec::new();
        Bincode::encode(&(1u8, 2u8), &mut buf).unwrap();
        let err = Bincode::decode::<u8>(&buf).unwrap_err();
        assert!(matches!(err, CodecError::TrailingBytes { .. }), "{err}");
    }

    #[test]
    fn a_huge_length_claim_fails_without_allocating_it() {
        // A Vec<u64> claiming u64::MAX elements in a handful of bytes.
        let mut buf = vec![0xfd_u8]; // bincode's varint marker: a u64 follows
        buf.extend_from_slice(&u64::MAX.to_le_bytes());
        let err = Bincode::decode::<Vec<u64>>(&buf).unwrap_err();
        assert!(matches!(err, CodecError::Decode { .. }), "{err}");
    }
}
