//! Redis Streams for services that cache reads and stream the events that change them: typed
//! events, readers that block for new entries, and consumer groups with at-least-once delivery,
//! claiming from crashed consumers and dead letters. On fred, with the same connection options
//! as the Redis tier ([`tiercache_redis::RedisOptions`]).
//!
//! - [`Streams`]: the connections. [`Streams::typed`] gives an [`EventStream`] of a serde type;
//!   [`Streams::fields`] the untyped [`FieldStream`] of field/value lists.
//! - Publishing: `publish` is `XADD`, trimmed with `MAXLEN ~ N` when [`EventStream::max_len`]
//!   is set.
//! - Reading: `latest(n)` (`XREVRANGE`, newest first), `read_after(id, n)` (`XREAD`), and on a
//!   reader with its own connection, blocking reads and an endless `tail` (a `futures::Stream`).
//! - Groups: [`ConsumerGroup`] creates the group idempotently, reads new entries
//!   (`XREADGROUP >`), acks, summarises what is pending, claims entries idle too long
//!   (`XAUTOCLAIM`) and moves entries delivered too often to a dead-letter stream; `events()`
//!   does all of it as a `futures::Stream`.
//! - Bad input: an entry that does not decode is an error item carrying its id
//!   ([`StreamError::Decode`]), so it can be acked or dead-lettered, and reading goes on. A
//!   missing stream or group is [`StreamError::NoStream`] / [`StreamError::NoGroup`].
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tiercache_streams::StreamError> {
//! use futures_util::StreamExt;
//! use serde::{Deserialize, Serialize};
//! use tiercache_streams::{GroupStart, StreamError, Streams};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct PriceChanged { sku: String, cents: u64 }
//!
//! let streams = Streams::connect("redis://127.0.0.1:6379").await?;
//! let prices = streams.typed::<PriceChanged>("prices").max_len(10_000);
//! prices.publish(&PriceChanged { sku: "lamp".into(), cents: 3_900 }).await?;
//!
//! let worker = prices.group("cache-invalidator", "worker-1").await?
//!     .claim_after(std::time::Duration::from_secs(30));
//! worker.create(GroupStart::Beginning).await?;
//! let mut events = Box::pin(worker.clone().events());
//! while let Some(item) = events.next().await {
//!     match item {
//!         Ok(event) => {
//!             assert_eq!(event.value.sku, "lamp"); // process it, then ack it
//!             worker.ack(&[event.id]).await?;
//!         }
//!         // An entry that does not decode carries its id: set it aside and go on.
//!         Err(StreamError::Decode { id, .. }) => worker.dead_letter_entry(id, "prices:dead").await?,
//!         Err(other) => return Err(other),
//!     }
//!     # break;
//! }
//! # Ok(()) }
//! ```
// On docs.rs (every feature on), each item gated by a feature says which one.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod connection;
mod error;
mod fields;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod group;
mod id;
mod reply;
mod typed;

pub use connection::Streams;
pub use error::StreamError;
pub use fields::{FieldReader, FieldStream, RawEntry, TailFrom};
pub use group::{FieldGroup, GroupStart, PendingSummary};
pub use id::EntryId;
pub use typed::{ConsumerGroup, DATA_FIELD, Event, EventReader, EventStream, Item};
