//! SubscribeOutcomes over a real gRPC connection: filters, ordering, exactly-once
//! delivery, resume, gaps, heartbeats, slow subscribers, caps and shutdown.
//! Every wait is on a delivered message, never on a sleep.

mod common;

use call_outcome::RESUME_TOKEN_METADATA;
use call_outcome::config::Config;
use call_outcome::proto as pb;
use call_outcome::proto::call_outcome_service_client::CallOutcomeServiceClient;
use common::*;
use pb::subscribe_outcomes_response::Kind;
use std::collections::HashSet;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

type Client = CallOutcomeServiceClient<Channel>;

fn subscription() -> pb::SubscribeOutcomesRequest {
    pb::SubscribeOutcomesRequest::default()
}

async fn subscribe(
    client: &mut Client,
    r: pb::SubscribeOutcomesRequest,
) -> Streaming<pb::SubscribeOutcomesResponse> {
    client
        .subscribe_outcomes(r)
        .await
        .expect("subscribe")
        .into_inner()
}

/// The next message that is not a heartbeat, with a generous bound so a bug fails
/// instead of hanging.
async fn next_non_heartbeat(stream: &mut Streaming<pb::SubscribeOutcomesResponse>) -> Kind {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a message within 30 s")
            .expect("stream open")
            .expect("message ok");
        match msg.kind.expect("kind") {
            Kind::Heartbeat(_) => continue,
            other => return other,
        }
    }
}

