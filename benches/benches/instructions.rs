//! Instruction counts of the CPU-bound paths, tiercache against the raw dependency: counted by
//! valgrind's callgrind, which counts instructions rather than time, so the figures repeat on a
//! noisy shared machine where wall-clock ratios of sub-microsecond paths drift.
//!
//! The bench runs itself under `valgrind --tool=callgrind` once per case, with collection on
//! only inside `icount_measured_region` (setup and warm-up are not counted), and divides by the
//! number of operations. Cases, 2,000 keys of the ~1 KiB struct, 20,000 operations each:
//!
//! - `icount_l1_get`: `Cache::get` on an L1 hit vs raw moka get + `T::clone`;
//! - `icount_l1_get_arc`: `Cache::get_arc` on an L1 hit vs raw moka get;
//! - `icount_get_or_compute_hit`: `get_or_compute` on an L1 hit vs raw moka get + clone;
//! - `icount_l2_cpu`: a read with no L1 from an in-process bytes tier (`MokaTier`), decoded, vs
//!   raw moka get of the bytes + `serde_json::from_slice` (the L2 read without the network);
//! - `icount_decode_json`, `icount_decode_postcard`: `Envelope::decode` vs the raw codec.
//!
//! Results go to `target/tiercache-bench/icount_*.json` for `cargo xtask bench`. Without
//! valgrind the bench says so and writes nothing (the rows read n/a).
#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]
#![expect(clippy::print_stdout, reason = "a bench reports on the terminal")]

use std::{
    future::Future,
    hint::black_box,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use tiercache::{
    Cache, CacheStrategy, JsonCodec, MemoryTier, MokaTier, PostcardCodec,
    core::{Decoded, Envelope},
};
use tiercache_benches::{Profile, profile, report, shuffled_keys};
use tokio::runtime::Runtime;

const KEYS: usize = 2_000;
const OPERATIONS: usize = 20_000;
const CHILD: &str = "--icount-child";

/// (result file, tiercache case, raw case, raw case's name in the report).
const SCENARIOS: [(&str, &str, &str, &str); 6] = [
    (
        "icount_l1_get",
        "l1_get",
        "raw_l1_get",
        "raw_moka_get_clone",
    ),
    (
        "icount_l1_get_arc",
        "l1_get_arc",
        "raw_l1_get_arc",
        "raw_moka_get",
    ),
    (
        "icount_get_or_compute_hit",
        "get_or_compute_hit",
        "raw_l1_get",
        "raw_moka_get_clone",
    ),
    (
        "icount_l2_cpu",
        "l2_cpu",
        "raw_l2_cpu",
        "raw_moka_bytes_get_serde_json",
    ),
    (
        "icount_decode_json",
        "decode_json",
        "raw_decode_json",
        "raw_serde_json",
    ),
    (
        "icount_decode_postcard",
        "decode_postcard",
        "raw_decode_postcard",
        "raw_postcard",
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == CHILD) {
        let case = args.get(at + 1).expect("a case after --icount-child");
        child(case);
        return;
    }
    if !report::selected("instructions") {
        return;
    }
    let valgrind = Command::new("valgrind").arg("--version").output();
    if !valgrind.is_ok_and(|out| out.status.success()) {
        println!(
            "instructions: valgrind is not installed (apt-get install -y valgrind); no counts"
        );
        return;
    }
    let dir = report::results_dir().join("icount");
    std::fs::create_dir_all(&dir).expect("create the results directory");
    let exe = std::env::current_exe().expect("this bench's path");
    for (file, ours, raw, raw_name) in SCENARIOS {
        let ours_count = count(&exe, &dir, ours);
        let raw_count = count(&exe, &dir, raw);
        let (Some(ours_count), Some(raw_count)) = (ours_count, raw_count) else {
            println!("{file}: no count (callgrind failed)");
            continue;
        };
        println!(
            "{file}: tiercache {ours_count:.1} instructions/op, {raw_name} {raw_count:.1} ({:.3}x)",
            ours_count / raw_count
        );
        report::write(file, ours_count, raw_count, raw_name).expect("write results");
    }
}

/// Instructions per operation of `case`, from one callgrind run of this binary.
fn count(exe: &Path, dir: &Path, case: &str) -> Option<f64> {
    let out: PathBuf = dir.join(format!("{case}.callgrind"));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--collect-atstart=no")
        .arg("--toggle-collect=*icount_measured_region*")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .args([CHILD, case])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let text = std::fs::read_to_string(&out).ok()?;
    let total: f64 = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("totals: ")
                .or_else(|| line.strip_prefix("summary: "))
        })?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(total / OPERATIONS as f64)
}

/// The measured loop: collection is on only while this function runs (and what it calls).
#[inline(never)]
fn icount_measured_region<F, Fut>(rt: &Runtime, mut op: F)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    rt.block_on(async {
        for i in 0..OPERATIONS {
            op(i).await;
        }
    });
}

