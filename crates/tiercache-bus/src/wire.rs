//! The wire form of a [`BusMessage`]: compact, versioned, and decoded by a total function.
//!
//! ```text
//! offset  size  field
//! 0       1     magic 0xB7
//! 1       1     version (2; version 1 is still read)
//! 2       1     kind: 1 keys, 2 prefix, 3 clear, 4 update, 5 tag (version 2 only)
//! 3       1     flags: bit 0 = the sender lost an earlier message; bit 1 = a MAC follows the
//!               body; other bits must be 0
//! 4       16    origin instance id (u128)
//! 20      8     sequence (u64)
//! 28      8     version 2 only: sent at, milliseconds since the Unix epoch (u64)
//! 36      ...   body (at 28 in version 1)
//!   keys:   u16 count (at least 1), then per key: u16 length, UTF-8 bytes
//!   prefix: u16 length, UTF-8 bytes
//!   clear:  nothing
//!   update: u16 key length, key bytes, u64 TTL in milliseconds, u32 value length, value bytes
//!   tag:    u16 tag length, tag bytes, u64 invalidated at (milliseconds since the Unix epoch)
//! then, when flag bit 1 is set:
//!   mac:    32 bytes, HMAC-SHA256 under the fleet's shared key of the [`context`] (channel and
//!           key prefix) followed by every byte of the message before the MAC
//! ```
//!
//! [`encode_signed`] sets the flag and appends the MAC; [`decode_verified`] accepts only a
//! message whose MAC verifies under the key and context (compared in constant time). The MAC
//! covers the flags byte, so clearing the flag does not make a forged message pass as an
//! unsigned one, and the context, so a message recorded on one channel or namespace does not
//! verify on another that shares the key.
//!
//! Integers are little-endian. Every key must pass [`validate_key`], every tag
//! [`validate_tag`]. A message is at most
//! [`MAX_MESSAGE_LEN`] bytes and must end exactly where its body does. Anything else decodes to a
//! [`WireError`]; nothing here panics, whatever the input.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tiercache_core::{BusKey, BusMessage, InstanceId, Invalidation, validate_key, validate_tag};

/// First byte of every message.
pub const MAGIC: u8 = 0xB7;
/// The version this crate writes. It reads this one and version 1 (no send time, no tags).
pub const VERSION: u8 = 2;
const VERSION_1: u8 = 1;
/// The largest message, encoded, in bytes. Larger input is refused unread.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;
/// Bytes before the body (in the version this crate writes).
pub const HEADER_LEN: usize = 36;

const KIND_KEYS: u8 = 1;
const KIND_PREFIX: u8 = 2;
const KIND_CLEAR: u8 = 3;
const KIND_UPDATE: u8 = 4;
const KIND_TAG: u8 = 5;
const FLAG_SENDER_LOST: u8 = 0b1;
const FLAG_MAC: u8 = 0b10;
/// Bytes of the MAC a signed message ends with.
pub const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why bytes are not a message (or a message cannot be encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input is longer than [`MAX_MESSAGE_LEN`].
    #[error("bus message of {0} bytes is over the {MAX_MESSAGE_LEN}-byte limit")]
    TooLong(usize),
    /// The first byte is not [`MAGIC`]: not a tiercache bus message.
    #[error("not a tiercache bus message (first byte {0:#04x})")]
    BadMagic(u8),
    /// A version this build does not read.
    #[error("bus message version {0} is not supported (this build reads 1 and {VERSION})")]
    UnknownVersion(u8),
    /// A kind this version does not define.
    #[error("unknown bus message kind {0}")]
    UnknownKind(u8),
    /// Flag bits this version does not define.
    #[error("unknown bus message flags {0:#010b}")]
    UnknownFlags(u8),
    /// The input ends inside the named field.
    #[error("bus message truncated in {0}")]
    Truncated(&'static str),
    /// Bytes left after the body.
    #[error("{0} unexpected bytes after the bus message body")]
    TrailingBytes(usize),
    /// A key message without keys.
    #[error("bus message names no keys")]
    NoKeys,
    /// A key or prefix that is not UTF-8 or breaks the key rules.
    #[error("bad key in bus message: {0}")]
    BadKey(String),
    /// The message carries no MAC, or one that does not verify under the shared key.
    #[error("bus message is not authenticated by the shared key")]
    Unauthenticated,
    /// An invalidation kind this wire version cannot carry (encoding only).
    #[error("this kind of invalidation has no form in bus message version {VERSION}")]
    Unsupported,
    /// A field too large for its length prefix (encoding only).
    #[error("{0} too large to encode in a bus message")]
    FieldTooLarge(&'static str),
}

/// Encodes `message`.
///
/// # Errors
///
/// [`WireError::TooLong`] when the result would exceed [`MAX_MESSAGE_LEN`];
/// [`WireError::FieldTooLarge`] or [`WireError::NoKeys`] when a field cannot be represented.
pub fn encode(message: &BusMessage) -> Result<Bytes, WireError> {
    encode_with(message, None)
}

/// What a MAC binds a message to besides its own bytes: the channel it travels on and the key
/// prefix (namespace) its keys belong to, each as a u16 length and the bytes.
pub fn context(channel: &str, key_prefix: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + channel.len() + key_prefix.len());
    for part in [channel, key_prefix] {
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&part.as_bytes()[..usize::from(len)]);
    }
    out
}

