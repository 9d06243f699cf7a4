//! Call metadata: ordered key/value pairs carried between header and payload.
//!
//! Wire form, repeated until the metadata length is used up:
//! `u16 key length, key (visible ASCII), u32 value length, value bytes`,
//! lengths little endian.

use std::fmt;

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// Default for [`MetadataLimits::max_bytes`]: 16 KiB of wire form per call
/// (gRPC's implementations take 8 to 16 KiB of headers by default).
pub const DEFAULT_MAX_METADATA_BYTES: usize = 16 * 1024;
/// Default for [`MetadataLimits::max_entries`].
pub const DEFAULT_MAX_METADATA_ENTRIES: usize = 256;

/// How much metadata a receiver decodes for one call. Checked before and
/// while decoding, so refusing oversized metadata costs at most
/// `max_entries` entries of work, however large the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataLimits {
    /// The largest wire form accepted, in bytes (keys, values and their
    /// 6 bytes of lengths each).
    pub max_bytes: usize,
    /// The most entries accepted.
    pub max_entries: usize,
}

impl Default for MetadataLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_METADATA_BYTES,
            max_entries: DEFAULT_MAX_METADATA_ENTRIES,
        }
    }
}

impl MetadataLimits {
    /// No limit beyond the frame's (metadata this process built itself).
    pub const UNLIMITED: Self = Self {
        max_bytes: usize::MAX,
        max_entries: usize::MAX,
    };
}

/// Why metadata could not be decoded or built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// An entry's lengths run past the end of the metadata block.
    #[error("metadata entry at byte {offset} runs past the end of the {len}-byte metadata block")]
    Truncated {
        /// Where the entry starts.
        offset: usize,
        /// The block's length.
        len: usize,
    },
    /// The metadata block is larger than the receiver takes.
    #[error("{len} bytes of metadata exceed the limit of {max} bytes")]
    TooLarge {
        /// The block's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The metadata block has more entries than the receiver takes.
    #[error("metadata has more than {max} entries, the limit")]
    TooManyEntries {
        /// The limit.
        max: usize,
    },
    /// A key is empty, too long, or not visible ASCII.
    #[error(
        "metadata key {key:?} is invalid: keys are 1 to {MAX_KEY_LEN} visible ASCII characters"
    )]
    InvalidKey {
        /// The key, lossily decoded.
        key: String,
    },
}

/// Ordered key/value pairs sent with a call. Keys are visible ASCII; values
/// are bytes (use [`Metadata::get_str`] for text).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, Vec<u8>)>,
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry; a key may appear more than once.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), MetadataError> {
        let key = key.into();
        validate_key(key.as_bytes())?;
        self.entries.push((key, value.into()));
        Ok(())
    }

    /// The first value for `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value for `key`, if it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes the wire form takes.
    pub fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, v)| 6 + k.len() + v.len())
            .sum()
    }

    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for (key, value) in &self.entries {
            // Keys are at most MAX_KEY_LEN bytes (checked on insert); values
            // are bounded by the frame limit, checked before a frame is sent.
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
    }

    /// Appends one entry's wire form to `out` without building a
    /// [`Metadata`]; `key` must be a valid key.
    pub fn encode_entry(key: &str, value: &[u8], out: &mut Vec<u8>) {
        debug_assert!(validate_key(key.as_bytes()).is_ok());
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }

    /// Bytes one entry's wire form takes.
    pub fn entry_len(key: &str, value: &[u8]) -> usize {
        6 + key.len() + value.len()
    }

    /// Parses the wire form, whatever its size (metadata from a trusted
    /// source; a peer's goes through [`decode_limited`](Self::decode_limited)).
    pub fn decode(bytes: &[u8]) -> Result<Self, MetadataError> {
        Self::decode_limited(bytes, MetadataLimits::UNLIMITED)
    }

    /// Parses the wire form, refusing a block over `limits.max_bytes` before
    /// reading it and stopping at the first entry past `limits.max_entries`.
    pub fn decode_limited(bytes: &[u8], limits: MetadataLimits) -> Result<Self, MetadataError> {
        if bytes.len() > limits.max_bytes {
            return Err(MetadataError::TooLarge {
                len: bytes.len(),
                max: limits.max_bytes,
            });
        }
        let mut entries = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            if entries.len() == limits.max_entries {
                return Err(MetadataError::TooManyEntries {
                    max: limits.max_entries,
                });
            }
            let truncated = MetadataError::Truncated {
                offset: at,
                len: bytes.len(),
            };
            let key_len = read_u16(bytes, at).ok_or_else(|| truncated.clone())? as usize;
            let key = bytes
                .get(at + 2..at + 2 + key_len)
                .ok_or_else(|| truncated.clone())?;
            validate_key(key)?;
            let value_at = at + 2 + key_len;
            let value_len = read_u32(bytes, value_at).ok_or_else(|| truncated.clone())? as usize;
            let value = bytes
                .get(value_at + 4..value_at + 4 + value_len)
                .ok_or(truncated)?;
            // validate_key accepted only ASCII, which is UTF-8.
            let key = String::from_utf8_lossy(key).into_owned();
            entries.push((key, value.to_vec()));
            at = value_at + 4 + value_len;
        }
        Ok(Self { entries })
    }
}

