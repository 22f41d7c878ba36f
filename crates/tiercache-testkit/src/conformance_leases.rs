//! The lease rules, for tiers that say they [support leases](Tier::supports_leases): a lease on
//! an absent key is exclusive, reads as a miss, and is revoked by every write and removal of the
//! key; a fill stores only under a valid lease.
#![expect(
    clippy::panic,
    reason = "the suite reports a failed behaviour by panicking, as assert! does"
)]

use std::time::Duration;

use bytes::Bytes;
use tiercache_core::{Entry, Filled, Lease, LeaseRead, Tier};

const LEASE_TTL: Duration = Duration::from_secs(10);

/// Runs every lease check on keys under `prefix`.
pub(crate) async fn run(tier: &dyn Tier, prefix: &str) {
    let key = |name: &str| format!("{prefix}lease:{name}");
    a_lease_is_exclusive_and_reads_as_a_miss(tier, &key("exclusive")).await;
    a_fill_under_a_valid_lease_stores_once(tier, &key("fill")).await;
    a_lease_on_a_value_guards_that_value(tier, &key("value")).await;
    every_write_and_removal_revokes(tier, prefix).await;
    a_released_lease_frees_the_key(tier, &key("release")).await;
    a_lease_ends_with_its_ttl(tier, &key("ttl")).await;
}

fn minute(value: &'static [u8]) -> Entry {
    Entry::new(Bytes::from_static(value), Duration::from_secs(60))
}

async fn lease(tier: &dyn Tier, key: &str, ttl: Duration) -> LeaseRead {
    match tier.lease(key, ttl).await {
        Ok(read) => read,
        Err(err) => panic!("[{}] lease({key:?}) failed: {err}", tier.name()),
    }
}

async fn granted(tier: &dyn Tier, key: &str) -> Lease {
    match lease(tier, key, LEASE_TTL).await {
        LeaseRead::Granted(lease) => lease,
        other => panic!(
            "[{}] lease({key:?}) on an absent key: {other:?}",
            tier.name()
        ),
    }
}

async fn fill(tier: &dyn Tier, key: &str, value: &'static [u8], lease: &Lease) -> Filled {
    match tier.fill(key, minute(value), lease).await {
        Ok(filled) => filled,
        Err(err) => panic!("[{}] fill({key:?}) failed: {err}", tier.name()),
    }
}

async fn value(tier: &dyn Tier, key: &str) -> Option<Bytes> {
    match tier.get(key).await {
        Ok(found) => found.map(|entry| entry.value),
        Err(err) => panic!("[{}] get({key:?}) failed: {err}", tier.name()),
    }
}

async fn a_lease_is_exclusive_and_reads_as_a_miss(tier: &dyn Tier, key: &str) {
    let _lease = granted(tier, key).await;
    match lease(tier, key, LEASE_TTL).await {
        LeaseRead::Held(left) => assert!(
            left <= LEASE_TTL,
            "[{}] a held lease has at most its TTL left: {left:?}",
            tier.name()
        ),
        other => panic!(
            "[{}] a second lease on a leased key: {other:?}",
            tier.name()
        ),
    }
    assert_eq!(
        value(tier, key).await,
        None,
        "[{}] a leased key reads as a miss",
        tier.name()
    );
    let many = tier.get_many(&[key]).await;
    assert!(
        matches!(many.as_deref(), Ok([None])),
        "[{}] a leased key reads as a miss in a batch: {many:?}",
        tier.name()
    );
}

async fn a_fill_under_a_valid_lease_stores_once(tier: &dyn Tier, key: &str) {
    let lease = granted(tier, key).await;
    assert_eq!(fill(tier, key, b"loaded", &lease).await, Filled::Stored);
    assert_eq!(
        value(tier, key).await.as_deref(),
        Some(&b"loaded"[..]),
        "[{}] a fill under its lease is stored",
        tier.name()
    );
    assert_eq!(
        fill(tier, key, b"again", &lease).await,
        Filled::Revoked,
        "[{}] a lease is used up by its fill",
        tier.name()
    );
    assert_eq!(value(tier, key).await.as_deref(), Some(&b"loaded"[..]));
}