/// Encodes `message` with a MAC under `key` and `context` (see the module docs).
///
/// # Errors
///
/// As [`encode`].
pub fn encode_signed(
    message: &BusMessage,
    key: &BusKey,
    context: &[u8],
) -> Result<Bytes, WireError> {
    encode_with(message, Some((key, context)))
}

fn encode_with(message: &BusMessage, key: Option<(&BusKey, &[u8])>) -> Result<Bytes, WireError> {
    let mut out = BytesMut::with_capacity(HEADER_LEN + 64 + MAC_LEN);
    out.put_u8(MAGIC);
    out.put_u8(VERSION);
    out.put_u8(kind_of(&message.invalidation)?);
    let lost = if message.sender_lost_messages {
        FLAG_SENDER_LOST
    } else {
        0
    };
    out.put_u8(lost | if key.is_some() { FLAG_MAC } else { 0 });
    out.put_u128_le(message.origin.0);
    out.put_u64_le(message.sequence);
    out.put_u64_le(message.sent_at_ms);
    match &message.invalidation {
        Invalidation::Keys(keys) => {
            if keys.is_empty() {
                return Err(WireError::NoKeys);
            }
            let count = u16::try_from(keys.len()).map_err(|_| WireError::FieldTooLarge("keys"))?;
            out.put_u16_le(count);
            for key in keys {
                put_short_str(&mut out, key)?;
            }
        }
        Invalidation::Prefix(prefix) => put_short_str(&mut out, prefix)?,
        Invalidation::Update { key, value, ttl } => {
            put_short_str(&mut out, key)?;
            out.put_u64_le(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            let len = u32::try_from(value.len()).map_err(|_| WireError::FieldTooLarge("value"))?;
            out.put_u32_le(len);
            out.put_slice(value);
        }
        Invalidation::Tag {
            tag,
            invalidated_at_ms,
        } => {
            put_short_str(&mut out, tag)?;
            out.put_u64_le(*invalidated_at_ms);
        }
        // Clear has no body, and `kind_of` already refused kinds this version cannot carry.
        _ => {}
    }
    if let Some((key, context)) = key {
        let tag = keyed(key, context)?
            .chain_update(&out)
            .finalize()
            .into_bytes();
        out.put_slice(&tag);
    }
    if out.len() > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong(out.len()));
    }
    Ok(out.freeze())
}

fn kind_of(invalidation: &Invalidation) -> Result<u8, WireError> {
    match invalidation {
        Invalidation::Keys(_) => Ok(KIND_KEYS),
        Invalidation::Prefix(_) => Ok(KIND_PREFIX),
        Invalidation::Clear => Ok(KIND_CLEAR),
        Invalidation::Update { .. } => Ok(KIND_UPDATE),
        Invalidation::Tag { .. } => Ok(KIND_TAG),
        // A kind added to the core enum later has no form in this wire version.
        _ => Err(WireError::Unsupported),
    }
}

fn put_short_str(out: &mut BytesMut, text: &str) -> Result<(), WireError> {
    let len = u16::try_from(text.len()).map_err(|_| WireError::FieldTooLarge("key"))?;
    out.put_u16_le(len);
    out.put_slice(text.as_bytes());
    Ok(())
}

/// Decodes a message. Total: any input gives a message or a [`WireError`], never a panic. The
/// value of an update message shares `input`'s memory.
///
/// # Errors
///
/// A [`WireError`] naming the first thing wrong with the input.
pub fn decode(input: &Bytes) -> Result<BusMessage, WireError> {
    decode_with(input, None)
}

