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
    match broken_rule(key, MAX_KEY_LEN, "longer than 1024 bytes") {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidKey {
            key: shortened(key),
            reason,
        }),
    }
}

/// The rule `text` breaks, if any: empty, longer than `max_len` bytes, or a control character.
fn broken_rule(text: &str, max_len: usize, too_long: &'static str) -> Option<&'static str> {
    if text.is_empty() {
        Some("empty")
    } else if text.len() > max_len {
        Some(too_long)
    } else if text.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}

/// `text` cut to 64 characters, for an error message.
fn shortened(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Checks the tags of one entry: at most [`MAX_TAGS`](crate::MAX_TAGS) of them, each not
/// empty, at most [`MAX_TAG_LEN`](crate::MAX_TAG_LEN) bytes, no control characters.
///
/// # Errors
///
/// [`Error::InvalidTag`] saying which tag breaks which rule.
pub fn validate_tags(tags: &[String]) -> Result<()> {
    if tags.len() > crate::MAX_TAGS {
        return Err(Error::InvalidTag {
            tag: String::new(),
            reason: "more than 255 tags on one entry",
        });
    }
    tags.iter().try_for_each(|tag| validate_tag(tag))
}

/// Checks one tag (see [`validate_tags`]).
///
/// # Errors
///
/// [`Error::InvalidTag`] saying which rule the tag breaks.
pub fn validate_tag(tag: &str) -> Result<()> {
    match broken_rule(tag, crate::MAX_TAG_LEN, "longer than 255 bytes") {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidTag {
            tag: shortened(tag),
            reason,
        }),
    }
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
