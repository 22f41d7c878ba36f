//! Turning a literal prefix into a SCAN MATCH pattern that matches nothing more.

/// `prefix*`, with every glob character of `prefix` (`* ? [ ] \`) escaped, so that the pattern
/// matches exactly the keys that start with the literal text.
pub(crate) fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 8);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_glob_character() {
        assert_eq!(prefix_pattern("user:"), "user:*");
        assert_eq!(prefix_pattern(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f*");
        assert_eq!(prefix_pattern(""), "*");
    }
}
