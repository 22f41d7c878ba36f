//! The behaviour every [`Tier`] must have, as one call.
#![expect(
    clippy::panic,
    reason = "the suite reports a failed behaviour by panicking, as assert! does"
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use tiercache_core::{Entry, Tier};

/// How far a tier's reported expiry may drift from the one it was given: shared tiers store a
/// relative TTL with millisecond precision and pay a round trip on the way back.
const EXPIRY_TOLERANCE: Duration = Duration::from_millis(250);

/// Runs every check of the conformance suite against `tier`, panicking with the name of the
/// first behaviour that does not hold.
///
/// Every key the suite writes starts with `prefix`, so it can share a server with other tests;
/// the last check calls [`Tier::clear`], so give the suite a tier (or namespace) of its own.
/// A tier that [supports leases](Tier::supports_leases) is also held to the lease rules: a
/// lease on an absent key is exclusive and reads as a miss, every write and removal (`set`,
/// `set_many`, `remove`, `remove_many`, `remove_prefix`, `clear`) revokes it, a fill stores only
/// under a valid lease, and a lease ends with its TTL or its release.
///
/// See the crate documentation for a complete example.
pub async fn run(tier: &dyn Tier, prefix: &str) {
    let key = |name: &str| format!("{prefix}{name}");
    missing_key_is_none(tier, &key("missing")).await;
    set_then_get_round_trips(tier, &key("plain")).await;
    set_replaces(tier, &key("replace")).await;
    remove_removes(tier, &key("remove")).await;
    expiry_is_kept_and_honoured(tier, &key("expiry")).await;
    expired_entry_is_not_stored(tier, &key("expired")).await;
    odd_values_round_trip(tier, &key("odd")).await;
    batch_forms_agree_with_single_forms(tier, prefix).await;
    remove_prefix_is_literal(tier, prefix).await;
    health_is_ok(tier).await;
    if tier.supports_leases() {
        crate::conformance_leases::run(tier, prefix).await;
        clear_revokes_leases(tier, &key("clear-lease")).await;
    }
    clear_removes_everything(tier, &key("clear")).await;
}

fn minute(value: impl Into<Bytes>) -> Entry {
    Entry::new(value, Duration::from_secs(60))
}

async fn get(tier: &dyn Tier, key: &str) -> Option<Entry> {
    match tier.get(key).await {
        Ok(found) => found,
        Err(err) => panic!("[{}] get({key:?}) failed: {err}", tier.name()),
    }
}

async fn set(tier: &dyn Tier, key: &str, entry: Entry) {
    if let Err(err) = tier.set(key, entry).await {
        panic!("[{}] set({key:?}) failed: {err}", tier.name());
    }
}

async fn value(tier: &dyn Tier, key: &str) -> Option<Bytes> {
    get(tier, key).await.map(|entry| entry.value)
}

async fn missing_key_is_none(tier: &dyn Tier, key: &str) {
    assert_eq!(
        get(tier, key).await,
        None,
        "[{}] a missing key must read as None",
        tier.name()
    );
    tier.remove(key).await.unwrap_or_else(|err| {
        panic!(
            "[{}] removing an absent key must not fail: {err}",
            tier.name()
        )
    });
}

async fn set_then_get_round_trips(tier: &dyn Tier, key: &str) {
    let entry = minute(&b"hello"[..]);
    set(tier, key, entry.clone()).await;
    let found = get(tier, key).await;
    let Some(found) = found else {
        panic!("[{}] a value just set must be found", tier.name());
    };
    assert_eq!(
        found.value,
        entry.value,
        "[{}] bytes must round-trip",
        tier.name()
    );
}

async fn set_replaces(tier: &dyn Tier, key: &str) {
    set(tier, key, minute(&b"one"[..])).await;
    set(tier, key, minute(&b"two"[..])).await;
    assert_eq!(
        value(tier, key).await.as_deref(),
        Some(&b"two"[..]),
        "[{}] a second set must replace the first",
        tier.name()
    );
}

async fn remove_removes(tier: &dyn Tier, key: &str) {
    set(tier, key, minute(&b"v"[..])).await;
    tier.remove(key)
        .await
        .unwrap_or_else(|err| panic!("[{}] remove failed: {err}", tier.name()));
    assert_eq!(
        get(tier, key).await,
        None,
        "[{}] a removed key must read as None",
        tier.name()
    );
}

