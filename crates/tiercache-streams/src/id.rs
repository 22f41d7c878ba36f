//! [`EntryId`]: a stream entry's id, `<milliseconds>-<sequence>`.

use std::{cmp::Ordering, fmt, str::FromStr};

use crate::StreamError;

/// The id Redis gave a stream entry: `<milliseconds>-<sequence>`. Ids order entries in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryId {
    /// Milliseconds part.
    pub millis: u64,
    /// Sequence within the millisecond.
    pub sequence: u64,
}

impl EntryId {
    /// `0-0`: before every entry. Reading after it reads from the start.
    pub const ZERO: Self = Self {
        millis: 0,
        sequence: 0,
    };

    /// Parses `<milliseconds>-<sequence>` (a bare `<milliseconds>` means sequence 0).
    ///
    /// # Errors
    ///
    /// [`StreamError::BadId`] for anything else.
    pub fn parse(text: &str) -> Result<Self, StreamError> {
        let bad = || StreamError::BadId(text.to_owned());
        let (millis, sequence) = text.split_once('-').unwrap_or((text, "0"));
        Ok(Self {
            millis: millis.parse().map_err(|_| bad())?,
            sequence: sequence.parse().map_err(|_| bad())?,
        })
    }
}

impl FromStr for EntryId {
    type Err = StreamError;
    fn from_str(text: &str) -> Result<Self, StreamError> {
        Self::parse(text)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.millis, self.sequence)
    }
}

impl Ord for EntryId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.millis, self.sequence).cmp(&(other.millis, other.sequence))
    }
}

impl PartialOrd for EntryId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_print_and_order() {
        let id = EntryId::parse("1700000000000-3").unwrap();
        assert_eq!(id.to_string(), "1700000000000-3");
        assert_eq!(
            EntryId::parse("5").unwrap(),
            EntryId {
                millis: 5,
                sequence: 0
            }
        );
        assert!(EntryId::parse("1-2").unwrap() < EntryId::parse("1-10").unwrap());
        assert!(EntryId::ZERO < id);
        for bad in ["", "x-1", "1-", "1-2-3", "-1"] {
            assert!(EntryId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
