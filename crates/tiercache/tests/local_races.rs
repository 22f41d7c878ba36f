//! Randomized races on one instance: a writer that sets and invalidates a key while readers read
//! it, every tier call delayed by a random jitter. After each write or invalidation returns, the
//! writer's own read, and every tier a reader could reach (L1, the in-process L2, the shared L3),
//! must hold the new state: read-your-writes, in every tier, whatever the interleaving.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tiercache::{
    Cache, CacheStrategy, Entry, EntryOptions, MemoryTier, MokaTier, Result, Tier, async_trait,
    core::{Decoded, Envelope},
};
use tiercache_testkit::MapTier;

/// A tier that delays every call by 0–`max_micros` µs, drawn from a seeded generator.
#[derive(Debug)]
struct Jitter<T> {
    inner: T,
    state: AtomicU64,
    max_micros: u64,
}

impl<T: Tier> Jitter<T> {
    fn new(inner: T, seed: u64, max_micros: u64) -> Self {
        Self {
            inner,
            state: AtomicU64::new(seed | 1),
            max_micros,
        }
    }

    async fn pause(&self) {
        // xorshift64: a fresh draw per call; races between draws only mix the sequence more.
        let mut x = self.state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.store(x, Ordering::Relaxed);
        let micros = x % (self.max_micros + 1);
        if micros > self.max_micros / 2 {
            tokio::time::sleep(Duration::from_micros(micros)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

#[async_trait]
impl<T: Tier> Tier for Jitter<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.pause().await;
        let found = self.inner.get(key).await;
        self.pause().await;
        found
    }
    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        self.pause().await;
        self.inner.set(key, entry).await
    }
    async fn remove(&self, key: &str) -> Result<()> {
        self.pause().await;
        self.inner.remove(key).await
    }
    async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
        self.pause().await;
        self.inner.remove_prefix(prefix).await
    }
    async fn clear(&self) -> Result<()> {
        self.pause().await;
        self.inner.clear().await
    }
}

/// What a tier holds under `key`, decoded.
async fn stored(tier: &dyn Tier, key: &str) -> Option<u64> {
    let entry = tier.get(key).await.unwrap()?;
    match Envelope::new(tiercache::JsonCodec, 0).decode::<u64>(&entry.value) {
        Ok(Decoded::Value(value)) => Some(value),
        _ => None,
    }
}

/// One round: readers hammer `k` while the writer sets 1..=writes, invalidating after every
/// third set; after each call returns, every tier must agree with it.
async fn round(seed: u64, writes: u64) {
    let l2 = Arc::new(MokaTier::new(100));
    let l3 = Arc::new(MapTier::new("shared"));
    let cache = Cache::builder()
        .namespace("race")
        .memory(MemoryTier::new(100))
        .tier(Jitter::new(Arc::clone(&l2), seed, 200))
        .tier(Jitter::new(Arc::clone(&l3), seed.rotate_left(17), 200))
        .build()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (cache, stop) = (cache.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    cache.get::<u64>("k").await.unwrap();
                    // An L1 hit never yields: let the writer run.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    for version in 1..=writes {
        cache
            .set("k", &version, CacheStrategy::LongTerm)
            .await
            .unwrap();
        let expected = if version.is_multiple_of(3) {
            cache.invalidate("k").await.unwrap();
            None
        } else {
            Some(version)
        };
        tokio::task::yield_now().await;
        let seen = cache.get::<u64>("k").await.unwrap();
        assert_eq!(
            seen, expected,
            "seed {seed}: a read after the write returned"
        );
        for (tier, name) in [(&*l2 as &dyn Tier, "L2 (in process)"), (&*l3, "L3")] {
            let held = stored(tier, "race:k").await;
            assert!(
                held.is_none() || held == expected,
                "seed {seed}: {name} holds {held:?} after the write of {expected:?} returned"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    // Once the readers are gone, nothing older comes back either.
    let last = if writes.is_multiple_of(3) {
        None
    } else {
        Some(writes)
    };
    assert_eq!(cache.get::<u64>("k").await.unwrap(), last, "seed {seed}");
}

/// A write or invalidation on this instance wins over every read racing it, in every tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_writes_win_over_racing_reads_in_every_tier() {
    let base: u64 = std::env::var("TIERCACHE_RACE_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5eed_c0ff_ee00_0001);
    for round_index in 0..60 {
        round(base.wrapping_add(round_index * 0x9e37_79b9), 12).await;
    }
}

/// A tag or prefix invalidation on this instance removes what this instance wrote just before,
/// while other writes keep L1's housekeeping busy. Moka's own predicate removal let about one
/// such entry in a few hundred survive in L1 and be served after the invalidation returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_or_prefix_invalidation_removes_what_was_just_written() {
    let cache = Cache::builder()
        .namespace("race")
        .memory(MemoryTier::new(100_000))
        .tier(MapTier::new("shared"))
        .build()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (cache, stop) = (cache.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("churn:{}", i % 400);
                cache.set(&key, &i, CacheStrategy::LongTerm).await.unwrap();
                i += 1;
            }
        })
    };
    let mut survived = Vec::new();
    for round in 0..1_500_u32 {
        let tag = format!("tag:{round}");
        let tagged = format!("tagged:{round}");
        let prefixed = format!("prefixed:{round}:k");
        let options = EntryOptions::new(CacheStrategy::LongTerm).tags([tag.as_str()]);
        cache.set(&tagged, &round, options).await.unwrap();
        cache
            .set(&prefixed, &round, CacheStrategy::LongTerm)
            .await
            .unwrap();
        cache.invalidate_tag(&tag).await.unwrap();
        cache
            .invalidate_prefix(&format!("prefixed:{round}:"))
            .await
            .unwrap();
        // Give L1's housekeeping time to finish with the removals, as a read moments later would.
        tokio::time::sleep(Duration::from_micros(200)).await;
        for key in [&tagged, &prefixed] {
            if cache.get::<u32>(key).await.unwrap().is_some() {
                survived.push(key.clone());
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    churn.await.unwrap();
    assert!(
        survived.is_empty(),
        "{} entries were served after their invalidation returned: {:?}",
        survived.len(),
        &survived[..survived.len().min(5)]
    );
}
