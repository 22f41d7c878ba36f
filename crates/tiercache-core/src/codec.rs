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
/// [`JsonCodec`], `2` `PostcardCodec` (feature `postcard`), `3` `MsgpackCodec` (feature
/// `msgpack`); ids below 16 are reserved for codecs shipped with tiercache. A cache writes with
/// its own codec and reads every shipped codec it was built with, so a fleet can switch codec in
/// a rolling deploy; a value of a codec of your own is read only by a cache configured with it.
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
/// Flag: the payload is compressed (`compression.rs`: its length, then an LZ4 block).
const FLAG_COMPRESSED: u8 = 2;
/// Every flag this version knows; a header with another is not ours (or from a newer version)
/// and reads as a miss.
const KNOWN_FLAGS: u8 = FLAG_TAGS | FLAG_COMPRESSED;
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
    parse_header_flags(bytes).map(|(header, meta, _, payload)| (header, meta, payload))
}

/// [`parse_header`], with the flags byte (0 for a version-1 header).
fn parse_header_flags(bytes: &[u8]) -> Option<([u8; HEADER_LEN], StoredMeta, u8, &[u8])> {
    let mut meta = StoredMeta::default();
    let (header, flags, payload) = walk_header(bytes, Some(&mut meta))?;
    Some((header, meta, flags, payload))
}

/// The header, flags and payload of stored bytes, the metadata skipped rather than built (no
/// tag is copied): what decoding the value needs. `None` exactly when [`parse_header_flags`]
/// would say `None`.
fn split_header(bytes: &[u8]) -> Option<([u8; HEADER_LEN], u8, &[u8])> {
    walk_header(bytes, None)
}

/// Walks the header of stored bytes, filling `meta` when one is given: (magic..schema header,
/// flags, payload), `None` when the bytes do not start with a well-formed tiercache header.
fn walk_header<'a>(
    bytes: &'a [u8],
    mut meta: Option<&mut StoredMeta>,
) -> Option<([u8; HEADER_LEN], u8, &'a [u8])> {
    let (header, mut rest) = bytes.split_first_chunk::<HEADER_LEN>()?;
    match header[0] {
        MAGIC_V1 => return Some((*header, 0, rest)),
        MAGIC => {}
        _ => return None,
    }
    let flags = *take(&mut rest, 1)?.first()?;
    if flags & !KNOWN_FLAGS != 0 {
        return None;
    }
    let millis = |rest: &mut &[u8]| take_u32(rest).map(|ms| Duration::from_millis(u64::from(ms)));
    let (ttl, stale_window, load_time) =
        (millis(&mut rest)?, millis(&mut rest)?, millis(&mut rest)?);
    if let Some(meta) = meta.as_deref_mut() {
        meta.ttl = ttl;
        meta.stale_window = stale_window;
        meta.load_time = load_time;
    }
    if flags & FLAG_TAGS != 0 {
        let written_at: [u8; 8] = take(&mut rest, 8)?.try_into().ok()?;
        let count = *take(&mut rest, 1)?.first()?;
        for _ in 0..count {
            let len = *take(&mut rest, 1)?.first()?;
            let tag = std::str::from_utf8(take(&mut rest, usize::from(len))?).ok()?;
            if let Some(meta) = meta.as_deref_mut() {
                meta.tags.push(tag.to_owned());
            }
        }
        if let Some(meta) = meta {
            meta.written_at_ms = u64::from_le_bytes(written_at);
        }
    }
    Some((*header, flags, rest))
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
    /// The payload is compressed and cannot be read: this build lacks the `lz4` feature, the
    /// block is corrupt, or it claims to expand past
    /// [`MAX_DECOMPRESSED_LEN`](crate::MAX_DECOMPRESSED_LEN).
    #[error("compressed payload cannot be read")]
    Compressed,
}

