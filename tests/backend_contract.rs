//! The store and event-log contract, run the same way against both backends: the
//! embedded memory backend and NATS JetStream on a real nats-server. What one backend
//! promises the report pipeline, the other must keep too: idempotency (the first result
//! wins), a concurrent duplicate waiting for the first report, the history window and
//! its per-destination cap, resuming a subscription, and a gap for evicted events.

#[path = "common/nats.rs"]
mod nats_server;

use call_outcome::config::{Backend, Config};
use call_outcome::domain::{Category, HistoryEntry, Outcome, Tenant};
use call_outcome::events::{
    Delivery, EventLog, Filter, GapReason, NewEvent, Position, Start, SubscriptionRequest,
};
use call_outcome::pipeline::Pipeline;
use call_outcome::server::backends;
use call_outcome::store::{Claim, ReportKey, StoredReport};
use nats_server::NatsServer;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_stream::StreamExt;

const TO: &str = "+15550104477";

/// Small limits, so that the window, the cap and eviction are reached quickly.
fn limits(mut config: Config) -> Config {
    config.store.history_window = Duration::from_secs(3600);
    config.store.max_entries_per_destination = 3;
    // Long, so that a waiter that misses the first report's completion shows (below).
    config.store.in_flight_wait = Duration::from_secs(120);
    config.events.max_events = 3;
    config.nats.max_messages = 3;
    config
}

async fn pipeline(config: &Config) -> Pipeline {
    backends::build(config).await.expect("backends").pipeline
}

fn key(call_id: &str) -> ReportKey {
    ReportKey {
        tenant: "acme".into(),
        call_id: call_id.into(),
        attempt: 1,
        delivery: None,
    }
}

/// A result as the pipeline would store it, told apart by its event id.
async fn result(pipeline: &Pipeline, event_id: &str) -> Arc<StoredReport> {
    let classified = pipeline
        .classify(&tenant(), &decline(event_id))
        .await
        .expect("classify");
    Arc::new(StoredReport {
        classification: Arc::new(classified.classification),
        decision: Arc::new(classified.decision),
        event_id: event_id.into(),
        destination: classified.destination,
        recorded_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    })
}

fn tenant() -> Tenant {
    Tenant::parse("acme", 64).expect("tenant")
}

fn decline(call_id: &str) -> Outcome {
    Outcome {
        call_id: call_id.into(),
        attempt: Some(1),
        to: TO.into(),
        sip_code: Some(603),
        ..Outcome::default()
    }
}

fn entry(ago_secs: u64, attempt: u32) -> HistoryEntry {
    HistoryEntry {
        at: SystemTime::now() - Duration::from_secs(ago_secs),
        attempt,
        category: Category::Declined,
        sip_code: Some(603),
    }
}

async fn event(pipeline: &Pipeline, call_id: &str) -> NewEvent {
    let report = result(pipeline, call_id).await;
    NewEvent {
        event_id: format!("event-{call_id}"),
        tenant: "acme".into(),
        destination: report.destination.clone(),
        outcome: decline(call_id),
        classification: Arc::clone(&report.classification),
        decision: Arc::clone(&report.decision),
        recorded_at: SystemTime::now(),
    }
}

/// The next delivery that is not a heartbeat.
async fn next(stream: &mut call_outcome::events::Subscription) -> Delivery {
    loop {
        let delivery = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a delivery within 10 s")
            .expect("the stream goes on")
            .expect("no error");
        if !matches!(delivery, Delivery::Heartbeat { .. }) {
            return delivery;
        }
    }
}

fn subscription(start: Start) -> SubscriptionRequest {
    SubscriptionRequest {
        tenant: "acme".into(),
        filter: Filter::default(),
        start,
        heartbeat: Duration::from_secs(1),
    }
}

