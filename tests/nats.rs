//! The NATS JetStream backend against a real nats-server: several replicas behave as one
//! service (shared events, resume tokens, idempotency), eviction is signalled, and a
//! NATS outage neither loses an acknowledged report nor needs a replica restart.
//! Each test runs its own nats-server (see `common/nats.rs`); every wait is on a
//! delivered message or a polled state with a bound, never on a fixed sleep.

mod common;
#[path = "common/nats.rs"]
mod nats_server;

use call_outcome::NatsConnection;
use call_outcome::domain::Category;
use call_outcome::domain::HistoryEntry;
use call_outcome::domain::Outcome;
use call_outcome::events::NewEvent;
use call_outcome::proto as pb;
use call_outcome::proto::call_outcome_service_client::CallOutcomeServiceClient;
use call_outcome::server::RunningServer;
use call_outcome::store::Store;
use call_outcome::store::nats::NatsStore;
use common::{client, outcome, report};
use nats_server::{NatsServer, backends, final_status_token, until_acknowledged, wait_health};
use pb::subscribe_outcomes_response::Kind;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

type Client = CallOutcomeServiceClient<Channel>;
type Events = Streaming<pb::SubscribeOutcomesResponse>;

const TO: &str = "+15550100001";
/// 603 Decline: a decline event, delivered by the default filter.
const DECLINE: i32 = 603;

async fn replica(nats: &NatsServer) -> (RunningServer, Client) {
    let server = RunningServer::start(nats.config())
        .await
        .expect("replica starts on nats");
    let c = client(&server).await;
    (server, c)
}

async fn send(client: &mut Client, call_id: &str) -> pb::ReportOutcomeResponse {
    client
        .report_outcome(report(outcome(call_id, 1, TO, DECLINE)))
        .await
        .expect("report acknowledged")
        .into_inner()
}

fn oldest() -> pb::SubscribeOutcomesRequest {
    pb::SubscribeOutcomesRequest {
        start: pb::StartPosition::Oldest as i32,
        ..Default::default()
    }
}

fn resume(token: &str) -> pb::SubscribeOutcomesRequest {
    pb::SubscribeOutcomesRequest {
        resume_token: token.to_owned(),
        ..Default::default()
    }
}

async fn subscribe(client: &mut Client, r: pb::SubscribeOutcomesRequest) -> Events {
    client
        .subscribe_outcomes(r)
        .await
        .expect("subscribe")
        .into_inner()
}

async fn next_kind(stream: &mut Events) -> Kind {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a message within 30 s")
        .expect("stream open")
        .expect("message ok")
        .kind
        .expect("kind")
}

async fn next_non_heartbeat(stream: &mut Events) -> Kind {
    loop {
        match next_kind(stream).await {
            Kind::Heartbeat(_) => continue,
            other => return other,
        }
    }
}

