//! How typed values become bytes, and the header that keeps a changed type or codec from being
//! read as garbage.

use std::time::Duration;

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::{Error, Result};

/// The error a codec reports; the cache wraps it in [`Error::Encode`] or counts it as a miss.
pub type CodecError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Turns values into bytes and back. Implement it to plug in a binary format.
///
/// `ID` is written into every stored value's header: give each codec its own. `1` is
/// [`JsonCodec`]; ids below 16 are reserved for codecs shipped with tiercache.
pub trait Codec: Send + Sync + 'static {
    /// The codec's id in the value header.
    const ID: u8;
    /// The codec's name, for errors and logs.
    const NAME: &'static str;

    /// Appends the encoding of `value` to `out`.
    ///
    /// # Errors
    ///
    /// When the value cannot be represented in this format.
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>)
    -> Result<(), CodecError>;

    /// Decodes a value from `bytes`.
    ///
    /// # Errors
    ///
    /// When `bytes` are not a valid encoding of `T`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// The default codec: `serde_json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    const ID: u8 = 1;
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        serde_json::to_writer(out, value).map_err(Into::into)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(Into::into)
    }
}

/// First byte of a stored value written by tiercache 0.1 before the metadata existed: a 5-byte
/// header (magic, codec id, kind, schema version). Still read, as a value without metadata.
const MAGIC_V1: u8 = 0xC7;
/// First byte of every stored value written now; it also names the header layout (version 2).
const MAGIC: u8 = 0xC8;
/// Bytes of the shortest header: magic, codec id, kind, schema version (u16, little endian).
pub const HEADER_LEN: usize = 5;
/// Bytes of the current header without tags: [`HEADER_LEN`], then flags (u8), the TTL, the stale
/// window and the load time (each u32 milliseconds, little endian).
const HEADER_V2_LEN: usize = HEADER_LEN + 1 + 12;
/// Flag: a tag section (written-at u64 milliseconds, tag count u8, each tag as u8 length and
/// bytes) follows the fixed header.
const FLAG_TAGS: u8 = 1;
const KIND_VALUE: u8 = 0;
const KIND_NEGATIVE: u8 = 1;
/// The longest tag, in bytes (its length is one byte in the header).
pub const MAX_TAG_LEN: usize = 255;
/// The most tags one entry can carry (the count is one byte in the header).
pub const MAX_TAGS: usize = 255;

/// What the header of a stored value says besides its type: how long it is fresh, how long a
/// stale copy is kept for fail-safe, how long it took to load, and its tags.
///
/// Times are relative (the tiers keep the absolute expiry), except `written_at_ms`, which is wall
/// clock time because tags are compared across processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredMeta {
    /// The fresh life the writer gave the value (its TTL, before any tier's scale).
    pub ttl: Duration,
    /// How long the value is kept after it stops being fresh, as a fail-safe fallback. The
    /// stored expiry includes it: the value is fresh until `expires_at - stale_window`.
    pub stale_window: Duration,
    /// How long the load that produced the value took (zero for a `set`); probabilistic early
    /// refresh spreads refreshes by it.
    pub load_time: Duration,
    /// When the value was written, in milliseconds since the Unix epoch; set (non-zero) whenever
    /// the value has tags.
    pub written_at_ms: u64,
    /// The value's tags.
    pub tags: Vec<String>,
}

impl StoredMeta {
    /// Reads the metadata of stored bytes without decoding the value. Bytes without a current
    /// header (raw bytes, or a value written before metadata existed) have none: the default.
    pub fn read(bytes: &[u8]) -> Self {
        parse_header(bytes)
            .map(|(_, meta, _)| meta)
            .unwrap_or_default()
    }
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

fn take_u32(bytes: &mut &[u8]) -> Option<u32> {
    take(bytes, 4)?.try_into().ok().map(u32::from_le_bytes)
}

/// The parts of a stored value: (magic..schema header, metadata, payload). `None` when the bytes
/// do not start with a well-formed tiercache header.
fn parse_header(bytes: &[u8]) -> Option<([u8; HEADER_LEN], StoredMeta, &[u8])> {
    let (header, mut rest) = bytes.split_first_chunk::<HEADER_LEN>()?;
    match header[0] {
        MAGIC_V1 => return Some((*header, StoredMeta::default(), rest)),
        MAGIC => {}
        _ => return None,
    }
    let flags = *take(&mut rest, 1)?.first()?;
    if flags & !FLAG_TAGS != 0 {
        return None;
    }
    let mut meta = StoredMeta {
        ttl: Duration::from_millis(u64::from(take_u32(&mut rest)?)),
        stale_window: Duration::from_millis(u64::from(take_u32(&mut rest)?)),
        load_time: Duration::from_millis(u64::from(take_u32(&mut rest)?)),
        ..StoredMeta::default()
    };
    if flags & FLAG_TAGS != 0 {
        let written_at: [u8; 8] = take(&mut rest, 8)?.try_into().ok()?;
        meta.written_at_ms = u64::from_le_bytes(written_at);
        let count = *take(&mut rest, 1)?.first()?;
        for _ in 0..count {
            let len = *take(&mut rest, 1)?.first()?;
            let tag = std::str::from_utf8(take(&mut rest, usize::from(len))?).ok()?;
            meta.tags.push(tag.to_owned());
        }
    }
    Some((*header, meta, rest))
}

/// A decoded stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A value.
    Value(T),
    /// A cached "the source has nothing here" (negative caching).
    Negative,
}