/// Decodes `input` if it carries a MAC that verifies under `key` and `context`; a message
/// without one, or with a wrong one, is [`WireError::Unauthenticated`] (and is not parsed
/// further).
///
/// # Errors
///
/// As [`decode`], and [`WireError::Unauthenticated`].
pub fn decode_verified(
    input: &Bytes,
    key: &BusKey,
    context: &[u8],
) -> Result<BusMessage, WireError> {
    decode_with(input, Some((key, context)))
}

/// A MAC computer keyed with `key`, fed `context` already.
fn keyed(key: &BusKey, context: &[u8]) -> Result<HmacSha256, WireError> {
    HmacSha256::new_from_slice(key.secret())
        .map(|mac| mac.chain_update(context))
        .map_err(|_| WireError::Unauthenticated)
}

/// The message without its MAC, once the MAC is checked against `key` (without a key, a MAC is
/// stripped unchecked: such a receiver trusts its channel).
fn body_of(input: &Bytes, key: Option<(&BusKey, &[u8])>) -> Result<Bytes, WireError> {
    let signed = input.get(3).is_some_and(|flags| flags & FLAG_MAC != 0);
    if !signed {
        return match key {
            Some(_) => Err(WireError::Unauthenticated),
            None => Ok(input.clone()),
        };
    }
    let Some(body_len) = input.len().checked_sub(MAC_LEN).filter(|len| *len > 3) else {
        return Err(WireError::Truncated("mac"));
    };
    let (body, tag) = input.split_at(body_len);
    if let Some((key, context)) = key {
        keyed(key, context)?
            .chain_update(body)
            .verify_slice(tag)
            .map_err(|_| WireError::Unauthenticated)?;
    }
    Ok(input.slice(..body_len))
}

fn decode_with(input: &Bytes, key: Option<(&BusKey, &[u8])>) -> Result<BusMessage, WireError> {
    if input.len() > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong(input.len()));
    }
    let input = &body_of(input, key)?;
    let mut reader = Reader { input, at: 0 };
    let magic = reader.u8("magic")?;
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let version = reader.u8("version")?;
    if version != VERSION && version != VERSION_1 {
        return Err(WireError::UnknownVersion(version));
    }
    let kind = reader.u8("kind")?;
    let flags = reader.u8("flags")?;
    if flags & !(FLAG_SENDER_LOST | FLAG_MAC) != 0 {
        return Err(WireError::UnknownFlags(flags));
    }
    let origin = InstanceId(u128::from_le_bytes(reader.array("origin")?));
    let sequence = u64::from_le_bytes(reader.array("sequence")?);
    let sent_at_ms = if version == VERSION_1 {
        0
    } else {
        u64::from_le_bytes(reader.array("sent at")?)
    };
    let invalidation = match kind {
        KIND_KEYS => {
            let count = u16::from_le_bytes(reader.array("key count")?);
            if count == 0 {
                return Err(WireError::NoKeys);
            }
            let mut keys = Vec::with_capacity(usize::from(count).min(input.len() / 3));
            for _ in 0..count {
                keys.push(reader.key()?);
            }
            Invalidation::Keys(keys)
        }
        KIND_PREFIX => Invalidation::Prefix(reader.key()?),
        KIND_CLEAR => Invalidation::Clear,
        KIND_UPDATE => {
            let key = reader.key()?;
            let ttl = Duration::from_millis(u64::from_le_bytes(reader.array("ttl")?));
            let len = u32::from_le_bytes(reader.array("value length")?);
            let len = usize::try_from(len).map_err(|_| WireError::Truncated("value"))?;
            let value = reader.bytes(len, "value")?;
            Invalidation::Update { key, value, ttl }
        }
        KIND_TAG if version != VERSION_1 => {
            let tag = reader.text("tag")?;
            validate_tag(&tag).map_err(|err| WireError::BadKey(err.to_string()))?;
            let invalidated_at_ms = u64::from_le_bytes(reader.array("invalidated at")?);
            Invalidation::Tag {
                tag,
                invalidated_at_ms,
            }
        }
        other => return Err(WireError::UnknownKind(other)),
    };
    let left = input.len() - reader.at;
    if left != 0 {
        return Err(WireError::TrailingBytes(left));
    }
    Ok(BusMessage {
        origin,
        sequence,
        sender_lost_messages: flags & FLAG_SENDER_LOST != 0,
        sent_at_ms,
        invalidation,
    })
}

