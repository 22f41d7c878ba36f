//! What a user can watch: a tracing span per facade call (operation, key, tier, hit, duration),
//! and the stats through the `metrics` facade, the bus's propagation lag included.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tiercache::{Cache, CacheStrategy, Error, MemoryTier};
use tiercache_testkit::{LocalNetwork, MapTier};
use tracing::{
    Event, Metadata,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_core::span::Current;

/// The fields of every span opened, by span id.
#[derive(Default)]
struct SpanLog {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, HashMap<String, String>>>,
    metadata: Mutex<HashMap<u64, &'static Metadata<'static>>>,
}

/// Taken by each test for its whole run. tracing caches each callsite's interest across every
/// subscriber alive; a callsite first hit on one thread while another thread sets its own
/// subscriber can keep a stale "never", so the span test must not overlap the other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

thread_local! {
    static ENTERED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<SpanLog>);

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attributes: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::SeqCst) + 1;
        let mut fields = HashMap::new();
        attributes.record(&mut Fields(&mut fields));
        self.0.spans.lock().unwrap().insert(id, fields);
        self.0
            .metadata
            .lock()
            .unwrap()
            .insert(id, attributes.metadata());
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.0.spans.lock().unwrap();
        if let Some(fields) = spans.get_mut(&span.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, span: &Id) {
        ENTERED.with(|entered| entered.borrow_mut().push(span.into_u64()));
    }
    fn exit(&self, _: &Id) {
        ENTERED.with(|entered| entered.borrow_mut().pop());
    }
    fn current_span(&self) -> Current {
        let top = ENTERED.with(|entered| entered.borrow().last().copied());
        match top.and_then(|id| Some((id, *self.0.metadata.lock().unwrap().get(&id)?))) {
            Some((id, metadata)) => Current::new(Id::from_u64(id), metadata),
            None => Current::none(),
        }
    }
}

impl Recorder {
    /// The spans of the cache's calls, oldest first.
    fn calls(&self) -> Vec<HashMap<String, String>> {
        let spans = self.0.spans.lock().unwrap();
        let mut ids: Vec<&u64> = spans.keys().collect();
        ids.sort();
        ids.into_iter()
            .map(|id| spans[id].clone())
            .filter(|fields| fields.contains_key("operation"))
            .collect()
    }
}

fn field<'a>(span: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    span.get(name).map(String::as_str)
}

#[tokio::test(flavor = "current_thread")]
async fn every_call_has_a_span_with_tier_hit_and_duration() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let l2 = MapTier::new("l2");
    let cache = Cache::builder()
        .memory(MemoryTier::new(100))
        .tier(l2.clone())
        .build()
        .await
        .unwrap();

    assert_eq!(cache.get::<u32>("k").await.unwrap(), None);
    cache
        .set("k", &1_u32, CacheStrategy::ShortTerm)
        .await
        .unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
    let loaded = cache
        .get_or_compute("j", CacheStrategy::ShortTerm, || async {
            Ok::<_, Error>(2_u32)
        })
        .await
        .unwrap();
    assert_eq!(loaded, 2);
    let other = Cache::builder().tier(l2).build().await.unwrap();
    assert_eq!(other.get::<u32>("k").await.unwrap(), Some(1));
    cache.invalidate("k").await.unwrap();

    let calls = recorder.calls();
    let summary: Vec<(Option<&str>, Option<&str>, Option<&str>)> = calls
        .iter()
        .map(|span| {
            (
                field(span, "operation"),
                field(span, "tier"),
                field(span, "hit"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Some("get"), None, Some("false")),
            (Some("set"), None, None),
            (Some("get"), Some("memory"), Some("true")),
            (Some("get_or_compute"), Some("loader"), None),
            (Some("get"), Some("l2"), Some("true")),
            (Some("invalidate"), None, None),
        ]
    );
    for span in &calls {
        assert!(span.contains_key("duration_us"), "{span:?}");
        assert!(field(span, "key").is_some(), "{span:?}");
    }
}

/// Counters, gauges and histogram samples, by name and labels.
#[derive(Default)]
struct Metrics {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    samples: Mutex<HashMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

fn name_of(key: &metrics::Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}={}", label.key(), label.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

#[derive(Clone, Default)]
struct MetricsRecorder(Arc<Metrics>);

impl metrics::Recorder for MetricsRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let mut counters = self.0.counters.lock().unwrap();
        let counter = counters.entry(name_of(key)).or_default();
        metrics::Counter::from_arc(Arc::clone(counter))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        let mut samples = self.0.samples.lock().unwrap();
        let histogram = samples.entry(name_of(key)).or_default();
        metrics::Histogram::from_arc(Arc::clone(histogram))
    }
}

impl MetricsRecorder {
    fn counter(&self, name: &str) -> Option<u64> {
        let counters = self.0.counters.lock().unwrap();
        counters
            .get(name)
            .map(|counter| counter.load(Ordering::SeqCst))
    }
    fn samples(&self, name: &str) -> usize {
        let samples = self.0.samples.lock().unwrap();
        samples.get(name).map_or(0, |s| s.0.lock().unwrap().len())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_propagation_lag_reach_the_metrics_facade() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let recorder = MetricsRecorder::default();
    metrics::set_global_recorder(recorder.clone()).unwrap();
    let network = LocalNetwork::new();
    let shared = MapTier::new("shared");
    let build = |metrics_every: Option<Duration>| {
        let builder = Cache::builder()
            .namespace("shop")
            .memory(MemoryTier::new(100))
            .tier(shared.clone())
            .bus(network.bus());
        match metrics_every {
            Some(interval) => builder.metrics_every(interval),
            None => builder,
        }
    };
    let writer = build(None).build().await.unwrap();
    let reader = build(Some(Duration::from_millis(10)))
        .build()
        .await
        .unwrap();

    reader.get::<u32>("k").await.unwrap();
    writer
        .set("k", &1_u32, CacheStrategy::ShortTerm)
        .await
        .unwrap();
    assert_eq!(reader.get::<u32>("k").await.unwrap(), Some(1));

    // The reader publishes on its timer; its received message's lag went out as it came in.
    let deadline = Instant::now() + Duration::from_secs(5);
    while recorder.counter("tiercache_bus_received_total{cache=shop}") != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the reader's stats were not published"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(recorder.samples("tiercache_bus_propagation_lag_seconds{cache=shop}") >= 1);
    assert_eq!(
        recorder.counter("tiercache_tier_hits_total{cache=shop,tier=shared}"),
        Some(1)
    );

    writer.record_metrics();
    assert_eq!(
        recorder.counter("tiercache_bus_published_total{cache=shop}"),
        Some(1)
    );
    assert_eq!(
        recorder.counter("tiercache_stale_served_total{cache=shop}"),
        Some(0)
    );
}
