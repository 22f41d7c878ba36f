//! Writing and invalidating, always in one order: L1 is invalidated (so loads in flight stop
//! storing), the stack is written, L1 is invalidated again (so a read of this instance that
//! read the stack before the write landed cannot keep its copy), and only then does the change
//! go out on the bus. The types keep the order: the bus takes only what the front settled, and
//! the front settles only what the stack wrote.

use std::{
    any::Any,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tiercache_core::{
    Bytes, Codec, EntryOptions, Invalidation, Result, unix_millis, validate_key, validate_tag,
    validate_tags,
};

use super::Engine;
use crate::{
    common::Scope,
    front::Settled,
    policy::WriteSpec,
    stack::{Reach, Written},
};

impl<C: Codec> Engine<C> {
    /// `set`: the value in every tier, then on the bus.
    ///
    /// # Errors
    ///
    /// As [`Cache::set`](crate::Cache::set).
    pub(crate) async fn set<T>(
        &self,
        key: &str,
        value: Arc<T>,
        options: &EntryOptions,
    ) -> Result<()>
    where
        T: Serialize + Send + Sync + 'static,
    {
        validate_key(key)?;
        validate_tags(options.tags_value())?;
        let spec = self.defaults.write_spec(options, Duration::ZERO);
        let bytes = self.encode_for_set(key, value.as_ref(), &spec)?;
        self.store_and_publish(key, value, bytes, &spec).await
    }

    /// `set_bytes`: raw bytes in every tier, as they are, then on the bus.
    ///
    /// # Errors
    ///
    /// As [`Cache::set_bytes`](crate::Cache::set_bytes).
    pub(crate) async fn set_bytes(
        &self,
        key: &str,
        value: Bytes,
        options: &EntryOptions,
    ) -> Result<()> {
        validate_key(key)?;
        let spec = self.defaults.write_spec(options, Duration::ZERO).raw();
        let bytes = Some(value.clone());
        self.store_and_publish(key, Arc::new(value), bytes, &spec)
            .await
    }

    /// Stores a value a caller gave: L1 invalidated and given the value, every tier below
    /// written, L1 cleaned of any other value a read put there meanwhile, then the bus. `bytes`
    /// is what the tiers below hold; it travels with the message when it is small enough and the
    /// bus options ask for it.
    async fn store_and_publish<T: Any + Send + Sync>(
        &self,
        key: &str,
        value: Arc<T>,
        bytes: Option<Bytes>,
        spec: &WriteSpec,
    ) -> Result<()> {
        let now = Instant::now();
        self.front.invalidate(Scope::Key(key)).await;
        if let Some(scale) = self.front.ttl_scale() {
            let placement = spec.placement(scale, bytes.as_ref().map(Bytes::len), now);
            let stamp = self.front.stamp(key);
            self.front
                .insert(stamp, key, Some(Arc::clone(&value)), placement)
                .await;
        }
        let written = self
            .stack
            .write(key, bytes.as_ref(), spec, None, Reach::Every, None)
            .await;
        let written = self
            .rewrite_in_process(written, key, bytes.as_ref(), spec)
            .await;
        let settled = self.front.settle_set(written, &[(key, &value)]).await;
        let update = match (self.coherence.updates_up_to(), bytes) {
            (Some(limit), Some(bytes)) if bytes.len() <= limit => Some(bytes),
            _ => None,
        };
        self.coherence
            .publish(settled, || match update {
                Some(value) => Invalidation::Update {
                    key: key.to_owned(),
                    value,
                    ttl: spec.ttl,
                },
                None => Invalidation::Keys(vec![key.to_owned()]),
            })
            .await
    }

    /// `set_many`: every value in every tier (one batch write per tier below L1), then one
    /// message naming every key.
    ///
    /// # Errors
    ///
    /// As [`Cache::set_many`](crate::Cache::set_many).
    pub(crate) async fn set_many<T>(
        &self,
        entries: &[(&str, T)],
        options: &EntryOptions,
    ) -> Result<()>
    where
        T: Serialize + Clone + Send + Sync + 'static,
    {
        validate_tags(options.tags_value())?;
        let spec = self.defaults.write_spec(options, Duration::ZERO);
        let mut encoded = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            validate_key(key)?;
            encoded.push(self.encode_for_stack(key, value, &spec)?);
        }
        if entries.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let values: Vec<Arc<T>> = entries
            .iter()
            .map(|(_, value)| Arc::new(value.clone()))
            .collect();
        for ((key, _), (value, bytes)) in entries.iter().zip(values.iter().zip(&encoded)) {
            self.front.invalidate(Scope::Key(key)).await;
            if let Some(scale) = self.front.ttl_scale() {
                let placement = spec.placement(scale, bytes.as_ref().map(Bytes::len), now);
                let stamp = self.front.stamp(key);
                self.front
                    .insert(stamp, key, Some(Arc::clone(value)), placement)
                    .await;
            }
        }
        let batch: Vec<(&str, Bytes)> = entries
            .iter()
            .zip(&encoded)
            .filter_map(|((key, _), bytes)| Some((*key, bytes.clone()?)))
            .collect();
        let mut written = self.stack.write_many(&batch, &spec).await;
        for (key, bytes) in &batch {
            written = self
                .rewrite_in_process(written, key, Some(bytes), &spec)
                .await;
        }
        let ours: Vec<(&str, &Arc<T>)> = entries
            .iter()
            .zip(&values)
            .map(|((key, _), value)| (*key, value))
            .collect();
        let settled = self.front.settle_set(written, &ours).await;
        let keys: Vec<&str> = entries.iter().map(|(key, _)| *key).collect();
        self.coherence.publish_keys(settled, &keys).await
    }

    /// `invalidate`: the key gone from every tier, then from every other instance's L1.
    ///
    /// # Errors
    ///
    /// As [`Cache::invalidate`](crate::Cache::invalidate).
    pub(crate) async fn invalidate(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.invalidate_everywhere(Scope::Key(key), || Invalidation::Keys(vec![key.to_owned()]))
            .await
    }

    /// `invalidate_many`: as `invalidate` for each key, with the tiers written concurrently and
    /// one bus message per batch of keys that fits one.
    ///
    /// # Errors
    ///
    /// As [`Cache::invalidate_many`](crate::Cache::invalidate_many).
    pub(crate) async fn invalidate_many(&self, keys: &[&str]) -> Result<()> {
        for key in keys {
            validate_key(key)?;
        }
        if keys.is_empty() {
            return Ok(());
        }
        let scopes: Vec<Scope<'_>> = keys.iter().map(|key| Scope::Key(key)).collect();
        let settled = self.invalidate_settled(&scopes).await;
        self.coherence.publish_keys(settled, keys).await
    }

    /// Every scope removed from the stack, concurrently (one scope: no join); the first failure,
    /// in scope order.
    async fn invalidate_stack(&self, scopes: &[Scope<'_>], reach: Reach) -> Written {
        if let [scope] = scopes {
            return self.stack.invalidate(*scope, reach).await;
        }
        let each = scopes
            .iter()
            .map(|scope| self.stack.invalidate(*scope, reach));
        let mut outcomes = futures_util::future::join_all(each).await.into_iter();
        let first = outcomes.next();
        outcomes
            .fold(first, |all, next| all.map(|all| all.and(next)))
            .unwrap_or_else(crate::stack::nothing_written)
    }

    /// `invalidate_prefix`.
    ///
    /// # Errors
    ///
    /// As [`Cache::invalidate_prefix`](crate::Cache::invalidate_prefix).
    pub(crate) async fn invalidate_prefix(&self, prefix: &str) -> Result<()> {
        validate_key(prefix)?;
        self.invalidate_everywhere(Scope::Prefix(prefix), || {
            Invalidation::Prefix(prefix.to_owned())
        })
        .await
    }

    /// `invalidate_tag`: the tag's marker written in every tier below L1 with the time, the
    /// tagged entries gone from L1 here and on every other instance.
    ///
    /// # Errors
    ///
    /// As [`Cache::invalidate_tag`](crate::Cache::invalidate_tag).
    pub(crate) async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        validate_tag(tag)?;
        let at = unix_millis();
        // Known before L1 is cleared: an update from another instance that is applied while this
        // runs checks it after its insert (see `receive.rs`).
        self.stack.note_tag(tag, Some(at));
        self.invalidate_everywhere(Scope::Tag(tag, at), || Invalidation::Tag {
            tag: tag.to_owned(),
            invalidated_at_ms: at,
        })
        .await
    }

    /// `clear`: all of L1, this namespace in every tier below (never more), every other
    /// instance's L1.
    ///
    /// # Errors
    ///
    /// As [`Cache::clear`](crate::Cache::clear).
    pub(crate) async fn clear(&self) -> Result<()> {
        self.invalidate_everywhere(Scope::All, || Invalidation::Clear)
            .await
    }

    async fn invalidate_everywhere(
        &self,
        scope: Scope<'_>,
        message: impl FnOnce() -> Invalidation,
    ) -> Result<()> {
        let settled = self.invalidate_settled(&[scope]).await;
        self.coherence.publish(settled, message).await
    }

    /// The one sequence of every invalidation, before it is published: L1, the stack, then
    /// (with in-process levels) the clock and those levels again, then L1 once more.
    async fn invalidate_settled(&self, scopes: &[Scope<'_>]) -> Settled {
        for scope in scopes {
            self.front.invalidate(*scope).await;
        }
        let written = self.invalidate_stack(scopes, Reach::Every).await;
        let written = if self.stack.has_in_process_levels() {
            // A read that stamped after the first invalidation may have copied an older value
            // into an in-process tier from a tier below it before the write landed there.
            self.front.bump(scopes).await;
            written.and(self.invalidate_stack(scopes, Reach::InProcess).await)
        } else {
            written
        };
        self.front.settle(written, scopes).await
    }

    /// After a `set` wrote the stack, the in-process tiers once more: a read of this instance
    /// that stamped after the first invalidation may have copied the older value into one of
    /// them from a tier below before the write landed there. The clock moves first (so such
    /// copies stop), then the in-process tiers get the new value again under a stamp taken after
    /// that (an invalidation from elsewhere meanwhile wins over it).
    async fn rewrite_in_process(
        &self,
        written: Written,
        key: &str,
        bytes: Option<&Bytes>,
        spec: &WriteSpec,
    ) -> Written {
        if !self.stack.has_in_process_levels() {
            return written;
        }
        self.front.bump(&[Scope::Key(key)]).await;
        let stamp = self.front.stamp(key);
        let gate = || self.front.enter(stamp);
        let again = self
            .stack
            .write(key, bytes, spec, Some(&gate), Reach::InProcess, None)
            .await;
        written.and(again)
    }

    /// Encodes a value a caller is setting: for the tiers below L1, and for the bus when it
    /// sends values. `None` when neither needs bytes, so a memory-only cache never encodes.
    fn encode_for_set<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        spec: &WriteSpec,
    ) -> Result<Option<Bytes>> {
        if self.stack.is_empty() && self.coherence.updates_up_to().is_some() {
            return self
                .envelope
                .encode_with(key, value, &spec.meta())
                .map(Some);
        }
        self.encode_for_stack(key, value, spec)
    }

    /// Encodes `value` for the tiers below L1; `None` when there are none, so a memory-only
    /// cache never pays for encoding.
    pub(super) fn encode_for_stack<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        spec: &WriteSpec,
    ) -> Result<Option<Bytes>> {
        if self.stack.is_empty() {
            return Ok(None);
        }
        self.envelope
            .encode_with(key, value, &spec.meta())
            .map(Some)
    }
}
