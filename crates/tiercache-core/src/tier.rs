//! The trait every storage tier implements.

use async_trait::async_trait;

use std::{future::Future, pin::Pin, time::Duration};

use crate::{Entry, Filled, Lease, LeaseRead, Result};

/// A storage tier: bytes under string keys, each with an absolute expiry.
///
/// The facade hands a tier keys that are already namespaced and validated, so a tier stores them
/// as they come. A tier must never return an expired entry, and must hand back an entry's
/// `expires_at` unchanged (within its clock's precision), so that promotion never extends life.
///
/// The trait is dyn-compatible: the facade holds tiers as `Arc<dyn Tier>`, and a third party
/// writes a tier by depending on `tiercache-core` alone. The batch forms have default
/// implementations that call the single-key forms one by one; a networked tier overrides them
/// with its own batch commands.
///
/// # Example
///
/// ```
/// use std::{collections::HashMap, sync::Mutex};
/// use tiercache_core::{async_trait, Entry, Result, Tier};
///
/// #[derive(Debug, Default)]
/// struct MapTier(Mutex<HashMap<String, Entry>>);
///
/// #[async_trait]
/// impl Tier for MapTier {
///     fn name(&self) -> &str { "map" }
///     async fn get(&self, key: &str) -> Result<Option<Entry>> {
///         let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
///         Ok(map.get(key).filter(|e| !e.is_expired()).cloned())
///     }
///     async fn set(&self, key: &str, entry: Entry) -> Result<()> {
///         self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_owned(), entry);
///         Ok(())
///     }
///     async fn remove(&self, key: &str) -> Result<()> {
///         self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
///         Ok(())
///     }
///     async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
///         let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
///         let before = map.len();
///         map.retain(|k, _| !k.starts_with(prefix));
///         Ok((before - map.len()) as u64)
///     }
///     async fn clear(&self) -> Result<()> {
///         self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
///         Ok(())
///     }
/// }
///
/// let tier: std::sync::Arc<dyn Tier> = std::sync::Arc::new(MapTier::default());
/// assert_eq!(tier.name(), "map");
/// ```
#[async_trait]
pub trait Tier: Send + Sync + std::fmt::Debug {
    /// A short name for logs, errors and stats (`"moka"`, `"redis"`, ...).
    fn name(&self) -> &str;

    /// The entry under `key` with its expiry, or `None` when absent or expired.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) or [`Error::Timeout`](crate::Error::Timeout) when
    /// the tier cannot answer.
    async fn get(&self, key: &str) -> Result<Option<Entry>>;

    /// Stores `entry` under `key`, replacing what was there, until `entry.expires_at`.
    /// An entry that has already expired is not stored (and any old value is removed).
    ///
    /// # Errors
    ///
    /// When the tier cannot store it.
    async fn set(&self, key: &str, entry: Entry) -> Result<()>;

    /// Removes `key`; removing an absent key is not an error.
    ///
    /// # Errors
    ///
    /// When the tier cannot answer.
    async fn remove(&self, key: &str) -> Result<()>;

    /// Removes every key that starts with `prefix` (the literal text, no patterns) and returns
    /// how many were removed, as far as the tier can tell (a lazy tier may return 0).
    ///
    /// # Errors
    ///
    /// When the tier cannot answer.
    async fn remove_prefix(&self, prefix: &str) -> Result<u64>;

    /// Removes every entry this tier holds for its owner. A shared tier removes only its own
    /// namespace, never the whole server.
    ///
    /// # Errors
    ///
    /// When the tier cannot answer.
    async fn clear(&self) -> Result<()>;

    /// Whether other instances of the service see what this tier stores. A shared tier (Redis)
    /// answers yes: its writers already wrote it, so invalidations from other instances need
    /// not touch it. A tier inside this process (a `MokaTier` under L1) answers no: the cache
    /// applies every invalidation received on its bus, and every bus gap, to such tiers as it
    /// does to L1, since no other instance can reach them. The default says yes; an in-process
    /// tier must override it, or it may serve a copy another instance replaced.
    fn is_shared(&self) -> bool {
        true
    }

    /// Whether [`lease`](Self::lease) and [`fill`](Self::fill) really guard fills (the
    /// conformance suite checks the lease rules for tiers that say yes). The default says no:
    /// the default `lease` is a plain read and the default `fill` a plain write.
    fn supports_leases(&self) -> bool {
        false
    }

    /// Reads `key` for a fill: what it holds with a lease that lets a fill replace exactly that,
    /// or, when it is absent, a new lease for `ttl` that no other filler can take meanwhile
    /// ([`LeaseRead::Held`] tells them). Every `set`, `remove`, `remove_prefix`, `clear` and
    /// batch write of the key revokes the lease. A tier that stores the lease next to the key
    /// must make [`get`](Self::get) read a held lease as a miss.
    ///
    /// The default reads the key with [`get`](Self::get) and hands out an
    /// [unguarded](Lease::unguarded) lease: it is **not race-free** (a fill may then overwrite
    /// a newer write, see [`crate::lease`]) and never says [`LeaseRead::Held`]. A shared tier
    /// should override it, [`fill`](Self::fill) and [`release`](Self::release) together.
    ///
    /// # Errors
    ///
    /// When the tier cannot answer.
    async fn lease(&self, key: &str, ttl: Duration) -> Result<LeaseRead> {
        let _ = ttl;
        Ok(match self.get(key).await? {
            Some(entry) => LeaseRead::Found(entry, Lease::unguarded()),
            None => LeaseRead::Granted(Lease::unguarded()),
        })
    }

