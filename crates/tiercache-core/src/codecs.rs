//! The binary codecs shipped beside [`JsonCodec`](crate::JsonCodec), each behind its feature,
//! and the dispatch by codec id that lets a cache read every codec it was built with (so a fleet
//! can move from one codec to another in a rolling deploy: old and new instances read each
//! other's values while each writes its own).

#[cfg(any(feature = "postcard", feature = "msgpack"))]
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `PostcardCodec`'s id (reserved even in builds without it).
const POSTCARD_ID: u8 = 2;
/// `MsgpackCodec`'s id (reserved even in builds without it).
const MSGPACK_ID: u8 = 3;

use crate::{Codec, CodecError, JsonCodec};

/// [postcard](https://docs.rs/postcard): compact and fast, not self-describing (feature
/// `postcard`).
///
/// Types that need a self-describing format do not work with it: `#[serde(flatten)]`,
/// untagged enums, `serde_json::Value`, `skip_serializing_if`. Field order is the format: bump
/// the [schema version](crate::Envelope::new) whenever a cached type changes shape. postcard has
/// no nesting limit of its own: a recursive cached type (a tree of `Box`es) read from a tier
/// others can write is as deep as those bytes say.
#[cfg(feature = "postcard")]
#[derive(Debug, Clone, Copy, Default)]
pub struct PostcardCodec;

#[cfg(feature = "postcard")]
impl Codec for PostcardCodec {
    const ID: u8 = POSTCARD_ID;
    const NAME: &'static str = "postcard";

    fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let encoded = postcard::to_extend(value, std::mem::take(out))?;
        *out = encoded;
        Ok(())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        Ok(postcard::from_bytes(bytes)?)
    }
}

/// [MessagePack](https://msgpack.org) through rmp-serde (feature `msgpack`). Structs are
/// written as maps with their field names, so fields may be added (with `#[serde(default)]`)
/// or reordered without a new schema version; self-describing, so every serde type works.
#[cfg(feature = "msgpack")]
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgpackCodec;

#[cfg(feature = "msgpack")]
impl Codec for MsgpackCodec {
    const ID: u8 = MSGPACK_ID;
    const NAME: &'static str = "msgpack";

    fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        Ok(rmp_serde::encode::write_named(out, value)?)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let mut decoder = rmp_serde::Deserializer::from_read_ref(bytes);
        // The bytes come from a tier anyone with access to it can write: rmp-serde's default of
        // 1,024 nesting levels overflows a 2 MiB thread stack when decoded into a recursive type
        // (found by fuzzing). As deep as serde_json reads.
        decoder.set_max_depth(MAX_NESTING);
        Ok(T::deserialize(&mut decoder)?)
    }
}

/// The deepest nesting a binary codec decodes (serde_json's own limit).
#[cfg(feature = "msgpack")]
const MAX_NESTING: usize = 128;

/// Whether this build can decode values written by the shipped codec `codec_id`.
pub(crate) fn is_known(codec_id: u8) -> bool {
    codec_id == JsonCodec::ID
        || (cfg!(feature = "postcard") && codec_id == POSTCARD_ID)
        || (cfg!(feature = "msgpack") && codec_id == MSGPACK_ID)
}

/// Decodes `payload` with the shipped codec whose id is `codec_id`, when this build has it;
/// `None` for an id it does not know (a codec of the user's own, or one not compiled in).
pub(crate) fn decode_known<T: DeserializeOwned>(
    codec_id: u8,
    payload: &[u8],
) -> Option<Result<T, CodecError>> {
    match codec_id {
        JsonCodec::ID => Some(JsonCodec.decode(payload)),
        #[cfg(feature = "postcard")]
        PostcardCodec::ID => Some(PostcardCodec.decode(payload)),
        #[cfg(feature = "msgpack")]
        MsgpackCodec::ID => Some(MsgpackCodec.decode(payload)),
        _ => None,
    }
}
