//! The unary API over a real gRPC connection: classification, decisions, idempotency,
//! history, validation, health and shutdown.

mod common;

use call_outcome::proto as pb;
use common::*;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn classify_603_is_a_decline_with_a_decision() {
    let server = start().await;
    let mut client = client(&server).await;
    let response = client
        .classify(classify(pb::CallOutcome {
            sip: sip(603),
            ..Default::default()
        }))
        .await
        .expect("classify")
        .into_inner();
    let c = response.classification.expect("classification");
    assert_eq!(c.category(), pb::Category::Declined);
    assert_eq!(c.fault(), pb::Fault::CalleeChoice);
    assert_eq!(c.retryable(), pb::Retryable::No);
    assert_eq!(c.sip_code, Some(603));
    assert_eq!(c.q850_cause, Some(21));
    assert!(!c.summary.is_empty());
    let d = response.decision.expect("decision");
    assert_eq!(d.action(), pb::Action::Stop);
    assert!(d.notify_user);
    assert!(!d.rule.is_empty());
    assert!(!d.explanation.is_empty());
    server.stop().await.expect("stops");
}

/// #18 item 1: a built-in override decides over gRPC, and the response names it.
#[tokio::test]
async fn a_telnyx_channel_limit_is_not_a_busy_callee() {
    let server = start().await;
    let mut client = client(&server).await;
    let response = client
        .classify(classify(pb::CallOutcome {
            sip: Some(pb::SipResponse {
                code: Some(486),
                reason_phrase: "Busy Here D5".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .expect("classify")
        .into_inner();
    let c = response.classification.expect("classification");
    assert_eq!(c.category(), pb::Category::ConfigError);
    assert_eq!(c.basis(), pb::ClassificationBasis::Override);
    assert_eq!(c.override_name, "telnyx-486-channel-limit");
    assert_eq!(c.sip_code, Some(486));
    let d = response.decision.expect("decision");
    assert_eq!(d.rule, "config-limit");
    assert!(d.alert_operator);
    // Without the code in the phrase: a busy callee, decided by the SIP code.
    let busy = client
        .classify(classify(pb::CallOutcome {
            sip: sip(486),
            ..Default::default()
        }))
        .await
        .expect("classify")
        .into_inner()
        .classification
        .expect("classification");
    assert_eq!(busy.category(), pb::Category::Busy);
    assert_eq!(busy.basis(), pb::ClassificationBasis::SipCode);
    assert_eq!(busy.override_name, "");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn retry_after_scopes_and_unregistered_codes() {
    let server = start().await;
    let mut client = client(&server).await;

    let mut o = pb::CallOutcome {
        sip: sip(503),
        ..Default::default()
    };
    o.sip.as_mut().expect("sip").retry_after_header = "120".into();
    let c = client
        .classify(classify(o))
        .await
        .expect("classify")
        .into_inner()
        .classification
        .expect("classification");
    assert_eq!(c.category(), pb::Category::NetworkError);
    assert_eq!(c.retryable(), pb::Retryable::NowAlternateRoute);
    assert_eq!(c.retry_after_seconds, Some(120));
    assert_eq!(c.retry_after_scope(), pb::RetryAfterScope::Route);

    let mut o = pb::CallOutcome {
        sip: sip(603),
        ..Default::default()
    };
    o.sip.as_mut().expect("sip").retry_after_header = "3600 (in a meeting)".into();
    let response = client
        .classify(classify(o))
        .await
        .expect("classify")
        .into_inner();
    let c = response.classification.expect("classification");
    assert_eq!(c.category(), pb::Category::Declined);
    assert_eq!(c.retryable(), pb::Retryable::Later);
    assert_eq!(c.retry_after_scope(), pb::RetryAfterScope::Callee);
    let d = response.decision.expect("decision");
    assert_eq!(d.action(), pb::Action::RetryLater);
    let retry = d.retry.expect("retry plan");
    assert!(retry.delay_seconds >= 3600, "{retry:?}");
    assert!(retry.honours_retry_after);

    let c = client
        .classify(classify(pb::CallOutcome {
            sip: sip(499),
            ..Default::default()
        }))
        .await
        .expect("classify")
        .into_inner()
        .classification
        .expect("classification");
    assert_eq!(c.sip_code, Some(400));
    assert_eq!(c.reported_sip_code, Some(499));
    assert_eq!(c.category(), pb::Category::ConfigError);
}

#[tokio::test]
async fn reason_header_and_provider_causes_refine_the_outcome() {
    let server = start().await;
    let mut client = client(&server).await;

    let mut o = pb::CallOutcome {
        sip: sip(403),
        ..Default::default()
    };
    o.sip.as_mut().expect("sip").reason_header =
        "SIP;cause=403;text=\"Forbidden\", Q.850;cause=21;text=\"Call Rejected\";location=U".into();
    let c = client
        .classify(classify(o))
        .await
        .expect("classify")
        .into_inner()
        .classification
        .expect("classification");
    assert_eq!(c.category(), pb::Category::Declined);
    assert_eq!(c.q850_location, "U");
    assert_eq!(c.basis(), pb::ClassificationBasis::Q850Reason);

    let mut o = pb::CallOutcome {
        sip: sip(487),
        ..Default::default()
    };
    o.provider = Some(pb::ProviderCause {
        name: "telnyx".into(),
        cause: "timeout".into(),
    });
    let c = client
        .classify(classify(o))
        .await
        .expect("classify")
        .into_inner()
        .classification
        .expect("classification");
    assert_eq!(c.category(), pb::Category::NoAnswer);
    assert_eq!(c.basis(), pb::ClassificationBasis::ProviderOverride);
}

#[tokio::test]
async fn raw_sip_responses_are_parsed() {
    let server = start().await;
    let mut client = client(&server).await;
    let raw = "SIP/2.0 603 Network Blocked\r\n\
        Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n\
        f: <sip:+15550100001@example.com>;tag=1928301774\r\n\
        t: <sip:+15550104477@carrier.example>;tag=a6c85cf\r\n\
        i: a84b4c76e66710@pc33.example.com\r\n\
        CSeq: 314159 INVITE\r\n\
        reason: SIP;cause=603;text=\"v=analytics1;https://redress.example/603\"\r\n\
        Content-Length: 0\r\n\r\n";
    let c = client
        .classify(classify(pb::CallOutcome {
            raw_sip_response: raw.as_bytes().to_vec(),
            ..Default::default()
        }))
        .await
        .expect("classify")
        .into_inner()
        .classification
        .expect("classification");
    assert_eq!(c.category(), pb::Category::RejectedUnwanted);
    assert_eq!(c.fault(), pb::Fault::Network);
    assert_eq!(c.basis(), pb::ClassificationBasis::AnalyticsBlock);

    let status = client
        .classify(classify(pb::CallOutcome {
            raw_sip_response: b"INVITE sip:bob@example.com SIP/2.0\r\n\r\n".to_vec(),
            ..Default::default()
        }))
        .await
        .expect_err("a request is not a response");
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad = status.get_details_bad_request().expect("field violations");
    assert_eq!(bad.field_violations[0].field, "outcome.raw_sip_response");
}

/// A duplicate's response is the first one byte for byte (but for `duplicate`), for
/// results the server kept as they were (the first ones) and for those it kept
/// compressed (after it learnt its dictionary from the first 128 KB of results).
#[tokio::test]
async fn a_duplicate_gets_the_first_response_byte_for_byte_kept_raw_or_compressed() {
    use prost::Message;
    let server = start().await;
    let mut client = client(&server).await;
    let codes = [486, 603, 480, 503, 404, 487, 408, 600, 302, 484];
    let sent: Vec<_> = (0..800)
        .map(|i| {
            let mut o = outcome(
                &format!("bytes-{i}"),
                1 + i % 3,
                &format!("+1555010{:04}", i),
                codes[i as usize % codes.len()],
            );
            if i % 7 == 3 {
                o.labels.insert("campaign".into(), format!("spring-{i}"));
            }
            report(o)
        })
        .collect();
    let mut firsts = Vec::new();
    for request in &sent {
        let first = client
            .report_outcome(request.clone())
            .await
            .expect("first")
            .into_inner();
        assert!(!first.duplicate);
        firsts.push(first.encode_to_vec());
    }
    for (request, first) in sent.iter().zip(&firsts) {
        let mut again = client
            .report_outcome(request.clone())
            .await
            .expect("again")
            .into_inner();
        assert!(again.duplicate);
        again.duplicate = false;
        assert_eq!(&again.encode_to_vec(), first);
    }
}

#[tokio::test]
async fn a_repeated_report_returns_the_first_response_marked_duplicate() {
    let server = start().await;
    let mut client = client(&server).await;
    let first = client
        .report_outcome(report(outcome("call-1", 1, "+15550104477", 486)))
        .await
        .expect("first")
        .into_inner();
    assert!(!first.duplicate);
    assert!(!first.event_id.is_empty());
    assert_eq!(first.destination, "+15550104477");

    // Same key, even with a different code: the first response comes back.
    let second = client
        .report_outcome(report(outcome("call-1", 1, "+15550104477", 603)))
        .await
        .expect("second")
        .into_inner();
    assert!(second.duplicate);
    assert_eq!(second.event_id, first.event_id);
    assert_eq!(second.classification, first.classification);
    assert_eq!(second.decision, first.decision);

    // Another attempt of the same call is a new report.
    let third = client
        .report_outcome(report(outcome("call-1", 2, "+15550104477", 486)))
        .await
        .expect("third")
        .into_inner();
    assert!(!third.duplicate);
    assert_ne!(third.event_id, first.event_id);
}

#[tokio::test]
async fn concurrent_duplicates_are_recorded_once() {
    let server = start().await;
    let client = client(&server).await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .report_outcome(report(outcome("race", 1, "+15550100002", 486)))
                .await
                .expect("report")
                .into_inner()
        }));
    }
    let mut fresh = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.expect("task");
        if !r.duplicate {
            fresh += 1;
        }
        ids.insert(r.event_id);
    }
    assert_eq!(fresh, 1, "exactly one report is not a duplicate");
    assert_eq!(ids.len(), 1, "every caller sees the same event id");
}

#[tokio::test]
async fn one_number_in_three_spellings_shares_its_history() {
    let server = start().await;
    let mut client = client(&server).await;
    let spellings = [
        "+1 (555) 010-4477",
        "15550104477",
        "sip:+15550104477@carrier.example;user=phone",
    ];
    let mut last = None;
    for (i, to) in spellings.iter().enumerate() {
        let r = client
            .report_outcome(report(outcome(&format!("decl-{i}"), 1, to, 603)))
            .await
            .expect("report")
            .into_inner();
        assert_eq!(r.destination, "+15550104477", "{to}");
        last = Some(r);
    }
    // The third decline within 24 hours suppresses the destination.
    let decision = last.and_then(|r| r.decision).expect("decision");
    assert!(decision.suppressed, "{decision:?}");
    assert_eq!(decision.action(), pb::Action::Stop);
}

#[tokio::test]
async fn the_attempt_is_derived_from_history_when_not_sent() {
    let server = start().await;
    let mut client = client(&server).await;
    let mut attempts = Vec::new();
    for i in 0..3 {
        let r = client
            .report_outcome(report(outcome(
                &format!("busy-{i}"),
                0,
                "+15550100003",
                486,
            )))
            .await
            .expect("report")
            .into_inner();
        attempts.push(r.decision.expect("decision").attempt);
    }
    assert_eq!(attempts, [1, 2, 3]);
}

#[tokio::test]
async fn invalid_reports_are_rejected_with_field_violations_and_record_nothing() {
    let server = start().await;
    let mut client = client(&server).await;

    for (code, _why) in [
        (180, "provisional"),
        (0, "zero"),
        (700, "too high"),
        (-1, "negative"),
    ] {
        let status = client
            .report_outcome(report(outcome("bad", 1, "+15550100004", code)))
            .await
            .expect_err("rejected");
        assert_eq!(status.code(), Code::InvalidArgument, "{code}");
        let bad = status.get_details_bad_request().expect("details");
        assert_eq!(bad.field_violations[0].field, "outcome.sip.code", "{code}");
    }

    let status = client
        .report_outcome(report(pb::CallOutcome::default()))
        .await
        .expect_err("rejected");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert!(fields.contains(&"outcome.call_id".to_owned()), "{fields:?}");
    assert!(fields.contains(&"outcome.to".to_owned()), "{fields:?}");

    let status = client
        .report_outcome(pb::ReportOutcomeRequest::default())
        .await
        .expect_err("no outcome");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Neither code nor provider cause.
    let status = client
        .report_outcome(report(pb::CallOutcome {
            call_id: "bad".into(),
            to: "+15550100004".into(),
            ..Default::default()
        }))
        .await
        .expect_err("nothing to classify");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Nothing was recorded: the same key is fresh, and the history is empty.
    let r = client
        .report_outcome(report(outcome("bad", 1, "+15550100004", 486)))
        .await
        .expect("valid")
        .into_inner();
    assert!(!r.duplicate);
    assert_eq!(r.decision.expect("decision").attempt, 1);
}

#[tokio::test]
async fn bad_tenant_names_are_rejected() {
    let server = start().await;
    let mut client = client(&server).await;
    let status = client
        .report_outcome(pb::ReportOutcomeRequest {
            outcome: Some(outcome("t", 1, "+15550100005", 486)),
            tenant: "../etc".into(),
        })
        .await
        .expect_err("bad tenant");
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad = status.get_details_bad_request().expect("details");
    assert_eq!(bad.field_violations[0].field, "tenant");
}

#[tokio::test]
async fn tenants_have_separate_histories_and_keys() {
    let server = start().await;
    let mut client = client(&server).await;
    for tenant in ["acme", "globex"] {
        let r = client
            .report_outcome(pb::ReportOutcomeRequest {
                outcome: Some(outcome("shared-id", 1, "+15550100006", 486)),
                tenant: tenant.into(),
            })
            .await
            .expect("report")
            .into_inner();
        assert!(!r.duplicate, "{tenant}");
        assert_eq!(r.decision.expect("decision").attempt, 1, "{tenant}");
    }
}

#[tokio::test]
async fn health_is_serving_and_shutdown_completes() {
    let server = start().await;
    let channel = tonic::transport::Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "calloutcome.v1.CallOutcomeService"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            r.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }
    server.stop().await.expect("graceful stop");
}

