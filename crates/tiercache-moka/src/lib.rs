//! In-process tiers for tiercache, on [moka](https://docs.rs/moka).
//!
//! - [`MemoryTier`]: the typed L1. It keeps decoded values as shared `Arc<T>`s, so a hit hands
//!   back the stored object without decoding, and each entry expires at its own absolute instant
//!   (a value promoted from a lower tier keeps the life it had left there).
//! - [`MokaTier`]: a bytes [`Tier`](tiercache_core::Tier), for in-process levels below L1.
//!
//! Both are bounded by entry count, or by bytes with [`MemoryConfig::max_bytes`]. moka types do
//! not appear in this crate's public API.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache_core::Result<()> {
//! use std::time::Duration;
//! use tiercache_core::{Entry, Tier};
//! use tiercache_moka::MokaTier;
//!
//! let tier = MokaTier::new(10_000);
//! tier.set("k", Entry::new(&b"bytes"[..], Duration::from_secs(60))).await?;
//! let hit = tier.get("k").await?;
//! assert_eq!(hit.map(|e| e.value), Some((&b"bytes"[..]).into()));
//! # Ok(()) }
//! ```
// On docs.rs (every feature on), each item gated by a feature says which one.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod bytes_tier;
mod config;
mod expiry;
mod memory;
mod sweep;

pub use bytes_tier::MokaTier;
pub use config::MemoryConfig;
pub use memory::{MAX_DEADLINE_LEAD, MemoryEntry, MemoryTier};
