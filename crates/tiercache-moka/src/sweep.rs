//! Narrow removal (a key prefix, a tag) by walking the entries.
//!
//! Moka's own predicate removal (`invalidate_entries_if`) is not used: it drops a predicate once
//! a housekeeping scan ends, and that scan sees only entries whose insert it has already
//! applied, so an entry inserted just before the removal, while housekeeping runs, survives it
//! (`an_entry_inserted_just_before_a_removal_never_survives_it` shows it). Walking the hash
//! table sees every insert that has returned. It costs one pass over the entries per removal,
//! on the caller's task; removals by prefix or tag are rare next to reads.

/// Removes every entry for which `matches(key, value)` holds and returns how many it removed.
/// Every entry inserted before the call is looked at; one inserted during it may or may not be.
pub(crate) async fn remove_where<V>(
    entries: &crate::config::Entries<V>,
    matches: impl Fn(&str, &V) -> bool,
) -> u64
where
    V: Clone + Send + Sync + 'static,
{
    let doomed: Vec<_> = entries
        .iter()
        .filter(|(key, value)| matches(key, value))
        .map(|(key, _)| key)
        .collect();
    let mut removed = 0;
    for key in doomed {
        if entries.remove(key.as_str()).await.is_some() {
            removed += 1;
        }
    }
    removed
}
