//! How much of L1's hot set survives a scan, per promotion policy.
//!
//! A Zipf-distributed workload (a few keys read very often, most rarely) runs against an L1 of
//! 1,000 entries over an L2 that holds every key; every fifth read is part of a scan that reads
//! cold keys once each, like a report or a crawler. The figure is L1's hit ratio on the Zipf
//! reads only: what the service's hot traffic gets from L1 while the scan runs.
//!
//! Run it with `cargo run --release --example promotion_policies`.
#![expect(
    clippy::print_stdout,
    reason = "an example shows its results on the terminal"
)]

use std::time::Duration;

use tiercache::{Cache, CacheStrategy, MemoryTier, MokaTier, Promotion, TierOptions};

const HOT_KEYS: usize = 50_000;
const COLD_KEYS: usize = 50_000;
const READS: usize = 300_000;
const L1_ENTRIES: u64 = 1_000;
const ZIPF_EXPONENT: f64 = 1.0;

/// A small deterministic generator (xorshift64*), so every policy sees the same reads.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        bits as f64 / (1_u64 << 53) as f64
    }
}

/// Zipf sampling by inverse CDF over precomputed cumulative weights.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, exponent: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.into_iter().map(|c| c / total).collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cumulative.partition_point(|c| *c < u)
    }
}

/// The reads, the same for every policy: `Some(i)` a hot key by Zipf rank, `None` the next scan
/// key.
fn workload() -> Vec<Option<usize>> {
    let (zipf, mut rng) = (Zipf::new(HOT_KEYS, ZIPF_EXPONENT), Rng(0x00C0_FFEE));
    (0..READS)
        .map(|i| (i % 5 != 4).then(|| zipf.sample(&mut rng)))
        .collect()
}

async fn hot_hit_ratio(
    policy: Promotion,
    l2: &MokaTier,
    reads: &[Option<usize>],
) -> tiercache::Result<f64> {
    let cache = Cache::builder()
        .memory_with(
            MemoryTier::new(L1_ENTRIES),
            TierOptions::new().promotion(policy),
        )
        .tier(l2.clone())
        .build()
        .await?;
    let (mut hot_reads, mut hot_hits, mut scan) = (0_u64, 0_u64, 0_usize);
    for read in reads {
        let key = match read {
            Some(rank) => format!("hot:{rank}"),
            None => {
                scan = (scan + 1) % COLD_KEYS;
                format!("cold:{scan}")
            }
        };
        // L1's hit counter tells whether this read was answered there, without touching L1
        // (a peek would count as a use in moka's admission policy).
        let l1_hits = || cache.stats().memory.map_or(0, |m| m.hits);
        let before = l1_hits();
        let value = cache.get::<u64>(&key).await?;
        debug_assert!(value.is_some());
        if read.is_some() {
            hot_reads += 1;
            hot_hits += l1_hits() - before;
        }
    }
    Ok(hot_hits as f64 / hot_reads as f64)
}

#[tokio::main]
async fn main() -> tiercache::Result<()> {
    // L2 holds every key, written once through a cache over L2 alone.
    let l2 = MokaTier::new((HOT_KEYS + COLD_KEYS) as u64 * 2);
    let writer = Cache::builder().tier(l2.clone()).build().await?;
    for i in 0..HOT_KEYS {
        writer
            .set(&format!("hot:{i}"), &(i as u64), CacheStrategy::LongTerm)
            .await?;
    }
    for i in 0..COLD_KEYS {
        writer
            .set(&format!("cold:{i}"), &(i as u64), CacheStrategy::LongTerm)
            .await?;
    }
    let reads = workload();
    println!(
        "L1 of {L1_ENTRIES} entries; {READS} reads: 80% Zipf(s={ZIPF_EXPONENT}) over {HOT_KEYS} hot keys, 20% a scan of {COLD_KEYS} cold keys"
    );
    println!("{:<34} hot reads answered by L1", "promotion policy");
    for (name, policy) in [
        ("Always (default)", Promotion::Always),
        ("OneIn(4)", Promotion::OneIn(4)),
        ("OneIn(16)", Promotion::OneIn(16)),
        (
            "SecondHitWithin(60 s)",
            Promotion::SecondHitWithin(Duration::from_secs(60)),
        ),
    ] {
        let ratio = hot_hit_ratio(policy, &l2, &reads).await?;
        println!("{name:<34} {:.1}%", ratio * 100.0);
    }
    Ok(())
}