#[tokio::test]
async fn reflection_serves_v1_and_v1alpha() {
    use tokio_stream::StreamExt;
    let server = start().await;
    let channel = tonic::transport::Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");

    let mut v1 = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
        channel.clone(),
    );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = v1
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1")
        .into_inner();
    let response = stream.next().await.expect("one response").expect("ok");
    let listed = format!("{response:?}");
    assert!(
        listed.contains("calloutcome.v1.CallOutcomeService"),
        "{listed}"
    );

    let mut v1alpha =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
            channel,
        );
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = v1alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha")
        .into_inner();
    let response = stream.next().await.expect("one response").expect("ok");
    assert!(format!("{response:?}").contains("calloutcome.v1.CallOutcomeService"));
}

/// docs/api.md: malformed optional headers are ignored, never fatal.
#[tokio::test]
async fn a_malformed_optional_header_is_ignored_not_fatal() {
    let server = start().await;
    let mut client = client(&server).await;
    let mut o = outcome("ctl-1", 1, "+15550100800", 403);
    let s = o.sip.as_mut().expect("sip");
    s.reason_header = "Q.850;cause=21\u{1}".into();
    s.retry_after_header = "60\u{7f}".into();
    let answer = client
        .report_outcome(report(o))
        .await
        .expect("a control character in an optional header is not fatal")
        .into_inner();
    let c = answer.classification.expect("classification");
    // The Reason header was ignored: the 403 alone decided (with it, Q.850 cause 21
    // makes the 403 a decline: see reason_header_and_provider_causes_refine_the_outcome).
    assert_ne!(c.basis(), pb::ClassificationBasis::Q850Reason, "{c:?}");
    assert_ne!(c.category(), pb::Category::Declined, "{c:?}");
    assert_eq!(c.retry_after_seconds, None);
}

/// docs/api.md: every violation is listed, the classifier's too.
#[tokio::test]
async fn a_provisional_code_with_missing_fields_lists_every_violation() {
    let server = start().await;
    let mut client = client(&server).await;
    let err = client
        .report_outcome(report(outcome("", 1, "", 180)))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_details_bad_request()
        .expect("violations")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    for field in ["outcome.call_id", "outcome.to", "outcome.sip.code"] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
}

/// #16: compression is a setting, off by default, even for a client that offers gzip.
#[tokio::test]
async fn responses_are_compressed_only_when_configured() {
    for (compression, expected) in [
        (call_outcome::config::Compression::Off, None),
        (call_outcome::config::Compression::Gzip, Some("gzip")),
    ] {
        let mut config = call_outcome::config::Config::default();
        config.server.compression = compression;
        let server = start_with(config).await;
        let mut client = client(&server)
            .await
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let response = client
            .classify(classify(outcome("gz", 1, "+15550100920", 603)))
            .await
            .expect("classify");
        assert_eq!(
            response
                .metadata()
                .get("grpc-encoding")
                .and_then(|v| v.to_str().ok()),
            expected,
            "{compression:?}"
        );
        server.stop().await.expect("clean stop");
    }
}
