//! Key rules and namespacing.

use crate::{Error, Result};

/// The longest key accepted, in bytes (before the namespace is added).
pub const MAX_KEY_LEN: usize = 1024;

/// Separator between a namespace and a key in shared tiers: `"shop:user:1"`.
pub const NAMESPACE_SEPARATOR: char = ':';

/// Checks a key: not empty, at most [`MAX_KEY_LEN`] bytes, no control characters.
///
/// # Errors
///
/// [`Error::InvalidKey`] saying which rule the key breaks.
pub fn validate_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "empty"
    } else if key.len() > MAX_KEY_LEN {
        "longer than 1024 bytes"
    } else if key.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        key: key.chars().take(64).collect(),
        reason,
    })
}

/// A namespace: the prefix that keeps one cache's keys apart from another's in shared tiers.
///
/// The empty namespace adds nothing, so keys are stored as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
}

impl Namespace {
    /// A namespace named `name`; `""` means none.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when `name` breaks the key rules (an empty name is allowed).
    pub fn new(name: &str) -> Result<Self> {
        if name.is_empty() {
            return Ok(Self::default());
        }
        validate_key(name)?;
        Ok(Self {
            prefix: format!("{name}{NAMESPACE_SEPARATOR}"),
        })
    }

    /// The namespace's name without the separator; `""` for none.
    pub fn name(&self) -> &str {
        self.prefix
            .strip_suffix(NAMESPACE_SEPARATOR)
            .unwrap_or(&self.prefix)
    }

    /// The text every namespaced key starts with (`"shop:"`); `""` for none.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `key` as stored in shared tiers.
    pub fn apply(&self, key: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + key.len());
        out.push_str(&self.prefix);
        out.push_str(key);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_long_and_control_keys() {
        for bad in [
            String::new(),
            "a".repeat(MAX_KEY_LEN + 1),
            "a\nb".into(),
            "\u{7f}".into(),
        ] {
            assert!(
                matches!(validate_key(&bad), Err(Error::InvalidKey { .. })),
                "{bad:?}"
            );
        }
        validate_key(&"k".repeat(MAX_KEY_LEN)).unwrap();
        validate_key("user:1/ünïcode ok").unwrap();
    }

    #[test]
    fn namespace_prefixes_keys() {
        let ns = Namespace::new("shop").unwrap();
        assert_eq!(ns.apply("user:1"), "shop:user:1");
        assert_eq!(ns.name(), "shop");
        let none = Namespace::new("").unwrap();
        assert_eq!(none.apply("user:1"), "user:1");
        assert!(Namespace::new("bad\0").is_err());
    }
}
