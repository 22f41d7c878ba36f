//! [`RedisTier`]: the shared tier on fred.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use fred::{
    clients::{Pool, WithOptions},
    interfaces::{ClientLike, KeysInterface},
    types::{Expiration, Key, Value, scan::Scanner},
};
use futures_util::{Stream, StreamExt, future::try_join_all};
use tiercache_core::{Entry, Error, Filled, Lease, LeaseRead, Result, Tier};

use crate::{
    RedisOptions,
    error::{from_fred, timed_out},
    frame,
    glob::prefix_pattern,
    lease::{self, FILL, LEASE, RELEASE, Reply},
};

/// Keys per SCAN page and per UNLINK when removing by prefix.
const SCAN_BATCH: u32 = 1_000;

/// A [`Tier`] on Redis (single server, cluster or sentinel) through a fred connection pool.
///
/// - `get` is one `GET`: the value is stored behind a 12-byte frame holding its absolute expiry
///   (see `frame.rs`), so value and expiry come back in one command and one round trip.
/// - `set` is `SET key frame+value PX ttl`; `remove` is `UNLINK`.
/// - `get_many` is one `MGET` per hash slot; `set_many` and `remove_many` are grouped by hash
///   slot too, so batches work on a cluster.
/// - `remove_prefix` runs `SCAN MATCH` (glob characters of the prefix escaped) on every primary
///   and `UNLINK`s each page; `clear` removes the tier's [key prefix](RedisOptions::key_prefix),
///   never `FLUSHDB`.
/// - Every call is bounded by the [command timeout](RedisOptions::command_timeout): reads by a
///   timer of the tier's, `SET` and `UNLINK` by fred's own per-command timeout, so a write that
///   answered `Timeout` is never sent later, when the connection comes back. (A `set_many`
///   pipeline that times out can still be replayed by fred after a reconnect, as before: fred
///   does not mark timed-out pipelines. A late fill or release is checked against the lease it
///   carries; a late lease request can at most leave a lease that expires by its TTL.)
/// - Leases ([`Tier::lease`], [`Tier::fill`], [`Tier::release`]) are Lua scripts run by
///   `EVALSHA`, one round trip each and atomic on the server; the lease is kept in the key itself
///   (see `lease.rs`), so every write and removal of the key revokes it and a cluster needs no
///   second key in the slot.
///
/// A value without the frame was written by another program: it is returned as it is with its
/// `PTTL` (one more round trip, on this rare path only), so the cache counts it as undecodable and
/// overwrites it. A key with no expiry, or one that is not a string, reads as a miss.
///
/// A cheap `Clone` handle around a shared pool.
#[derive(Clone)]
pub struct RedisTier {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    name: String,
    key_prefix: String,
    command_timeout: Duration,
    /// The same pool with fred's own per-command timeout, for `SET` and `UNLINK`. A command fred
    /// timed out is marked, and fred never writes it, nor replays it after a reconnect; with only
    /// the caller's timer (`bounded`) a write its caller saw fail would still go out once the
    /// server is back, and could land behind a newer write. Reads can be dropped unanswered, so
    /// they take the cheaper timer.
    writer: WithOptions<Pool>,
    clustered: bool,
    options: RedisOptions,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stop the reconnect loops of a tier nobody holds any more.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = self.pool.clone();
            runtime.spawn(async move { pool.quit().await });
        }
    }
}

impl fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTier")
            .field("name", &self.inner.name)
            .field("key_prefix", &self.inner.key_prefix)
            .field("clustered", &self.inner.clustered)
            .finish_non_exhaustive()
    }
}