/// Warm-up (not counted), then the measured loop.
fn run<F, Fut>(rt: &Runtime, mut op: F)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    rt.block_on(async {
        for i in 0..OPERATIONS / 4 {
            op(i).await;
        }
    });
    icount_measured_region(rt, op);
}

fn child(case: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the runtime");
    let keys = shuffled_keys(KEYS);
    let key = |i: usize| keys[i % KEYS].as_str();
    let json = serde_json::to_vec(&profile(1)).expect("json");
    let postcard_bytes = postcard::to_allocvec(&profile(1)).expect("postcard");
    let stored_json = Envelope::new(JsonCodec, 0)
        .encode("k", &profile(1))
        .expect("encode");
    let stored_postcard = Envelope::new(PostcardCodec, 0)
        .encode("k", &profile(1))
        .expect("encode");
    match case {
        "l1_get" | "l1_get_arc" | "get_or_compute_hit" => {
            let cache = rt.block_on(async {
                let cache = Cache::builder()
                    .memory(MemoryTier::new(KEYS as u64 * 2))
                    .build()
                    .await
                    .expect("build the cache");
                for (i, key) in keys.iter().enumerate() {
                    cache
                        .set(key, &profile(i as u64), CacheStrategy::LongTerm)
                        .await
                        .expect("fill");
                }
                cache
            });
            match case {
                "l1_get" => run(&rt, |i| {
                    let cache = &cache;
                    async move {
                        black_box(cache.get::<Profile>(key(i)).await.ok().flatten());
                    }
                }),
                "l1_get_arc" => run(&rt, |i| {
                    let cache = &cache;
                    async move {
                        black_box(cache.get_arc::<Profile>(key(i)).await.ok().flatten());
                    }
                }),
                _ => run(&rt, |i| {
                    let cache = &cache;
                    async move {
                        let found = cache
                            .get_or_compute(key(i), CacheStrategy::LongTerm, || async {
                                Ok::<_, std::io::Error>(profile(0))
                            })
                            .await;
                        black_box(found.ok());
                    }
                }),
            }
        }
        "raw_l1_get" | "raw_l1_get_arc" => {
            let raw: moka::future::Cache<String, Arc<Profile>> =
                moka::future::Cache::new(KEYS as u64 * 2);
            rt.block_on(async {
                for (i, key) in keys.iter().enumerate() {
                    raw.insert(key.clone(), Arc::new(profile(i as u64))).await;
                }
            });
            if case == "raw_l1_get" {
                run(&rt, |i| {
                    let raw = &raw;
                    async move {
                        let hit = raw.get(key(i)).await;
                        black_box(hit.map(|arc| Profile::clone(&arc)));
                    }
                });
            } else {
                run(&rt, |i| {
                    let raw = &raw;
                    async move {
                        black_box(raw.get(key(i)).await);
                    }
                });
            }
        }
        "l2_cpu" => {
            let cache = rt.block_on(async {
                let cache = Cache::builder()
                    .tier(MokaTier::new(KEYS as u64 * 2))
                    .build()
                    .await
                    .expect("build the cache");
                for (i, key) in keys.iter().enumerate() {
                    cache
                        .set(key, &profile(i as u64), CacheStrategy::LongTerm)
                        .await
                        .expect("fill");
                }
                cache
            });
            run(&rt, |i| {
                let cache = &cache;
                async move {
                    black_box(cache.get::<Profile>(key(i)).await.ok().flatten());
                }
            });
        }
        "raw_l2_cpu" => {
            let raw: moka::future::Cache<String, bytes::Bytes> =
                moka::future::Cache::new(KEYS as u64 * 2);
            rt.block_on(async {
                for (i, key) in keys.iter().enumerate() {
                    let bytes = serde_json::to_vec(&profile(i as u64)).expect("json");
                    raw.insert(key.clone(), bytes::Bytes::from(bytes)).await;
                }
            });
            run(&rt, |i| {
                let raw = &raw;
                async move {
                    let hit = raw.get(key(i)).await;
                    black_box(hit.and_then(|bytes| serde_json::from_slice::<Profile>(&bytes).ok()));
                }
            });
        }
        "decode_json" => run(&rt, |_| {
            let envelope = Envelope::new(JsonCodec, 0);
            let found = envelope.decode::<Profile>(black_box(&stored_json));
            black_box(matches!(found, Ok(Decoded::Value(_))));
            async {}
        }),
        "raw_decode_json" => run(&rt, |_| {
            black_box(serde_json::from_slice::<Profile>(black_box(&json)).ok());
            async {}
        }),
        "decode_postcard" => run(&rt, |_| {
            let envelope = Envelope::new(PostcardCodec, 0);
            let found = envelope.decode::<Profile>(black_box(&stored_postcard));
            black_box(matches!(found, Ok(Decoded::Value(_))));
            async {}
        }),
        "raw_decode_postcard" => run(&rt, |_| {
            black_box(postcard::from_bytes::<Profile>(black_box(&postcard_bytes)).ok());
            async {}
        }),
        other => println!("instructions: unknown case {other}"),
    }
}