async fn expiry_is_kept_and_honoured(tier: &dyn Tier, key: &str) {
    let long = Entry::new(&b"long"[..], Duration::from_secs(90));
    set(tier, key, long.clone()).await;
    let Some(found) = get(tier, key).await else {
        panic!("[{}] a value just set must be found", tier.name());
    };
    let drift = if found.expires_at > long.expires_at {
        found.expires_at - long.expires_at
    } else {
        long.expires_at - found.expires_at
    };
    assert!(
        drift <= EXPIRY_TOLERANCE,
        "[{}] get must return the expiry it was given (drift {drift:?}); promotion relies on it",
        tier.name()
    );

    let short_key = format!("{key}:short");
    let short_ttl = Duration::from_millis(200);
    let set_at = Instant::now();
    set(tier, &short_key, Entry::new(&b"short"[..], short_ttl)).await;
    assert!(
        get(tier, &short_key).await.is_some(),
        "[{}] a live entry must be found",
        tier.name()
    );
    let deadline = set_at + Duration::from_secs(5);
    loop {
        let asked_at = Instant::now();
        if get(tier, &short_key).await.is_none() {
            assert!(
                asked_at + Duration::from_millis(20) >= set_at + short_ttl,
                "[{}] an entry must not vanish before it expires",
                tier.name()
            );
            break;
        }
        assert!(
            asked_at < deadline,
            "[{}] an entry must not be returned after it expires",
            tier.name()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn expired_entry_is_not_stored(tier: &dyn Tier, key: &str) {
    set(tier, key, minute(&b"old"[..])).await;
    set(tier, key, Entry::expiring_at(&b"dead"[..], Instant::now())).await;
    assert_eq!(
        get(tier, key).await,
        None,
        "[{}] setting an already-expired entry must leave the key absent",
        tier.name()
    );
}

async fn odd_values_round_trip(tier: &dyn Tier, key: &str) {
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let large: Vec<u8> = (0..4 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    for (name, bytes) in [
        ("empty", Vec::new()),
        ("binary", all_bytes),
        ("large", large),
    ] {
        let odd_key = format!("{key}:{name}");
        set(tier, &odd_key, minute(bytes.clone())).await;
        assert_eq!(
            value(tier, &odd_key).await.as_deref(),
            Some(&bytes[..]),
            "[{}] the {name} value must round-trip byte for byte",
            tier.name()
        );
    }
}

async fn batch_forms_agree_with_single_forms(tier: &dyn Tier, prefix: &str) {
    let keys: Vec<String> = (0..5).map(|i| format!("{prefix}batch:{i}")).collect();
    let pairs = keys[..4]
        .iter()
        .map(|key| (key.clone(), minute(Bytes::from(key.clone()))))
        .collect();
    tier.set_many(pairs)
        .await
        .unwrap_or_else(|err| panic!("[{}] set_many: {err}", tier.name()));

    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let found = tier
        .get_many(&refs)
        .await
        .unwrap_or_else(|err| panic!("[{}] get_many: {err}", tier.name()));
    assert_eq!(
        found.len(),
        refs.len(),
        "[{}] get_many must answer every key",
        tier.name()
    );
    for (key, entry) in keys.iter().zip(&found).take(4) {
        assert_eq!(
            entry.as_ref().map(|e| &e.value[..]),
            Some(key.as_bytes()),
            "[{}] get_many must answer in key order",
            tier.name()
        );
    }
    assert_eq!(
        found[4],
        None,
        "[{}] get_many must report a miss as None",
        tier.name()
    );

    tier.remove_many(&refs[..2])
        .await
        .unwrap_or_else(|err| panic!("[{}] remove_many: {err}", tier.name()));
    let after = tier
        .get_many(&refs)
        .await
        .unwrap_or_else(|err| panic!("[{}] get_many: {err}", tier.name()));
    let present: Vec<bool> = after.iter().map(Option::is_some).collect();
    assert_eq!(
        present,
        [false, false, true, true, false],
        "[{}] remove_many",
        tier.name()
    );
}

async fn remove_prefix_is_literal(tier: &dyn Tier, prefix: &str) {
    let p = |rest: &str| format!("{prefix}rp:{rest}");
    let doomed = [p("user:1"), p("user:2"), p("user:"), p("g*[?]\\:1")];
    let spared = [
        p("users:1"),
        p("use:1"),
        p("order:1"),
        p("gX[?]\\:1"),
        p("g*?]\\:1"),
    ];
    for key in doomed.iter().chain(&spared) {
        set(tier, key, minute(&b"v"[..])).await;
    }
    for removal in [p("user:"), p("g*[?]\\")] {
        tier.remove_prefix(&removal)
            .await
            .unwrap_or_else(|err| panic!("[{}] remove_prefix: {err}", tier.name()));
    }
    for key in &doomed {
        assert_eq!(
            get(tier, key).await,
            None,
            "[{}] remove_prefix must remove {key:?}",
            tier.name()
        );
    }
    for key in &spared {
        assert!(
            get(tier, key).await.is_some(),
            "[{}] remove_prefix must treat the prefix literally and spare {key:?}",
            tier.name()
        );
    }
}

async fn health_is_ok(tier: &dyn Tier) {
    if let Err(err) = tier.health().await {
        panic!(
            "[{}] a working tier must report healthy: {err}",
            tier.name()
        );
    }
}

async fn clear_removes_everything(tier: &dyn Tier, key: &str) {
    set(tier, key, minute(&b"v"[..])).await;
    tier.clear()
        .await
        .unwrap_or_else(|err| panic!("[{}] clear failed: {err}", tier.name()));
    assert_eq!(
        get(tier, key).await,
        None,
        "[{}] clear must remove every entry",
        tier.name()
    );
}

async fn clear_revokes_leases(tier: &dyn Tier, key: &str) {
    let lease = match tier.lease(key, Duration::from_secs(10)).await {
        Ok(tiercache_core::LeaseRead::Granted(lease)) => lease,
        other => panic!(
            "[{}] lease({key:?}) on an absent key: {other:?}",
            tier.name()
        ),
    };
    if let Err(err) = tier.clear().await {
        panic!("[{}] clear failed: {err}", tier.name());
    }
    let filled = tier.fill(key, minute("stale"), &lease).await;
    assert!(
        matches!(filled, Ok(tiercache_core::Filled::Revoked)),
        "[{}] clear revokes leases: {filled:?}",
        tier.name()
    );
}
