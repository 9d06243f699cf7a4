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
}

/// bincode 2 (`=2.0.1`) through its serde layer, standard configuration
/// (little endian, variable-length integers), decoding with a byte limit of
/// [`DECODE_LIMIT`] and rejecting trailing bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

impl Codec for Bincode {
    const NAME: &'static str = "bincode";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        bincode::serde::encode_into_std_write(value, out, bincode_config())
            .map(|_| ())
            .map_err(|err| CodecError::Encode {
                type_name: std::any::type_name::<T>(),
                reason: err.to_string(),
            })
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
        let (value, used) =
            // Borrowing: byte strings reach serde as slices of `bytes`, so
            // `Bytes` can share them (see `decode_shared`).
            bincode::serde::borrow_decode_from_slice(bytes, bincode_config()).map_err(|err| {
                CodecError::Decode {
                    type_name: std::any::type_name::<T>(),
                    len: bytes.len(),
                    reason: err.to_string(),
                }
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
