//! The check of a history against the bound.

use std::{collections::HashMap, fmt, time::Duration};

use super::{Bound, Op, Record};

/// A read that returned a version older than the promise allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// The read.
    pub read: Record,
    /// What it returned.
    pub seen: u64,
    /// The write it should have seen (completed `lag` before the read started).
    pub write: Record,
    /// How long before the read the write had completed.
    pub lag: Duration,
    /// How long the promise allowed.
    pub allowed: Duration,
    /// The operations on the key around the read, in start order.
    pub around: Vec<Record>,
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Operations checked: reads and writes.
    pub reads: usize,
    /// Writes recorded (failed ones included).
    pub writes: usize,
    /// Writes whose cache call failed.
    pub failed_writes: usize,
    /// The first few distinct errors those calls returned.
    pub write_errors: Vec<String>,
    /// Faults injected.
    pub faults: usize,
    /// Reads that returned an older version than allowed.
    pub violations: Vec<Violation>,
    /// The longest a read on another instance returned an older version after the newer one's
    /// write completed, over every read (allowed or not).
    pub max_staleness: Duration,
    /// The same on the writing instance itself.
    pub max_own_staleness: Duration,
    /// The longest such staleness on another instance for a write that succeeded, away from
    /// every fault: what the healthy bus delivers.
    pub max_healthy_staleness: Duration,
}

/// One write of one key, as the check needs it.
struct Written<'a> {
    version: u64,
    ok: bool,
    record: &'a Record,
}

/// Checks `records` against `bound`, with faults under way during `faults` (start, end).
pub(crate) fn check(records: &[Record], faults: &[(Duration, Duration)], bound: Bound) -> Report {
    let mut report = Report {
        faults: faults.len(),
        ..Report::default()
    };
    let mut writes: HashMap<&str, Vec<Written<'_>>> = HashMap::new();
    for record in records {
        if let Op::Write { keys, ok } = &record.op {
            report.writes += 1;
            if !ok {
                report.failed_writes += 1;
            }
            for (key, version) in keys {
                writes.entry(key).or_default().push(Written {
                    version: *version,
                    ok: *ok,
                    record,
                });
            }
        }
    }
    let near_fault = |from: Duration, to: Duration| {
        faults
            .iter()
            .any(|(start, end)| from <= *end + bound.healthy && to + bound.healthy >= *start)
    };
    for read in records {
        let Op::Read { seen, loads } = &read.op else {
            continue;
        };
        report.reads += 1;
        for (key, version) in seen {
            let seen = match version {
                Some(version) => *version,
                None if *loads => 0,
                // A miss is always allowed: the caller goes to the source.
                None => continue,
            };
            let Some(of_key) = writes.get(key.as_str()) else {
                continue;
            };
            for write in of_key {
                if write.version <= seen || write.record.end >= read.start {
                    continue;
                }
                let lag = read.start - write.record.end;
                let own = write.record.instance == read.instance;
                if own {
                    report.max_own_staleness = report.max_own_staleness.max(lag);
                } else {
                    report.max_staleness = report.max_staleness.max(lag);
                }
                let faulty = !write.ok
                    || near_fault(write.record.start, write.record.end)
                    || near_fault(read.start, read.start);
                if !faulty && !own {
                    report.max_healthy_staleness = report.max_healthy_staleness.max(lag);
                }
                let allowed = match (faulty, own) {
                    (true, _) => bound.faulty,
                    (false, true) => Duration::ZERO,
                    (false, false) => bound.healthy,
                };
                if lag > allowed {
                    report.violations.push(Violation {
                        key: key.clone(),
                        read: read.clone(),
                        seen,
                        write: write.record.clone(),
                        lag,
                        allowed,
                        around: around(records, key, read.start),
                    });
                }
            }
        }
    }
    report
}

/// The operations on `key` that started within 50 ms of `at`, in start order.
fn around(records: &[Record], key: &str, at: Duration) -> Vec<Record> {
    let window = Duration::from_millis(50);
    let mut near: Vec<Record> = records
        .iter()
        .filter(|record| record.start + window >= at && record.start <= at + window)
        .filter(|record| match &record.op {
            Op::Write { keys, .. } => keys.iter().any(|(k, _)| k == key),
            Op::Read { seen, .. } => seen.iter().any(|(k, _)| k == key),
        })
        .cloned()
        .collect();
    near.sort_by_key(|record| record.start);
    near
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?}: instance {} read version {} at {:?}, {:?} after instance {} completed the write of a newer one (allowed {:?})",
            self.key,
            self.read.instance,
            self.seen,
            self.read.start,
            self.lag,
            self.write.instance,
            self.allowed
        )?;
        for record in &self.around {
            writeln!(
                f,
                "    {:>12?} .. {:>12?}  instance {}  {:?}",
                record.start, record.end, record.instance, record.op
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} reads, {} writes ({} failed), {} faults, {} violations; max staleness {:?} on other instances ({:?} away from faults), {:?} on the writer",
            self.reads,
            self.writes,
            self.failed_writes,
            self.faults,
            self.violations.len(),
            self.max_staleness,
            self.max_healthy_staleness,
            self.max_own_staleness
        )?;
        for error in &self.write_errors {
            writeln!(f, "  a write failed: {error}")?;
        }
        for violation in self.violations.iter().take(5) {
            write!(f, "{violation}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn write(instance: usize, start: u64, end: u64, version: u64) -> Record {
        Record {
            instance,
            start: ms(start),
            end: ms(end),
            op: Op::Write {
                keys: vec![("k".to_owned(), version)],
                ok: true,
            },
        }
    }

    fn read(instance: usize, start: u64, seen: Option<u64>) -> Record {
        Record {
            instance,
            start: ms(start),
            end: ms(start + 1),
            op: Op::Read {
                seen: vec![("k".to_owned(), seen)],
                loads: false,
            },
        }
    }

    const BOUND: Bound = Bound {
        healthy: Duration::from_millis(10),
        faulty: Duration::from_millis(100),
    };

    #[test]
    fn an_old_version_past_the_bound_is_a_violation_and_within_it_is_not() {
        let history = [
            write(0, 0, 5, 1),
            read(1, 10, Some(0)),
            read(1, 30, Some(0)),
        ];
        let report = check(&history, &[], BOUND);
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.violations[0].lag, ms(25));
        assert_eq!(report.max_staleness, ms(25));
    }

    #[test]
    fn the_writer_reads_its_own_write_at_once() {
        let history = [write(0, 0, 5, 1), read(0, 6, Some(0))];
        let report = check(&history, &[], BOUND);
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.violations[0].allowed, Duration::ZERO);
    }

    #[test]
    fn misses_overlapping_reads_and_newer_versions_are_allowed() {
        let history = [
            write(0, 0, 5, 1),
            read(1, 3, Some(0)),
            read(1, 40, None),
            read(1, 41, Some(1)),
        ];
        assert!(check(&history, &[], BOUND).violations.is_empty());
    }

    #[test]
    fn near_a_fault_the_faulty_bound_applies() {
        let history = [write(0, 0, 5, 1), read(1, 50, Some(0))];
        assert!(
            check(&history, &[(ms(2), ms(20))], BOUND)
                .violations
                .is_empty()
        );
        assert_eq!(check(&history, &[], BOUND).violations.len(), 1);
    }
}