/// A codec plus the schema version of the values it writes: encodes values with the header and
/// decodes what carries the same version and a codec id this build knows (its own, or a shipped
/// one: see [`Codec`]). With [`compress_above`](Self::compress_above) (feature `lz4`), payloads
/// larger than the threshold are stored compressed; compressed values are read whatever this
/// envelope's own setting.
///
/// Bump the schema version when a cached type changes shape: old entries then read as misses
/// instead of failing to decode, or worse, decoding into wrong values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope<C> {
    codec: C,
    schema_version: u16,
    /// Payloads longer than this many bytes are compressed; `None`: never.
    compress_above: Option<usize>,
}

impl<C: Codec> Envelope<C> {
    /// An envelope for `codec` writing `schema_version`.
    pub fn new(codec: C, schema_version: u16) -> Self {
        Self {
            codec,
            schema_version,
            compress_above: None,
        }
    }

    /// Compresses payloads longer than `threshold` bytes (LZ4), when that makes them smaller;
    /// `None` turns compression off (the default). Without the `lz4` feature nothing is
    /// compressed, whatever this says.
    #[must_use]
    pub fn compress_above(mut self, threshold: Option<usize>) -> Self {
        self.compress_above = threshold;
        self
    }

    /// The compression threshold, when compression is on.
    pub fn compression_threshold(&self) -> Option<usize> {
        self.compress_above
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
        let payload_at = out.len();
        self.codec
            .encode(value, &mut out)
            .map_err(|source| Error::Encode {
                type_name: std::any::type_name::<T>(),
                key: key.to_owned(),
                codec: C::NAME,
                source: source.into(),
            })?;
        self.compress(&mut out, payload_at);
        Ok(Bytes::from(out))
    }

    /// Replaces the payload (from `payload_at` on) by its compressed form when it is longer than
    /// the threshold and compressing makes it shorter.
    #[cfg(feature = "lz4")]
    fn compress(&self, out: &mut Vec<u8>, payload_at: usize) {
        let Some(threshold) = self.compress_above else {
            return;
        };
        let payload = out.get(payload_at..).unwrap_or_default();
        if payload.len() <= threshold {
            return;
        }
        let mut compressed = Vec::with_capacity(out.len());
        compressed.extend_from_slice(out.get(..payload_at).unwrap_or_default());
        if crate::compression::compress_into(payload, &mut compressed)
            && compressed.len() < out.len()
        {
            // The flags byte follows the fixed 5-byte header.
            if let Some(flags) = compressed.get_mut(HEADER_LEN) {
                *flags |= FLAG_COMPRESSED;
                *out = compressed;
            }
        }
    }

