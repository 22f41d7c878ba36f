//! Size bounds and names shared by the moka tiers.

/// How a moka tier is bounded and named.
///
/// A tier is bounded either by entry count (the default) or, when [`max_bytes`](Self::max_bytes)
/// is set, by the summed weight of its entries in bytes; moka enforces one capacity, so setting
/// a byte bound replaces the count bound.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    pub(crate) max_entries: u64,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) name: Option<String>,
}

impl MemoryConfig {
    /// At most `max_entries` entries.
    pub fn new(max_entries: u64) -> Self {
        Self {
            max_entries,
            max_bytes: None,
            name: None,
        }
    }

    /// Bounds the tier by the summed weight of its entries instead of their count. An entry
    /// weighs its key length plus its value's size (the encoded length where the value is bytes
    /// or was encoded, `size_of::<T>()` otherwise). Default: unset (count bound).
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// The tier's name in stats and logs. Default: `"memory"` for the typed tier, `"moka"` for the
    /// bytes tier.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// The hasher of the tiers' moka maps: foldhash, seeded per map, rather than moka's default
/// SipHash, which was about 190 of the ~2,200 instructions of a `get_arc` hit (callgrind).
/// The per-map random seed keeps keys an attacker chooses from being aimed at one bucket.
pub(crate) type KeyHasher = foldhash::quality::RandomState;

/// A moka map of the tiers: keys as stored, hashed with [`KeyHasher`].
pub(crate) type Entries<V> = moka::future::Cache<String, V, KeyHasher>;

/// Builds a moka cache bounded, weighed and expired as `config` says.
pub(crate) fn build_cache<V>(config: &MemoryConfig, weight_of: fn(&V) -> u32) -> Entries<V>
where
    V: crate::expiry::ExpiresAt + Clone + Send + Sync + 'static,
{
    let builder = moka::future::Cache::builder().expire_after(crate::expiry::UntilExpiresAt);
    match config.max_bytes {
        Some(max_bytes) => builder
            .max_capacity(max_bytes)
            .weigher(move |key: &String, value: &V| {
                let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
                key_len.saturating_add(weight_of(value))
            })
            .build_with_hasher(KeyHasher::default()),
        None => builder
            .max_capacity(config.max_entries)
            .build_with_hasher(KeyHasher::default()),
    }
}
