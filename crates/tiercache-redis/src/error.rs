//! fred's errors, as tiercache errors: the one place they are mapped.

use fred::error::{Error as FredError, ErrorKind};
use tiercache_core::Error;

/// Maps a fred error on `tier` (about `key`, when there is one) to a tiercache [`Error`].
pub(crate) fn from_fred(tier: &str, key: Option<&str>, err: FredError) -> Error {
    match err.kind() {
        ErrorKind::Timeout => Error::Timeout {
            what: tier.to_owned(),
            key: key.map(str::to_owned),
        },
        _ => Error::backend(tier, key, err),
    }
}

/// The error for a call that did not finish within the command timeout.
pub(crate) fn timed_out(tier: &str, key: Option<&str>) -> Error {
    Error::Timeout {
        what: tier.to_owned(),
        key: key.map(str::to_owned),
    }
}