/// How one transport writes and reads the wire: signed under the fleet's key for its channel
/// and namespace, or plain.
#[derive(Debug, Clone, Default)]
pub struct Signing {
    key: Option<BusKey>,
    context: Vec<u8>,
}

impl Signing {
    /// Signs with and requires `key` when there is one, bound to `channel` and `key_prefix`
    /// (see [`context`]); plain otherwise.
    pub fn new(key: Option<&BusKey>, channel: &str, key_prefix: &str) -> Self {
        Self {
            key: key.cloned(),
            context: context(channel, key_prefix),
        }
    }

    fn keyed(&self) -> Option<(&BusKey, &[u8])> {
        self.key.as_ref().map(|key| (key, self.context.as_slice()))
    }

    /// Encodes `message`, signed when there is a key.
    ///
    /// # Errors
    ///
    /// As [`encode`].
    pub fn encode(&self, message: &BusMessage) -> Result<Bytes, WireError> {
        encode_with(message, self.keyed())
    }

    /// Encodes `message` as `signing` says; plain when there is none (a transport not started).
    ///
    /// # Errors
    ///
    /// As [`encode`].
    pub fn encode_as(signing: Option<&Self>, message: &BusMessage) -> Result<Bytes, WireError> {
        signing.map_or_else(|| encode(message), |signing| signing.encode(message))
    }

    /// Decodes `input`; with a key, only when its MAC verifies.
    ///
    /// # Errors
    ///
    /// As [`decode_verified`] with a key, as [`decode`] without.
    pub fn decode(&self, input: &Bytes) -> Result<BusMessage, WireError> {
        decode_with(input, self.keyed())
    }
}

