//! The moka bytes tier passes the conformance suite every tier runs.

use tiercache_moka::{MemoryConfig, MokaTier};

#[tokio::test]
async fn moka_tier_passes_conformance() {
    tiercache_testkit::conformance::run(&MokaTier::new(10_000), "conformance:").await;
}

#[tokio::test]
async fn byte_bounded_moka_tier_passes_conformance() {
    let tier = MokaTier::with_config(
        &MemoryConfig::new(0)
            .max_bytes(64 * 1024 * 1024)
            .name("moka-bytes"),
    );
    tiercache_testkit::conformance::run(&tier, "conformance:").await;
}
