//! How an entry is laid out in a Redis string: a small frame carrying the absolute expiry ahead of
//! the value, so a read gets value and expiry from one `GET` — one command, not GET + PTTL.
//!
//! ```text
//! [ 0xC7 'T' 'C' 0x01 ][ expires_at: u64 LE, Unix milliseconds ][ value ... ]
//! ```
//!
//! The expiry is wall-clock time because other processes read it. Redis still expires the key
//! itself (`SET ... PX`), so clock skew between instances can only make an instance think an entry
//! lives up to the skew longer or shorter than it does, never make Redis serve it late.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use tiercache_core::Entry;

const MAGIC: [u8; 4] = [0xC7, b'T', b'C', 0x01];
const FRAME_LEN: usize = MAGIC.len() + 8;

/// The Redis value for `entry`.
pub(crate) fn encode(entry: &Entry) -> Bytes {
    let mut out = BytesMut::with_capacity(FRAME_LEN + entry.value.len());
    out.put_slice(&MAGIC);
    out.put_u64_le(to_unix_ms(entry.expires_at));
    out.put_slice(&entry.value);
    out.freeze()
}

/// The entry in a framed Redis value (sharing its bytes), or `None` when the value was not
/// written by a tiercache tier.
pub(crate) fn decode(stored: &Bytes) -> Option<Entry> {
    let (frame, _) = stored.split_first_chunk::<FRAME_LEN>()?;
    let (magic, expiry) = frame.split_first_chunk::<4>()?;
    if *magic != MAGIC {
        return None;
    }
    let expiry: [u8; 8] = expiry.try_into().ok()?;
    let expires_at = from_unix_ms(u64::from_le_bytes(expiry));
    Some(Entry::expiring_at(stored.slice(FRAME_LEN..), expires_at))
}

fn to_unix_ms(at: Instant) -> u64 {
    let now_wall = SystemTime::now();
    let wall = match at.checked_duration_since(Instant::now()) {
        Some(ahead) => now_wall + ahead,
        None => now_wall,
    };
    let millis = wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(millis).unwrap_or(u64::MAX)
}

fn from_unix_ms(millis: u64) -> Instant {
    let wall = UNIX_EPOCH + Duration::from_millis(millis);
    let now = Instant::now();
    match wall.duration_since(SystemTime::now()) {
        Ok(ahead) => now.checked_add(ahead).unwrap_or(now),
        Err(_past) => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_value_and_expiry() {
        let entry = Entry::new(&b"payload"[..], Duration::from_secs(90));
        let back = decode(&encode(&entry)).unwrap();
        assert_eq!(back.value, entry.value);
        let drift = back.expires_at.max(entry.expires_at) - back.expires_at.min(entry.expires_at);
        assert!(drift <= Duration::from_millis(2), "{drift:?}");
    }

    #[test]
    fn foreign_or_short_values_are_not_entries() {
        for foreign in [
            &b""[..],
            b"plain text written by someone else",
            b"\xC7TC\x01short",
        ] {
            assert!(
                decode(&Bytes::copy_from_slice(foreign)).is_none(),
                "{foreign:?}"
            );
        }
    }

    #[test]
    fn an_expiry_in_the_past_reads_as_expired() {
        let mut framed = BytesMut::new();
        framed.put_slice(&MAGIC);
        framed.put_u64_le(1_000);
        let entry = decode(&framed.freeze()).unwrap();
        assert!(entry.is_expired());
        assert!(entry.value.is_empty());
    }
}