    /// Stores `entry` under `key` only if `lease` (from [`lease`](Self::lease) on this tier and
    /// key) is still valid, atomically: no write of the key can land between the check and the
    /// store. A granted lease ends with the fill.
    ///
    /// The default is a plain [`set`](Self::set) that always answers [`Filled::Stored`]: **not
    /// race-free**.
    ///
    /// # Errors
    ///
    /// When the tier cannot answer; nothing is stored then.
    async fn fill(&self, key: &str, entry: Entry, lease: &Lease) -> Result<Filled> {
        let _ = lease;
        self.set(key, entry).await.map(|()| Filled::Stored)
    }

    /// Gives back a granted lease that will not be used, so another filler need not wait for
    /// it to expire. Releasing a lease that was revoked, expired or used does nothing. The
    /// default does nothing.
    ///
    /// # Errors
    ///
    /// When the tier cannot answer (the lease then simply expires).
    async fn release(&self, key: &str, lease: &Lease) -> Result<()> {
        let _ = (key, lease);
        Ok(())
    }

    /// Whether the tier can serve requests now. The default says yes.
    ///
    /// # Errors
    ///
    /// The failure that makes the tier unusable.
    async fn health(&self) -> Result<()> {
        Ok(())
    }

    /// The entries under `keys`, in the same order; `None` for each miss.
    ///
    /// # Errors
    ///
    /// The first failure; a tier that overrides this may fail the whole batch at once.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            found.push(self.get(key).await?);
        }
        Ok(found)
    }

    /// Stores every `(key, entry)` pair.
    ///
    /// # Errors
    ///
    /// The first failure; pairs before it may have been stored.
    async fn set_many(&self, entries: Vec<(String, Entry)>) -> Result<()> {
        for (key, entry) in entries {
            self.set(&key, entry).await?;
        }
        Ok(())
    }

    /// Removes every key in `keys`.
    ///
    /// # Errors
    ///
    /// The first failure; keys before it may have been removed.
    async fn remove_many(&self, keys: &[&str]) -> Result<()> {
        for key in keys {
            self.remove(key).await?;
        }
        Ok(())
    }
}

/// The boxed future every [`Tier`] method returns (the form `#[async_trait]` gives them).
type TierCall<'a, R> = Pin<Box<dyn Future<Output = Result<R>> + Send + 'a>>;

/// One method of `Arc<T>`'s `Tier` impl: the tier inside is called and its boxed future handed
/// back as it is. The lifetimes name the borrowed arguments, as `#[async_trait]` spells them.
macro_rules! forward {
    ($name:ident<$($life:lifetime),*>($($arg:ident: $ty:ty),*) -> $out:ty) => {
        fn $name<'s, $($life,)* 'f>(&'s self, $($arg: $ty),*) -> TierCall<'f, $out>
        where
            's: 'f,
            $($life: 'f,)*
            Self: 'f,
        {
            (**self).$name($($arg),*)
        }
    };
}

/// A shared tier is a tier: lets `Arc<dyn Tier>` (or `Arc<MyTier>`) go wherever a tier is expected.
///
/// Written without `#[async_trait]`: each method hands back the inner tier's boxed future as it
/// is, instead of boxing one more future around it (an allocation and a poll per call).
impl<T: Tier + ?Sized> Tier for std::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn is_shared(&self) -> bool {
        (**self).is_shared()
    }
    fn supports_leases(&self) -> bool {
        (**self).supports_leases()
    }
    forward!(get<'k>(key: &'k str) -> Option<Entry>);
    forward!(set<'k>(key: &'k str, entry: Entry) -> ());
    forward!(remove<'k>(key: &'k str) -> ());
    forward!(remove_prefix<'k>(prefix: &'k str) -> u64);
    forward!(clear<>() -> ());
    forward!(health<>() -> ());
    forward!(lease<'k>(key: &'k str, ttl: Duration) -> LeaseRead);
    forward!(fill<'k, 'l>(key: &'k str, entry: Entry, lease: &'l Lease) -> Filled);
    forward!(release<'k, 'l>(key: &'k str, lease: &'l Lease) -> ());
    forward!(get_many<'k, 'n>(keys: &'k [&'n str]) -> Vec<Option<Entry>>);
    forward!(set_many<>(entries: Vec<(String, Entry)>) -> ());
    forward!(remove_many<'k, 'n>(keys: &'k [&'n str]) -> ());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn assert_send_sync<T: Send + Sync + ?Sized>() {}

    #[test]
    fn dyn_tier_is_send_and_sync() {
        assert_send_sync::<dyn Tier>();
        assert_send_sync::<Arc<dyn Tier>>();
    }
}