async fn next_event(stream: &mut Streaming<pb::SubscribeOutcomesResponse>) -> pb::OutcomeEvent {
    match next_non_heartbeat(stream).await {
        Kind::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn send(
    client: &mut Client,
    call_id: &str,
    to: &str,
    code: i32,
) -> pb::ReportOutcomeResponse {
    client
        .report_outcome(report(outcome(call_id, 1, to, code)))
        .await
        .expect("report")
        .into_inner()
}

#[tokio::test]
async fn by_default_only_decline_events_are_delivered() {
    let server = start().await;
    let mut client = client(&server).await;
    let mut stream = subscribe(&mut client, subscription()).await;
    send(&mut client, "a", "+15550100001", 486).await;
    send(&mut client, "b", "+15550100002", 603).await;
    send(&mut client, "c", "+15550100003", 404).await;
    send(&mut client, "d", "+15550100004", 607).await;
    let e1 = next_event(&mut stream).await;
    let e2 = next_event(&mut stream).await;
    assert_eq!(e1.outcome.as_ref().map(|o| o.call_id.as_str()), Some("b"));
    assert_eq!(
        e1.classification.as_ref().map(|c| c.category()),
        Some(pb::Category::Declined)
    );
    assert_eq!(e2.outcome.as_ref().map(|o| o.call_id.as_str()), Some("d"));
    assert_eq!(
        e2.classification.as_ref().map(|c| c.category()),
        Some(pb::Category::RejectedUnwanted)
    );
    assert!(e1.sequence < e2.sequence);
    assert!(!e1.resume_token.is_empty());
    assert_eq!(e1.tenant, "default");
    assert!(e1.decision.is_some() && e1.recorded_at.is_some());
}

#[tokio::test]
async fn concurrent_reporters_events_arrive_in_order_exactly_once() {
    let server = start().await;
    let mut client = client(&server).await;
    let mut stream = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            categories: vec![pb::Category::Declined as i32, pb::Category::Busy as i32],
            ..subscription()
        },
    )
    .await;
    let reporters = 4;
    let per_reporter = 50;
    let mut tasks = Vec::new();
    for r in 0..reporters {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_reporter {
                let code = if i % 2 == 0 { 603 } else { 486 };
                send(
                    &mut client,
                    &format!("r{r}-{i}"),
                    &format!("+1555020{r:02}{i:02}"),
                    code,
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("reporter");
    }
    let mut seen = HashSet::new();
    let mut last_sequence = 0;
    for _ in 0..reporters * per_reporter {
        let e = next_event(&mut stream).await;
        assert!(e.sequence > last_sequence, "in order");
        last_sequence = e.sequence;
        assert!(seen.insert(e.event_id.clone()), "exactly once");
    }
    assert_eq!(seen.len(), reporters * per_reporter);
}

#[tokio::test]
async fn each_filter_selects_its_events() {
    let server = start().await;
    let mut client = client(&server).await;
    let mut by_code = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            sip_codes: vec![607],
            ..subscription()
        },
    )
    .await;
    let mut by_destination = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            // Another spelling of the same number: filters are normalised like reports.
            destinations: vec!["sip:+15550109999@carrier.example;user=phone".into()],
            ..subscription()
        },
    )
    .await;
    let mut by_label = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            labels: [("campaign".to_owned(), "spring".to_owned())].into(),
            ..subscription()
        },
    )
    .await;
    let mut by_category = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            categories: vec![pb::Category::InvalidNumber as i32],
            ..subscription()
        },
    )
    .await;

    send(&mut client, "603-x", "+15550100010", 603).await;
    send(&mut client, "607-x", "+15550100011", 607).await;
    send(&mut client, "603-dest", "+1 555 010 9999", 603).await;
    let mut labelled = outcome("603-label", 1, "+15550100012", 603);
    labelled.labels.insert("campaign".into(), "spring".into());
    client
        .report_outcome(report(labelled))
        .await
        .expect("report");
    send(&mut client, "404-x", "+15550100013", 404).await;

    let id = |e: pb::OutcomeEvent| e.outcome.map(|o| o.call_id).unwrap_or_default();
    assert_eq!(id(next_event(&mut by_code).await), "607-x");
    assert_eq!(id(next_event(&mut by_destination).await), "603-dest");
    assert_eq!(id(next_event(&mut by_label).await), "603-label");
    assert_eq!(id(next_event(&mut by_category).await), "404-x");

    // Nothing else reached them: a fresh marker event is the next thing each one sees.
    send(&mut client, "marker", "+15550109999", 607).await;
    let mut marker_label = outcome("marker-l", 1, "+15550100014", 404);
    marker_label
        .labels
        .insert("campaign".into(), "spring".into());
    client
        .report_outcome(report(marker_label))
        .await
        .expect("report");
    assert_eq!(id(next_event(&mut by_code).await), "marker");
    assert_eq!(id(next_event(&mut by_destination).await), "marker");
    assert_eq!(id(next_event(&mut by_category).await), "marker-l");
}

#[tokio::test]
async fn resume_after_disconnect_loses_nothing_and_repeats_nothing() {
    let server = start().await;
    let mut client = client(&server).await;
    let mut stream = subscribe(&mut client, subscription()).await;
    for i in 0..5 {
        send(&mut client, &format!("first-{i}"), "+15550100020", 603).await;
    }
    let mut token = String::new();
    for i in 0..5 {
        let e = next_event(&mut stream).await;
        assert_eq!(
            e.outcome.as_ref().map(|o| o.call_id.clone()),
            Some(format!("first-{i}"))
        );
        token = e.resume_token;
    }
    drop(stream);
    for i in 0..5 {
        send(&mut client, &format!("second-{i}"), "+15550100021", 603).await;
    }
    let mut resumed = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            resume_token: token,
            ..subscription()
        },
    )
    .await;
    for i in 0..5 {
        let e = next_event(&mut resumed).await;
        assert_eq!(
            e.outcome.as_ref().map(|o| o.call_id.clone()),
            Some(format!("second-{i}"))
        );
    }
    // And nothing more: the next event is a new one.
    send(&mut client, "third", "+15550100022", 603).await;
    let e = next_event(&mut resumed).await;
    assert_eq!(e.outcome.map(|o| o.call_id), Some("third".into()));
}

