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
        for encoded in [wire::encode(&plain), signing.encode(&plain)] {
            let back =
                encoded.map(|bytes| signing.decode(&bytes).or_else(|_| wire::decode(&bytes)));
            assert!(
                matches!(&back, Ok(Ok(message)) if *message == plain),
                "a decoded message does not survive a round trip: {back:?}"
            );
        }
        if let Ok(message) = &verified {
            assert_eq!(*message, plain, "verified and plain decoding disagree");
        }
    } else {
        assert!(verified.is_err(), "verified what does not decode");
    }
}
