//! Leases on Redis: three small Lua scripts, each one round trip and atomic on the server, each
//! touching one key (so a cluster routes it to the key's own slot).
//!
//! The lease lives *in the key itself*, as memcache keeps it with the item: a key that is
//! absent gets a lease frame (`0xC7 'T' 'C' 'L'`, its expiry, a random nonce) with the lease's
//! TTL. Reads of that key are misses. Every write of the key (`SET`, a batch, another instance's
//! `set`) replaces the frame and every removal (`UNLINK`, prefix and clear) deletes it, so
//! revocation costs nothing extra: no command of the write path changes. A fill stores only
//! while the key still holds its own frame. A key that already holds a value (stale, unreadable
//! or in its fail-safe window) is leased by its content: the fill stores only while the key still
//! holds exactly the bytes that were read (compared by SHA-1 on the server, so the value does not
//! travel twice).

use std::{
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{BufMut, Bytes, BytesMut};
use fred::{
    interfaces::LuaInterface,
    prelude::FredResult,
    types::{Key, Value},
};
use tiercache_core::{Lease, LeaseRead};

/// The first bytes of a lease frame stored in place of a value.
pub(crate) const LEASE_MAGIC: [u8; 4] = [0xC7, b'T', b'C', b'L'];

/// Whether stored bytes are a lease frame (a miss for readers).
pub(crate) fn is_lease(stored: &[u8]) -> bool {
    stored.starts_with(&LEASE_MAGIC)
}

/// A lease token on a key that was absent: `L` + the lease frame stored in the key.
const GRANTED: u8 = b'L';
/// A lease token on a key that held a value: `D` + the SHA-1 (hex) of the stored bytes.
const DIGEST: u8 = b'D';

pub(crate) struct Script {
    source: &'static str,
    sha1: &'static str,
}

/// Takes a lease on an absent key, or reports a held lease, or returns the stored bytes and
/// their digest.
pub(crate) const LEASE: Script = Script {
    source: include_str!("lua/lease.lua"),
    sha1: "51fae921d41759d4f32ce982e6d2b3e5493b73bb",
};

/// Stores a value while the key holds exactly what the lease token proves.
pub(crate) const FILL: Script = Script {
    source: include_str!("lua/fill.lua"),
    sha1: "e5d3ca6445ecf5ff404ba598d7a86ba6f3765dd7",
};

/// Deletes the key while it holds this lease frame.
pub(crate) const RELEASE: Script = Script {
    source: include_str!("lua/release.lua"),
    sha1: "7eeb9eb3b72e6836db4af01eacca253a701fa6ed",
};

impl Script {
    /// Runs the script by its SHA-1, sending the source once when the server does not know it
    /// (first use, or a server restarted or failed over, which forgets every script).
    pub(crate) async fn run<C: LuaInterface + Sync>(
        &self,
        client: &C,
        key: String,
        args: Vec<Value>,
    ) -> FredResult<Value> {
        let keys = vec![Key::from(key)];
        match client
            .evalsha::<Value, _, _, _>(self.sha1, keys.clone(), args.clone())
            .await
        {
            Err(err) if err.details().starts_with("NOSCRIPT") => {
                client.eval(self.source, keys, args).await
            }
            result => result,
        }
    }

    #[cfg(test)]
    pub(crate) fn parts(&self) -> (&'static str, &'static str) {
        (self.source, self.sha1)
    }
}

/// A new lease frame for a lease of `ttl`: magic, expiry (Unix ms), a 16-byte nonce.
pub(crate) fn new_frame(ttl: Duration) -> Bytes {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    // NOTE: RandomState is seeded randomly per process; two hashes of a sequence number give a
    // nonce no other process (or earlier lease of this one) can guess or repeat.
    let state = RandomState::new();
    let expires_ms = SystemTime::now()
        .checked_add(ttl)
        .unwrap_or_else(SystemTime::now)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    let mut frame = BytesMut::with_capacity(LEASE_MAGIC.len() + 24);
    frame.put_slice(&LEASE_MAGIC);
    frame.put_u64_le(expires_ms);
    frame.put_u64_le(state.hash_one(sequence));
    frame.put_u64_le(state.hash_one(!sequence));
    frame.freeze()
}

/// Milliseconds for a lease's `PX`: at least 1, at most a day.
pub(crate) fn lease_millis(ttl: Duration) -> u64 {
    let millis = ttl.min(Duration::from_secs(86_400)).as_millis();
    u64::try_from(millis).unwrap_or(1).max(1)
}

fn token(kind: u8, payload: &[u8]) -> Lease {
    let mut token = BytesMut::with_capacity(1 + payload.len());
    token.put_u8(kind);
    token.put_slice(payload);
    Lease::new(token.freeze())
}

/// A lease on the key that was absent, whose frame is `frame`.
pub(crate) fn granted(frame: &Bytes) -> Lease {
    token(GRANTED, frame)
}

/// The arguments of [`FILL`] for `lease`: its kind and proof. `None` for a token this tier did
/// not make.
pub(crate) fn fill_proof(lease: &Lease) -> Option<(Value, Value)> {
    let (kind, proof) = lease.token().split_first()?;
    if *kind != GRANTED && *kind != DIGEST {
        return None;
    }
    let kind = Value::from(Bytes::copy_from_slice(&[*kind]));
    Some((kind, Value::from(lease.token().slice(1..1 + proof.len()))))
}

/// The lease frame a granted lease stored, for [`RELEASE`]; `None` for other leases.
pub(crate) fn granted_frame(lease: &Lease) -> Option<Bytes> {
    let (kind, _) = lease.token().split_first()?;
    (*kind == GRANTED).then(|| lease.token().slice(1..))
}

/// What the [`LEASE`] script answered, before the stored bytes are unframed.
pub(crate) enum Reply {
    Granted,
    Held(Duration),
    Found { stored: Bytes, lease: Lease },
}

/// Reads the [`LEASE`] script's reply; `None` for a reply of another shape (never from this
/// script, but a server is not trusted to be right).
pub(crate) fn parse_reply(reply: Value) -> Option<Reply> {
    let Value::Array(items) = reply else {
        return None;
    };
    let mut items = items.into_iter();
    match items.next()?.as_i64()? {
        0 => Some(Reply::Granted),
        2 => {
            let pttl = items.next()?.as_i64().unwrap_or(0);
            let millis = u64::try_from(pttl).unwrap_or(0);
            Some(Reply::Held(Duration::from_millis(millis)))
        }
        1 => {
            let stored = bytes_of(items.next()?)?;
            let digest = bytes_of(items.next()?)?;
            Some(Reply::Found {
                stored,
                lease: token(DIGEST, &digest),
            })
        }
        _ => None,
    }
}

fn bytes_of(value: Value) -> Option<Bytes> {
    match value {
        Value::Bytes(bytes) => Some(bytes),
        Value::String(text) => Some(Bytes::copy_from_slice(text.as_bytes())),
        _ => None,
    }
}

/// `LeaseRead` for a reply whose stored bytes unframed to `entry` (`None`: expired, foreign
/// bytes without a TTL, or a lease frame that was not ours: all read as absent, and the content
/// lease still lets a fill replace them).
pub(crate) fn found(entry: Option<tiercache_core::Entry>, lease: Lease) -> LeaseRead {
    match entry {
        Some(entry) => LeaseRead::Found(entry, lease),
        None => LeaseRead::Granted(lease),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_leases_and_unique() {
        let (a, b) = (
            new_frame(Duration::from_secs(1)),
            new_frame(Duration::from_secs(1)),
        );
        assert!(is_lease(&a) && is_lease(&b));
        assert_ne!(a, b, "every lease has its own nonce");
        assert!(!is_lease(b"\xC7TC\x01 a value frame"));
    }

    #[test]
    fn tokens_round_trip_and_foreign_tokens_are_refused() {
        let frame = new_frame(Duration::from_secs(1));
        let lease = granted(&frame);
        assert_eq!(granted_frame(&lease), Some(frame.clone()));
        let (_, proof) = fill_proof(&lease).unwrap();
        assert_eq!(proof.as_bytes(), Some(&frame[..]));
        assert!(fill_proof(&Lease::new(&b"Xjunk"[..])).is_none());
        assert!(fill_proof(&Lease::unguarded()).is_none());
    }

    #[test]
    fn malformed_replies_are_not_trusted() {
        assert!(parse_reply(Value::Null).is_none());
        assert!(parse_reply(Value::Array(vec![Value::Integer(9)])).is_none());
        assert!(parse_reply(Value::Array(vec![Value::Integer(1)])).is_none());
        assert!(matches!(
            parse_reply(Value::Array(vec![Value::Integer(2), Value::Integer(-2)])),
            Some(Reply::Held(d)) if d.is_zero()
        ));
    }

    /// The SHA-1s the scripts run by are theirs: otherwise every call would pay a NOSCRIPT
    /// round trip before the EVAL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scripts_are_run_by_their_own_sha1() {
        use fred::interfaces::{ClientLike, LuaInterface};
        let server = tiercache_testkit::RedisServer::start().unwrap();
        let config = fred::types::config::Config::from_url(&server.url()).unwrap();
        let client = fred::clients::Client::new(config, None, None, None);
        client.init().await.unwrap();
        for script in [LEASE, FILL, RELEASE] {
            let (source, sha1) = script.parts();
            let loaded: String = client.script_load(source).await.unwrap();
            assert_eq!(loaded, sha1);
        }
    }

    #[test]
    fn lease_ttls_are_clamped() {
        assert_eq!(lease_millis(Duration::ZERO), 1);
        assert_eq!(lease_millis(Duration::MAX), 86_400_000);
    }
}