#[tokio::test]
async fn start_from_oldest_replays_retained_events() {
    let server = start().await;
    let mut client = client(&server).await;
    send(&mut client, "old-1", "+15550100030", 603).await;
    send(&mut client, "old-2", "+15550100031", 603).await;
    let mut stream = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            start: pb::StartPosition::Oldest as i32,
            ..subscription()
        },
    )
    .await;
    assert_eq!(
        next_event(&mut stream).await.outcome.map(|o| o.call_id),
        Some("old-1".into())
    );
    assert_eq!(
        next_event(&mut stream).await.outcome.map(|o| o.call_id),
        Some("old-2".into())
    );
}

#[tokio::test]
async fn heartbeats_carry_a_token_that_skips_filtered_events() {
    use call_outcome::events::token;
    let mut config = Config::default();
    config.subscriptions.heartbeat = Duration::from_millis(20);
    let server = start_with(config).await;
    let mut client = client(&server).await;
    let mut stream = subscribe(&mut client, subscription()).await;
    // Busy outcomes are filtered out of the default (decline) subscription, but its
    // position moves past them.
    let mut head = 0;
    for i in 0..3 {
        let r = send(&mut client, &format!("busy-{i}"), "+15550100040", 486).await;
        assert!(!r.event_id.is_empty());
        head += 1;
    }
    let token = loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a heartbeat within 30 s")
            .expect("open")
            .expect("ok");
        match msg.kind {
            Some(Kind::Heartbeat(h)) => {
                let position = token::decode("default", &h.resume_token).expect("a valid token");
                if position.sequence == head {
                    break h.resume_token;
                }
                assert!(position.sequence < head);
            }
            other => panic!("only heartbeats expected, got {other:?}"),
        }
    };
    // Resuming from the heartbeat's token skips the three filtered events.
    let mut busy = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            resume_token: token,
            categories: vec![pb::Category::Busy as i32],
            ..subscription()
        },
    )
    .await;
    send(&mut client, "after", "+15550100042", 486).await;
    assert_eq!(
        next_event(&mut busy).await.outcome.map(|o| o.call_id),
        Some("after".into())
    );
}

