//! Keeping passwords out of everything a cache prints: errors, `Debug`, logs.

use url::Url;

/// What a redacted secret reads as.
pub(crate) const REDACTED: &str = "<redacted>";

/// What a redacted secret reads as inside a URL (where `<` and `>` would be percent-encoded).
const URL_REDACTED: &str = "redacted";

/// Query parameters of a Redis URL that carry a secret (fred's sentinel credentials).
const SECRET_QUERY_KEYS: [&str; 1] = ["sentinelPassword"];

/// `url` with its password (the `user:password@` part, or `:password@` for a bare password)
/// and any secret query parameter replaced by `redacted`. A URL that does not parse is not
/// shown at all: where its password lies cannot be told.
pub(crate) fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return "<a URL that does not parse (not shown: it may hold a password)>".to_owned();
    };
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have credentials, which then have no password.
        let _ = parsed.set_password(Some(URL_REDACTED));
    }
    let has_secret = parsed
        .query_pairs()
        .any(|(key, _)| SECRET_QUERY_KEYS.contains(&key.as_ref()));
    if has_secret {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if SECRET_QUERY_KEYS.contains(&key.as_ref()) {
                    URL_REDACTED.to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Whether `url` asks for TLS (`rediss://`, `rediss-cluster://`, `valkeys://`, ...).
pub(crate) fn wants_tls(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    let scheme = scheme.to_ascii_lowercase();
    scheme.starts_with("rediss") || scheme.starts_with("valkeys")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_parameters_are_redacted() {
        for (url, kept) in [
            (
                "redis://:hunter2@127.0.0.1:6379",
                "redis://:redacted@127.0.0.1:6379",
            ),
            (
                "redis://app:hunter2@127.0.0.1:6379/2",
                "redis://app:redacted@127.0.0.1:6379/2",
            ),
            (
                "redis-sentinel://app:hunter2@h:26379?sentinelServiceName=m&sentinelPassword=hunter2",
                "sentinelServiceName=m",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains(kept), "{shown} should keep {kept}");
        }
        assert!(!redact_url("redis://app:hunter2@[::1").contains("hunter2"));
    }

    #[test]
    fn tls_schemes_are_recognised() {
        for url in [
            "rediss://h:1",
            "REDISS://h:1",
            "rediss-cluster://h:1",
            "valkeys://h",
        ] {
            assert!(wants_tls(url), "{url}");
        }
        for url in [
            "redis://h:1",
            "redis-cluster://h:1",
            "unix:///tmp/s",
            "nonsense",
        ] {
            assert!(!wants_tls(url), "{url}");
        }
    }
}
