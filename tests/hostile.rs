//! Hostile input and limits over a real gRPC connection: a burst of malformed and
//! oversized requests mixed with valid ones, per-tenant rate limits, load shedding and
//! the server's deadline ceiling. Every wait is on a response, a delivered message or a
//! metric, never on a guessed sleep.

// A client's own errors: the one-mapping rule (clippy.toml) is for the service.
#![allow(clippy::disallowed_methods)]

mod common;

use bytes::BufMut;
use call_outcome::config::Config;
use call_outcome::proto as pb;
use common::*;
use pb::subscribe_outcomes_response::Kind;
use prost::Message;
use std::collections::HashSet;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

const REPORT_PATH: &str = "/calloutcome.v1.CallOutcomeService/ReportOutcome";

/// Sends bytes as they are: what a broken or hostile client puts on the wire.
struct RawCodec<U>(PhantomData<U>);

impl<U> Default for RawCodec<U> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl<U: Message + Default + Send + 'static> Codec for RawCodec<U> {
    type Encode = Vec<u8>;
    type Decode = U;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

async fn channel(server: &call_outcome::server::RunningServer) -> Channel {
    Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// `ReportOutcome` with a raw request body.
async fn raw_report(channel: Channel, bytes: Vec<u8>) -> Result<pb::ReportOutcomeResponse, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(
        Request::new(bytes),
        PathAndQuery::from_static(REPORT_PATH),
        RawCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A report whose `call_id` bytes are not UTF-8 (prost would never encode one).
fn invalid_utf8_report(i: usize) -> Vec<u8> {
    let marker = format!("bad-utf8-{i:06}");
    let bytes = report(outcome(&marker, 1, "+15550100999", 603)).encode_to_vec();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("marker in the encoding");
    let mut bytes = bytes;
    bytes[at] = 0xff;
    bytes[at + 1] = 0xfe;
    bytes
}

/// One request of the burst and what it must get.
enum Case {
    Valid(pb::ReportOutcomeRequest),
    Bad {
        report: Result<pb::ReportOutcomeRequest, Vec<u8>>,
        code: Code,
        /// The field violation an INVALID_ARGUMENT must name.
        field: Option<&'static str>,
    },
    BadClassify(pb::ClassifyRequest, &'static str),
}

const MAX_MESSAGE_BYTES: usize = 32 * 1024;
const MAX_RAW_SIP_BYTES: usize = 8 * 1024;

fn hostile_config() -> Config {
    let mut config = Config::default();
    config.server.max_message_bytes = MAX_MESSAGE_BYTES;
    config.limits.max_raw_sip_bytes = MAX_RAW_SIP_BYTES;
    config.events.max_events = 100_000;
    config
}

fn valid_to(i: usize) -> String {
    format!("+1555010{:04}", i % 10_000)
}

fn case(i: usize) -> Case {
    let bad = |o: pb::CallOutcome, field: &'static str| Case::Bad {
        report: Ok(report(o)),
        code: Code::InvalidArgument,
        field: Some(field),
    };
    let id = format!("bad-{i}");
    match i % 16 {
        0..=3 => Case::Valid(report(outcome(&format!("ok-{i}"), 1, &valid_to(i), 603))),
        4 => bad(outcome("", 1, "+15550100999", 603), "outcome.call_id"),
        5 => bad(
            outcome(&id, 1, "+15550100999", if i % 32 < 16 { 99 } else { 700 }),
            "outcome.sip.code",
        ),
        6 => bad(
            outcome(&"x".repeat(300), 1, "+15550100999", 603),
            "outcome.call_id",
        ),
        7 => {
            let mut o = outcome(&id, 1, "+15550100999", 603);
            o.labels = (0..40).map(|k| (format!("k{k}"), "v".into())).collect();
            bad(o, "outcome.labels")
        }
        8 => {
            let mut o = outcome(&id, 1, "+15550100999", 603);
            o.started_at = Some(prost_types::Timestamp {
                seconds: if i % 32 < 16 { 10 } else { 32_503_680_000 },
                nanos: 0,
            });
            bad(o, "outcome.started_at")
        }
        9 => Case::Bad {
            report: Err(invalid_utf8_report(i)),
            code: Code::InvalidArgument,
            field: Some("outcome.call_id"),
        },
        10 => {
            // Larger than server.max_message_bytes: refused before it is decoded, with
            // grpc's code for a message over the receive limit.
            let mut o = outcome(&id, 1, "+15550100999", 603);
            o.raw_sip_response = vec![b'a'; MAX_MESSAGE_BYTES + 1024];
            Case::Bad {
                report: Ok(report(o)),
                code: Code::ResourceExhausted,
                field: None,
            }
        }
        11 => {
            let mut o = outcome(&id, 1, "+15550100999", 603);
            o.raw_sip_response = if i % 32 < 16 {
                let mut raw = b"SIP/2.0 603 Decline\r\n".to_vec();
                raw.resize(MAX_RAW_SIP_BYTES + 1, b'a');
                raw
            } else {
                let mut raw = b"SIP/2.0 603 Decline\r\n".to_vec();
                for h in 0..300 {
                    raw.extend_from_slice(format!("X-{h}: 1\r\n").as_bytes());
                }
                raw
            };
            bad(o, "outcome.raw_sip_response")
        }
        12 => Case::Bad {
            report: Ok(pb::ReportOutcomeRequest {
                tenant: "a/../b".into(),
                ..report(outcome(&id, 1, "+15550100999", 603))
            }),
            code: Code::InvalidArgument,
            field: Some("tenant"),
        },
        13 => Case::Bad {
            // A length-delimited field running past the end of the message.
            report: Err(vec![0x0a, 0x7f, 0x0a, 0x01]),
            code: Code::InvalidArgument,
            field: None,
        },
        14 => Case::BadClassify(classify(outcome("", 0, "", 700)), "outcome.sip.code"),
        _ => bad(outcome(&id, 1, "+1555\u{7}0100999", 603), "outcome.to"),
    }
}

/// Checks one answer; returns the valid report's event id.
async fn run(channel: Channel, i: usize) -> Option<String> {
    let mut client =
        call_outcome::proto::call_outcome_service_client::CallOutcomeServiceClient::new(
            channel.clone(),
        );
    match case(i) {
        Case::Valid(r) => {
            let answer = client
                .report_outcome(r)
                .await
                .unwrap_or_else(|e| panic!("valid report {i} refused: {e:?}"))
                .into_inner();
            assert!(!answer.duplicate, "{i}");
            assert_eq!(
                answer.classification.map(|c| c.category()),
                Some(pb::Category::Declined),
                "{i}"
            );
            assert!(!answer.event_id.is_empty());
            Some(answer.event_id)
        }
        Case::Bad {
            report,
            code,
            field,
        } => {
            let err = match report {
                Ok(r) => client.report_outcome(r).await.map(|_| ()),
                Err(bytes) => raw_report(channel, bytes).await.map(|_| ()),
            }
            .expect_err("a bad request is refused");
            assert_eq!(err.code(), code, "case {i}: {err:?}");
            if code == Code::InvalidArgument {
                let details = err
                    .get_details_bad_request()
                    .unwrap_or_else(|| panic!("case {i}: no field violations: {err:?}"));
                if let Some(field) = field {
                    assert!(
                        details.field_violations.iter().any(|v| v.field == field),
                        "case {i}: {field} not in {details:?}"
                    );
                }
            }
            None
        }
        Case::BadClassify(r, field) => {
            let err = client.classify(r).await.expect_err("bad classify");
            assert_eq!(err.code(), Code::InvalidArgument);
            let details = err.get_details_bad_request().expect("violations");
            assert!(details.field_violations.iter().any(|v| v.field == field));
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_burst_leaves_valid_requests_answered_and_nothing_bad_recorded() {
    const REQUESTS: usize = 3200;
    const WORKERS: usize = 32;
    let server = start_with(hostile_config()).await;
    let channels: Vec<Channel> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(channel(&server).await);
        }
        v
    };
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let channel = channels[w % channels.len()].clone();
        workers.spawn(async move {
            let mut ids = Vec::new();
            for i in (w..REQUESTS).step_by(WORKERS) {
                if let Some(id) = run(channel.clone(), i).await {
                    ids.push((i, id));
                }
            }
            ids
        });
    }
    let mut valid = Vec::new();
    while let Some(ids) = workers.join_next().await {
        valid.extend(ids.expect("worker"));
    }
    let expected_valid = (0..REQUESTS).filter(|i| i % 16 < 4).count();
    assert_eq!(valid.len(), expected_valid);

    let mut client = client(&server).await;
    // A valid report again is a duplicate with the same answer: it was stored.
    let (i, first_id) = valid[0].clone();
    let again = client
        .report_outcome(report(outcome(&format!("ok-{i}"), 1, &valid_to(i), 603)))
        .await
        .expect("duplicate")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.event_id, first_id);

    // The event log holds the valid reports and nothing else: replay it from the oldest
    // event, every category, up to a sentinel reported last.
    client
        .report_outcome(report(outcome("sentinel", 1, "+15550100998", 603)))
        .await
        .expect("sentinel");
    let mut stream = client
        .subscribe_outcomes(pb::SubscribeOutcomesRequest {
            start: pb::StartPosition::Oldest as i32,
            categories: (1..=12).collect(),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut seen = HashSet::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event within 30 s")
            .expect("stream open")
            .expect("message");
        let Some(Kind::Event(e)) = msg.kind else {
            continue;
        };
        let call_id = e.outcome.map(|o| o.call_id).unwrap_or_default();
        if call_id == "sentinel" {
            break;
        }
        assert!(
            call_id.starts_with("ok-"),
            "recorded a bad request: {call_id}"
        );
        assert!(seen.insert(call_id.clone()), "{call_id} twice");
    }
    assert_eq!(seen.len(), expected_valid);

    // Still serving: health and one more report.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&server).await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let after = client
        .report_outcome(report(outcome("after", 1, "+15550100997", 486)))
        .await
        .expect("a report after the burst")
        .into_inner();
    assert_eq!(
        after.classification.map(|c| c.category()),
        Some(pb::Category::Busy)
    );
    server.stop().await.expect("clean stop");
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

fn tenant_report(tenant: &str, call_id: &str) -> pb::ReportOutcomeRequest {
    pb::ReportOutcomeRequest {
        tenant: tenant.into(),
        ..report(outcome(call_id, 1, "+15550100500", 603))
    }
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_resource_exhausted_with_retry_info() {
    let mut config = Config::default();
    config.rate_limits.enabled = true;
    config.rate_limits.report_per_second = nz(1);
    config.rate_limits.report_burst = nz(3);
    config.rate_limits.subscribe_per_minute = nz(1);
    config.rate_limits.subscribe_burst = nz(1);
    let server = start_with(config).await;
    let mut client = client(&server).await;

    // The burst passes; the refill (one a second) may add one while the test runs.
    let mut passed = 0;
    let refused = loop {
        match client
            .report_outcome(tenant_report("acme", &format!("acme-{passed}")))
            .await
        {
            Ok(_) => passed += 1,
            Err(e) => break e,
        }
        assert!(passed <= 10, "the rate limit never refused");
    };
    assert!(passed >= 3, "the burst of 3 was refused early ({passed})");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let retry = refused
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );
    let quota = refused.get_details_quota_failure().expect("QuotaFailure");
    assert_eq!(quota.violations[0].subject, "tenant:acme");
    let refused_id = format!("acme-{passed}");

    // Another tenant has its own bucket.
    client
        .report_outcome(tenant_report("globex", "globex-1"))
        .await
        .expect("other tenant unaffected");
    // Classify has its own bucket too.
    client
        .classify(pb::ClassifyRequest {
            tenant: "acme".into(),
            ..classify(outcome("", 0, "", 486))
        })
        .await
        .expect("classify has its own limit");

    // After the advertised delay the tenant is served again.
    tokio::time::sleep(retry).await;
    client
        .report_outcome(tenant_report("acme", "acme-after"))
        .await
        .expect("recovered after the retry delay");

    // The refused report was not recorded.
    let mut stream = client
        .subscribe_outcomes(pb::SubscribeOutcomesRequest {
            tenant: "acme".into(),
            start: pb::StartPosition::Oldest as i32,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event within 30 s")
            .expect("stream open")
            .expect("message");
        let Some(Kind::Event(e)) = msg.kind else {
            continue;
        };
        let call_id = e.outcome.map(|o| o.call_id).unwrap_or_default();
        assert_ne!(call_id, refused_id, "a refused report was recorded");
        if call_id == "acme-after" {
            break;
        }
    }
    // Subscriptions are limited per minute: one, then refused.
    let err = client
        .subscribe_outcomes(pb::SubscribeOutcomesRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .expect_err("second subscription within the minute");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.get_details_retry_info().is_some());
    // Counted, with tenants the config does not name folded into `other`.
    let metrics = get(server.admin_addr.expect("admin"), "/metrics").await.1;
    for rpc in ["ReportOutcome", "SubscribeOutcomes"] {
        assert!(
            metrics.lines().any(
                |l| l.starts_with("calloutcome_rate_limited_requests_total{")
                    && l.contains(&format!("rpc_method=\"{rpc}\""))
                    && l.contains("tenant=\"other\"")
            ),
            "{rpc}: {metrics}"
        );
    }
    drop(stream);
    server.stop().await.expect("clean stop");
}

/// Starts a `ReportOutcome` whose request body is held back until `release` sends it:
/// the server is handling it (it waits for the message) until then.
fn held_report(
    channel: Channel,
    timeout: Option<Duration>,
) -> (
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<Result<(), Status>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let task = tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if let Some(t) = timeout {
            request.set_timeout(t);
        }
        let response = grpc
            .streaming(
                request,
                PathAndQuery::from_static(REPORT_PATH),
                RawCodec::<pb::ReportOutcomeResponse>::default(),
            )
            .await?;
        let mut body = response.into_inner();
        while let Some(m) = body.next().await {
            m?;
        }
        Ok(())
    });
    (tx, task)
}

#[tokio::test]
async fn a_request_whose_message_has_not_arrived_holds_no_slot_and_times_out() {
    let mut config = Config::default();
    config.server.max_in_flight = 1;
    config.server.body_read_timeout = Duration::from_millis(500);
    let server = start_with(config).await;
    // Two requests send their headers and hold back their message.
    let (release, held) = held_report(channel(&server).await, None);
    let (_stalled, stalled) = held_report(channel(&server).await, None);

    // With one slot in all, other callers are still served: neither holds it.
    let mut client = client(&server).await;
    client
        .report_outcome(report(outcome("served-1", 1, "+15550100600", 603)))
        .await
        .expect("served while two requests wait for their message");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&server).await);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is never shed");

    // A message that arrives in time is handled normally.
    release
        .send(report(outcome("held-1", 1, "+15550100601", 603)).encode_to_vec())
        .await
        .expect("send the body");
    drop(release);
    held.await
        .expect("join")
        .expect("the held report is answered");
    // One that never comes ends at server.body_read_timeout, as a deadline.
    let err = stalled.await.expect("join").expect_err("cut");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("body_read_timeout"), "{err:?}");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_server_deadline_caps_a_longer_client_deadline_and_spares_streams() {
    let mut config = Config::default();
    config.server.request_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut client = client(&server).await;
    let mut stream = client
        .subscribe_outcomes(pb::SubscribeOutcomesRequest::default())
        .await
        .expect("subscribe")
        .into_inner();

    // The client allows a minute; the server's ceiling ends the request long before.
    let started = std::time::Instant::now();
    let (_release, held) = held_report(channel(&server).await, Some(Duration::from_secs(60)));
    let err = tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .expect("cut by the server ceiling, not the client's minute")
        .expect("join")
        .expect_err("cut");
    // grpc's statuscodes.md: an expired deadline is DEADLINE_EXCEEDED, also when it
    // is the server's own ceiling.
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // The stream opened before that request is older than the ceiling and still live.
    client
        .report_outcome(report(outcome("late", 1, "+15550100700", 603)))
        .await
        .expect("report");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event within 30 s")
            .expect("stream still open")
            .expect("message");
        if let Some(Kind::Event(e)) = msg.kind {
            assert_eq!(e.outcome.map(|o| o.call_id), Some("late".into()));
            break;
        }
    }
    server.stop().await.expect("clean stop");
}