async fn next_event(stream: &mut Events) -> pb::OutcomeEvent {
    match next_non_heartbeat(stream).await {
        Kind::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Reads until the next heartbeat; fails on any event in between.
async fn no_event_until_heartbeat(stream: &mut Events) -> pb::Heartbeat {
    match next_kind(stream).await {
        Kind::Heartbeat(h) => h,
        other => panic!("expected nothing more, got {other:?}"),
    }
}

/// Reads until the stream ends with an error status; returns its resume token.
async fn final_token(stream: &mut Events) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the stream ends within 30 s")
        {
            Some(Ok(_)) => continue,
            Some(Err(status)) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                return final_status_token(&status);
            }
            None => panic!("stream ended without a final status"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_events_and_resume_tokens() {
    let nats = NatsServer::start().await;
    let (_a, mut ca) = replica(&nats).await;
    let (_b, mut cb) = replica(&nats).await;

    let first = send(&mut ca, "two-1").await;
    let mut on_b = subscribe(&mut cb, oldest()).await;
    let e1 = next_event(&mut on_b).await;
    assert_eq!(e1.event_id, first.event_id, "reported on A, seen on B");
    assert_eq!(e1.sequence, 1);
    drop(on_b);

    let second = send(&mut cb, "two-2").await;
    let mut on_a = subscribe(&mut ca, resume(&e1.resume_token)).await;
    let e2 = next_event(&mut on_a).await;
    assert_eq!(
        e2.event_id, second.event_id,
        "B's token resumes on A after e1"
    );
    assert_eq!(e2.sequence, 2);
    no_event_until_heartbeat(&mut on_a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_sent_to_both_replicas_is_recorded_once() {
    let nats = NatsServer::start().await;
    let (_a, mut ca) = replica(&nats).await;
    let (_b, mut cb) = replica(&nats).await;

    let (ra, rb) = tokio::join!(send(&mut ca, "dup-1"), send(&mut cb, "dup-1"));
    assert_eq!(ra.event_id, rb.event_id, "both get the first result");
    assert_eq!(
        [ra.duplicate, rb.duplicate].iter().filter(|d| !**d).count(),
        1,
        "exactly one of them recorded it"
    );
    // A retry after completion, on either replica, is a duplicate too.
    let again = send(&mut cb, "dup-1").await;
    assert!(again.duplicate);
    assert_eq!(again.event_id, ra.event_id);
    // Byte for byte the first response (stored in KV by one replica, read back by the
    // other), but for the duplicate flag.
    let first = if ra.duplicate { rb } else { ra.clone() };
    let first_again = pb::ReportOutcomeResponse {
        duplicate: true,
        ..first
    };
    assert_eq!(
        prost::Message::encode_to_vec(&again),
        prost::Message::encode_to_vec(&first_again)
    );

    let mut stream = subscribe(&mut ca, oldest()).await;
    let e = next_event(&mut stream).await;
    assert_eq!(e.event_id, ra.event_id);
    let h = no_event_until_heartbeat(&mut stream).await;
    assert_eq!(
        h.resume_token, e.resume_token,
        "nothing after the one event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_resume_points_are_signalled() {
    let nats = NatsServer::start().await;
    let mut config = nats.config();
    config.nats.max_messages = 3;
    let a = RunningServer::start(config.clone()).await.expect("a");
    let b = RunningServer::start(config).await.expect("b");
    let mut ca = client(&a).await;
    let mut cb = client(&b).await;

    send(&mut ca, "ev-1").await;
    let mut stream = subscribe(&mut ca, oldest()).await;
    let token = next_event(&mut stream).await.resume_token;
    drop(stream);
    for i in 2..=6 {
        send(&mut ca, &format!("ev-{i}")).await;
    }
    // Retained: 4, 5, 6. Resuming after 1 must say that 2..=3 are gone.
    let mut stream = subscribe(&mut cb, resume(&token)).await;
    match next_non_heartbeat(&mut stream).await {
        Kind::Gap(gap) => {
            assert_eq!((gap.first_sequence, gap.last_sequence), (2, 3));
            // The text stays filled for clients built before `reason_code`.
            #[allow(deprecated)]
            let text = gap.reason.clone();
            assert_eq!(text, "evicted");
            assert_eq!(gap.reason_code(), pb::GapReason::Evicted);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    for seq in 4..=6 {
        let e = next_event(&mut stream).await;
        assert_eq!(e.sequence, seq);
        assert_eq!(e.outcome.expect("outcome").call_id, format!("ev-{seq}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_mid_stream_is_resumed_on_another() {
    let nats = NatsServer::start().await;
    let (a, mut ca) = replica(&nats).await;
    let (_b, mut cb) = replica(&nats).await;

    let mut on_a = subscribe(&mut ca, oldest()).await;
    let r1 = send(&mut cb, "rs-1").await;
    assert_eq!(next_event(&mut on_a).await.event_id, r1.event_id);
    a.stop().await.expect("a stops");
    let token = final_token(&mut on_a).await;

    let mut on_b = subscribe(&mut cb, resume(&token)).await;
    let (_a2, mut ca2) = replica(&nats).await;
    let r2 = send(&mut ca2, "rs-2").await;
    let e = next_event(&mut on_b).await;
    assert_eq!(
        e.event_id, r2.event_id,
        "resumed after r1, without repeating it"
    );
    // The restarted replica reads the same log: its tokens match B's.
    let mut on_a2 = subscribe(&mut ca2, resume(&token)).await;
    let again = next_event(&mut on_a2).await;
    assert_eq!(again.resume_token, e.resume_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replicas_never_lose_a_history_update() {
    let nats = NatsServer::start().await;
    let config = nats.config();
    let open = || async {
        let connection = NatsConnection::connect(&config.nats)
            .await
            .expect("connects");
        NatsStore::open(connection, config.store.clone())
            .await
            .expect("buckets")
    };
    let (one, two) = (open().await, open().await);
    const EACH: usize = 20;
    let writer = |store: NatsStore, name: &'static str| {
        tokio::spawn(async move {
            for i in 0..EACH {
                store
                    .record(
                        "acme.eu",
                        TO,
                        &format!("{name}-{i}"),
                        HistoryEntry {
                            at: SystemTime::now(),
                            attempt: 1,
                            category: Category::Declined,
                            sip_code: Some(603),
                        },
                    )
                    .await
                    .expect("recorded");
            }
        })
    };
    let (x, y) = tokio::join!(writer(one.clone(), "one"), writer(two.clone(), "two"));
    x.expect("writer one");
    y.expect("writer two");
    let history = one
        .history("acme.eu", TO, std::time::SystemTime::now())
        .await
        .expect("history");
    assert_eq!(
        history.entries.len(),
        2 * EACH,
        "every concurrent update kept"
    );
    assert_eq!(
        two.history("acme.eu", TO, std::time::SystemTime::now())
            .await
            .expect("history"),
        history
    );
    // Tenants stay apart even when one's name is another's escaped token.
    assert!(
        two.history("acme_2Eeu", TO, std::time::SystemTime::now())
            .await
            .expect("history")
            .entries
            .is_empty()
    );
}

/// The event a report of a 603 to [`TO`] in tenant `acme` publishes, classified by
/// `pipeline`.
async fn decline_event(
    pipeline: &call_outcome::pipeline::Pipeline,
    call_id: &str,
    event_id: &str,
) -> NewEvent {
    let outcome = Outcome {
        call_id: call_id.into(),
        attempt: Some(1),
        to: TO.into(),
        sip_code: Some(603),
        ..Outcome::default()
    };
    let classified = pipeline
        .classify(
            &call_outcome::domain::Tenant::parse("acme", 64).expect("tenant"),
            &outcome,
        )
        .await
        .expect("classify");
    NewEvent {
        event_id: event_id.into(),
        tenant: "acme".into(),
        destination: classified.destination,
        outcome,
        classification: std::sync::Arc::new(classified.classification),
        decision: std::sync::Arc::new(classified.decision),
        recorded_at: SystemTime::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_of_one_report_is_stored_once() {
    let nats = NatsServer::start().await;
    let (pipeline, _connection) = backends(&nats).await;
    let event = decline_event(&pipeline, "msg-id", "first").await;
    let events = pipeline.events();
    let first = events.publish(event.clone()).await.expect("published");
    // The same report retried (on any replica) gets a new event id: still one event.
    let retry = NewEvent {
        event_id: "retry".into(),
        ..event.clone()
    };
    let again = events.publish(retry).await.expect("deduplicated");
    assert_eq!(again.sequence, first.sequence);
    // The event that exists is the one reported back, not the retry's copy.
    assert_eq!(
        again.existing.map(|e| e.event.event_id.clone()).as_deref(),
        Some("first")
    );
    assert_eq!(
        events.head("acme").await.expect("head").sequence,
        first.sequence
    );
    // Another attempt, or the same call id in another tenant, is another report.
    let mut next = event.clone();
    next.outcome.attempt = Some(2);
    assert_eq!(events.publish(next).await.expect("published").sequence, 2);
    let other = NewEvent {
        tenant: "acme.eu".into(),
        ..event
    };
    // Its tenant's first event: positions are per tenant.
    assert_eq!(events.publish(other).await.expect("published").sequence, 1);
}

/// Polls `Pipeline::ready` (what the admin readiness check reads) until it is `want`.
async fn wait_ready(pipeline: &call_outcome::pipeline::Pipeline, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pipeline.ready().await != want {
        assert!(
            Instant::now() < deadline,
            "readiness did not become {want} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_readiness_follows_nats() {
    let mut nats = NatsServer::start().await;
    let (pipeline, _connection) = backends(&nats).await;
    assert!(pipeline.ready().await);
    nats.kill();
    wait_ready(&pipeline, false).await;
    assert_eq!(
        pipeline.readiness().await,
        Err("no connection to NATS".to_owned())
    );
    nats.restart().await;
    wait_ready(&pipeline, true).await;
    // And it works again without being rebuilt.
    let head = pipeline
        .events()
        .head("acme")
        .await
        .expect("head after reconnect");
    assert_eq!(head.sequence, 0);
}

/// `nats.replicas` above what NATS can place (3 on a single server): the replica starts,
/// but gRPC health (what the chart's readiness probe asks) is NOT_SERVING and `/readyz`
/// says what NATS refused, instead of a replica that looks ready and fails every report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_nats_cannot_place_keep_the_replica_not_ready_with_the_reason() {
    let nats = NatsServer::start().await;
    let mut config = nats.config();
    config.nats.replicas = 3;
    let server = RunningServer::start(config).await.expect("replica starts");
    wait_health(&server, tonic_health::ServingStatus::NotServing).await;
    let (status, body) = common::get(server.admin_addr.expect("admin"), "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("replicas > 1 not supported in non-clustered mode"),
        "{body}"
    );
    let mut c = client(&server).await;
    let refused = c
        .report_outcome(report(outcome("r3", 1, TO, DECLINE)))
        .await
        .expect_err("no bucket, no acknowledgement");
    assert_eq!(refused.code(), Code::Unavailable);
    server.stop().await.expect("clean stop");
}

/// A bucket deleted behind the service's back: readiness says which stream is missing,
/// the bucket is created again, and reports are acknowledged with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_bucket_is_reported_missing_and_created_again() {
    let nats = NatsServer::start().await;
    let (pipeline, connection) = backends(&nats).await;
    let mut condition = connection.condition();
    assert!(pipeline.ready().await);
    connection
        .jetstream
        .delete_key_value("call_outcome_reports")
        .await
        .expect("bucket deleted");
    let missing = tokio::time::timeout(
        Duration::from_secs(30),
        condition.wait_for(|c| matches!(c, call_outcome::NatsCondition::StreamMissing(_))),
    )
    .await
    .expect("seen missing within 30 s")
    .expect("condition")
    .to_string();
    assert_eq!(
        missing,
        "stream KV_call_outcome_reports missing (being created again)"
    );
    wait_ready(&pipeline, true).await;
    let key = call_outcome::store::ReportKey {
        tenant: "acme".into(),
        call_id: "after-delete".into(),
        attempt: 1,
        delivery: None,
    };
    assert!(matches!(
        pipeline.store().claim(&key).await,
        Ok(call_outcome::store::Claim::New)
    ));
}

/// Reports `call_id` until it is acknowledged, across outages (bounded).
async fn send_until_acknowledged(client: &mut Client, call_id: &str) {
    until_acknowledged(client, call_id, TO, Duration::from_secs(90)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_loses_no_acknowledged_report_and_replicas_recover() {
    const TOTAL: usize = 30;
    let mut nats = NatsServer::start().await;
    let mut config = nats.config();
    // A claim left behind by a report cut off mid-way is taken over within 3 s.
    config.store.in_flight_wait = Duration::from_secs(1);
    let a = RunningServer::start(config.clone()).await.expect("a");
    let b = RunningServer::start(config).await.expect("b");
    let mut ca = client(&a).await;
    let cb = client(&b).await;

    // The subscriber resumes on the other replica whenever its stream ends.
    let subscriber = {
        let mut clients = [ca.clone(), cb.clone()];
        tokio::spawn(async move {
            let mut seen: Vec<String> = Vec::new();
            let mut last_sequence = 0;
            let mut token: Option<String> = None;
            let mut which = 1;
            let mut ended = 0_usize;
            let deadline = Instant::now() + Duration::from_secs(120);
            while seen.len() < TOTAL {
                assert!(
                    Instant::now() < deadline,
                    "subscriber: only {} events",
                    seen.len()
                );
                let request = token.as_deref().map_or_else(oldest, resume);
                let mut stream = match clients[which].subscribe_outcomes(request).await {
                    Ok(s) => s.into_inner(),
                    Err(status) => {
                        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                        which ^= 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                while seen.len() < TOTAL {
                    match stream.next().await {
                        Some(Ok(msg)) => match msg.kind.expect("kind") {
                            Kind::Event(e) => {
                                assert!(
                                    e.sequence > last_sequence,
                                    "delivered twice or out of order"
                                );
                                last_sequence = e.sequence;
                                seen.push(e.outcome.expect("outcome").call_id);
                                token = Some(e.resume_token);
                            }
                            Kind::Heartbeat(h) => token = Some(h.resume_token),
                            Kind::Gap(g) => panic!("unexpected gap {g:?}"),
                        },
                        Some(Err(status)) => {
                            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                            ended += 1;
                            token = Some(final_status_token(&status));
                            break;
                        }
                        None => break,
                    }
                }
                which ^= 1;
            }
            (seen, ended)
        })
    };

    // Reports keep flowing, alternating replicas, each retried until acknowledged.
    let (progress, mut acked) = tokio::sync::watch::channel(0_usize);
    let reporter = {
        let mut clients = [ca.clone(), cb.clone()];
        tokio::spawn(async move {
            for i in 0..TOTAL {
                send_until_acknowledged(&mut clients[i % 2], &format!("flow-{i}")).await;
                progress.send_replace(i + 1);
            }
        })
    };

    acked
        .wait_for(|n| *n >= TOTAL / 3)
        .await
        .expect("reporter runs");
    nats.kill();
    wait_health(&a, tonic_health::ServingStatus::NotServing).await;
    wait_health(&b, tonic_health::ServingStatus::NotServing).await;

    // While NATS is down a report fails fast with UNAVAILABLE: never acknowledged.
    let started = Instant::now();
    let status = ca
        .report_outcome(report(outcome("while-down", 1, TO, DECLINE)))
        .await
        .expect_err("no acknowledgement without NATS");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    nats.restart().await;
    wait_health(&a, tonic_health::ServingStatus::Serving).await;
    wait_health(&b, tonic_health::ServingStatus::Serving).await;

    reporter.await.expect("every report acknowledged");
    let (seen, ended) = tokio::time::timeout(Duration::from_secs(120), subscriber)
        .await
        .expect("subscriber finishes")
        .expect("subscriber ok");
    assert!(
        ended >= 1,
        "the outage ended the open stream with its last token"
    );
    let expected: HashSet<String> = (0..TOTAL).map(|i| format!("flow-{i}")).collect();
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "no event delivered twice: {seen:?}"
    );
    assert_eq!(unique, expected, "every acknowledged report was delivered");
}

/// #16 item 4: a replica started before NATS serves, reports not-ready (`/readyz` 503,
/// gRPC health NOT_SERVING, reports UNAVAILABLE) and keeps connecting; once NATS is up it
/// becomes ready by itself and reports are acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_before_nats_waits_for_it() {
    let mut nats = NatsServer::start().await;
    let mut config = nats.config();
    config.nats.connect_timeout = Duration::from_millis(300);
    nats.kill();
    let server = RunningServer::start(config)
        .await
        .expect("starts without NATS");
    let admin = server.admin_addr.expect("admin listener");
    assert_eq!(common::get(admin, "/readyz").await.0, 503);
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(server.url())
            .expect("url")
            .connect()
            .await
            .expect("connect"),
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers")
        .into_inner()
        .status;
    assert_eq!(status, 2, "NOT_SERVING");
    let mut c = client(&server).await;
    let err = c
        .report_outcome(report(outcome("early", 1, TO, DECLINE)))
        .await
        .expect_err("no NATS, no acknowledgement");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    nats.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::get(admin, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&mut c, "early").await;
    server.stop().await.expect("clean stop");
}

/// Waits until `/metrics` has the line `wanted` (bounded).
async fn wait_for_metric(admin: std::net::SocketAddr, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = common::get(admin, "/metrics").await;
        if body.lines().any(|l| l.trim() == wanted) {
            return body;
        }
        assert!(Instant::now() < deadline, "never saw {wanted}:\n{body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The fair-admission model (docs/security.md): requests that are being handled hold a
/// slot; one tenant may hold only its share, and another tenant still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_share_is_shed_while_another_tenant_gets_in() {
    let nats = NatsServer::start().await;
    let mut config = nats.config();
    config.default_tenant = "acme".into();
    config.server.max_in_flight = 10;
    config.server.max_in_flight_per_tenant = 2;
    config.nats.request_timeout = Duration::from_secs(20);
    let server = RunningServer::start(config).await.expect("starts");
    let admin = server.admin_addr.expect("admin listener");
    let c = client(&server).await;

    // NATS stops answering: reports now wait for it, each holding its slot.
    nats.pause();
    let hold = |tenant: &'static str, call_id: &'static str| {
        let mut c = c.clone();
        tokio::spawn(async move {
            c.report_outcome(pb::ReportOutcomeRequest {
                tenant: tenant.into(),
                ..report(outcome(call_id, 1, TO, DECLINE))
            })
            .await
        })
    };
    let held = vec![hold("acme", "hold-1"), hold("acme", "hold-2")];
    wait_for_metric(admin, "calloutcome_in_flight_requests 2").await;

    // acme is at its share: refused at once, unprocessed, and told why.
    let err = c
        .clone()
        .report_outcome(report(outcome("third", 1, TO, DECLINE)))
        .await
        .expect_err("acme is at its share");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("tenant's share"), "{err:?}");
    // globex is admitted beside it.
    let globex = hold("globex", "globex-1");
    let metrics = wait_for_metric(admin, "calloutcome_in_flight_requests 3").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("calloutcome_shed_requests_total{")
                && l.contains("tenant=\"acme\"")
                && l.contains("limit=\"tenant\"")
                && l.contains("rpc_method=\"ReportOutcome\"")),
        "{metrics}"
    );

    nats.resume();
    for task in held.into_iter().chain([globex]) {
        task.await
            .expect("join")
            .expect("answered once NATS is back");
    }
    server.stop().await.expect("clean stop");
}

/// #16 item 3: reports in flight when NATS dies fail at once with UNAVAILABLE (nothing
/// acknowledged), not after `nats.request_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_in_flight_fail_at_once_when_nats_dies() {
    let mut nats = NatsServer::start().await;
    let mut config = nats.config();
    config.nats.request_timeout = Duration::from_secs(30);
    let server = RunningServer::start(config).await.expect("starts");
    let admin = server.admin_addr.expect("admin listener");
    let c = client(&server).await;
    // Warm: the tenant's stream and the buckets exist.
    send(&mut c.clone(), "warm").await;

    nats.pause();
    let in_flight: Vec<_> = (0..3)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move {
                c.report_outcome(report(outcome(&format!("dying-{i}"), 1, TO, DECLINE)))
                    .await
            })
        })
        .collect();
    wait_for_metric(admin, "calloutcome_in_flight_requests 3").await;
    let killed = Instant::now();
    nats.kill();
    for task in in_flight {
        let err = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("failed well before nats.request_timeout (30 s)")
            .expect("join")
            .expect_err("nothing is acknowledged without NATS");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "took {:?}",
        killed.elapsed()
    );
    drop(server);
}

/// #16 item 1: a replica claims a report, publishes its event and dies before completing
/// it. The retry on another replica takes the key over: it is told about the event that
/// exists (its id, `duplicate = true`), exactly what subscribers get, and no second event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_reports_the_event_that_exists() {
    let nats = NatsServer::start().await;
    let mut config = nats.config();
    config.store.in_flight_wait = Duration::from_secs(1);
    // The replica that dies: it got as far as publishing.
    let dying = call_outcome::server::backends::build(&config)
        .await
        .expect("backends")
        .pipeline;
    let tenant = call_outcome::domain::Tenant::parse("acme", 64).expect("tenant");
    let o = Outcome {
        call_id: "taken-over".into(),
        attempt: Some(1),
        to: TO.into(),
        sip_code: Some(603),
        ..Outcome::default()
    };
    let classified = dying.classify(&tenant, &o).await.expect("classify");
    let key = call_outcome::store::ReportKey {
        tenant: "acme".into(),
        call_id: "taken-over".into(),
        attempt: 1,
        delivery: None,
    };
    assert_eq!(
        dying.store().claim(&key).await,
        Ok(call_outcome::store::Claim::New)
    );
    dying
        .events()
        .publish(NewEvent {
            event_id: "the-first-attempt".into(),
            tenant: "acme".into(),
            destination: classified.destination.clone(),
            outcome: o.clone(),
            classification: std::sync::Arc::new(classified.classification),
            decision: std::sync::Arc::new(classified.decision),
            recorded_at: SystemTime::now(),
        })
        .await
        .expect("published");
    drop(dying);

    // The client retries on the other replica until the stale claim is taken over.
    let server = RunningServer::start(config)
        .await
        .expect("the other replica");
    let mut c = client(&server).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match c
            .report_outcome(acme(outcome("taken-over", 1, TO, DECLINE)))
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::Aborted,
                    "the documented code: {status:?}"
                );
                assert!(Instant::now() < deadline, "never taken over");
            }
        }
    };
    assert_eq!(answer.event_id, "the-first-attempt");
    assert!(answer.duplicate, "the event was published before");
    // Subscribers get that one event, once.
    let mut events = c
        .subscribe_outcomes(pb::SubscribeOutcomesRequest {
            tenant: "acme".into(),
            ..oldest()
        })
        .await
        .expect("subscribe")
        .into_inner();
    // Everything retained comes first; the first heartbeat says there is no more.
    let mut ids = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a message within 10 s")
            .expect("open")
            .expect("message");
        match msg.kind.expect("kind") {
            Kind::Event(e) => ids.push(e.event_id),
            Kind::Heartbeat(_) => break,
            Kind::Gap(g) => panic!("unexpected {g:?}"),
        }
    }
    assert_eq!(ids, ["the-first-attempt"]);
    // And a later duplicate says the same.
    let again = c
        .report_outcome(acme(outcome("taken-over", 1, TO, DECLINE)))
        .await
        .expect("duplicate")
        .into_inner();
    assert_eq!(
        (again.event_id.as_str(), again.duplicate),
        ("the-first-attempt", true)
    );
    server.stop().await.expect("clean stop");
}

fn acme(outcome: pb::CallOutcome) -> pb::ReportOutcomeRequest {
    pb::ReportOutcomeRequest {
        tenant: "acme".into(),
        ..report(outcome)
    }
}

/// A provider callback is acknowledged only once JetStream holds it: with nats-server
/// gone the answer is 503 (the provider retries), and the retry once NATS is back
/// records exactly one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_answered_503_without_nats_and_its_retry_records_one_event() {
    use call_outcome::auth::webhook::sign;
    let mut nats = NatsServer::start().await;
    let mut config = nats.config();
    config.default_tenant = "acme".into();
    config.webhooks = call_outcome::config::Config::from_toml_str(
        "[webhooks]\nlisten = \"127.0.0.1:0\"\n[webhooks.tenants.acme.twilio]\nauth_tokens = [\"tok\"]\n",
        std::path::Path::new("w.toml"),
    )
    .expect("webhooks config")
    .webhooks;
    let server = RunningServer::start(config).await.expect("server");
    let hooks = server.webhooks_addr.expect("webhook listener");
    let admin = server.admin_addr.expect("admin");
    let path = "/v1/webhooks/twilio/acme?call_id=wh-1&attempt=1";
    let body =
        "CallSid=CA1&CallStatus=failed&SipResponseCode=603&SequenceNumber=2&To=%2B15550100001";
    let params = call_outcome::CallbackParams(
        form_urlencoded::parse(body.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    );
    let signature = sign::twilio("tok", &format!("http://{hooks}{path}"), &params);
    let headers = [("X-Twilio-Signature", signature)];
    let form = "application/x-www-form-urlencoded";

    nats.kill();
    let refused = common::post(hooks, path, form, &headers, body.as_bytes()).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(
        refused.head.to_ascii_lowercase().contains("retry-after"),
        "{refused:?}"
    );

    nats.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::get(admin, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let accepted = common::post(hooks, path, form, &headers, body.as_bytes()).await;
    assert_eq!(accepted.status, 200, "{accepted:?}");
    assert_eq!(accepted.json()["result"], "accepted");
    let again = common::post(hooks, path, form, &headers, body.as_bytes()).await;
    assert_eq!(again.json()["result"], "duplicate");
    assert_eq!(again.json()["event_id"], accepted.json()["event_id"]);

    // The stream holds that one event, then the sentinel.
    let mut c = client(&server).await;
    send(&mut c, "sentinel").await;
    let mut stream = c
        .subscribe_outcomes(pb::SubscribeOutcomesRequest {
            start: pb::StartPosition::Oldest as i32,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut ids = Vec::new();
    while ids.last().map(String::as_str) != Some("sentinel") {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event")
            .expect("open")
            .expect("ok");
        if let Some(Kind::Event(e)) = message.kind {
            ids.push(e.outcome.expect("outcome").call_id);
        }
    }
    assert_eq!(ids, ["wh-1", "sentinel"]);
    server.stop().await.expect("clean stop");
}

/// #20, measured first: the requests one report makes of NATS. `/varz` `in_msgs` counts
/// every message the server received; with one replica, no subscriber and no other
/// client, the difference over a batch of new reports (distinct destinations, so each
/// history key is new and each claim is won) divided by the batch is the requests per
/// report, each a sequential round trip on today's report path. The assertion pins the
/// figure, so a change that removes round trips says so here (docs/performance.md).
#[tokio::test]
async fn the_requests_one_report_makes_of_nats_are_counted() {
    let nats = NatsServer::start().await;
    let mut config = nats.config();
    // The readiness probe's requests would be counted with the reports'.
    config.nats.health_interval = Duration::from_secs(3600);
    let server = RunningServer::start(config).await.expect("replica starts");
    let mut client = client(&server).await;
    // Warm up: buckets and the stream exist, the connection has settled.
    send(&mut client, "warm-up").await;
    const REPORTS: u64 = 20;
    let before = nats.messages_in().await;
    for n in 0..REPORTS {
        let response = client
            .report_outcome(report(outcome(
                &format!("rt-{n}"),
                1,
                &format!("+1555010{n:04}"),
                DECLINE,
            )))
            .await
            .expect("report acknowledged")
            .into_inner();
        assert!(!response.duplicate);
    }
    let after = nats.messages_in().await;
    let per_report = (after - before) as f64 / REPORTS as f64;
    eprintln!("NATS requests per ReportOutcome: {per_report}");
    // The claim creates the key (1; it read it first before #20: 2), the history is read
    // and written (2), the event is published and acknowledged (1), the result is a
    // compare-and-set at the claim's revision (1; a read and a write before: 2).
    assert_eq!(
        per_report, 5.0,
        "requests per report changed: update docs/performance.md and this figure"
    );
    server.stop().await.expect("clean stop");
}

/// Histories are stored compact (src/store/nats.rs): a history an earlier version wrote
/// as JSON, still in the bucket after an upgrade, is read whole, extended by the next
/// report and written back in the compact format.
#[tokio::test]
async fn a_history_an_earlier_version_wrote_is_kept_and_rewritten_compact() {
    use base64::Engine as _;
    let nats = NatsServer::start().await;
    let (pipeline, connection) = backends(&nats).await;
    let store = pipeline.store();
    // The buckets exist once the store answered.
    let empty = store
        .history("acme", TO, SystemTime::now())
        .await
        .expect("history");
    assert!(empty.entries.is_empty());
    let bucket = connection
        .jetstream
        .get_key_value(&connection.config.history_bucket)
        .await
        .expect("the history bucket");
    let key = format!(
        "acme.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(TO)
    );
    let secs = |ago: u64| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            - ago
    };
    // As versions before the compact format wrote it.
    let earlier = format!(
        r#"[{{"call_id":"old-1","at":{{"secs_since_epoch":{},"nanos_since_epoch":0}},"attempt":1,"category":"busy","sip_code":486}},{{"call_id":"old-2","at":{{"secs_since_epoch":{},"nanos_since_epoch":0}},"attempt":2,"category":"no_answer","sip_code":480}}]"#,
        secs(120),
        secs(60)
    );
    bucket
        .put(&key, earlier.into_bytes().into())
        .await
        .expect("written as an earlier version did");
    let read = store
        .history("acme", TO, SystemTime::now())
        .await
        .expect("history");
    assert_eq!(
        read.entries
            .iter()
            .map(|e| (e.attempt, e.category, e.sip_code))
            .collect::<Vec<_>>(),
        [
            (1, Category::Busy, Some(486)),
            (2, Category::NoAnswer, Some(480))
        ]
    );
    let recorded = store
        .record(
            "acme",
            TO,
            "new-1",
            HistoryEntry {
                at: SystemTime::now(),
                attempt: 3,
                category: Category::Declined,
                sip_code: Some(603),
            },
        )
        .await
        .expect("recorded");
    assert_eq!(recorded.entries.len(), 3, "the earlier entries kept");
    assert_eq!(&recorded.entries[..2], &read.entries[..]);
    let value = bucket
        .get(&key)
        .await
        .expect("read")
        .expect("the history exists");
    assert_eq!(value.first(), Some(&1), "rewritten in the compact format");
    assert_eq!(
        store
            .history("acme", TO, SystemTime::now())
            .await
            .expect("history"),
        recorded
    );
    // A report of before the upgrade, retried after it, still replaces its own entry.
    let retried = store
        .record(
            "acme",
            TO,
            "old-2",
            HistoryEntry {
                at: SystemTime::now(),
                attempt: 2,
                category: Category::Busy,
                sip_code: Some(486),
            },
        )
        .await
        .expect("recorded");
    assert_eq!(
        retried
            .entries
            .iter()
            .map(|e| (e.attempt, e.category))
            .collect::<Vec<_>>(),
        [
            (1, Category::Busy),
            (3, Category::Declined),
            (2, Category::Busy)
        ]
    );
}

/// The size in bytes of the future a step boxes (a step answered at once has none).
fn step_size<T>(step: &call_outcome::step::Step<'_, T>) -> usize {
    match step {
        call_outcome::step::Step::Pending(future) => std::mem::size_of_val(&**future),
        call_outcome::step::Step::Ready(_) => 0,
    }
}

/// Each report step on NATS is one boxed future, copied whole at every move and held
/// for as long as the report waits on NATS. async-nats's futures are several KB; held
/// inline they made each step ~20 KB (and `memmove` 17 % of the service's CPU on
/// NATS), so the backends box them (src/store/nats.rs, src/events/nats.rs). This keeps
/// it so.
#[tokio::test]
async fn the_report_steps_on_nats_stay_small() {
    const LIMIT: usize = 4096;
    let nats = NatsServer::start().await;
    let (pipeline, _connection) = backends(&nats).await;
    let store = pipeline.store();
    let key = call_outcome::store::ReportKey {
        tenant: "acme".into(),
        call_id: "sizes".into(),
        attempt: 1,
        delivery: None,
    };
    let entry = HistoryEntry {
        at: SystemTime::now(),
        attempt: 1,
        category: Category::Declined,
        sip_code: Some(603),
    };
    let event = decline_event(&pipeline, "sizes", "sizes").await;
    let report = std::sync::Arc::new(call_outcome::store::StoredReport {
        classification: std::sync::Arc::clone(&event.classification),
        decision: std::sync::Arc::clone(&event.decision),
        event_id: event.event_id.clone(),
        destination: event.destination.clone(),
        recorded_at: event.recorded_at,
    });
    let sizes = [
        ("claim", step_size(&store.claim(&key))),
        (
            "record",
            step_size(&store.record("acme", &report.destination, "sizes", entry)),
        ),
        ("complete", step_size(&store.complete(&key, &report))),
        ("publish", step_size(&pipeline.events().publish(event))),
    ];
    eprintln!("report steps on NATS, bytes: {sizes:?}");
    for (step, size) in sizes {
        assert!(size > 0, "{step}: a NATS step is a future");
        assert!(
            size <= LIMIT,
            "{step}: its future is {size} bytes (more than {LIMIT}): an async-nats future \
             is awaited inline; box it"
        );
    }
}