/// Keys whose values are secrets: `Debug` shows them as `<redacted>`, so a
/// token logged with its context or call stays out of the log.
const REDACTED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in &self.entries {
            if REDACTED.iter().any(|k| key.eq_ignore_ascii_case(k)) {
                map.entry(key, &"<redacted>");
                continue;
            }
            match std::str::from_utf8(value) {
                Ok(text) => map.entry(key, &text),
                Err(_) => map.entry(key, value),
            };
        }
        map.finish()
    }
}

fn validate_key(key: &[u8]) -> Result<(), MetadataError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.iter().all(u8::is_ascii_graphic) {
        return Err(MetadataError::InvalidKey {
            key: String::from_utf8_lossy(key).into_owned(),
        });
    }
    Ok(())
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_secrets() {
        let mut md = Metadata::new();
        md.insert("Authorization", "Bearer s3cret-token").unwrap();
        md.insert("tenant", "acme").unwrap();
        let shown = format!("{md:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("acme"),
            "{shown}"
        );
    }

    #[test]
    fn round_trips_text_and_binary_values() {
        let mut md = Metadata::new();
        md.insert("traceparent", "00-abc-01").unwrap();
        md.insert("bin", vec![0u8, 255, 7]).unwrap();
        md.insert("bin", "second").unwrap();
        let mut wire = Vec::new();
        md.encode_into(&mut wire);
        assert_eq!(wire.len(), md.encoded_len());
        let back = Metadata::decode(&wire).unwrap();
        assert_eq!(back, md);
        assert_eq!(back.get_str("traceparent"), Some("00-abc-01"));
        assert_eq!(back.get("bin"), Some(&[0u8, 255, 7][..]));
        assert_eq!(back.get("missing"), None);
    }

    #[test]
    fn limits_are_checked_before_and_while_decoding() {
        let mut md = Metadata::new();
        for i in 0..10 {
            md.insert(format!("k{i}"), "v").unwrap();
        }
        let mut wire = Vec::new();
        md.encode_into(&mut wire);
        let exact = MetadataLimits {
            max_bytes: wire.len(),
            max_entries: 10,
        };
        assert_eq!(Metadata::decode_limited(&wire, exact).unwrap(), md);
        let fewer = MetadataLimits {
            max_entries: 9,
            ..exact
        };
        assert_eq!(
            Metadata::decode_limited(&wire, fewer),
            Err(MetadataError::TooManyEntries { max: 9 })
        );
        let smaller = MetadataLimits {
            max_bytes: wire.len() - 1,
            ..exact
        };
        assert_eq!(
            Metadata::decode_limited(&wire, smaller),
            Err(MetadataError::TooLarge {
                len: wire.len(),
                max: wire.len() - 1
            })
        );
        // 16 MiB of one-byte keys is refused by its size alone.
        let flood: Vec<u8> = [1u8, 0, b'k', 0, 0, 0, 0].repeat((16 << 20) / 7);
        assert!(matches!(
            Metadata::decode_limited(&flood, MetadataLimits::default()),
            Err(MetadataError::TooLarge { .. })
        ));
        // Under a byte limit that lets it through, the entry limit stops it
        // after max_entries entries.
        let roomy = MetadataLimits {
            max_bytes: usize::MAX,
            max_entries: 256,
        };
        assert_eq!(
            Metadata::decode_limited(&flood, roomy),
            Err(MetadataError::TooManyEntries { max: 256 })
        );
    }

    #[test]
    fn rejects_bad_keys_and_truncation() {
        let mut md = Metadata::new();
        assert!(md.insert("", "x").is_err());
        assert!(md.insert("has space", "x").is_err());
        assert!(md.insert("k".repeat(256), "x").is_err());
        md.insert("key", "value").unwrap();
        let mut wire = Vec::new();
        md.encode_into(&mut wire);
        for cut in 1..wire.len() {
            assert!(Metadata::decode(&wire[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = wire.clone();
        huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Metadata::decode(&huge),
            Err(MetadataError::Truncated { .. })
        ));
    }
}
