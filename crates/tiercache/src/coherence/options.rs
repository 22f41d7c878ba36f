//! How a cache uses its bus: the channel, and whether values travel with a `set`.

/// How a cache uses its bus.
///
/// ```
/// use tiercache::BusOptions;
///
/// // Send small values along with the invalidation, so other instances need not re-read them.
/// let options = BusOptions::new().channel("shop:events").updates_up_to(512);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BusOptions {
    channel: Option<String>,
    updates_up_to: Option<usize>,
}

impl BusOptions {
    /// The defaults: the channel named after the namespace, invalidations without values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `channel` instead of the one derived from the namespace
    /// (`tiercache:bus:<namespace>`, or `tiercache:bus` without a namespace). Every instance
    /// that shares data must use the same channel.
    #[must_use]
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// Sends the new value with a `set` when it encodes to at most `bytes` bytes; receivers put
    /// it in their L1 instead of dropping the key, and decode it on first read. Off by default.
    ///
    /// The trade: fewer reads of the shared tier after a write, against bigger messages, and
    /// last-published-wins in L1 when two instances write the same key at the same moment (a
    /// plain invalidation has no such race: every instance re-reads the shared tier).
    #[must_use]
    pub fn updates_up_to(mut self, bytes: usize) -> Self {
        self.updates_up_to = Some(bytes);
        self
    }

    pub(crate) fn updates_up_to_value(&self) -> Option<usize> {
        self.updates_up_to
    }

    pub(crate) fn channel_for(&self, namespace: &str) -> String {
        match (&self.channel, namespace) {
            (Some(channel), _) => channel.clone(),
            (None, "") => "tiercache:bus".to_owned(),
            (None, namespace) => format!("tiercache:bus:{namespace}"),
        }
    }
}
