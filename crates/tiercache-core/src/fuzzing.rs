//! Entry points for coverage-guided fuzzing (the `fuzz/` workspace) and for the replay of its
//! corpus by the test suite. Not part of the API: only built with the `fuzzing` feature.

use crate::{Decoded, Envelope, JsonCodec, StoredMeta};

/// Reads `data` as a stored value, as every read of a lower tier does: its metadata, then the
/// value under the schema version it names. Panics only when a property breaks: a value that
/// decodes must encode again into bytes that decode to the same value.
pub fn value_header(data: &[u8]) {
    let meta = StoredMeta::read(data);
    let version = data
        .get(3..5)
        .map_or(0, |bytes| u16::from_le_bytes([bytes[0], bytes[1]]));
    let envelope = Envelope::new(JsonCodec, version);
    if let Ok(Decoded::Value(value)) = envelope.decode::<serde_json::Value>(data) {
        let again = envelope
            .encode_with("fuzz", &value, &meta)
            .map(|bytes| envelope.decode::<serde_json::Value>(&bytes));
        assert!(
            matches!(&again, Ok(Ok(Decoded::Value(back))) if *back == value),
            "a decoded value does not survive a round trip: {again:?}"
        );
    }
}