impl RedisTier {
    /// Connects to `url` with default [`RedisOptions`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL; [`Error::Backend`] or [`Error::Timeout`] when the
    /// server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(RedisOptions::from_url(url)?).await
    }

    /// Connects as `options` say and waits until every pooled connection is up.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with(options: RedisOptions) -> Result<Self> {
        let clustered = options.is_clustered();
        let command_timeout = options.command_timeout;
        // Reads are bounded by the tier's own timer (see `bounded`), writes by fred's timeout set
        // per command (`writer`): on a raw fred pool, fred's per-command timeout on every command
        // cut 64-task read throughput to 0.56x (133k against 237k reads/s, 9 alternating
        // rounds), the same tokio timer around each call to 0.92x.
        let pool = options
            .connect_pool_with(|builder| {
                builder.with_performance_config(|perf| {
                    perf.default_command_timeout = Duration::ZERO;
                });
            })
            .await?;
        let writer = pool.with_options(&options.command_options());
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                writer,
                name: options.name.clone(),
                key_prefix: options.key_prefix.clone(),
                command_timeout,
                clustered,
                options,
            }),
        })
    }

    /// The options the tier was connected with: give them to the bus or the streams adapter so
    /// every connection of a service reaches Redis alike.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// The fred pool underneath, for commands tiercache does not issue. fred types are exposed
    /// on purpose here: this is the Redis crate. The pool sets no per-command timeout (the tier
    /// bounds each of its own calls, which is cheaper than fred doing it for every command):
    /// bound yours, e.g. with `tokio::time::timeout`.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The key as stored: the tier's key prefix plus `key`.
    fn full_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.inner.key_prefix.len() + key.len());
        full.push_str(&self.inner.key_prefix);
        full.push_str(key);
        full
    }

    /// Runs one call within the command timeout, mapping fred's errors. The timer covers the
    /// whole call, time queued while fred reconnects included, so a stopped, frozen or
    /// unreachable server costs each call at most the timeout.
    async fn bounded<T>(
        &self,
        key: Option<&str>,
        call: impl Future<Output = fred::prelude::FredResult<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.inner.command_timeout, call).await {
            Ok(reply) => reply.map_err(|err| from_fred(&self.inner.name, key, err)),
            Err(_elapsed) => Err(timed_out(&self.inner.name, key)),
        }
    }

    /// Maps the errors of a call on the tier's writer (see `Inner::writer`), which fred bounds
    /// itself.
    async fn written<T>(
        &self,
        key: Option<&str>,
        call: impl Future<Output = fred::prelude::FredResult<T>>,
    ) -> Result<T> {
        call.await
            .map_err(|err| from_fred(&self.inner.name, key, err))
    }

    /// Full keys grouped so that each group can go to one node: by hash slot on a cluster, all
    /// together otherwise. Each key keeps its index in the caller's list.
    fn by_node(&self, keys: Vec<String>) -> Vec<Vec<(usize, String)>> {
        if !self.inner.clustered {
            return vec![keys.into_iter().enumerate().collect()];
        }
        let mut groups: std::collections::BTreeMap<u16, Vec<(usize, String)>> = Default::default();
        for (index, key) in keys.into_iter().enumerate() {
            let slot = fred::util::redis_keyslot(key.as_bytes());
            groups.entry(slot).or_default().push((index, key));
        }
        groups.into_values().collect()
    }

    /// The entry in a stored value. A value tiercache did not frame (another program wrote it)
    /// costs one more round trip for its PTTL and is returned as it is, so the cache can count it
    /// as undecodable and overwrite it.
    async fn unframe(&self, key: &str, full: Key, stored: Bytes) -> Result<Option<Entry>> {
        if lease::is_lease(&stored) {
            // A filler's lease stands in for the value being loaded: a miss.
            return Ok(None);
        }
        if let Some(entry) = frame::decode(&stored) {
            return Ok((!entry.is_expired()).then_some(entry));
        }
        // NOTE: boxed so that this rare path's fred future (kilobytes) does not sit inside every
        // read's future, which async-trait copies into a box on each call.
        let pttl: i64 = Box::pin(self.bounded(Some(key), self.inner.pool.pttl(full))).await?;
        Ok(foreign_entry(stored, pttl, Instant::now()))
    }

    /// UNLINKs full keys, one command per node group; returns how many existed.
    async fn unlink(&self, keys: Vec<String>) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let groups = self.by_node(keys);
        let calls = groups.into_iter().map(|group| {
            let keys: Vec<Key> = group.into_iter().map(|(_, key)| Key::from(key)).collect();
            self.written(None, self.inner.writer.unlink::<i64, _>(keys))
        });
        let counts = try_join_all(calls).await?;
        Ok(counts
            .into_iter()
            .map(|n| u64::try_from(n).unwrap_or(0))
            .sum())
    }
}

/// A value not framed by tiercache, with the key's PTTL: `None` when the key is gone or has no
/// expiry (tiercache always sets one).
fn foreign_entry(value: Bytes, pttl_millis: i64, now: Instant) -> Option<Entry> {
    let millis = u64::try_from(pttl_millis).ok().filter(|ms| *ms > 0)?;
    Some(Entry::expiring_at(
        value,
        now + Duration::from_millis(millis),
    ))
}

