//! The typed in-process tier: holds decoded values so a hit costs a lookup, not a decode.

use std::{
    any::Any,
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use tiercache_core::Result;

use crate::{
    config::{MemoryConfig, build_cache},
    expiry::ExpiresAt,
};

/// A value in the typed tier: a shared, already-decoded object (or a cached "not found") with its
/// absolute expiry.
///
/// Cloning is one reference-count increment.
#[derive(Clone)]
pub struct MemoryEntry {
    value: Option<Arc<dyn Any + Send + Sync>>,
    expires_at: Instant,
    weight: u32,
    /// Milliseconds before `expires_at` when the entry stops being served as it is (0: at
    /// expiry). Relative and small, so an entry without deadlines pays 8 bytes, not two instants.
    serve_ms_before_expiry: u32,
    /// Milliseconds before `expires_at` when the value stops being fresh (0: at expiry).
    fresh_ms_before_expiry: u32,
    tags: Option<Arc<[String]>>,
}

/// The longest span a deadline can lie before its entry's expiry (about 49 days).
pub const MAX_DEADLINE_LEAD: Duration = Duration::from_millis(u32::MAX as u64);

/// Milliseconds from `deadline` to `expires_at`, rounded up, so the deadline read back is never
/// later than the one given; a deadline at or after the expiry is 0 (none).
fn lead_ms(deadline: Instant, expires_at: Instant) -> u32 {
    let lead = expires_at.saturating_duration_since(deadline);
    let ms = lead.as_millis() + u128::from(!lead.subsec_nanos().is_multiple_of(1_000_000));
    u32::try_from(ms).unwrap_or(u32::MAX)
}

impl MemoryEntry {
    /// A value that expires at `expires_at`. It weighs `size_of::<T>()` bytes unless
    /// [`with_weight`](Self::with_weight) says otherwise.
    pub fn new<T: Any + Send + Sync>(value: Arc<T>, expires_at: Instant) -> Self {
        Self {
            value: Some(value),
            expires_at,
            weight: u32::try_from(size_of::<T>()).unwrap_or(u32::MAX),
            serve_ms_before_expiry: 0,
            fresh_ms_before_expiry: 0,
            tags: None,
        }
    }

    /// A cached "not found" that expires at `expires_at`.
    pub fn negative(expires_at: Instant) -> Self {
        Self {
            value: None,
            expires_at,
            weight: 0,
            serve_ms_before_expiry: 0,
            fresh_ms_before_expiry: 0,
            tags: None,
        }
    }

    /// Sets the weight used when the tier is bounded by bytes (for example, the value's encoded
    /// length).
    #[must_use]
    pub fn with_weight(mut self, bytes: usize) -> Self {
        self.weight = u32::try_from(bytes).unwrap_or(u32::MAX);
        self
    }

    /// Gives the entry deadlines before its expiry: it is served as it is until `serve_until`,
    /// and its value is fresh until `fresh_until`; between that and the expiry it is kept only
    /// as a fallback. Deadlines are kept to the millisecond, rounded earlier; a deadline more
    /// than [`MAX_DEADLINE_LEAD`] before the expiry is read back as that far before it, so give
    /// expiries no further than that past the deadlines.
    #[must_use]
    pub fn with_deadlines(mut self, serve_until: Instant, fresh_until: Instant) -> Self {
        self.serve_ms_before_expiry = lead_ms(serve_until, self.expires_at);
        self.fresh_ms_before_expiry = lead_ms(fresh_until, self.expires_at);
        self
    }

    /// Whether the entry has a deadline before its expiry (see
    /// [`with_deadlines`](Self::with_deadlines)).
    pub fn has_deadlines(&self) -> bool {
        self.serve_ms_before_expiry != 0 || self.fresh_ms_before_expiry != 0
    }

    /// Whether the entry is still served as it is at `now` (always, for an entry without
    /// deadlines: moka does not return expired entries). Computed from the time left before the
    /// expiry, so no instant before the clock's origin is ever needed.
    pub fn is_served_at(&self, now: Instant) -> bool {
        let left = self.expires_at.saturating_duration_since(now);
        left > Duration::from_millis(u64::from(self.serve_ms_before_expiry))
    }

    /// How long the value stays fresh from `now`; `None` once it is not.
    pub fn fresh_for(&self, now: Instant) -> Option<Duration> {
        let left = self.expires_at.saturating_duration_since(now);
        left.checked_sub(Duration::from_millis(u64::from(
            self.fresh_ms_before_expiry,
        )))
        .filter(|fresh| !fresh.is_zero())
    }

    /// The entry's tags (see [`with_tags`](Self::with_tags)).
    pub fn tags(&self) -> Option<&Arc<[String]>> {
        self.tags.as_ref()
    }

    /// Tags the entry, so [`MemoryTier::remove_tagged`] can find it.
    #[must_use]
    pub fn with_tags(mut self, tags: Arc<[String]>) -> Self {
        self.tags = (!tags.is_empty()).then_some(tags);
        self
    }

    /// Whether the entry carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .as_deref()
            .is_some_and(|tags| tags.iter().any(|t| t == tag))
    }

    /// When the entry expires.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Whether this is a cached "not found".
    pub fn is_negative(&self) -> bool {
        self.value.is_none()
    }

    /// The value as a `T`, or the entry back when it is negative or holds another type.
    ///
    /// # Errors
    ///
    /// The entry itself, unchanged, when it does not hold a `T`.
    pub fn downcast<T: Any + Send + Sync>(self) -> Result<Arc<T>, Self> {
        let Some(value) = self.value else {
            return Err(self);
        };
        value.downcast::<T>().map_err(|value| Self {
            value: Some(value),
            ..self
        })
    }

    /// The value as a `T`; `None` for a negative entry or a value of another type.
    pub fn into_typed<T: Any + Send + Sync>(self) -> Option<Arc<T>> {
        self.value?.downcast::<T>().ok()
    }
}

