//! Batches and prefix removal on a three-primary cluster, with keys spread over many hash slots.

use std::time::Duration;

use tiercache_core::{Entry, Tier};
use tiercache_redis::{RedisOptions, RedisTier};
use tiercache_testkit::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_prefix_removal_work_across_hash_slots() {
    let cluster = RedisCluster::start().unwrap();
    let options = RedisOptions::from_url(&cluster.url())
        .unwrap()
        .key_prefix("app:");
    let tier = RedisTier::connect_with(options).await.unwrap();

    let keys: Vec<String> = (0..200).map(|i| format!("p:{i}")).collect();
    let slots: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| tiercache_redis::fred::util::redis_keyslot(format!("app:{k}").as_bytes()))
        .collect();
    assert!(slots.len() > 100, "the keys must spread over many slots");

    let entries = keys
        .iter()
        .map(|k| {
            (
                k.clone(),
                Entry::new(k.clone().into_bytes(), Duration::from_secs(60)),
            )
        })
        .collect();
    tier.set_many(entries).await.unwrap();
    tier.set("q:1", Entry::new(&b"other"[..], Duration::from_secs(60)))
        .await
        .unwrap();

    let mut asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    asked.insert(100, "p:missing");
    let found = tier.get_many(&asked).await.unwrap();
    assert_eq!(found.len(), asked.len());
    for (key, entry) in asked.iter().zip(&found) {
        if *key == "p:missing" {
            assert!(entry.is_none());
        } else {
            let entry = entry.as_ref().unwrap_or_else(|| panic!("{key} missing"));
            assert_eq!(
                &entry.value[..],
                key.as_bytes(),
                "answers stay in key order"
            );
            assert!(entry.remaining_ttl() > Duration::from_secs(50));
        }
    }

    let removed = tier.remove_prefix("p:").await.unwrap();
    assert_eq!(removed, 200, "SCAN on every primary finds every key");
    assert!(
        tier.get_many(&asked)
            .await
            .unwrap()
            .iter()
            .all(Option::is_none)
    );
    assert!(
        tier.get("q:1").await.unwrap().is_some(),
        "other prefixes are spared"
    );

    tier.remove_many(&["q:1"]).await.unwrap();
    assert!(tier.get("q:1").await.unwrap().is_none());
}
