//! The one error type of tiercache.

use std::sync::Arc;

/// A boxed, shareable source error. Shared with `Arc` so that one failed load can be handed to
/// every waiter of a coalesced call.
pub type BoxError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used across tiercache.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tiercache. Each variant says which tier or key it is about.
///
/// `Error` is `Clone` because a failed coalesced load is delivered to every waiter.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty, too long, or holds control characters. Nothing was written.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key (cut to 64 characters when it is long).
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A tag is empty, too long, or holds control characters, or an entry has too many.
    /// Nothing was written.
    #[error("invalid tag {tag:?}: {reason}")]
    InvalidTag {
        /// The rejected tag (cut to 64 characters when it is long).
        tag: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A value could not be encoded by the cache's codec.
    #[error(
        "cannot encode a value of type {type_name} for key {key:?} with codec {codec}: {source}"
    )]
    Encode {
        /// The Rust type that failed to encode.
        type_name: &'static str,
        /// The key the value was meant for.
        key: String,
        /// The codec's name.
        codec: &'static str,
        /// What the codec said.
        source: BoxError,
    },

    /// A tier failed: a network error, a refused command, a closed connection.
    #[error("tier {tier} failed{}: {source}", key_suffix(.key))]
    Backend {
        /// The tier's name.
        tier: String,
        /// The key involved, when there was exactly one.
        key: Option<String>,
        /// The tier client's error.
        source: BoxError,
    },

    /// A tier answered but refused the command: out of memory, no permission for it (an ACL),
    /// a key of another type, a bad argument. The tier is reachable, so its circuit breaker does
    /// not count this, and trying the same call again would fail the same way.
    #[error("tier {tier} refused the command{}: {source}", key_suffix(.key))]
    Refused {
        /// The tier's name.
        tier: String,
        /// The key involved, when there was exactly one.
        key: Option<String>,
        /// The tier client's error, which names what was refused.
        source: BoxError,
    },

    /// A tier or a loader did not answer in time.
    #[error("{what} timed out{}", key_suffix(.key))]
    Timeout {
        /// The tier's name, or `"loader"`.
        what: String,
        /// The key involved, when there was exactly one.
        key: Option<String>,
    },

    /// The tier was skipped because its circuit breaker is open after repeated failures.
    #[error("tier {tier} skipped: its circuit breaker is open{}", key_suffix(.key))]
    Unavailable {
        /// The tier's name.
        tier: String,
        /// The key involved, when there was exactly one.
        key: Option<String>,
    },

    /// The caller's loader returned an error. Nothing was cached.
    #[error("loader for key {key:?} failed: {source}")]
    Loader {
        /// The key being loaded.
        key: String,
        /// The loader's own error.
        source: BoxError,
    },

    /// The caller's loader panicked. Waiters coalesced on that load receive this; the panic itself
    /// is resumed in the task that ran the loader.
    #[error("loader for key {key:?} panicked")]
    LoaderPanicked {
        /// The key being loaded.
        key: String,
    },

    /// The cache was configured in a way that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
}

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!(" for key {k:?}"))
        .unwrap_or_default()
}

impl Error {
    /// Builds [`Error::Backend`] from a tier's client error.
    pub fn backend(
        tier: impl Into<String>,
        key: Option<&str>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            tier: tier.into(),
            key: key.map(str::to_owned),
            source: Arc::new(source),
        }
    }

    /// Builds [`Error::Refused`] from a tier's client error.
    pub fn refused(
        tier: impl Into<String>,
        key: Option<&str>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Refused {
            tier: tier.into(),
            key: key.map(str::to_owned),
            source: Arc::new(source),
        }
    }

    /// Builds [`Error::Loader`] from the error a loader returned.
    pub fn loader(key: &str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Loader {
            key: key.to_owned(),
            source: Arc::from(source.into()),
        }
    }

    /// The loader's own error, as the type it returned, when this is [`Error::Loader`] and the
    /// loader's error was an `E` (a loader returning `Result<T, E>` for a concrete error type
    /// `E`; a loader returning a boxed error gives back what is inside the box only when that is
    /// an `E` too).
    ///
    /// ```
    /// use tiercache_core::Error;
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("no row {0}")]
    /// struct NotInDb(u64);
    ///
    /// let err = Error::loader("user:7", NotInDb(7));
    /// assert_eq!(err.loader_source::<NotInDb>().map(|e| e.0), Some(7));
    /// assert!(err.loader_source::<std::io::Error>().is_none());
    /// ```
    pub fn loader_source<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Self::Loader { source, .. } => source.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// Whether the same call may succeed if tried again: true for tier failures, timeouts and
    /// skipped tiers, false for bad input, refused commands, configuration and loader outcomes.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Backend { .. } | Self::Timeout { .. } | Self::Unavailable { .. }
        )
    }

    /// The tier this error is about, if it is about one.
    pub fn tier(&self) -> Option<&str> {
        match self {
            Self::Backend { tier, .. }
            | Self::Refused { tier, .. }
            | Self::Unavailable { tier, .. } => Some(tier),
            Self::Timeout { what, .. } if what != "loader" => Some(what),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_error_names_tier_and_key() {
        let err = Error::backend("redis", Some("user:1"), std::io::Error::other("reset"));
        assert_eq!(
            err.to_string(),
            "tier redis failed for key \"user:1\": reset"
        );
        assert!(err.is_retryable());
        assert_eq!(err.tier(), Some("redis"));
    }

    #[test]
    fn a_loader_error_is_handed_back_as_its_own_type() {
        let err = Error::loader(
            "k",
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        let io = err.loader_source::<std::io::Error>();
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );
        assert!(err.loader_source::<std::fmt::Error>().is_none());
        let other = Error::backend("redis", None, std::io::Error::other("reset"));
        assert!(other.loader_source::<std::io::Error>().is_none());
    }

    #[test]
    fn loader_error_is_not_retryable_and_keeps_its_source() {
        let err = Error::loader("k", "db down");
        assert!(!err.is_retryable());
        assert_eq!(err.to_string(), "loader for key \"k\" failed: db down");
        assert!(err.tier().is_none());
    }
}