impl fmt::Debug for MemoryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryEntry")
            .field("negative", &self.is_negative())
            .field("expires_at", &self.expires_at)
            .field("weight", &self.weight)
            .finish()
    }
}

impl ExpiresAt for MemoryEntry {
    fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

/// The typed L1: decoded values in process memory, each expiring at its own instant.
///
/// A cheap `Clone` handle: clones share the same entries.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::{sync::Arc, time::{Duration, Instant}};
/// use tiercache_moka::{MemoryEntry, MemoryTier};
///
/// let l1 = MemoryTier::new(10_000);
/// let expires_at = Instant::now() + Duration::from_secs(60);
/// l1.insert("user:1", MemoryEntry::new(Arc::new(String::from("ada")), expires_at)).await;
/// let hit = l1.get("user:1").await.and_then(MemoryEntry::into_typed::<String>);
/// assert_eq!(hit.as_deref().map(String::as_str), Some("ada"));
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryTier {
    entries: crate::config::Entries<MemoryEntry>,
    name: Arc<str>,
}

impl MemoryTier {
    /// A tier of at most `max_entries` entries, named `"memory"`.
    pub fn new(max_entries: u64) -> Self {
        Self::with_config(&MemoryConfig::new(max_entries))
    }

    /// A tier bounded and named as `config` says.
    pub fn with_config(config: &MemoryConfig) -> Self {
        Self {
            entries: build_cache(config, |entry: &MemoryEntry| entry.weight),
            name: Arc::from(config.name.as_deref().unwrap_or("memory")),
        }
    }

    /// The tier's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The live entry under `key`.
    pub async fn get(&self, key: &str) -> Option<MemoryEntry> {
        self.entries.get(key).await
    }

    /// Stores `entry` under `key` until its expiry; an already-expired entry removes the key.
    pub async fn insert(&self, key: impl Into<String>, entry: MemoryEntry) {
        let key = key.into();
        if entry.expires_at <= Instant::now() {
            self.entries.invalidate(&key).await;
        } else {
            self.entries.insert(key, entry).await;
        }
    }

    /// Removes `key`.
    pub async fn remove(&self, key: &str) {
        self.entries.invalidate(key).await;
    }

