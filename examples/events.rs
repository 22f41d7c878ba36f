//! A producer and a consumer group with two workers on a Redis Stream: every event is handled by
//! exactly one worker, and each worker acks what it handled.
//!
//! Uses the Redis at `REDIS_URL` when it is set; otherwise starts a private `redis-server` on a
//! free port for the length of the run (it must be installed).
//!
//! Run it with `cargo run --example events`.
#![expect(
    clippy::print_stdout,
    reason = "an example shows its results on the terminal"
)]

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tiercache::streams::{GroupStart, StreamError, Streams};
use tiercache_testkit::RedisServer;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PriceChanged {
    sku: String,
    cents: u64,
}

const EVENTS: u64 = 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the private server alive until the end of main.
    let (url, _private_server) = RedisServer::from_env_or_start()?;
    println!("Redis at {url}");
    let streams = Streams::connect(&url).await?;
    let key = format!("example-prices:{}", std::process::id());
    let prices = streams.typed::<PriceChanged>(&key).max_len(10_000);

    // Both workers are consumers of one group: the group hands each event to one of them.
    let mut workers = Vec::new();
    for name in ["worker-a", "worker-b"] {
        let worker = prices
            .group("price-indexer", name)
            .await?
            .batch(4)
            .claim_after(Duration::from_secs(30));
        worker.create(GroupStart::Beginning).await?; // idempotent: both may call it
        workers.push(tokio::spawn(async move {
            let mut handled = Vec::new();
            let mut events = Box::pin(worker.clone().events());
            while let Ok(Some(item)) =
                tokio::time::timeout(Duration::from_millis(500), events.next()).await
            {
                match item {
                    Ok(event) => {
                        handled.push(event.value.sku.clone());
                        worker.ack(&[event.id]).await?;
                    }
                    Err(StreamError::Decode { id, .. }) => {
                        worker.dead_letter_entry(id, "example-prices:dead").await?;
                    }
                    Err(other) => return Err(other),
                }
            }
            Ok::<_, StreamError>((worker.fields().consumer().to_owned(), handled))
        }));
    }

    for n in 0..EVENTS {
        let event = PriceChanged {
            sku: format!("sku-{n}"),
            cents: 1_000 + n,
        };
        prices.publish(&event).await?;
    }
    println!("published {EVENTS} events to {key}");

    let mut total = 0;
    for worker in workers {
        let (name, handled) = worker.await??;
        total += handled.len();
        println!(
            "{name} handled {} events: {}",
            handled.len(),
            handled.join(" ")
        );
    }
    println!("handled in all: {total} (each exactly once)");
    let newest = prices.latest(3).await?;
    let newest: Vec<String> = newest
        .into_iter()
        .filter_map(Result::ok)
        .map(|event| format!("{} {}c", event.value.sku, event.value.cents))
        .collect();
    println!("the three newest, newest first: {}", newest.join(", "));
    Ok(())
}
