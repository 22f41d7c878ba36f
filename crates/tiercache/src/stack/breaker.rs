//! The circuit breaker of one tier, as a tier around the tier: after repeated failures the tier
//! is skipped for a cool-down, so requests stop paying a timeout each; then one probe call
//! decides whether it is back.
//!
//! Lock-free: the state is three atomics read on every call.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tiercache_core::{CircuitState, Entry, Error, Result, Tier, TierCounters, async_trait};

/// When a tier's circuit breaker opens and for how long.
///
/// ```
/// use std::time::Duration;
/// use tiercache::{CircuitBreaker, TierOptions};
/// let options = TierOptions::new().circuit_breaker(Some(CircuitBreaker::new(3, Duration::from_secs(1))));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitBreaker {
    failures: u32,
    cool_down: Duration,
}

impl Default for CircuitBreaker {
    /// 5 consecutive failures open the breaker for 5 seconds.
    fn default() -> Self {
        Self::new(5, Duration::from_secs(5))
    }
}

impl CircuitBreaker {
    /// Opens after `failures` consecutive failed calls (at least 1) and stays open for
    /// `cool_down` before letting one probe through.
    pub fn new(failures: u32, cool_down: Duration) -> Self {
        Self {
            failures: failures.max(1),
            cool_down,
        }
    }
}

/// A tier behind a circuit breaker: while the breaker is open, every call is skipped (counted)
/// and answers [`Error::Unavailable`]; failures that say the tier is unwell open it.
#[derive(Debug)]
pub(crate) struct WithBreaker<T> {
    inner: T,
    breaker: Arc<Breaker>,
    counters: Arc<TierCounters>,
}

impl<T: Tier> WithBreaker<T> {
    /// `inner` behind `breaker`, counting skipped calls in `counters`.
    pub(crate) fn new(inner: T, breaker: Arc<Breaker>, counters: Arc<TierCounters>) -> Self {
        Self {
            inner,
            breaker,
            counters,
        }
    }

    /// The tier inside.
    pub(super) fn inner(&self) -> &T {
        &self.inner
    }

    /// Runs one call of the tier inside through the breaker.
    pub(super) async fn call<R>(
        &self,
        key: &str,
        call: impl Future<Output = Result<R>>,
    ) -> Result<R> {
        let permit = self.admit(key)?;
        let result = call.await;
        permit.settle(&result);
        result
    }

    /// The first half of [`call`](Self::call), for a caller that awaits the tier itself: leave
    /// to call it, or [`Error::Unavailable`] (counted as a skip) while the breaker is open.
    pub(super) fn admit(&self, key: &str) -> Result<Permit<'_>> {
        self.breaker.acquire().ok_or_else(|| {
            self.counters.skip();
            Error::Unavailable {
                tier: self.inner.name().to_owned(),
                key: Some(key.to_owned()),
            }
        })
    }
}

#[async_trait]
impl<T: Tier> Tier for WithBreaker<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.call(key, self.inner.get(key)).await
    }
    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        self.call(key, self.inner.set(key, entry)).await
    }
    async fn remove(&self, key: &str) -> Result<()> {
        self.call(key, self.inner.remove(key)).await
    }
    async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
        self.call(prefix, self.inner.remove_prefix(prefix)).await
    }
    async fn clear(&self) -> Result<()> {
        self.call("", self.inner.clear()).await
    }
    async fn health(&self) -> Result<()> {
        self.inner.health().await
    }
    fn supports_leases(&self) -> bool {
        self.inner.supports_leases()
    }
    async fn lease(
        &self,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<tiercache_core::LeaseRead> {
        self.call(key, self.inner.lease(key, ttl)).await
    }
    async fn fill(
        &self,
        key: &str,
        entry: Entry,
        lease: &tiercache_core::Lease,
    ) -> Result<tiercache_core::Filled> {
        self.call(key, self.inner.fill(key, entry, lease)).await
    }
    async fn release(&self, key: &str, lease: &tiercache_core::Lease) -> Result<()> {
        self.call(key, self.inner.release(key, lease)).await
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let first = keys.first().copied().unwrap_or_default();
        self.call(first, self.inner.get_many(keys)).await
    }
    async fn set_many(&self, entries: Vec<(String, Entry)>) -> Result<()> {
        let first = entries
            .first()
            .map(|(key, _)| key.clone())
            .unwrap_or_default();
        self.call(&first, self.inner.set_many(entries)).await
    }
    async fn remove_many(&self, keys: &[&str]) -> Result<()> {
        let first = keys.first().copied().unwrap_or_default();
        self.call(first, self.inner.remove_many(keys)).await
    }
}

/// The live state of one tier's breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    config: Option<CircuitBreaker>,
    origin: Instant,
    consecutive_failures: AtomicU32,
    /// Milliseconds after `origin` until which the breaker is open; 0 while closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    opens: AtomicU64,
}