/// Why stored bytes were not usable. The cache treats each as a miss and counts it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes do not start with a tiercache header (another writer, or raw bytes).
    #[error("no tiercache header")]
    NoHeader,
    /// Written by another codec.
    #[error("written by codec id {found}, expected {expected}")]
    OtherCodec {
        /// The codec id in the header.
        found: u8,
        /// This cache's codec id.
        expected: u8,
    },
    /// Written under another schema version of the value type.
    #[error("written with schema version {found}, expected {expected}")]
    OtherVersion {
        /// The version in the header.
        found: u16,
        /// This cache's version.
        expected: u16,
    },
    /// The header is fine but the payload does not decode as the requested type.
    #[error("payload does not decode: {0}")]
    Payload(CodecError),
}

/// A codec plus the schema version of the values it writes: encodes values with the header and
/// decodes only what carries the same codec id and version.
///
/// Bump the schema version when a cached type changes shape: old entries then read as misses
/// instead of failing to decode, or worse, decoding into wrong values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope<C> {
    codec: C,
    schema_version: u16,
}

impl<C: Codec> Envelope<C> {
    /// An envelope for `codec` writing `schema_version`.
    pub fn new(codec: C, schema_version: u16) -> Self {
        Self {
            codec,
            schema_version,
        }
    }

    /// The schema version written into headers.
    pub fn schema_version(&self) -> u16 {
        self.schema_version
    }

    /// Header plus the codec's encoding of `value`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] naming `T` and `key` when the codec refuses the value.
    pub fn encode<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Bytes> {
        self.encode_with(key, value, &StoredMeta::default())
    }

