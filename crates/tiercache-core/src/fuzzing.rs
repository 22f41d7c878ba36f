//! Entry points for coverage-guided fuzzing (the `fuzz/` workspace) and for the replay of its
//! corpus by the test suite. Not part of the API: only built with the `fuzzing` feature.

use crate::{Decoded, Envelope, HEADER_LEN, JsonCodec, StoredMeta};

/// Reads `data` as a stored value, as every read of a lower tier does: its metadata, then the
/// value under the schema version it names, with every shipped codec and decompression the build
/// has (the fuzz crate turns on `postcard`, `msgpack` and `lz4`). Panics only when a property
/// breaks: a value that decodes must encode again, with the codec that wrote it and compressed
/// when it was, into bytes that decode to the same value. (Re-encoding with another codec is not
/// a property: JSON reads at most 128 levels of nesting, MessagePack up to 1,024, so a deep
/// MessagePack value has no JSON form the JSON reader takes. Found by this target.)
pub fn value_header(data: &[u8]) {
    let meta = StoredMeta::read(data);
    let version = data
        .get(3..5)
        .map_or(0, |bytes| u16::from_le_bytes([bytes[0], bytes[1]]));
    // Compressed when the input's flags byte says so: the re-encoding compresses too.
    let compressed = data.get(HEADER_LEN).is_some_and(|flags| flags & 2 != 0);
    let compress_above = compressed.then_some(0);
    match data.get(1).copied() {
        #[cfg(feature = "msgpack")]
        Some(<crate::MsgpackCodec as crate::Codec>::ID) => round_trip(
            &Envelope::new(crate::MsgpackCodec, version).compress_above(compress_above),
            data,
            &meta,
        ),
        _ => round_trip(
            &Envelope::new(JsonCodec, version).compress_above(compress_above),
            data,
            &meta,
        ),
    }
}

fn round_trip<C: crate::Codec>(envelope: &Envelope<C>, data: &[u8], meta: &StoredMeta) {
    if let Ok(Decoded::Value(value)) = envelope.decode::<serde_json::Value>(data) {
        let again = envelope
            .encode_with("fuzz", &value, meta)
            .map(|bytes| envelope.decode::<serde_json::Value>(&bytes));
        assert!(
            matches!(&again, Ok(Ok(Decoded::Value(back))) if *back == value),
            "a decoded value does not survive a round trip: {again:?}"
        );
    }
}