    #[cfg(not(feature = "lz4"))]
    fn compress(&self, _out: &mut Vec<u8>, _payload_at: usize) {}

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
        let Some(([_, codec_id, kind, v0, v1], flags, payload)) = split_header(bytes) else {
            return Err(DecodeError::NoHeader);
        };
        if codec_id != C::ID && !crate::codecs::is_known(codec_id) {
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
            KIND_VALUE if flags & FLAG_COMPRESSED != 0 => {
                let payload =
                    crate::compression::decompress(payload).ok_or(DecodeError::Compressed)?;
                self.decode_payload(codec_id, &payload)
            }
            KIND_VALUE => self.decode_payload(codec_id, payload),
            KIND_NEGATIVE if payload.is_empty() => Ok(Decoded::Negative),
            _ => Err(DecodeError::NoHeader),
        }
    }

    /// The payload decoded by the codec that wrote it: this envelope's own, or a shipped one.
    fn decode_payload<T: DeserializeOwned>(
        &self,
        codec_id: u8,
        payload: &[u8],
    ) -> Result<Decoded<T>, DecodeError> {
        let decoded = if codec_id == C::ID {
            self.codec.decode(payload)
        } else {
            crate::codecs::decode_known(codec_id, payload)
                .unwrap_or_else(|| Err(CodecError::from("a codec this build does not have")))
        };
        decoded.map(Decoded::Value).map_err(DecodeError::Payload)
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

    /// The header skip of `decode` finds the same header, flags and payload as the full parse,
    /// and refuses exactly what it refuses, for every cut of tagged and untagged values.
    #[test]
    fn skipping_the_header_agrees_with_parsing_it() {
        let env = Envelope::new(JsonCodec, 3);
        let tagged = StoredMeta {
            ttl: Duration::from_secs(60),
            stale_window: Duration::from_secs(5),
            written_at_ms: 1_700_000_000_000,
            tags: vec!["a".into(), "tag-two".into()],
            ..StoredMeta::default()
        };
        let values = [
            env.encode("k", &user()).unwrap_or_default(),
            env.encode_with("k", &user(), &tagged).unwrap_or_default(),
            env.encode_negative(),
        ];
        for bytes in values {
            for cut in 0..=bytes.len() {
                let bytes = &bytes[..cut];
                let full = parse_header_flags(bytes).map(|(h, _, f, p)| (h, f, p));
                assert_eq!(split_header(bytes), full, "cut at {cut}");
            }
        }
        let mut bad_utf8 = env
            .encode_with("k", &user(), &tagged)
            .unwrap_or_default()
            .to_vec();
        let tag_at = HEADER_V2_LEN + 8 + 2;
        bad_utf8[tag_at] = 0xFF;
        assert_eq!(split_header(&bad_utf8), None);
        assert!(parse_header_flags(&bad_utf8).is_none());
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

    #[test]
    fn compressed_header_flag_alone_is_not_a_value() {
        let env = Envelope::new(JsonCodec, 0);
        let mut bytes = env.encode("k", &user()).unwrap().to_vec();
        bytes[HEADER_LEN] |= FLAG_COMPRESSED;
        // Not an LZ4 payload: a miss, never a panic or garbage.
        assert!(env.decode::<User>(&bytes).is_err());
        bytes[HEADER_LEN] |= 0x80;
        assert!(matches!(
            env.decode::<User>(&bytes),
            Err(DecodeError::NoHeader)
        ));
    }

    #[cfg(feature = "lz4")]
    mod compressed {
        use super::*;

        fn big() -> Vec<String> {
            (0..200).map(|i| format!("item number {i}")).collect()
        }

        #[test]
        fn values_above_the_threshold_are_stored_compressed_and_read_back() {
            let plain = Envelope::new(JsonCodec, 1);
            let env = Envelope::new(JsonCodec, 1).compress_above(Some(256));
            let meta = StoredMeta {
                ttl: Duration::from_secs(5),
                tags: vec!["t".into()],
                written_at_ms: 1,
                ..StoredMeta::default()
            };
            let small = env.encode_with("k", &user(), &meta).unwrap();
            assert_eq!(
                small,
                plain.encode_with("k", &user(), &meta).unwrap(),
                "below the threshold"
            );
            let stored = env.encode_with("k", &big(), &meta).unwrap();
            let uncompressed = plain.encode_with("k", &big(), &meta).unwrap();
            assert!(
                stored.len() * 2 < uncompressed.len(),
                "{} vs {}",
                stored.len(),
                uncompressed.len()
            );
            assert_eq!(StoredMeta::read(&stored), meta, "the header stays readable");
            // Read by an envelope that does not compress, too.
            assert_eq!(
                plain.decode::<Vec<String>>(&stored).unwrap(),
                Decoded::Value(big())
            );
            assert_eq!(
                env.decode::<Vec<String>>(&stored).unwrap(),
                Decoded::Value(big())
            );
        }

        #[test]
        fn a_claimed_size_past_the_bound_is_a_miss_without_allocating_it() {
            let env = Envelope::new(JsonCodec, 1).compress_above(Some(16));
            let mut stored = env.encode("k", &big()).unwrap().to_vec();
            let payload_at = HEADER_V2_LEN;
            stored[payload_at..payload_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(matches!(
                env.decode::<Vec<String>>(&stored),
                Err(DecodeError::Compressed)
            ));
            // One byte off in the block, or the block cut short: a miss too.
            let good = env.encode("k", &big()).unwrap().to_vec();
            for cut in [good.len() - 1, payload_at + 5, payload_at + 2] {
                assert!(
                    env.decode::<Vec<String>>(&good[..cut]).is_err(),
                    "cut at {cut}"
                );
            }
        }
    }

    #[cfg(all(feature = "postcard", feature = "msgpack"))]
    mod codecs {
        use super::*;
        use crate::{MsgpackCodec, PostcardCodec};

        #[test]
        fn each_codec_round_trips_and_every_cache_reads_every_shipped_codec() {
            let json = Envelope::new(JsonCodec, 2);
            let postcard = Envelope::new(PostcardCodec, 2);
            let msgpack = Envelope::new(MsgpackCodec, 2);
            let written = [
                json.encode("k", &user()).unwrap(),
                postcard.encode("k", &user()).unwrap(),
                msgpack.encode("k", &user()).unwrap(),
            ];
            assert_eq!(written.clone().map(|bytes| bytes[1]), [1, 2, 3]);
            for bytes in &written {
                assert_eq!(json.decode::<User>(bytes).unwrap(), Decoded::Value(user()));
                assert_eq!(
                    postcard.decode::<User>(bytes).unwrap(),
                    Decoded::Value(user())
                );
                assert_eq!(
                    msgpack.decode::<User>(bytes).unwrap(),
                    Decoded::Value(user())
                );
            }
            // Postcard is the smallest, JSON the largest.
            assert!(written[1].len() < written[2].len() && written[2].len() < written[0].len());
            // The schema version still rules, whatever the codec.
            let other = Envelope::new(JsonCodec, 3);
            assert!(matches!(
                other.decode::<User>(&written[1]),
                Err(DecodeError::OtherVersion { .. })
            ));
            // An id nobody ships: a mismatch.
            let mut unknown = written[0].to_vec();
            unknown[1] = 15;
            assert!(matches!(
                json.decode::<User>(&unknown),
                Err(DecodeError::OtherCodec { found: 15, .. })
            ));
        }

        #[test]
        fn deeply_nested_msgpack_from_a_tier_is_a_miss_not_a_stack_overflow() {
            // Found by the value_header fuzz target: rmp-serde allows 1,024 levels by default,
            // which overflows a 2 MiB thread stack when decoded into a recursive type.
            let mut bytes = vec![MAGIC, MsgpackCodec::ID, KIND_VALUE, 0, 0, 0];
            bytes.extend_from_slice(&[0; 12]);
            bytes.extend(std::iter::repeat_n(0x91_u8, 1000)); // [[[[…
            bytes.push(0xC0); // nil
            let env = Envelope::new(JsonCodec, 0);
            assert!(matches!(
                env.decode::<serde_json::Value>(&bytes),
                Err(DecodeError::Payload(_))
            ));
            // As deep as JSON reads is still fine.
            let mut shallow = bytes[..HEADER_V2_LEN].to_vec();
            shallow.extend(std::iter::repeat_n(0x91_u8, 100));
            shallow.push(0xC0);
            assert!(env.decode::<serde_json::Value>(&shallow).is_ok());
        }

        #[test]
        fn garbage_in_a_binary_codec_is_a_miss_never_a_panic() {
            let mut seed = 0x2545_F491_4F6C_DD1Du64;
            for len in 0..3000usize {
                let mut payload = Vec::new();
                for _ in 0..len % 48 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    payload.push(seed.to_le_bytes()[0]);
                }
                for id in [2u8, 3] {
                    let mut bytes = vec![MAGIC, id, KIND_VALUE, 0, 0, 0];
                    bytes.extend_from_slice(&[0; 12]);
                    bytes.extend_from_slice(&payload);
                    let env = Envelope::new(JsonCodec, 0);
                    let _ = env.decode::<BTreeMap<String, Vec<u64>>>(&bytes);
                    let _ = env.decode::<User>(&bytes);
                }
            }
        }
    }
}
