//! Entry points for coverage-guided fuzzing (the `fuzz/` workspace) and for the replay of its
//! corpus by the test suite. Not part of the API: only built with the `fuzzing` feature.

use tiercache_redis::fuzzing::value_from;

use crate::{EntryId, reply};

/// Reads replies of every shape the stream commands can give (XRANGE, XREAD, XAUTOCLAIM,
/// XPENDING in both forms) and an entry id as text, all built from `data`. Never panics: a
/// reply of the wrong shape is an error.
pub fn stream_replies(data: &[u8]) {
    let mut rest = data;
    let value = value_from(&mut rest, 0);
    let _ = reply::entries(value.clone());
    let _ = reply::read(value.clone(), "fuzz");
    let _ = reply::autoclaim(value.clone());
    let _ = reply::pending_summary(value.clone());
    let _ = reply::pending_entries(value);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(id) = EntryId::parse(text)
    {
        assert_eq!(EntryId::parse(&id.to_string()).ok(), Some(id), "{text:?}");
    }
}
