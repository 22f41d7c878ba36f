//! The run: writers and readers on every node for a while, faults on a schedule, every
//! operation recorded; then the check.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::{Bound, Node, Op, Record, Report, Source, TAGS, check::check, tag_of};
use crate::{Proxy, RedisServer};

/// A fault injected during a run, at an offset from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The server is frozen (SIGSTOP) for a while: it answers nothing, its connections stay.
    Pause {
        /// When.
        at: Duration,
        /// For how long.
        lasting: Duration,
    },
    /// The server is killed, and started again on the same port after a while (it keeps
    /// nothing: every tier and lease is lost).
    Restart {
        /// When.
        at: Duration,
        /// How long it stays down.
        down: Duration,
    },
    /// Every Pub/Sub connection is killed (`CLIENT KILL TYPE pubsub`): the buses lose what is
    /// published until they subscribe again.
    KillPubSub {
        /// When.
        at: Duration,
    },
    /// A command sent to the server, e.g. `XTRIM <stream> MAXLEN 0` to trim the stream bus's
    /// stream away under its readers.
    Command {
        /// When.
        at: Duration,
        /// The command's words.
        words: &'static [&'static str],
    },
    /// One instance is cut off from Redis (its [`Proxy`] carries nothing) while the others go
    /// on: only its L1 max age and gap handling bound what it serves.
    Partition {
        /// When.
        at: Duration,
        /// For how long.
        lasting: Duration,
        /// Which instance's proxy (its index in [`Targets::proxies`]).
        instance: usize,
    },
}

impl Fault {
    fn at(self) -> Duration {
        match self {
            Self::Pause { at, .. }
            | Self::Restart { at, .. }
            | Self::KillPubSub { at }
            | Self::Command { at, .. }
            | Self::Partition { at, .. } => at,
        }
    }
}

/// What faults act on: the server, and the proxies between instances and the server.
#[derive(Debug, Default, Clone)]
pub struct Targets {
    /// The redis-server every instance uses.
    pub server: Option<Arc<Mutex<RedisServer>>>,
    /// Per instance, the proxy its connections go through (when the test set one up).
    pub proxies: Vec<Arc<Proxy>>,
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Seeds every task's choices and timing; print it, and a failing run replays.
    pub seed: u64,
    /// Keys `k:0` .. `k:{keys-1}`.
    pub keys: usize,
    /// How long readers and writers run.
    pub duration: Duration,
    /// Reader tasks per node.
    pub readers_per_node: usize,
    /// Longest pause between two writes of one writer (each node has one writer).
    pub write_pause: Duration,
    /// Longest pause between two reads of one reader (the machine must keep room for the
    /// servers: a run that starves them measures timeouts, not coherence).
    pub read_pause: Duration,
    /// The promise checked.
    pub bound: Bound,
    /// Faults, by offset from the start.
    pub faults: Vec<Fault>,
    /// The longest a load takes after it read the source.
    pub load_delay: Duration,
}

/// A small seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
        usize::try_from(self.next() % n).unwrap_or(0)
    }

    fn pause(&mut self, longest: Duration) -> Duration {
        let micros = u64::try_from(longest.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_micros(self.next() % micros)
    }
}

struct Shared {
    source: Arc<Source>,
    records: Mutex<Vec<Record>>,
    /// One lock per key: writes of one key are serialized, as a row lock would do.
    key_locks: Vec<tokio::sync::Mutex<()>>,
    origin: Instant,
    deadline: Instant,
    /// The first few distinct errors of failed writes, for the report.
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn note_error(&self, err: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if errors.len() < 5 && !errors.iter().any(|seen| seen == err) {
            errors.push(err.to_owned());
        }
    }

    fn key(index: usize) -> String {
        format!("k:{index}")
    }

