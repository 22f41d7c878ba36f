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
    } else if has_control(text) {
        Some("contains a control character")
    } else {
        None
    }
}

/// Whether `text` holds a control character (Unicode category Cc: U+0000–U+001F and
/// U+007F–U+009F). Every read of a key below L1 checks it, so ASCII text, the common case, is
/// checked byte by byte instead of decoding each character.
fn has_control(text: &str) -> bool {
    if text.is_ascii() {
        text.bytes().any(|b| b < 0x20 || b == 0x7F)
    } else {
        text.chars().any(char::is_control)
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

/// What every key the cache keeps for itself starts with, right after the namespace's prefix:
/// tag markers (`<ns>:\u{1}tag:<tag>`), the stream bus's stream (`<ns>:\u{1}bus:<channel>`).
/// User keys may not hold a control character, so no user key can produce one of these.
pub const RESERVED_MARK: char = '\u{1}';

/// A namespace: the prefix that keeps one cache's keys apart from another's in shared tiers.
///
/// Every key is stored as `<name>:<key>`, and the unnamed namespace as `:<key>`. A name may not
/// hold the separator (`:`), so the stored key splits back into exactly one (namespace, key)
/// pair: no two caches with different namespaces can ever touch each other's keys, and prefix,
/// tag and clear operations stay inside their own. Internal keys live under
/// `<name>:`[`RESERVED_MARK`], which no user key produces, so a Redis ACL of `~<name>:*` covers
/// all of a cache's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
}

impl Default for Namespace {
    /// The unnamed namespace: keys are stored as `:<key>`.
    fn default() -> Self {
        Self {
            prefix: NAMESPACE_SEPARATOR.to_string(),
        }
    }
}

impl Namespace {
    /// A namespace named `name`; `""` is the unnamed one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when `name` breaks the key rules or holds the separator `:` (an
    /// empty name is allowed). Use `-`, `_` or `.` to build names from parts (`shop-v2`).
    pub fn new(name: &str) -> Result<Self> {
        if name.is_empty() {
            return Ok(Self::default());
        }
        validate_key(name)?;
        if name.contains(NAMESPACE_SEPARATOR) {
            return Err(Error::InvalidKey {
                key: shortened(name),
                reason: "a namespace name may not contain ':', the separator between \
                         namespace and key (use '-', '_' or '.')",
            });
        }
        Ok(Self {
            prefix: format!("{name}{NAMESPACE_SEPARATOR}"),
        })
    }

    /// The namespace's name without the separator; `""` for the unnamed one.
    pub fn name(&self) -> &str {
        self.prefix
            .strip_suffix(NAMESPACE_SEPARATOR)
            .unwrap_or(&self.prefix)
    }

    /// The text every key of this namespace starts with: `"shop:"`, or `":"` unnamed.
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

    /// The stored name of an internal key of this namespace (`name` after the reserved mark).
    pub fn reserved(&self, name: &str) -> String {
        reserved_key(&self.prefix, name)
    }
}

/// The internal key `name` under a namespace whose keys start with `key_prefix`: the prefix,
/// [`RESERVED_MARK`], then `name`. For transports, which learn the prefix from
/// [`BusScope`](crate::BusScope).
pub fn reserved_key(key_prefix: &str, name: &str) -> String {
    let mut out = String::with_capacity(key_prefix.len() + 1 + name.len());
    out.push_str(key_prefix);
    out.push(RESERVED_MARK);
    out.push_str(name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ASCII fast path agrees with `char::is_control` on every ASCII byte and on the C1
    /// controls and their neighbours.
    #[test]
    fn the_control_check_matches_the_unicode_category() {
        for c in (0u32..0x200).filter_map(char::from_u32) {
            let text = format!("k{c}k");
            assert_eq!(has_control(&text), c.is_control(), "U+{:04X}", c as u32);
        }
    }

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
        assert_eq!(ns.reserved("tag:t"), "shop:\u{1}tag:t");
        let none = Namespace::new("").unwrap();
        assert_eq!(none.apply("user:1"), ":user:1");
        assert_eq!(none.name(), "");
        assert_eq!(none, Namespace::default());
        assert!(Namespace::new("bad\0").is_err());
    }

    #[test]
    fn no_two_namespace_and_key_pairs_share_a_stored_key() {
        assert!(matches!(
            Namespace::new("x:y"),
            Err(Error::InvalidKey { reason, .. }) if reason.contains("':'")
        ));
        let names = ["", "x", "xy", "x.y", "y"];
        let keys = ["k", "y:k", ":k", "x:y:k", "k:"];
        let mut seen = std::collections::HashMap::new();
        for name in names {
            let ns = Namespace::new(name).unwrap();
            for key in keys {
                let stored = ns.apply(key);
                if let Some(earlier) = seen.insert(stored.clone(), (name, key)) {
                    panic!("{earlier:?} and {:?} both store {stored:?}", (name, key));
                }
                // An internal key of any namespace is never a user key of another.
                for other in names {
                    let reserved = Namespace::new(other).unwrap().reserved("tag:k");
                    assert_ne!(stored, reserved);
                }
            }
        }
    }
}
