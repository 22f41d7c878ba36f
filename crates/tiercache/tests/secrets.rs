//! No password reaches what a cache shows: `Debug` of every options and connection type, the
//! errors of a bad URL, a wrong password or an unreachable server, and every tracing event and
//! span field emitted meanwhile.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tiercache::{
    Bus, BusKey, BusOptions, Cache, MemoryTier, RedisBus, RedisBusOptions, RedisOptions,
    RedisStreamBus, RedisTier, RedisTrackingBus, Streams,
};
use tiercache_testkit::RedisServer;
use tracing::{
    Event, Metadata,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};

const PASSWORD: &str = "hunter2-never-shown";

/// Every field of every event and span, as text.
#[derive(Clone, Default)]
struct Everything {
    text: Arc<Mutex<Vec<String>>>,
    next: Arc<AtomicU64>,
}

struct Text<'a>(&'a mut Vec<String>);

impl Visit for Text<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push(format!("{}={value:?}", field.name()));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push(format!("{}={value}", field.name()));
    }
}

impl tracing::Subscriber for Everything {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attributes: &Attributes<'_>) -> Id {
        attributes.record(&mut Text(&mut self.text.lock().unwrap()));
        Id::from_u64(self.next.fetch_add(1, Ordering::SeqCst) + 1)
    }
    fn record(&self, _: &Id, values: &Record<'_>) {
        values.record(&mut Text(&mut self.text.lock().unwrap()));
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        event.record(&mut Text(&mut self.text.lock().unwrap()));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn quick(url: &str) -> RedisOptions {
    RedisOptions::from_url(url)
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .command_timeout(Duration::from_millis(500))
}

#[tokio::test(flavor = "current_thread")]
async fn no_password_is_shown_in_debug_errors_or_logs() {
    let log = Everything::default();
    let _guard = tracing::subscriber::set_default(log.clone());
    // User `app` needs the password; `default` keeps none, so the test's own commands work.
    let user = format!(">{PASSWORD}");
    let server =
        RedisServer::start_with(&["--user", "app", "on", &user, "~*", "&*", "+@all"]).unwrap();
    let port = server.port();
    let mut shown = Vec::new();

    // Connected with the password, as a bare password and as an ACL user's.
    for url in [
        format!("redis://:{PASSWORD}@127.0.0.1:{port}"),
        format!("redis://app:{PASSWORD}@127.0.0.1:{port}"),
    ] {
        let options = quick(&url);
        let bus_options = RedisBusOptions::new(options.clone());
        shown.push(format!("{options:?}"));
        shown.push(format!("{bus_options:?}"));
        let tier = RedisTier::connect_with(options.clone()).await.unwrap();
        shown.push(format!("{tier:?}"));
        let streams = Streams::connect_with(options.clone()).await.unwrap();
        shown.push(format!("{streams:?}"));
        let pubsub = RedisBus::connect_with(bus_options.clone()).await.unwrap();
        shown.push(format!("{pubsub:?}"));
        let tracking = RedisTrackingBus::connect_with(bus_options.clone())
            .await
            .unwrap();
        shown.push(format!("{tracking:?}"));
        let stream = RedisStreamBus::connect_with(bus_options).await.unwrap();
        shown.push(format!("{stream:?}"));
        let bus: Arc<dyn Bus> = Arc::new(pubsub);
        let cache = Cache::builder()
            .namespace("secrets")
            .memory(MemoryTier::new(10))
            .tier(tier)
            .bus(bus)
            .build()
            .await
            .unwrap();
        cache
            .set("k", &1_u8, tiercache::CacheStrategy::ShortTerm)
            .await
            .unwrap();
        shown.push(format!("{cache:?}"));
    }

    // A bus key, alone and in the bus options.
    let key = BusKey::new(PASSWORD).unwrap();
    shown.push(format!("{key:?}"));
    shown.push(format!("{:?}", BusOptions::new().authenticate_with(key)));

    // URLs that do not parse, or name no host.
    for url in [
        format!("redis://:{PASSWORD}@127.0.0.1:notaport"),
        format!("redis://app:{PASSWORD}@"),
        format!(
            "redis-sentinel://h:26379?sentinelServiceName=m&sentinelPassword={PASSWORD}&node=x:y"
        ),
        format!("nonsense{PASSWORD}"),
    ] {
        let err = RedisOptions::from_url(&url).unwrap_err();
        shown.push(format!("{err} {err:?}"));
    }

    // A wrong password, and a server that is not there.
    for url in [
        format!("redis://app:{PASSWORD}-but-wrong@127.0.0.1:{port}"),
        format!("redis://app:{PASSWORD}@127.0.0.1:1"),
    ] {
        let err = RedisTier::connect_with(quick(&url)).await.unwrap_err();
        shown.push(format!("{err} {err:?}"));
        let err = RedisBus::connect_with(RedisBusOptions::new(quick(&url)))
            .await
            .unwrap_err();
        shown.push(format!("{err} {err:?}"));
    }

    shown.extend(log.text.lock().unwrap().iter().cloned());
    assert!(shown.len() > 20, "everything was looked at: {shown:?}");
    for text in &shown {
        assert!(!text.contains(PASSWORD), "a password is shown: {text}");
    }
    assert!(
        shown.iter().any(|text| text.contains("<redacted>")),
        "the password's presence is said without it"
    );
}