/// Leave to make one call. A probe's permit, dropped without an outcome (its call was
/// cancelled), frees the probe slot so the next caller can probe.
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    pub(crate) fn new(config: Option<CircuitBreaker>) -> Self {
        Self {
            config,
            origin: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            opens: AtomicU64::new(0),
        }
    }

    /// Never 0, so that 0 can mean "closed".
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// A permit for one call, or `None` when the call must be skipped.
    pub(crate) fn acquire(&self) -> Option<Permit<'_>> {
        let open_until = self.open_until.load(Ordering::Acquire);
        if self.config.is_none() || open_until == 0 {
            return Some(Permit {
                breaker: self,
                probe: false,
            });
        }
        if self.now_ms() < open_until {
            return None;
        }
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Permit {
                breaker: self,
                probe: true,
            })
    }

    pub(crate) fn state(&self) -> CircuitState {
        match self.open_until.load(Ordering::Acquire) {
            0 => CircuitState::Closed,
            until if self.now_ms() < until => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    pub(crate) fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    fn open(&self, config: CircuitBreaker) {
        let cool_down = u64::try_from(config.cool_down.as_millis()).unwrap_or(u64::MAX / 2);
        self.open_until
            .store(self.now_ms().saturating_add(cool_down), Ordering::Release);
        self.opens.fetch_add(1, Ordering::Relaxed);
    }
}

impl Permit<'_> {
    /// The second half of [`WithBreaker::call`]: tells the breaker how the call went. Only
    /// failures that say the tier is unwell count towards opening it.
    pub(crate) fn settle<R>(self, result: &Result<R>) {
        match result {
            Err(err) if err.is_retryable() => self.failed(),
            Ok(_) | Err(_) => self.succeeded(),
        }
    }

    /// The call got an answer: the tier works.
    pub(crate) fn succeeded(mut self) {
        let breaker = self.breaker;
        // NOTE: read before writing: on the hot path the count is already 0, and a store on every
        // call would bounce the cache line between cores.
        if breaker.consecutive_failures.load(Ordering::Relaxed) != 0 {
            breaker.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if breaker.open_until.load(Ordering::Acquire) != 0 {
            breaker.open_until.store(0, Ordering::Release);
            tracing::info!("tier answered again; circuit breaker closed");
        }
        self.release_probe();
    }

    /// The call failed in a way that says the tier is unwell (a failure or a timeout).
    pub(crate) fn failed(mut self) {
        let breaker = self.breaker;
        if let Some(config) = breaker.config {
            if self.probe {
                breaker.open(config);
            } else {
                let failures = breaker.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= config.failures && breaker.open_until.load(Ordering::Acquire) == 0 {
                    breaker.open(config);
                    tracing::warn!(failures, ?config.cool_down, "circuit breaker opened");
                }
            }
        }
        self.release_probe();
    }

    fn release_probe(&mut self) {
        if std::mem::take(&mut self.probe) {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.release_probe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, cool_down_ms: u64) -> Breaker {
        Breaker::new(Some(CircuitBreaker::new(
            failures,
            Duration::from_millis(cool_down_ms),
        )))
    }

    #[test]
    fn opens_after_n_consecutive_failures_and_skips_until_the_cool_down_ends() {
        let b = breaker(3, 60_000);
        for _ in 0..2 {
            b.acquire().unwrap().failed();
        }
        b.acquire().unwrap().succeeded();
        for _ in 0..2 {
            b.acquire().unwrap().failed();
        }
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "a success resets the count"
        );
        b.acquire().unwrap().failed();
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.acquire().is_none());
        assert_eq!(b.opens(), 1);
    }

    #[test]
    fn after_the_cool_down_one_probe_decides() {
        let b = breaker(1, 20);
        b.acquire().unwrap().failed();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let probe = b.acquire().unwrap();
        assert!(b.acquire().is_none(), "only one probe at a time");
        probe.failed();
        assert_eq!(b.state(), CircuitState::Open, "a failed probe reopens");

        std::thread::sleep(Duration::from_millis(40));
        b.acquire().unwrap().succeeded();
        assert_eq!(b.state(), CircuitState::Closed, "a good probe closes");
        assert!(b.acquire().is_some());
    }

    #[test]
    fn a_cancelled_probe_frees_the_probe_slot() {
        let b = breaker(1, 10);
        b.acquire().unwrap().failed();
        std::thread::sleep(Duration::from_millis(20));
        drop(b.acquire().unwrap());
        assert!(b.acquire().is_some());
    }

    #[test]
    fn without_a_breaker_calls_always_go_through() {
        let b = Breaker::new(None);
        for _ in 0..100 {
            b.acquire().unwrap().failed();
        }
        assert!(b.acquire().is_some());
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