/// Whether fred's error is Redis saying the key holds another type (a list, a hash, ...).
fn is_wrong_type(err: &fred::error::Error) -> bool {
    err.details().starts_with("WRONGTYPE")
}

/// A reply of a shape the script never gives.
#[derive(Debug)]
struct UnexpectedReply(&'static str);

impl fmt::Display for UnexpectedReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unexpected reply to {}", self.0)
    }
}

impl std::error::Error for UnexpectedReply {}

/// Milliseconds for `SET ... PX`: `None` once the entry has (all but) expired.
fn px_millis(entry: &Entry) -> Option<i64> {
    let millis = entry.remaining_ttl().as_millis();
    (millis > 0).then(|| i64::try_from(millis).unwrap_or(i64::MAX))
}

type ScanPages =
    Pin<Box<dyn Stream<Item = fred::prelude::FredResult<fred::types::scan::ScanResult>> + Send>>;

#[async_trait]
impl Tier for RedisTier {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        // A `String` becomes a fred `Key` without a copy, and the key is cloned cheaply after.
        let full = Key::from(self.full_key(key));
        // The GET is built inside the timeout's argument: fred's future is about 5 KB, and each
        // move of it is a copy.
        let timeout = self.inner.command_timeout;
        let stored = match tokio::time::timeout(timeout, self.inner.pool.get(full.clone())).await {
            Ok(Ok(stored)) => stored,
            Ok(Err(err)) if is_wrong_type(&err) => None,
            Ok(Err(err)) => return Err(from_fred(&self.inner.name, Some(key), err)),
            Err(_elapsed) => return Err(timed_out(&self.inner.name, Some(key))),
        };
        match stored {
            None => Ok(None),
            Some(stored) => self.unframe(key, full, stored).await,
        }
    }

    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        let full = self.full_key(key);
        let Some(millis) = px_millis(&entry) else {
            return self.remove(key).await;
        };
        self.written(
            Some(key),
            self.inner.writer.set::<(), _, _>(
                full,
                frame::encode(&entry),
                Some(Expiration::PX(millis)),
                None,
                false,
            ),
        )
        .await
    }

    async fn remove(&self, key: &str) -> Result<()> {
        let full = self.full_key(key);
        self.written(Some(key), self.inner.writer.unlink::<i64, _>(full))
            .await
            .map(drop)
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
        let pattern = prefix_pattern(&self.full_key(prefix));
        let client = self.inner.pool.next();
        let mut pages: ScanPages = if self.inner.clustered {
            Box::pin(client.scan_cluster(pattern, Some(SCAN_BATCH), None))
        } else {
            Box::pin(client.scan(pattern, Some(SCAN_BATCH), None))
        };
        let mut removed = 0;
        loop {
            let page = match tokio::time::timeout(self.inner.command_timeout, pages.next()).await {
                Ok(Some(page)) => {
                    page.map_err(|err| from_fred(&self.inner.name, Some(prefix), err))?
                }
                Ok(None) => break,
                Err(_elapsed) => return Err(timed_out(&self.inner.name, Some(prefix))),
            };
            let mut page = page;
            let keys: Vec<String> = page
                .take_results()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|key| key.into_string())
                .collect();
            page.next();
            removed += self.unlink(keys).await?;
        }
        Ok(removed)
    }

    async fn clear(&self) -> Result<()> {
        if self.inner.key_prefix.is_empty() {
            return Err(Error::Config(format!(
                "tier {} has no key prefix, so clear() would empty a database it may share; \
                 set RedisOptions::key_prefix, or use a cache namespace",
                self.inner.name
            )));
        }
        self.remove_prefix("").await.map(drop)
    }

    fn supports_leases(&self) -> bool {
        true
    }

    async fn lease(&self, key: &str, ttl: Duration) -> Result<LeaseRead> {
        let frame = lease::new_frame(ttl);
        let millis = lease::lease_millis(ttl);
        let args = vec![Value::from(frame.clone()), Value::from(millis.to_string())];
        let run = LEASE.run(&self.inner.pool, self.full_key(key), args);
        let reply = Box::pin(self.bounded(Some(key), run)).await?;
        match lease::parse_reply(reply) {
            Some(Reply::Granted) => Ok(LeaseRead::Granted(lease::granted(&frame))),
            Some(Reply::Held(left)) => Ok(LeaseRead::Held(left)),
            Some(Reply::Found { stored, lease }) => {
                let full = Key::from(self.full_key(key));
                let entry = self.unframe(key, full, stored).await?;
                Ok(lease::found(entry, lease))
            }
            None => Err(Error::backend(
                &self.inner.name,
                Some(key),
                UnexpectedReply("lease"),
            )),
        }
    }

    async fn fill(&self, key: &str, entry: Entry, lease: &Lease) -> Result<Filled> {
        if lease.is_unguarded() {
            return self.set(key, entry).await.map(|()| Filled::Stored);
        }
        let Some((kind, proof)) = lease::fill_proof(lease) else {
            return Err(Error::backend(
                &self.inner.name,
                Some(key),
                UnexpectedReply("a lease another tier made"),
            ));
        };
        let Some(millis) = px_millis(&entry) else {
            // Nothing left to store: give the lease back.
            self.release(key, lease).await?;
            return Ok(Filled::Stored);
        };
        let args = vec![
            kind,
            proof,
            Value::from(frame::encode(&entry)),
            Value::from(millis.to_string()),
        ];
        let run = FILL.run(&self.inner.pool, self.full_key(key), args);
        let stored = Box::pin(self.bounded(Some(key), run)).await?;
        Ok(match stored.as_i64() {
            Some(1) => Filled::Stored,
            _ => Filled::Revoked,
        })
    }

    async fn release(&self, key: &str, lease: &Lease) -> Result<()> {
        let Some(frame) = lease::granted_frame(lease) else {
            return Ok(());
        };
        let run = RELEASE.run(
            &self.inner.pool,
            self.full_key(key),
            vec![Value::from(frame)],
        );
        Box::pin(self.bounded(Some(key), run)).await.map(drop)
    }

    async fn health(&self) -> Result<()> {
        self.bounded(None, self.inner.pool.next().ping::<String>(None))
            .await
            .map(drop)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let full: Vec<String> = keys.iter().map(|key| self.full_key(key)).collect();
        let groups = self.by_node(full);
        let calls = groups.into_iter().map(|group| async move {
            let names: Vec<Key> = group
                .iter()
                .map(|(_, key)| Key::from(key.as_str()))
                .collect();
            let values: Vec<Option<Bytes>> =
                self.bounded(None, self.inner.pool.mget(names)).await?;
            let mut found = Vec::with_capacity(group.len());
            for ((index, full), stored) in group.into_iter().zip(values) {
                let entry = match stored {
                    Some(stored) => self.unframe(keys[index], Key::from(full), stored).await?,
                    None => None,
                };
                found.push((index, entry));
            }
            Ok::<_, Error>(found)
        });
        let mut out = vec![None; keys.len()];
        for (index, entry) in try_join_all(calls).await?.into_iter().flatten() {
            out[index] = entry;
        }
        Ok(out)
    }

    async fn set_many(&self, entries: Vec<(String, Entry)>) -> Result<()> {
        let (live, expired): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|(_, entry)| px_millis(entry).is_some());
        self.unlink(
            expired
                .into_iter()
                .map(|(key, _)| self.full_key(&key))
                .collect(),
        )
        .await?;
        if live.is_empty() {
            return Ok(());
        }
        let (keys, values): (Vec<String>, Vec<Entry>) = live
            .into_iter()
            .map(|(key, entry)| (self.full_key(&key), entry))
            .unzip();
        let groups = self.by_node(keys);
        let calls = groups.into_iter().map(|group| {
            let pipeline = self.inner.pool.next().pipeline();
            let values = &values;
            async move {
                self.bounded(None, async {
                    for (index, key) in group {
                        let entry = &values[index];
                        let millis = px_millis(entry).unwrap_or(1);
                        pipeline
                            .set::<(), _, _>(
                                key,
                                frame::encode(entry),
                                Some(Expiration::PX(millis)),
                                None,
                                false,
                            )
                            .await?;
                    }
                    pipeline.all::<Value>().await.map(drop)
                })
                .await
            }
        });
        try_join_all(calls).await.map(drop)
    }

    async fn remove_many(&self, keys: &[&str]) -> Result<()> {
        self.unlink(keys.iter().map(|key| self.full_key(key)).collect())
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_values_need_a_positive_pttl() {
        let now = Instant::now();
        let value = || Bytes::from_static(b"v");
        let entry = foreign_entry(value(), 1_500, now).unwrap();
        assert_eq!(entry.expires_at, now + Duration::from_millis(1_500));
        assert!(foreign_entry(value(), -1, now).is_none(), "no expiry");
        assert!(foreign_entry(value(), -2, now).is_none(), "gone");
        assert!(foreign_entry(value(), 0, now).is_none());
    }
}