#[tokio::test]
async fn eviction_is_signalled_with_a_gap() {
    let mut config = Config::default();
    config.events.max_events = 5;
    let server = start_with(config).await;
    let mut client = client(&server).await;
    let mut stream = subscribe(&mut client, subscription()).await;
    send(&mut client, "e-1", "+15550100050", 603).await;
    let first = next_event(&mut stream).await;
    drop(stream);
    for i in 2..=20 {
        send(&mut client, &format!("e-{i}"), "+15550100050", 603).await;
    }
    let mut resumed = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            resume_token: first.resume_token,
            ..subscription()
        },
    )
    .await;
    match next_non_heartbeat(&mut resumed).await {
        Kind::Gap(gap) => {
            #[allow(deprecated)]
            let text = gap.reason.clone();
            assert_eq!(text, "evicted");
            assert_eq!(gap.reason_code(), pb::GapReason::Evicted);
            assert_eq!(gap.first_sequence, first.sequence + 1);
            assert_eq!(gap.last_sequence, first.sequence + 14);
            assert!(!gap.resume_token.is_empty());
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    let e = next_event(&mut resumed).await;
    assert_eq!(e.sequence, first.sequence + 15);
    assert_eq!(e.outcome.map(|o| o.call_id), Some("e-16".into()));
}

#[tokio::test]
async fn a_token_from_another_incarnation_is_signalled() {
    let server = start().await;
    let mut client = client(&server).await;
    let mut stream = subscribe(&mut client, subscription()).await;
    send(&mut client, "before-restart", "+15550100060", 603).await;
    let token = next_event(&mut stream).await.resume_token;
    drop(stream);
    drop(client);
    server.stop().await.expect("stop");

    let restarted = start().await;
    let mut client = common::client(&restarted).await;
    send(&mut client, "after-restart", "+15550100061", 603).await;
    let mut resumed = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            resume_token: token,
            ..subscription()
        },
    )
    .await;
    match next_non_heartbeat(&mut resumed).await {
        Kind::Gap(gap) => {
            #[allow(deprecated)]
            let text = gap.reason.clone();
            assert_eq!(text, "epoch_changed");
            assert_eq!(gap.reason_code(), pb::GapReason::EpochChanged);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(
        next_event(&mut resumed).await.outcome.map(|o| o.call_id),
        Some("after-restart".into())
    );
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_does_not_delay_a_healthy_one() {
    let mut config = Config::default();
    config.events.max_events = 50;
    let server = start_with(config).await;
    let mut client = client(&server).await;
    // Its own connection, so its unread data only fills its own HTTP/2 windows.
    let mut stalled_client = common::client(&server).await;
    let mut stalled = subscribe(&mut stalled_client, subscription()).await;
    let mut healthy = subscribe(&mut client, subscription()).await;
    // ~1 KB per event, 2,000 events: far beyond what HTTP/2 flow-control windows and
    // client buffers hold for the stalled subscriber, so the log must evict under it.
    let total = 2000;
    let padding = "x".repeat(250);
    let reporter = {
        let mut client = client.clone();
        tokio::spawn(async move {
            for i in 0..total {
                let mut o = outcome(&format!("s-{i}"), 1, "+15550100070", 603);
                o.labels.insert("padding".into(), padding.clone());
                o.labels.insert("padding2".into(), padding.clone());
                o.labels.insert("padding3".into(), padding.clone());
                client.report_outcome(report(o)).await.expect("report");
            }
        })
    };
    for i in 0..total {
        let e = next_event(&mut healthy).await;
        assert_eq!(e.outcome.map(|o| o.call_id), Some(format!("s-{i}")));
    }
    reporter
        .await
        .expect("reporter finished while a subscriber was stalled");
    // The stalled subscriber now reads: events it could not get are signalled, never
    // silently skipped.
    let mut expected_next = 1;
    let mut got_gap = false;
    loop {
        match next_non_heartbeat(&mut stalled).await {
            Kind::Event(e) => {
                assert_eq!(e.sequence, expected_next, "no silent skip");
                expected_next = e.sequence + 1;
                if e.sequence == total as u64 {
                    break;
                }
            }
            Kind::Gap(g) => {
                assert_eq!(g.first_sequence, expected_next);
                expected_next = g.last_sequence + 1;
                got_gap = true;
            }
            Kind::Heartbeat(_) => unreachable!(),
        }
    }
    assert!(
        got_gap,
        "with 50 retained events out of 2000, the stalled reader saw a gap"
    );
}

#[tokio::test]
async fn one_thousand_concurrent_subscribers() {
    let server = start().await;
    let mut reporter = client(&server).await;
    let mut streams = Vec::new();
    // Spread over several connections (each HTTP/2 connection has a stream cap).
    for _ in 0..4 {
        let mut client = common::client(&server).await;
        for _ in 0..250 {
            streams.push(subscribe(&mut client, subscription()).await);
        }
    }
    send(&mut reporter, "k-1", "+15550100080", 603).await;
    send(&mut reporter, "k-2", "+15550100081", 607).await;
    let mut tasks = Vec::new();
    for mut s in streams {
        tasks.push(tokio::spawn(async move {
            let a = next_event(&mut s).await.outcome.map(|o| o.call_id);
            let b = next_event(&mut s).await.outcome.map(|o| o.call_id);
            (a, b)
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.expect("subscriber"),
            (Some("k-1".into()), Some("k-2".into()))
        );
    }
}

#[tokio::test]
async fn subscription_caps_answer_resource_exhausted() {
    let mut config = Config::default();
    config.subscriptions.max_total = 3;
    config.subscriptions.max_per_tenant = 2;
    let server = start_with(config).await;
    let mut client = client(&server).await;
    let a1 = subscribe(&mut client, subscription()).await;
    let _a2 = subscribe(&mut client, subscription()).await;
    let err = client
        .subscribe_outcomes(subscription())
        .await
        .expect_err("per-tenant cap");
    assert_eq!(err.code(), Code::ResourceExhausted);
    let _b1 = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            tenant: "other".into(),
            ..subscription()
        },
    )
    .await;
    let err = client
        .subscribe_outcomes(pb::SubscribeOutcomesRequest {
            tenant: "third".into(),
            ..subscription()
        })
        .await
        .expect_err("global cap");
    assert_eq!(err.code(), Code::ResourceExhausted);
    // A closed stream gives its permit back (the server notices the reset).
    drop(a1);
    let mut reopened = None;
    for _ in 0..1000 {
        match client.subscribe_outcomes(subscription()).await {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    assert!(
        reopened.is_some(),
        "the permit came back after the stream closed"
    );
}

#[tokio::test]
async fn bad_tokens_and_filters_are_rejected() {
    let server = start().await;
    let mut client = client(&server).await;
    let err = client
        .subscribe_outcomes(pb::SubscribeOutcomesRequest {
            resume_token: "garbage".into(),
            ..subscription()
        })
        .await
        .expect_err("malformed");
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut stream = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            tenant: "acme".into(),
            ..subscription()
        },
    )
    .await;
    client
        .report_outcome(pb::ReportOutcomeRequest {
            outcome: Some(outcome("t", 1, "+15550100090", 603)),
            tenant: "acme".into(),
        })
        .await
        .expect("report");
    let token = next_event(&mut stream).await.resume_token;
    let err = client
        .subscribe_outcomes(pb::SubscribeOutcomesRequest {
            resume_token: token,
            tenant: "globex".into(),
            ..subscription()
        })
        .await
        .expect_err("another tenant's token");
    assert_eq!(err.code(), Code::PermissionDenied);

    let err = client
        .subscribe_outcomes(pb::SubscribeOutcomesRequest {
            sip_codes: vec![180],
            categories: vec![99],
            ..subscription()
        })
        .await
        .expect_err("bad filters");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn tenants_only_see_their_own_events() {
    let server = start().await;
    let mut client = client(&server).await;
    let mut acme = subscribe(
        &mut client,
        pb::SubscribeOutcomesRequest {
            tenant: "acme".into(),
            ..subscription()
        },
    )
    .await;
    for (tenant, id) in [("globex", "g-1"), ("acme", "a-1")] {
        client
            .report_outcome(pb::ReportOutcomeRequest {
                outcome: Some(outcome(id, 1, "+15550100091", 603)),
                tenant: tenant.into(),
            })
            .await
            .expect("report");
    }
    let e = next_event(&mut acme).await;
    assert_eq!(e.tenant, "acme");
    assert_eq!(e.outcome.map(|o| o.call_id), Some("a-1".into()));
}

#[tokio::test]
async fn shutdown_ends_every_stream_with_its_last_token() {
    let server = start().await;
    let mut client = client(&server).await;
    let mut stream = subscribe(&mut client, subscription()).await;
    send(&mut client, "last", "+15550100095", 603).await;
    let last = next_event(&mut stream).await;
    let stopping = tokio::spawn(server.stop());
    let mut final_token = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("ends within 30 s")
        {
            Some(Ok(msg)) => {
                if let Some(Kind::Heartbeat(h)) = msg.kind {
                    final_token = Some(h.resume_token);
                }
            }
            Some(Err(status)) => {
                assert_eq!(status.code(), Code::Unavailable);
                let meta = status
                    .metadata()
                    .get(RESUME_TOKEN_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                assert_eq!(meta.as_deref(), Some(last.resume_token.as_str()));
                break;
            }
            None => panic!("the stream ended without a status carrying the token"),
        }
    }
    assert_eq!(final_token.as_deref(), Some(last.resume_token.as_str()));
    stopping.await.expect("join").expect("graceful stop");
}