    /// Like [`encode`](Self::encode), with `meta` in the header.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub fn encode_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        meta: &StoredMeta,
    ) -> Result<Bytes> {
        let mut out = Vec::with_capacity(HEADER_V2_LEN + 64);
        self.write_header(KIND_VALUE, meta, &mut out);
        self.codec
            .encode(value, &mut out)
            .map_err(|source| Error::Encode {
                type_name: std::any::type_name::<T>(),
                key: key.to_owned(),
                codec: C::NAME,
                source: source.into(),
            })?;
        Ok(Bytes::from(out))
    }

    /// The stored form of a negative entry: a header with no payload.
    pub fn encode_negative(&self) -> Bytes {
        self.encode_negative_with(&StoredMeta::default())
    }

    /// Like [`encode_negative`](Self::encode_negative), with `meta` in the header.
    pub fn encode_negative_with(&self, meta: &StoredMeta) -> Bytes {
        let mut out = Vec::with_capacity(HEADER_V2_LEN);
        self.write_header(KIND_NEGATIVE, meta, &mut out);
        Bytes::from(out)
    }

    /// Decodes what [`encode`](Self::encode) or [`encode_negative`](Self::encode_negative) wrote.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for anything else; never panics, whatever the bytes.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<Decoded<T>, DecodeError> {
        let Some(([_, codec_id, kind, v0, v1], _meta, payload)) = parse_header(bytes) else {
            return Err(DecodeError::NoHeader);
        };
        if codec_id != C::ID {
            return Err(DecodeError::OtherCodec {
                found: codec_id,
                expected: C::ID,
            });
        }
        let version = u16::from_le_bytes([v0, v1]);
        if version != self.schema_version {
            return Err(DecodeError::OtherVersion {
                found: version,
                expected: self.schema_version,
            });
        }
        match kind {
            KIND_VALUE => self
                .codec
                .decode(payload)
                .map(Decoded::Value)
                .map_err(DecodeError::Payload),
            KIND_NEGATIVE if payload.is_empty() => Ok(Decoded::Negative),
            _ => Err(DecodeError::NoHeader),
        }
    }

    /// Writes the header. Tags beyond [`MAX_TAGS`] or longer than [`MAX_TAG_LEN`] bytes are left
    /// out here; the facade refuses them before anything is written.
    fn write_header(&self, kind: u8, meta: &StoredMeta, out: &mut Vec<u8>) {
        let [v0, v1] = self.schema_version.to_le_bytes();
        let tagged = !meta.tags.is_empty();
        out.extend_from_slice(&[
            MAGIC,
            C::ID,
            kind,
            v0,
            v1,
            if tagged { FLAG_TAGS } else { 0 },
        ]);
        for duration in [meta.ttl, meta.stale_window, meta.load_time] {
            out.extend_from_slice(&millis(duration).to_le_bytes());
        }
        if tagged {
            out.extend_from_slice(&meta.written_at_ms.to_le_bytes());
            let tags: Vec<&String> = meta
                .tags
                .iter()
                .filter(|tag| tag.len() <= MAX_TAG_LEN)
                .take(MAX_TAGS)
                .collect();
            out.push(u8::try_from(tags.len()).unwrap_or(u8::MAX));
            for tag in tags {
                out.push(u8::try_from(tag.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(tag.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
    }

    fn user() -> User {
        User {
            id: 7,
            name: "ada".into(),
        }
    }

    #[test]
    fn every_float_comes_back_exactly() {
        // Found by the value_header fuzz target: serde_json's fast float parsing read this back
        // one unit in the last place off; `float_roundtrip` parses exactly.
        let env = Envelope::new(JsonCodec, 1);
        let mut bits = 0x9E37_79B9_7F4A_7C15_u64;
        let floats = std::iter::once(4.666_666_666_666_465e43).chain((0..20_000).map(|_| {
            bits = bits.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            f64::from_bits(bits)
        }));
        for float in floats.filter(|float| float.is_finite()) {
            let bytes = env.encode("k", &float).unwrap();
            assert_eq!(
                env.decode::<f64>(&bytes).unwrap(),
                Decoded::Value(float),
                "{float:e}"
            );
        }
    }

    #[test]
    fn round_trips_values_and_negatives() {
        let env = Envelope::new(JsonCodec, 3);
        let bytes = env.encode("k", &user()).unwrap();
        assert_eq!(env.decode::<User>(&bytes).unwrap(), Decoded::Value(user()));
        let neg = env.encode_negative();
        assert_eq!(env.decode::<User>(&neg).unwrap(), Decoded::Negative);
    }

    #[test]
    fn another_version_or_codec_reads_as_a_mismatch() {
        let bytes = Envelope::new(JsonCodec, 1).encode("k", &user()).unwrap();
        assert!(matches!(
            Envelope::new(JsonCodec, 2).decode::<User>(&bytes),
            Err(DecodeError::OtherVersion {
                found: 1,
                expected: 2
            })
        ));
        let mut other_codec = bytes.to_vec();
        other_codec[1] = 9;
        assert!(matches!(
            Envelope::new(JsonCodec, 1).decode::<User>(&other_codec),
            Err(DecodeError::OtherCodec { found: 9, .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let env = Envelope::new(JsonCodec, 0);
        for bad in [
            &b""[..],
            b"\xC7",
            b"{\"id\":1}",
            b"\xC7\x01\x00\x00\x00{",
            b"\xC7\x01\x05\x00\x00",
            b"\xC8\x01\x00\x00\x00",
            b"\xC8\x01\x00\x00\x00\x02",
            b"\xC8\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        ] {
            assert!(env.decode::<User>(bad).is_err(), "{bad:?}");
        }
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..2000usize {
            let mut buf = Vec::with_capacity(len % 64);
            for _ in 0..len % 64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.push(seed.to_le_bytes()[0]);
            }
            if len % 3 == 0 && buf.len() >= HEADER_LEN {
                buf[..HEADER_LEN].copy_from_slice(&[MAGIC, 1, 0, 0, 0]);
            }
            let _ = env.decode::<BTreeMap<String, u64>>(&buf);
            let _ = StoredMeta::read(&buf);
        }
    }

    #[test]
    fn metadata_round_trips_and_old_headers_still_read() {
        let env = Envelope::new(JsonCodec, 4);
        let meta = StoredMeta {
            ttl: Duration::from_secs(60),
            stale_window: Duration::from_secs(3600),
            load_time: Duration::from_millis(250),
            written_at_ms: 1_790_000_000_000,
            tags: vec!["tenant:7".into(), "product:42".into()],
        };
        let bytes = env.encode_with("k", &user(), &meta).unwrap();
        assert_eq!(env.decode::<User>(&bytes).unwrap(), Decoded::Value(user()));
        assert_eq!(StoredMeta::read(&bytes), meta);
        let negative = env.encode_negative_with(&meta);
        assert_eq!(env.decode::<User>(&negative).unwrap(), Decoded::Negative);
        assert_eq!(StoredMeta::read(&negative), meta);

        let plain = env.encode("k", &user()).unwrap();
        assert_eq!(
            plain.len(),
            HEADER_V2_LEN + br#"{"id":7,"name":"ada"}"#.len()
        );
        assert_eq!(StoredMeta::read(&plain), StoredMeta::default());

        let mut old = vec![MAGIC_V1, JsonCodec::ID, KIND_VALUE, 4, 0];
        old.extend_from_slice(br#"{"id":7,"name":"ada"}"#);
        assert_eq!(env.decode::<User>(&old).unwrap(), Decoded::Value(user()));
        assert_eq!(StoredMeta::read(&old), StoredMeta::default());
        assert_eq!(StoredMeta::read(b"raw bytes"), StoredMeta::default());
    }

    #[test]
    fn unencodable_value_names_its_type_and_key() {
        let mut map = BTreeMap::new();
        map.insert((1u8, 2u8), 3u8); // JSON object keys must be strings.
        let err = Envelope::new(JsonCodec, 0).encode("k1", &map).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("BTreeMap"), "{text}");
        assert!(text.contains("\"k1\""), "{text}");
    }
}
