//! Entry points for coverage-guided fuzzing (the `fuzz/` workspace) and for the replay of its
//! corpus by the test suite. Not part of the API: only built with the `fuzzing` feature.

use bytes::Bytes;
use tiercache_core::BusKey;

use crate::wire;

/// The key the fuzz target signs and verifies with.
const KEY: &[u8; 32] = b"tiercache fuzzing key, 32 bytes.";

/// Decodes `data` as a bus message, plain and under a key, as a receiver does. Panics only when
/// a property breaks: what decodes encodes again (plain and signed) into bytes that decode to
/// the same message, and a message that verifies under the key was signed with it.
pub fn bus_wire(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    let Ok(key) = BusKey::new(KEY) else {
        return;
    };
    let signing = wire::Signing::new(Some(&key), "tiercache:bus:fuzz", "fuzz:");
    let verified = signing.decode(&input);
    if let Ok(plain) = wire::decode(&input) {
        // Each form decodes back by its own reader: plain by `decode`, signed only by a verifying
        // `Signing` (a MAC bug shows here). A message at the size limit may not fit once
        // re-encoded (a version-1 message gains the send time, a signed one the MAC).
        let plain_again = wire::encode(&plain).map(|bytes| wire::decode(&bytes));
        let signed_again = signing.encode(&plain).map(|bytes| signing.decode(&bytes));
        for (form, back) in [("plain", plain_again), ("signed", signed_again)] {
            match back {
                Ok(Ok(message)) => assert_eq!(message, plain, "{form} round trip"),
                Err(wire::WireError::TooLong(_)) => {}
                other => unreachable!("{form} round trip of a decoded message: {other:?}"),
            }
        }
        if let Ok(message) = &verified {
            assert_eq!(*message, plain, "verified and plain decoding disagree");
        }
    } else {
        assert!(verified.is_err(), "verified what does not decode");
    }
}
