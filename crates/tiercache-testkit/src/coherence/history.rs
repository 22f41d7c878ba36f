//! The history of a run: every operation with its instance, its start and end, and the versions
//! it wrote or saw.

use std::time::Duration;

/// What one operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A write of these keys at these versions (`set`, `set_many`, `invalidate`,
    /// `invalidate_prefix`: the versions were written to the source first). `ok` is false when
    /// the cache call returned an error.
    Write {
        /// The keys and the versions the source now holds for them.
        keys: Vec<(String, u64)>,
        /// Whether the cache call succeeded.
        ok: bool,
    },
    /// A read of these keys and what it returned (`None`: a miss).
    Read {
        /// The keys and the versions seen.
        seen: Vec<(String, Option<u64>)>,
        /// Whether the call loads on a miss (`get_or_compute`): then `None` never occurs.
        loads: bool,
    },
}

/// One recorded operation. Times are offsets from the start of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The instance that ran it.
    pub instance: usize,
    /// When it was called.
    pub start: Duration,
    /// When it returned.
    pub end: Duration,
    /// What it did.
    pub op: Op,
}