async fn idempotency(pipeline: &Pipeline) {
    let store = pipeline.store();
    let (first, second) = (result(pipeline, "r1").await, result(pipeline, "r2").await);
    assert_eq!(store.claim(&key("idem")).await, Ok(Claim::New));
    store
        .complete(&key("idem"), &first)
        .await
        .expect("complete");
    assert_eq!(
        store.claim(&key("idem")).await,
        Ok(Claim::Done(Arc::clone(&first)))
    );
    // A late second completion does not change what duplicates are told.
    store
        .complete(&key("idem"), &second)
        .await
        .expect("complete");
    assert_eq!(store.claim(&key("idem")).await, Ok(Claim::Done(first)));
    // Another attempt, or the same call in another tenant, is another report.
    let mut other = key("idem");
    other.attempt = 2;
    assert_eq!(store.claim(&other).await, Ok(Claim::New));
    other.tenant = "globex".into();
    assert_eq!(store.claim(&other).await, Ok(Claim::New));
}

async fn concurrent_duplicate(pipeline: &Pipeline) {
    let store = Arc::clone(pipeline.store());
    let report = result(pipeline, "dup").await;
    assert_eq!(store.claim(&key("dup")).await, Ok(Claim::New));
    let waiter = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.claim(&key("dup")).await }
    });
    // The waiter cannot finish while the key is held: it waits for the first report.
    tokio::task::yield_now().await;
    assert!(
        !waiter.is_finished(),
        "a duplicate waits for the report in flight"
    );
    store
        .complete(&key("dup"), &report)
        .await
        .expect("complete");
    assert_eq!(woken(waiter).await, Ok(Claim::Done(report)));

    // An abandoned claim hands the key to the waiter.
    assert_eq!(store.claim(&key("abandoned")).await, Ok(Claim::New));
    let waiter = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.claim(&key("abandoned")).await }
    });
    tokio::task::yield_now().await;
    store.abandon(&key("abandoned")).await;
    assert_eq!(woken(waiter).await, Ok(Claim::New));
}

/// A waiting claim's answer, which must come from the first report's completion or
/// release, not from waiting out `in_flight_wait` (120 s here).
async fn woken<T>(waiter: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("the waiter is woken by the completion, not by its deadline")
        .expect("waiter")
}

async fn history_window_and_cap(pipeline: &Pipeline) {
    let store = pipeline.store();
    let d = "+15550100001";
    // Outside the one-hour window: not kept.
    let s = store
        .record("acme", d, "old", entry(7200, 1))
        .await
        .expect("record");
    assert!(s.entries.is_empty(), "{s:?}");
    for (i, ago) in [50, 40, 30].into_iter().enumerate() {
        store
            .record("acme", d, &format!("c{i}"), entry(ago, 1))
            .await
            .expect("record");
    }
    // A retried report replaces its own entry instead of counting twice.
    let s = store
        .record("acme", d, "c2", entry(30, 1))
        .await
        .expect("retry");
    assert_eq!(s.entries.len(), 3, "{s:?}");
    // The cap (3 per destination) drops the oldest first.
    let newest = entry(0, 1);
    let s = store.record("acme", d, "c3", newest).await.expect("record");
    assert_eq!(s.entries.len(), 3);
    assert_eq!(s.entries.last(), Some(&newest));
    assert!(
        s.entries.windows(2).all(|w| w[0].at <= w[1].at),
        "oldest first"
    );
    let read = store
        .history("acme", d, SystemTime::now())
        .await
        .expect("history");
    assert_eq!(read.entries, s.entries);
    // Tenants are apart.
    let other = store
        .history("globex", d, SystemTime::now())
        .await
        .expect("history");
    assert!(other.entries.is_empty());
}

