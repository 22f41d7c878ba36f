//! fred's errors, as tiercache errors: the one place they are mapped.

use fred::error::{Error as FredError, ErrorKind};
use tiercache_core::Error;

/// Error codes of Redis replies that say the server cannot serve now (still loading its data,
/// busy in a script, a cluster without quorum or mid-failover), as opposed to refusing this
/// command: these count as the tier being unwell.
const UNWELL_REPLIES: [&str; 6] = [
    "LOADING",
    "BUSY",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MASTERDOWN",
    "READONLY",
];

/// Maps a fred error on `tier` (about `key`, when there is one) to a tiercache [`Error`]: a
/// timeout, a failure that says the tier is unreachable or overloaded ([`Error::Backend`], which
/// the circuit breaker counts), or a command the server refused ([`Error::Refused`]).
pub(crate) fn from_fred(tier: &str, key: Option<&str>, err: FredError) -> Error {
    match err.kind() {
        ErrorKind::Timeout => timed_out(tier, key),
        _ if is_refusal(&err) => Error::refused(tier, key, err),
        _ => Error::backend(tier, key, err),
    }
}

/// Whether the server answered and said no to this command (a reply with an error code that
/// is not one of [`UNWELL_REPLIES`]), or the reply could not be read as the command's answer.
fn is_refusal(err: &FredError) -> bool {
    match err.kind() {
        ErrorKind::IO
        | ErrorKind::Canceled
        | ErrorKind::Routing
        | ErrorKind::Cluster
        | ErrorKind::Backpressure
        | ErrorKind::Sentinel
        | ErrorKind::Config
        | ErrorKind::Url
        | ErrorKind::Timeout => false,
        ErrorKind::Parse | ErrorKind::NotFound => true,
        _ => match reply_code(err.details()) {
            Some(code) => !UNWELL_REPLIES.contains(&code),
            None => false,
        },
    }
}

/// The error code a Redis error reply starts with (`OOM`, `NOPERM`, `ERR`, ...), if `details`
/// is one.
fn reply_code(details: &str) -> Option<&str> {
    let code = details.split_whitespace().next()?;
    (code.len() >= 2 && code.bytes().all(|b| b.is_ascii_uppercase())).then_some(code)
}

/// The error for a call that did not finish within the command timeout.
pub(crate) fn timed_out(tier: &str, key: Option<&str>) -> Error {
    Error::Timeout {
        what: tier.to_owned(),
        key: key.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(kind: ErrorKind, details: &str) -> Error {
        from_fred("redis", Some("k"), FredError::new(kind, details.to_owned()))
    }

    #[test]
    fn refusals_are_not_outages() {
        for reply in [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "NOPERM User app has no permissions to run the 'flushall' command",
            "ERR wrong number of arguments for 'get' command",
        ] {
            let err = mapped(ErrorKind::Unknown, reply);
            assert!(matches!(err, Error::Refused { .. }), "{reply}: {err:?}");
            assert!(!err.is_retryable());
            assert!(err.to_string().contains(reply), "{err}");
        }
        let wrong_type = mapped(
            ErrorKind::InvalidArgument,
            "WRONGTYPE Operation against a key",
        );
        assert!(matches!(wrong_type, Error::Refused { .. }));
    }

    #[test]
    fn outages_open_the_breaker() {
        for (kind, details) in [
            (ErrorKind::IO, "Connection reset by peer"),
            (ErrorKind::Canceled, "Connection closed"),
            (
                ErrorKind::Unknown,
                "LOADING Redis is loading the dataset in memory",
            ),
            (ErrorKind::Unknown, "BUSY Redis is busy running a script."),
            (ErrorKind::Cluster, "CLUSTERDOWN The cluster is down"),
            (ErrorKind::Unknown, "something went wrong in the client"),
        ] {
            let err = mapped(kind, details);
            assert!(matches!(err, Error::Backend { .. }), "{details}: {err:?}");
            assert!(err.is_retryable());
        }
        assert!(matches!(
            mapped(ErrorKind::Timeout, "t"),
            Error::Timeout { .. }
        ));
    }
}