    /// Removes every key that starts with `prefix` and returns how many it removed. Every entry
    /// inserted before the call is gone when it returns.
    pub async fn remove_prefix(&self, prefix: &str) -> u64 {
        crate::sweep::remove_where(&self.entries, |key, _| key.starts_with(prefix)).await
    }

    /// Removes every entry tagged `tag` (see [`MemoryEntry::with_tags`]) and returns how many it
    /// removed. Every entry inserted before the call is gone when it returns.
    pub async fn remove_tagged(&self, tag: &str) -> u64 {
        crate::sweep::remove_where(&self.entries, |_, entry| entry.has_tag(tag)).await
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Entries held, as of the last housekeeping.
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Summed weight of the entries, as of the last housekeeping.
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Runs moka's pending housekeeping now (evictions, removals, counts).
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }
}

impl fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTier")
            .field("name", &self.name)
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn returns_the_same_object_without_copying() {
        let l1 = MemoryTier::new(100);
        let value = Arc::new(vec![1u8, 2, 3]);
        l1.insert("k", MemoryEntry::new(Arc::clone(&value), soon(60_000)))
            .await;
        let hit = l1
            .get("k")
            .await
            .and_then(MemoryEntry::into_typed::<Vec<u8>>);
        assert!(hit.is_some_and(|hit| Arc::ptr_eq(&hit, &value)));
    }

    #[tokio::test]
    async fn another_type_or_a_negative_entry_is_not_a_typed_hit() {
        let l1 = MemoryTier::new(100);
        l1.insert("k", MemoryEntry::new(Arc::new(5u32), soon(60_000)))
            .await;
        l1.insert("n", MemoryEntry::negative(soon(60_000))).await;
        assert!(
            l1.get("k")
                .await
                .and_then(MemoryEntry::into_typed::<u64>)
                .is_none()
        );
        let negative = l1.get("n").await;
        assert!(negative.as_ref().is_some_and(MemoryEntry::is_negative));
    }

    #[tokio::test]
    async fn each_entry_expires_at_its_own_instant() {
        let l1 = MemoryTier::new(100);
        l1.insert("short", MemoryEntry::new(Arc::new(1u8), soon(50)))
            .await;
        l1.insert("long", MemoryEntry::new(Arc::new(2u8), soon(60_000)))
            .await;
        l1.insert("past", MemoryEntry::new(Arc::new(3u8), Instant::now()))
            .await;
        assert!(l1.get("past").await.is_none());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(l1.get("short").await.is_none());
        assert!(l1.get("long").await.is_some());
    }

    #[tokio::test]
    async fn prefix_removal_spares_other_keys() {
        let l1 = MemoryTier::new(100);
        for key in ["user:1", "user:2", "order:1"] {
            l1.insert(key, MemoryEntry::new(Arc::new(0u8), soon(60_000)))
                .await;
        }
        assert_eq!(l1.remove_prefix("user:").await, 2);
        assert!(l1.get("user:1").await.is_none());
        assert!(l1.get("user:2").await.is_none());
        assert!(l1.get("order:1").await.is_some());
        l1.clear();
        assert!(l1.get("order:1").await.is_none());
    }

