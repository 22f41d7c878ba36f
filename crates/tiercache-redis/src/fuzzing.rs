//! Entry points for coverage-guided fuzzing (the `fuzz/` workspace) and for the replay of its
//! corpus by the test suite. Not part of the API: only built with the `fuzzing` feature.

use bytes::Bytes;
use fred::types::Value;

use crate::{frame, lease};

/// The deepest nesting [`value_from`] builds.
const MAX_DEPTH: usize = 4;
/// The most items of one array [`value_from`] builds.
const MAX_ITEMS: usize = 8;

/// Reads `data` as what a Redis string holds (a framed entry or a lease frame), then as the
/// reply of the lease script. Panics only when a property breaks: a frame that decodes encodes
/// back to the same bytes' value.
pub fn redis_frame(data: &[u8]) {
    let stored = Bytes::copy_from_slice(data);
    let _ = lease::is_lease(&stored);
    if let Some(entry) = frame::decode(&stored) {
        let again = frame::decode(&frame::encode(&entry));
        assert!(
            again.as_ref().is_some_and(|back| back.value == entry.value),
            "a decoded frame does not survive a round trip"
        );
    }
    let _ = lease::parse_reply(value_from(&mut &data[..], 0));
}

/// A reply of any shape, built from fuzz input: each value starts with a tag byte (null,
/// integer, bytes, text, double, boolean, array) and takes what it needs from the rest.
pub fn value_from(data: &mut &[u8], depth: usize) -> Value {
    let Some((&tag, rest)) = data.split_first() else {
        return Value::Null;
    };
    *data = rest;
    match tag % 7 {
        0 => Value::Null,
        1 => Value::Integer(i64::from_le_bytes(take::<8>(data))),
        2 => Value::Bytes(Bytes::copy_from_slice(take_len(data))),
        3 => Value::String(String::from_utf8_lossy(take_len(data)).into_owned().into()),
        4 => Value::Double(f64::from_le_bytes(take::<8>(data))),
        5 => Value::Boolean(tag & 0x80 != 0),
        _ if depth >= MAX_DEPTH => Value::Null,
        _ => {
            let count = usize::from(take::<1>(data)[0]) % (MAX_ITEMS + 1);
            Value::Array((0..count).map(|_| value_from(data, depth + 1)).collect())
        }
    }
}

/// The next `N` bytes, zero-padded when the input ends.
fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0; N];
    let len = N.min(data.len());
    out[..len].copy_from_slice(&data[..len]);
    *data = &data[len..];
    out
}

/// A length byte, then that many bytes (fewer when the input ends).
fn take_len<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let len = usize::from(take::<1>(data)[0]).min(data.len());
    let (head, rest) = data.split_at(len);
    *data = rest;
    head
}
