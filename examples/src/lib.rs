//! Runnable programs, each a user's story: see the `*.rs` files beside this crate's manifest.
