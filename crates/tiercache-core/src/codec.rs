//! How typed values become bytes, and the header that keeps a changed type or codec from being
//! read as garbage.

use bytes::{BufMut, Bytes, BytesMut};
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

/// First byte of every stored value; it also names the header layout (version 1).
const MAGIC: u8 = 0xC7;
/// Bytes before the payload: magic, codec id, kind, schema version (u16, little endian).
pub const HEADER_LEN: usize = 5;
const KIND_VALUE: u8 = 0;
const KIND_NEGATIVE: u8 = 1;

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
        let mut out = Vec::with_capacity(HEADER_LEN + 64);
        out.extend_from_slice(&self.header(KIND_VALUE));
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
        let mut out = BytesMut::with_capacity(HEADER_LEN);
        out.put_slice(&self.header(KIND_NEGATIVE));
        out.freeze()
    }

    /// Decodes what [`encode`](Self::encode) or [`encode_negative`](Self::encode_negative) wrote.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for anything else; never panics, whatever the bytes.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<Decoded<T>, DecodeError> {
        let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::NoHeader);
        };
        let [magic, codec_id, kind, v0, v1] = *header;
        if magic != MAGIC {
            return Err(DecodeError::NoHeader);
        }
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

    fn header(&self, kind: u8) -> [u8; HEADER_LEN] {
        let [v0, v1] = self.schema_version.to_le_bytes();
        [MAGIC, C::ID, kind, v0, v1]
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
        }
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