    #[test]
    fn deadlines_are_never_read_later_than_given() {
        let now = Instant::now();
        let expires_at = now + Duration::from_secs(60);
        let serve = now + Duration::from_micros(29_499_700);
        let fresh = now + Duration::from_secs(50);
        let entry = MemoryEntry::new(Arc::new(1u8), expires_at).with_deadlines(serve, fresh);
        assert!(entry.has_deadlines());
        assert!(entry.is_served_at(now));
        assert!(entry.is_served_at(serve - Duration::from_millis(1)));
        assert!(!entry.is_served_at(serve));
        assert_eq!(entry.fresh_for(now), Some(Duration::from_secs(50)));
        assert_eq!(entry.fresh_for(fresh), None);

        let plain = MemoryEntry::new(Arc::new(1u8), expires_at);
        assert!(!plain.has_deadlines());
        assert!(plain.is_served_at(expires_at - Duration::from_millis(1)));
        assert_eq!(plain.fresh_for(now), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_deadline_far_in_the_past_is_not_read_as_the_expiry() {
        // Further back than the monotonic clock may reach (a machine up for minutes).
        let now = Instant::now();
        let expires_at = now + Duration::from_secs(10);
        let entry = MemoryEntry::new(Arc::new(1u8), expires_at).with_deadlines(now, now);
        assert!(!entry.is_served_at(now));
        assert_eq!(entry.fresh_for(now), None);
    }

    #[tokio::test]
    async fn tag_removal_takes_only_tagged_entries() {
        let l1 = MemoryTier::new(100);
        let tags: Arc<[String]> = Arc::from(vec!["tenant:1".to_owned(), "blue".to_owned()]);
        l1.insert(
            "a",
            MemoryEntry::new(Arc::new(0u8), soon(60_000)).with_tags(Arc::clone(&tags)),
        )
        .await;
        l1.insert("b", MemoryEntry::new(Arc::new(0u8), soon(60_000)))
            .await;
        assert_eq!(l1.remove_tagged("blue").await, 1);
        assert!(l1.get("a").await.is_none());
        assert!(l1.get("b").await.is_some());
    }

    /// Moka's predicate removal (`invalidate_entries_if`) drops its predicate once a housekeeping
    /// scan ends, and the scan sees only entries whose insert it has already applied: an entry
    /// inserted just before the removal, while housekeeping runs, used to survive it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entry_inserted_just_before_a_removal_never_survives_it() {
        let l1 = MemoryTier::new(1_000_000);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let l1 = l1.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    l1.insert(
                        format!("churn:{}", i % 500),
                        MemoryEntry::new(Arc::new(i), soon(60_000)),
                    )
                    .await;
                    i += 1;
                    if i.is_multiple_of(64) {
                        l1.run_pending_tasks().await;
                    }
                }
            })
        };
        let mut survivors = Vec::new();
        for round in 0..2_000u32 {
            let tag = format!("tag:{round}");
            let tagged = format!("tagged:{round}");
            let prefixed = format!("prefixed:{round}:k");
            let tags: Arc<[String]> = Arc::from(vec![tag.clone()]);
            l1.insert(
                tagged.as_str(),
                MemoryEntry::new(Arc::new(round), soon(60_000)).with_tags(tags),
            )
            .await;
            l1.insert(
                prefixed.as_str(),
                MemoryEntry::new(Arc::new(round), soon(60_000)),
            )
            .await;
            l1.remove_tagged(&tag).await;
            l1.remove_prefix(&format!("prefixed:{round}:")).await;
            if round.is_multiple_of(3) {
                tokio::task::yield_now().await;
            }
            l1.run_pending_tasks().await;
            for key in [&tagged, &prefixed] {
                if l1.get(key).await.is_some() {
                    survivors.push(key.clone());
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.await.unwrap();
        assert!(
            survivors.is_empty(),
            "{} survived: {:?}",
            survivors.len(),
            &survivors[..survivors.len().min(5)]
        );
    }

    #[tokio::test]
    async fn byte_bound_evicts_by_weight() {
        let l1 = MemoryTier::with_config(&MemoryConfig::new(1_000_000).max_bytes(10_000));
        for i in 0..100 {
            let entry = MemoryEntry::new(Arc::new(i), soon(60_000)).with_weight(1_000);
            l1.insert(format!("k{i}"), entry).await;
        }
        l1.run_pending_tasks().await;
        assert!(l1.entry_count() <= 10, "{} entries", l1.entry_count());
        assert!(l1.weighted_size() <= 10_000);
    }

    #[tokio::test]
    async fn count_bound_evicts_by_count() {
        let l1 = MemoryTier::new(50);
        for i in 0..500 {
            l1.insert(format!("k{i}"), MemoryEntry::new(Arc::new(i), soon(60_000)))
                .await;
        }
        l1.run_pending_tasks().await;
        assert!(l1.entry_count() <= 50, "{} entries", l1.entry_count());
    }
}
