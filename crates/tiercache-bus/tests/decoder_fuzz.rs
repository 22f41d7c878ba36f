//! The decoder is total: 100,000+ random and mutated inputs give a message or an error, never a
//! panic, and every message that decodes encodes back to the same bytes.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::time::Duration;

use tiercache_bus::wire::{self, HEADER_LEN, MAX_MESSAGE_LEN, WireError};
use tiercache_core::{BusMessage, Bytes, InstanceId, Invalidation};

/// A small deterministic generator (xorshift64*), so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
    fn key(&mut self) -> String {
        let len = 1 + self.below(40);
        (0..len)
            .map(|_| char::from(b'!' + (self.byte() % 90)))
            .collect()
    }
}

fn random_message(rng: &mut Rng) -> BusMessage {
    let invalidation = match rng.below(5) {
        0 => Invalidation::Keys((0..1 + rng.below(5)).map(|_| rng.key()).collect()),
        1 => Invalidation::Prefix(rng.key()),
        2 => Invalidation::Clear,
        3 => Invalidation::Tag {
            tag: rng.key(),
            invalidated_at_ms: rng.next(),
        },
        _ => {
            let len = rng.below(300);
            Invalidation::Update {
                key: rng.key(),
                value: Bytes::from(rng.bytes(len)),
                ttl: Duration::from_millis(rng.next() % 10_000_000),
            }
        }
    };
    BusMessage {
        origin: InstanceId(u128::from(rng.next()) << 64 | u128::from(rng.next())),
        sequence: rng.next(),
        sender_lost_messages: rng.below(2) == 0,
        sent_at_ms: rng.next(),
        invalidation,
    }
}

/// Decodes `input`; when it decodes, checks the result encodes back to the same bytes (or, for
/// a version-1 input, which is re-encoded as the current version, to the same message).
fn check(input: &Bytes) -> bool {
    match wire::decode(input) {
        Ok(message) => {
            let again = wire::encode(&message).unwrap();
            if input.get(1) == Some(&wire::VERSION) {
                assert_eq!(&again, input, "decoded {message:?} re-encodes differently");
            } else {
                assert_eq!(wire::decode(&again).unwrap(), message);
            }
            true
        }
        Err(_) => false,
    }
}

#[test]
fn random_messages_round_trip() {
    let mut rng = Rng(0x5EED_0001);
    for _ in 0..20_000 {
        let message = random_message(&mut rng);
        let bytes = wire::encode(&message).unwrap();
        assert_eq!(wire::decode(&bytes).unwrap(), message);
    }
}

#[test]
fn mutated_messages_never_panic() {
    let mut rng = Rng(0x5EED_0002);
    let (mut decoded, mut refused) = (0_u32, 0_u32);
    for _ in 0..60_000 {
        let mut bytes = wire::encode(&random_message(&mut rng)).unwrap().to_vec();
        for _ in 0..1 + rng.below(4) {
            match rng.below(5) {
                // Flip a byte, often in the header where the decisions are.
                0 | 1 => {
                    let at = if rng.below(2) == 0 {
                        rng.below(bytes.len().min(HEADER_LEN + 4))
                    } else {
                        rng.below(bytes.len())
                    };
                    bytes[at] = rng.byte();
                }
                2 => bytes.truncate(rng.below(bytes.len() + 1)),
                3 => {
                    let len = rng.below(16);
                    bytes.extend(rng.bytes(len));
                }
                _ => {
                    if !bytes.is_empty() {
                        bytes.remove(rng.below(bytes.len()));
                    }
                }
            }
            if bytes.is_empty() {
                break;
            }
        }
        if check(&Bytes::from(bytes)) {
            decoded += 1;
        } else {
            refused += 1;
        }
    }
    // Both outcomes must occur, or the mutations are not exercising the decoder.
    assert!(
        decoded > 1_000 && refused > 10_000,
        "{decoded} decoded, {refused} refused"
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x5EED_0003);
    for round in 0..40_000 {
        let len = rng.below(128);
        let mut bytes = rng.bytes(len);
        // Half the inputs get a valid magic and version, so the decoder goes past the first check.
        if round % 2 == 0 && bytes.len() >= 2 {
            bytes[0] = wire::MAGIC;
            bytes[1] = wire::VERSION;
        }
        check(&Bytes::from(bytes));
    }
}

#[test]
fn huge_lengths_and_oversized_input_are_refused() {
    // A key count and a value length far larger than the input.
    let message = BusMessage {
        origin: InstanceId(1),
        sequence: 1,
        sender_lost_messages: false,
        sent_at_ms: 0,
        invalidation: Invalidation::Update {
            key: "k".into(),
            value: Bytes::from_static(b"v"),
            ttl: Duration::from_secs(1),
        },
    };
    let mut bytes = wire::encode(&message).unwrap().to_vec();
    let value_len_at = bytes.len() - 1 - 4;
    bytes[value_len_at..value_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        wire::decode(&Bytes::from(bytes)),
        Err(WireError::Truncated("value"))
    );

    let oversized = Bytes::from(vec![0_u8; MAX_MESSAGE_LEN + 1]);
    assert_eq!(
        wire::decode(&oversized),
        Err(WireError::TooLong(MAX_MESSAGE_LEN + 1))
    );
}