/// A cursor that only hands out bytes that are there.
struct Reader<'a> {
    input: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, len: usize, what: &'static str) -> Result<Bytes, WireError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.input.len())
            .ok_or(WireError::Truncated(what))?;
        let out = self.input.slice(self.at..end);
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let bytes = self.bytes(N, what)?;
        <[u8; N]>::try_from(bytes.as_ref()).map_err(|_| WireError::Truncated(what))
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        let [byte] = self.array::<1>(what)?;
        Ok(byte)
    }

    /// A u16-length-prefixed UTF-8 string.
    fn text(&mut self, what: &'static str) -> Result<String, WireError> {
        let len = u16::from_le_bytes(self.array("length")?);
        let bytes = self.bytes(usize::from(len), what)?;
        std::str::from_utf8(&bytes)
            .map(str::to_owned)
            .map_err(|err| WireError::BadKey(err.to_string()))
    }

    fn key(&mut self) -> Result<String, WireError> {
        let key = self.text("key")?;
        validate_key(&key).map_err(|err| WireError::BadKey(err.to_string()))?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(invalidation: Invalidation) -> BusMessage {
        BusMessage {
            origin: InstanceId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            sequence: 42,
            sender_lost_messages: false,
            sent_at_ms: 1_790_000_000_123,
            invalidation,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for invalidation in [
            Invalidation::Keys(vec!["user:1".into(), "user:2".into()]),
            Invalidation::Prefix("user:".into()),
            Invalidation::Clear,
            Invalidation::Update {
                key: "user:1".into(),
                value: Bytes::from_static(b"\xc7\x01\x00{}"),
                ttl: Duration::from_millis(1500),
            },
            Invalidation::Tag {
                tag: "tenant:7".into(),
                invalidated_at_ms: 1_790_000_000_000,
            },
        ] {
            let sent = message(invalidation);
            let bytes = encode(&sent).unwrap();
            assert_eq!(decode(&bytes).unwrap(), sent);
        }
        let mut lost = message(Invalidation::Clear);
        lost.sender_lost_messages = true;
        assert_eq!(decode(&encode(&lost).unwrap()).unwrap(), lost);
    }

    #[test]
    fn version_1_messages_still_read() {
        let mut old = vec![MAGIC, VERSION_1, KIND_KEYS, 0];
        old.extend_from_slice(&7u128.to_le_bytes());
        old.extend_from_slice(&3u64.to_le_bytes());
        old.extend_from_slice(&1u16.to_le_bytes());
        old.extend_from_slice(&1u16.to_le_bytes());
        old.push(b'k');
        let message = decode(&Bytes::from(old.clone())).unwrap();
        assert_eq!(message.sent_at_ms, 0);
        assert_eq!(message.invalidation, Invalidation::Keys(vec!["k".into()]));
        // Tags did not exist in version 1.
        old[2] = KIND_TAG;
        assert_eq!(
            decode(&Bytes::from(old)),
            Err(WireError::UnknownKind(KIND_TAG))
        );
    }

    #[test]
    fn a_key_message_is_small() {
        let bytes = encode(&message(Invalidation::Keys(vec!["user:1".into()]))).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 2 + 2 + 6);
    }

    #[test]
    fn bad_input_is_named() {
        let good = encode(&message(Invalidation::Prefix("a".into()))).unwrap();
        let with = |at: usize, byte: u8| {
            let mut bytes = good.to_vec();
            bytes[at] = byte;
            decode(&Bytes::from(bytes))
        };
        assert_eq!(decode(&Bytes::new()), Err(WireError::Truncated("magic")));
        assert_eq!(with(0, 0x00), Err(WireError::BadMagic(0)));
        assert_eq!(with(1, 9), Err(WireError::UnknownVersion(9)));
        assert_eq!(with(2, 77), Err(WireError::UnknownKind(77)));
        assert_eq!(with(3, 0b100), Err(WireError::UnknownFlags(0b100)));
        assert_eq!(
            decode(&good.slice(..good.len() - 1)),
            Err(WireError::Truncated("key"))
        );
        let mut longer = good.to_vec();
        longer.push(0);
        assert_eq!(
            decode(&Bytes::from(longer)),
            Err(WireError::TrailingBytes(1))
        );
        assert!(matches!(
            with(HEADER_LEN + 2, 0x07),
            Err(WireError::BadKey(_))
        ));
        let huge = Bytes::from(vec![MAGIC; MAX_MESSAGE_LEN + 1]);
        assert_eq!(decode(&huge), Err(WireError::TooLong(MAX_MESSAGE_LEN + 1)));
    }

    #[test]
    fn signed_messages_verify_only_under_their_key_and_context() {
        let key = BusKey::new([7u8; 32]).unwrap();
        let other = BusKey::new([8u8; 32]).unwrap();
        let here = context("tiercache:bus:shop", "shop:");
        let sent = message(Invalidation::Keys(vec!["user:1".into()]));
        let plain = encode(&sent).unwrap();
        let signed = encode_signed(&sent, &key, &here).unwrap();
        assert_eq!(signed.len(), plain.len() + MAC_LEN);
        assert_eq!(decode_verified(&signed, &key, &here).unwrap(), sent);
        assert_eq!(
            decode(&signed).unwrap(),
            sent,
            "read unchecked without a key"
        );
        let refused = Err(WireError::Unauthenticated);
        assert_eq!(decode_verified(&signed, &other, &here), refused);
        assert_eq!(decode_verified(&plain, &key, &here), refused);
        // Recorded on one channel or namespace, it does not verify on another with the key.
        for elsewhere in [
            context("tiercache:bus:users", "shop:"),
            context("tiercache:bus:shop", "users:"),
            context("tiercache:bus:sho", "pshop:"),
        ] {
            assert_eq!(decode_verified(&signed, &key, &elsewhere), refused);
        }
        // Every flipped bit is caught, in the header, the body and the MAC alike.
        for at in 0..signed.len() {
            for bit in 0..8 {
                let mut bytes = signed.to_vec();
                bytes[at] ^= 1 << bit;
                let bytes = Bytes::from(bytes);
                assert!(decode_verified(&bytes, &key, &here).is_err(), "{at}/{bit}");
            }
        }
        // Nor does cutting the MAC off and clearing its flag.
        let mut stripped = signed[..signed.len() - MAC_LEN].to_vec();
        stripped[3] &= !FLAG_MAC;
        assert_eq!(
            decode_verified(&Bytes::from(stripped), &key, &here),
            refused
        );
        assert_eq!(
            decode_verified(&signed.slice(..10), &key, &here),
            Err(WireError::Truncated("mac"))
        );
    }

    #[test]
    fn unencodable_messages_are_errors() {
        assert_eq!(
            encode(&message(Invalidation::Keys(Vec::new()))),
            Err(WireError::NoKeys)
        );
        let too_big = Invalidation::Update {
            key: "k".into(),
            value: Bytes::from(vec![0; MAX_MESSAGE_LEN]),
            ttl: Duration::from_secs(1),
        };
        assert!(matches!(
            encode(&message(too_big)),
            Err(WireError::TooLong(_))
        ));
    }
}