async fn resume_and_gap(pipeline: &Pipeline) {
    let events: &Arc<dyn EventLog> = pipeline.events();
    let first = events
        .publish(event(pipeline, "e1").await)
        .await
        .expect("publish");
    let epoch = events.head("acme").await.expect("head").epoch;
    let after_first = Position {
        epoch,
        sequence: first.sequence,
    };
    events
        .publish(event(pipeline, "e2").await)
        .await
        .expect("publish");
    // Resuming after the first event delivers the second, and only what follows.
    let mut stream = events
        .subscribe(subscription(Start::After(after_first)))
        .await
        .expect("subscribe");
    match next(&mut stream).await {
        Delivery::Event { event, .. } => {
            assert_eq!(event.sequence, first.sequence + 1);
            assert_eq!(event.event.outcome.call_id, "e2");
        }
        other => panic!("expected the second event, got {other:?}"),
    }
    drop(stream);
    // Four more: six published, three kept (4 to 6): resuming after the first says
    // that 2 and 3 are gone, then delivers what is kept.
    for i in 3..=6 {
        events
            .publish(event(pipeline, &format!("e{i}")).await)
            .await
            .expect("publish");
    }
    let mut stream = events
        .subscribe(subscription(Start::After(after_first)))
        .await
        .expect("subscribe");
    match next(&mut stream).await {
        Delivery::Gap {
            first: lost_first,
            last: lost_last,
            reason,
            ..
        } => {
            assert_eq!(reason, GapReason::Evicted);
            assert_eq!(
                (lost_first, lost_last),
                (first.sequence + 1, first.sequence + 2)
            );
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    for i in 4..=6 {
        match next(&mut stream).await {
            Delivery::Event { event, .. } => {
                assert_eq!(event.event.outcome.call_id, format!("e{i}"))
            }
            other => panic!("expected event e{i}, got {other:?}"),
        }
    }
}

/// #15: a tenant learns nothing of another's volume — its events, its head and the
/// error for a token ahead of it count its own events only.
async fn per_tenant_positions(pipeline: &Pipeline) {
    let events: &Arc<dyn EventLog> = pipeline.events();
    let of = |tenant: &str, mut e: NewEvent| {
        e.tenant = tenant.into();
        e
    };
    assert_eq!(events.head("initech").await.expect("head").sequence, 0);
    let i1 = events
        .publish(of("initech", event(pipeline, "i1").await))
        .await
        .expect("publish");
    for u in ["u1", "u2"] {
        events
            .publish(of("umbrella", event(pipeline, u).await))
            .await
            .expect("publish");
    }
    let i2 = events
        .publish(of("initech", event(pipeline, "i2").await))
        .await
        .expect("publish");
    assert_eq!((i1.sequence, i2.sequence), (1, 2));
    let head = events.head("initech").await.expect("head");
    assert_eq!(head.sequence, 2);
    let mut stream = events
        .subscribe(SubscriptionRequest {
            tenant: "initech".into(),
            start: Start::Oldest,
            ..subscription(Start::Oldest)
        })
        .await
        .expect("subscribe");
    // i1 may be evicted already (the memory log's retention is shared): i2 is 2.
    loop {
        match next(&mut stream).await {
            Delivery::Event { event, position } => {
                assert_eq!(event.event.tenant, "initech");
                assert_eq!(event.sequence, position.sequence);
                if event.event.outcome.call_id == "i2" {
                    assert_eq!(event.sequence, 2);
                    break;
                }
                assert_eq!(event.sequence, 1);
            }
            other => panic!("expected initech's events, got {other:?}"),
        }
    }
    drop(stream);
    let forged = events
        .subscribe(SubscriptionRequest {
            tenant: "initech".into(),
            ..subscription(Start::After(Position {
                epoch: head.epoch,
                sequence: 3,
            }))
        })
        .await
        .err()
        .expect("a token ahead of the tenant's log");
    assert_eq!(
        forged.to_string(),
        "the resume token names sequence 3, beyond the tenant's last (2)"
    );
}

async fn contract(config: Config) {
    let pipeline = pipeline(&config).await;
    idempotency(&pipeline).await;
    concurrent_duplicate(&pipeline).await;
    history_window_and_cap(&pipeline).await;
    resume_and_gap(&pipeline).await;
    per_tenant_positions(&pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_backend_keeps_the_contract() {
    let config = limits(Config::default());
    assert_eq!(config.backend, Backend::Memory);
    contract(config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_backend_keeps_the_contract() {
    let nats = NatsServer::start().await;
    let config = limits(nats.config());
    assert_eq!(config.backend, Backend::Nats);
    contract(config).await;
}
