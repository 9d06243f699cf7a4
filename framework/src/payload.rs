//! [`Bytes`]: the argument and result type for binary payloads.
//!
//! A `Vec<u8>` goes through serde one element at a time (bincode writes the
//! bytes right, but one call per byte): fine for a few hundred bytes, slow
//! for megabytes. `Bytes` serializes as one byte string — a length and a
//! single copy — and decodes without a copy when it is large: it shares the
//! buffer the frame arrived in (on shared memory's bulk path, the mapped
//! region the sender wrote), see [`Codec::decode_shared`](crate::codec::Codec::decode_shared).

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};

/// An immutable byte buffer that serializes as one byte string. Cheap to
/// clone (reference counted); derefs to `[u8]`.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(bytes::Bytes);

impl Bytes {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps a `bytes::Bytes` without copying.
    pub fn from_bytes(bytes: bytes::Bytes) -> Self {
        Self(bytes)
    }

    /// The underlying `bytes::Bytes`.
    pub fn into_inner(self) -> bytes::Bytes {
        self.0
    }

    /// A copy as a `Vec<u8>`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(vec: Vec<u8>) -> Self {
        Self(bytes::Bytes::from(vec))
    }
}

impl From<&'static [u8]> for Bytes {
    fn from(slice: &'static [u8]) -> Self {
        Self(bytes::Bytes::from_static(slice))
    }
}

impl From<bytes::Bytes> for Bytes {
    fn from(bytes: bytes::Bytes) -> Self {
        Self(bytes)
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(bytes: Bytes) -> Self {
        bytes.0.into()
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

/// Byte strings shorter than this are copied even when they could be
/// shared: a copy is cheap, and sharing would keep the whole buffer they
/// came in alive for as long as the small value lives.
pub const SHARE_AT_LEAST: usize = 4096;

thread_local! {
    /// The buffer being decoded, when the decoder was given one to share.
    static SOURCE: RefCell<Option<bytes::Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` with `source` as the buffer that [`Bytes`] values decoded
/// meanwhile (on this thread) share instead of copying.
pub(crate) fn sharing<R>(source: &bytes::Bytes, decode: impl FnOnce() -> R) -> R {
    if source.len() < SHARE_AT_LEAST {
        // Nothing in it is worth sharing: no count of the buffer to take
        // (a stream of small messages decodes millions a second).
        return decode();
    }
    struct Restore(Option<bytes::Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SOURCE.with(|slot| *slot.borrow_mut() = previous);
        }
    }
    let previous = SOURCE.with(|slot| slot.replace(Some(source.clone())));
    let _restore = Restore(previous);
    decode()
}

/// `part` as a share of the buffer being decoded, if it lies inside it and
/// is worth sharing.
fn shared(part: &[u8]) -> Option<bytes::Bytes> {
    if part.len() < SHARE_AT_LEAST {
        return None;
    }
    SOURCE.with(|slot| {
        let slot = slot.borrow();
        let source = slot.as_ref()?;
        let base = source.as_ptr() as usize;
        let start = part.as_ptr() as usize;
        let inside = start >= base && start + part.len() <= base + source.len();
        inside.then(|| source.slice_ref(part))
    })
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::from(v.to_vec()))
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(shared(v).map_or_else(|| Bytes::from(v.to_vec()), Bytes))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        // Formats without byte strings send a sequence; take it, bounded by
        // what the format says it holds (and at most 1 MiB up front).
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Bincode, Codec};

    #[test]
    fn round_trips_and_encodes_like_a_length_and_the_bytes() {
        let payload = Bytes::from((0..=255u8).cycle().take(100_000).collect::<Vec<_>>());
        let mut wire = Vec::new();
        Bincode::encode(&payload, &mut wire).unwrap();
        // bincode: varint length (0xfc + u32 for 100000), then the bytes.
        assert_eq!(wire.len(), 5 + 100_000);
        let back: Bytes = Bincode::decode(&wire).unwrap();
        assert_eq!(back, payload);
        // The same bytes decode as a Vec<u8>, and a Vec<u8> as Bytes.
        let as_vec: Vec<u8> = Bincode::decode(&wire).unwrap();
        assert_eq!(as_vec, payload.to_vec());
        let mut vec_wire = Vec::new();
        Bincode::encode(&payload.to_vec(), &mut vec_wire).unwrap();
        assert_eq!(vec_wire, wire);
    }

    #[test]
    fn large_byte_strings_share_the_buffer_they_were_decoded_from() {
        let payload = Bytes::from(vec![9u8; 64 * 1024]);
        let mut wire = Vec::new();
        Bincode::encode(&(7u32, payload.clone()), &mut wire).unwrap();
        let wire = bytes::Bytes::from(wire);
        let (n, back): (u32, Bytes) = Bincode::decode_shared(&wire).unwrap();
        assert_eq!((n, &back), (7, &payload));
        let inside = wire.as_ptr_range();
        assert!(
            inside.contains(&back.as_ptr()),
            "the decoded Bytes points into the wire buffer (no copy)"
        );
        // Small ones, and decoding without a source, copy.
        let mut small = Vec::new();
        Bincode::encode(&Bytes::from(vec![1u8; 100]), &mut small).unwrap();
        let small = bytes::Bytes::from(small);
        let back: Bytes = Bincode::decode_shared(&small).unwrap();
        assert!(!small.as_ptr_range().contains(&back.as_ptr()));
        let (_, copied): (u32, Bytes) = Bincode::decode(&wire).unwrap();
        assert!(!inside.contains(&copied.as_ptr()));
    }

    #[test]
    fn a_truncated_payload_is_an_error() {
        let mut wire = Vec::new();
        Bincode::encode(&Bytes::from(vec![1u8; 64]), &mut wire).unwrap();
        wire.truncate(30);
        assert!(Bincode::decode::<Bytes>(&wire).is_err());
    }
}