    fn record(&self, instance: usize, started: Instant, op: Op) {
        let record = Record {
            instance,
            start: started - self.origin,
            end: self.origin.elapsed(),
            op,
        };
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
}

/// Runs `workload` on `nodes` (one per instance), with faults against `targets`, and checks the
/// history. Returns the report and the history.
pub async fn run(
    nodes: &[Arc<dyn Node>],
    workload: &Workload,
    targets: Targets,
) -> (Report, Vec<Record>) {
    let origin = Instant::now();
    let shared = Arc::new(Shared {
        source: Arc::new(Source::with_load_delay(workload.load_delay)),
        records: Mutex::new(Vec::new()),
        key_locks: (0..workload.keys)
            .map(|_| tokio::sync::Mutex::new(()))
            .collect(),
        origin,
        deadline: origin + workload.duration,
        errors: Mutex::new(Vec::new()),
    });
    let mut tasks = Vec::new();
    for (instance, node) in nodes.iter().enumerate() {
        let seed = workload.seed ^ ((instance as u64 + 1) << 32);
        tasks.push(tokio::spawn(write_loop(
            Arc::clone(node),
            Arc::clone(&shared),
            instance,
            Rng::new(seed),
            workload.clone(),
        )));
        for reader in 0..workload.readers_per_node {
            let seed = seed ^ (reader as u64 + 1);
            tasks.push(tokio::spawn(read_loop(
                Arc::clone(node),
                Arc::clone(&shared),
                instance,
                Rng::new(seed),
                (workload.keys, workload.read_pause),
            )));
        }
    }
    // NOTE: the server and proxies live until every task is done (the server is dropped, and so
    // stopped, with its last handle).
    let windows = inject(&workload.faults, &targets, origin).await;
    for task in tasks {
        // NOTE: a task that panicked is a failed node call the history already lacks; the
        // check still runs on what was recorded.
        let _joined = task.await;
    }
    drop(targets);
    let records = std::mem::take(
        &mut *shared
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let mut report = check(&records, &windows, workload.bound);
    report.write_errors =
        std::mem::take(&mut *shared.errors.lock().unwrap_or_else(PoisonError::into_inner));
    (report, records)
}

/// Runs the faults on schedule; the windows they covered, as offsets from `origin`.
async fn inject(faults: &[Fault], targets: &Targets, origin: Instant) -> Vec<(Duration, Duration)> {
    let mut windows = Vec::new();
    let mut faults = faults.to_vec();
    faults.sort_by_key(|fault| fault.at());
    let act = |what: &dyn Fn(&mut RedisServer) -> std::io::Result<()>| {
        let Some(server) = &targets.server else {
            return;
        };
        let mut server = server.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = what(&mut server) {
            tracing::warn!(?err, "fault injection failed");
        }
    };
    for fault in faults {
        tokio::time::sleep_until((origin + fault.at()).into()).await;
        let start = origin.elapsed();
        match fault {
            Fault::Pause { lasting, .. } => {
                act(&|server| server.pause());
                tokio::time::sleep(lasting).await;
                act(&|server| server.resume());
            }
            Fault::Restart { down, .. } => {
                act(&|server| {
                    server.stop();
                    Ok(())
                });
                tokio::time::sleep(down).await;
                act(&|server| server.restart());
            }
            Fault::KillPubSub { .. } => {
                act(&|server| {
                    server
                        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
                        .map(drop)
                });
            }
            Fault::Command { words, .. } => {
                act(&|server| server.command(words).map(drop));
            }
            Fault::Partition {
                lasting, instance, ..
            } => {
                let proxy = targets.proxies.get(instance);
                if let Some(proxy) = proxy {
                    proxy.blackhole();
                }
                tokio::time::sleep(lasting).await;
                if let Some(proxy) = proxy {
                    proxy.heal();
                }
            }
        }
        windows.push((start, origin.elapsed()));
    }
    windows
}

async fn write_loop(
    node: Arc<dyn Node>,
    shared: Arc<Shared>,
    instance: usize,
    mut rng: Rng,
    workload: Workload,
) {
    while Instant::now() < shared.deadline {
        let choice = rng.below(100);
        let first = rng.below(workload.keys);
        // The keys the write covers, in index order (locks are taken in that order).
        let covered: Vec<usize> = match choice {
            // Two keys of one tag (a batch carries one set of tags).
            0..=4 => {
                let second = (first + TAGS) % workload.keys.max(1);
                let mut both = vec![first, second];
                both.sort_unstable();
                both.dedup();
                both
            }
            5..=7 => (0..workload.keys)
                .filter(|index| Shared::key(*index).starts_with(&Shared::key(first)))
                .collect(),
            8..=10 => (0..workload.keys)
                .filter(|index| index % TAGS == first % TAGS)
                .collect(),
            _ => vec![first],
        };
        let mut guards = Vec::with_capacity(covered.len());
        for index in &covered {
            guards.push(shared.key_locks[*index].lock().await);
        }
        let keys: Vec<(String, u64)> = covered
            .iter()
            .map(|index| {
                let key = Shared::key(*index);
                let version = shared.source.bump(&key);
                (key, version)
            })
            .collect();
        let started = Instant::now();
        let (what, result) = match choice {
            0..=4 => ("set_many", node.set_many(&keys).await),
            5..=7 => (
                "invalidate_prefix",
                node.invalidate_prefix(&Shared::key(first)).await,
            ),
            8..=10 => (
                "invalidate_tag",
                node.invalidate_tag(&tag_of(&Shared::key(first))).await,
            ),
            11..=59 => ("set", node.set(&keys[0].0, keys[0].1).await),
            _ => ("invalidate", node.invalidate(&keys[0].0).await),
        };
        if let Err(err) = &result {
            tracing::debug!(instance, what, %err, "a write's cache call failed");
            shared.note_error(&format!("{what}: {err}"));
        }
        shared.record(
            instance,
            started,
            Op::Write {
                keys,
                ok: result.is_ok(),
            },
        );
        drop(guards);
        tokio::time::sleep(rng.pause(workload.write_pause)).await;
    }
}

async fn read_loop(
    node: Arc<dyn Node>,
    shared: Arc<Shared>,
    instance: usize,
    mut rng: Rng,
    (keys, pause): (usize, Duration),
) {
    while Instant::now() < shared.deadline {
        let choice = rng.below(100);
        let started = Instant::now();
        let op = match choice {
            0..=39 => {
                let key = Shared::key(rng.below(keys));
                node.get(&key).await.ok().map(|seen| Op::Read {
                    seen: vec![(key, seen)],
                    loads: false,
                })
            }
            40..=84 => {
                let key = Shared::key(rng.below(keys));
                let source = Arc::clone(&shared.source);
                node.get_or_compute(&key, source)
                    .await
                    .ok()
                    .map(|seen| Op::Read {
                        seen: vec![(key, Some(seen))],
                        loads: true,
                    })
            }
            _ => {
                let asked: Vec<String> = (0..3).map(|_| Shared::key(rng.below(keys))).collect();
                node.get_many(&asked).await.ok().map(|seen| Op::Read {
                    seen: asked.into_iter().zip(seen).collect(),
                    loads: false,
                })
            }
        };
        // A failed read is no answer to check.
        if let Some(op) = op {
            shared.record(instance, started, op);
        }
        tokio::time::sleep(rng.pause(pause)).await;
    }
}
