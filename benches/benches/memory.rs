//! Memory: bytes allocated per L1 entry for 100k entries of a ~1 KiB struct, tiercache's typed
//! `MemoryTier` (per-entry expiry, `Arc<dyn Any>` values) against raw moka holding `Arc<T>`.
//! Counted by a global allocator that tracks live bytes. Target: at most 1.2x.
#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]
#![expect(clippy::print_stdout, reason = "a bench reports on the terminal")]
#![expect(
    unsafe_code,
    reason = "counting allocations needs a GlobalAlloc, which is an unsafe trait"
)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tiercache::{Cache, CacheStrategy, MemoryTier};
use tiercache_benches::{Profile, profile, report};

const ENTRIES: usize = 100_000;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is only
// bookkeeping and never affects what is returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with this layout, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract, which we pass on as is.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn per_entry(before: usize, after: usize) -> f64 {
    after.saturating_sub(before) as f64 / ENTRIES as f64
}

fn main() {
    if !report::selected("memory") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the runtime");
    let keys: Vec<String> = (0..ENTRIES).map(|i| format!("profile:{i}")).collect();
    let value_bytes = {
        let before = live();
        let sample = profile(1);
        let after = live();
        drop(sample);
        (after - before + size_of::<Profile>()) as f64
    };

    let raw = rt.block_on(async {
        let before = live();
        let raw: moka::future::Cache<String, Arc<Profile>> =
            moka::future::Cache::new(ENTRIES as u64 * 2);
        for (i, key) in keys.iter().enumerate() {
            raw.insert(key.clone(), Arc::new(profile(i as u64))).await;
        }
        raw.run_pending_tasks().await;
        let after = live();
        drop(raw);
        per_entry(before, after)
    });

    let ours = rt.block_on(async {
        let before = live();
        let l1 = MemoryTier::new(ENTRIES as u64 * 2);
        let cache = Cache::builder()
            .memory(l1.clone())
            .build()
            .await
            .expect("build the cache");
        for (i, key) in keys.iter().enumerate() {
            cache
                .set(key, &profile(i as u64), CacheStrategy::LongTerm)
                .await
                .expect("set");
        }
        l1.run_pending_tasks().await;
        let after = live();
        drop(cache);
        per_entry(before, after)
    });

    println!(
        "memory: {ENTRIES} entries; raw moka {raw:.0} B/entry, tiercache {ours:.0} B/entry \
         (the value itself is about {value_bytes:.0} B)"
    );
    report::write("memory_per_entry", ours, raw, "raw_moka").expect("write results");
}