async fn a_lease_on_a_value_guards_that_value(tier: &dyn Tier, key: &str) {
    if let Err(err) = tier.set(key, minute(b"old")).await {
        panic!("[{}] set failed: {err}", tier.name());
    }
    let LeaseRead::Found(entry, first) = lease(tier, key, LEASE_TTL).await else {
        panic!("[{}] a lease on a key with a value finds it", tier.name());
    };
    assert_eq!(&entry.value[..], b"old");
    assert_eq!(
        fill(tier, key, b"reloaded", &first).await,
        Filled::Stored,
        "[{}] a fill replaces the value its lease read",
        tier.name()
    );
    let LeaseRead::Found(_, second) = lease(tier, key, LEASE_TTL).await else {
        panic!("[{}] the reloaded value is found", tier.name());
    };
    if let Err(err) = tier.set(key, minute(b"newer")).await {
        panic!("[{}] set failed: {err}", tier.name());
    }
    assert_eq!(
        fill(tier, key, b"stale", &second).await,
        Filled::Revoked,
        "[{}] a write after the lease's read revokes it",
        tier.name()
    );
    assert_eq!(value(tier, key).await.as_deref(), Some(&b"newer"[..]));
}

/// Each write or removal of the key, made after the lease: the fill is refused and the write's
/// outcome stays.
async fn every_write_and_removal_revokes(tier: &dyn Tier, prefix: &str) {
    let name = tier.name().to_owned();
    let key = format!("{prefix}lease:revoke:set");
    let lease = granted(tier, &key).await;
    tier.set(&key, minute(b"written")).await.ok();
    assert_eq!(
        fill(tier, &key, b"stale", &lease).await,
        Filled::Revoked,
        "[{name}] set"
    );
    assert_eq!(value(tier, &key).await.as_deref(), Some(&b"written"[..]));

    let key = format!("{prefix}lease:revoke:set_many");
    let lease = granted(tier, &key).await;
    tier.set_many(vec![(key.clone(), minute(b"written"))])
        .await
        .ok();
    assert_eq!(
        fill(tier, &key, b"stale", &lease).await,
        Filled::Revoked,
        "[{name}] set_many"
    );

    let key = format!("{prefix}lease:revoke:remove");
    let lease = granted(tier, &key).await;
    tier.remove(&key).await.ok();
    assert_eq!(
        fill(tier, &key, b"stale", &lease).await,
        Filled::Revoked,
        "[{name}] remove"
    );
    assert_eq!(value(tier, &key).await, None);

    let key = format!("{prefix}lease:revoke:remove_many");
    let lease = granted(tier, &key).await;
    tier.remove_many(&[key.as_str()]).await.ok();
    assert_eq!(
        fill(tier, &key, b"stale", &lease).await,
        Filled::Revoked,
        "[{name}] remove_many"
    );

    let key = format!("{prefix}lease:revoke:prefix:k");
    let lease = granted(tier, &key).await;
    tier.remove_prefix(&format!("{prefix}lease:revoke:prefix:"))
        .await
        .ok();
    assert_eq!(
        fill(tier, &key, b"stale", &lease).await,
        Filled::Revoked,
        "[{name}] remove_prefix"
    );
    assert_eq!(value(tier, &key).await, None);
}

async fn a_released_lease_frees_the_key(tier: &dyn Tier, key: &str) {
    let lease = granted(tier, key).await;
    if let Err(err) = tier.release(key, &lease).await {
        panic!("[{}] release failed: {err}", tier.name());
    }
    let again = granted(tier, key).await;
    assert_eq!(
        fill(tier, key, b"stale", &lease).await,
        Filled::Revoked,
        "[{}] a released lease does not fill",
        tier.name()
    );
    // Releasing a lease that is not the current one leaves the current one alone.
    tier.release(key, &lease).await.ok();
    assert_eq!(fill(tier, key, b"loaded", &again).await, Filled::Stored);
}

async fn a_lease_ends_with_its_ttl(tier: &dyn Tier, key: &str) {
    let short = Duration::from_millis(100);
    let LeaseRead::Granted(first) = lease(tier, key, short).await else {
        panic!("[{}] lease on an absent key", tier.name());
    };
    tokio::time::sleep(short * 3).await;
    let second = granted(tier, key).await;
    assert_eq!(
        fill(tier, key, b"late", &first).await,
        Filled::Revoked,
        "[{}] an expired lease does not fill",
        tier.name()
    );
    assert_eq!(fill(tier, key, b"loaded", &second).await, Filled::Stored);
}
