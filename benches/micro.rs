//! Micro-benchmarks of the pure steps of a report, and of the whole report path
//! in-process (no gRPC): `cargo bench --bench micro`.
//!
//! Inputs are built outside the timed closures; results go through `black_box`.
//! Targets (README, "Performance"): code-only classification ≤ 100 ns, with Reason and
//! Retry-After headers ≤ 500 ns, from a ~600-byte raw SIP response ≤ 2 µs.

// The allocator the service binary ships with (src/main.rs).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use call_outcome::classify::{self, ClassifyInput, ProviderInput};
use call_outcome::config::Config;
use call_outcome::domain::destination::normalize;
use call_outcome::domain::{HistoryEntry, HistorySnapshot, Outcome, Tenant};
use call_outcome::pipeline::jitter_seed;
use call_outcome::policy::{Policy, PolicyInput};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

/// A realistic 486 response as a SIP stack logs it (about 600 bytes).
const RAW_486: &[u8] = b"SIP/2.0 486 Busy Here\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;received=192.0.2.10;rport=5060\r\n\
From: \"Alice\" <sip:+15550100001@carrier.example.com>;tag=1928301774\r\n\
To: <sip:+15550104477@carrier.example.com>;tag=a6c85cf\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+15550104477@198.51.100.7:5060;transport=udp>\r\n\
Reason: Q.850;cause=17;text=\"User busy\";location=U\r\n\
Retry-After: 300 (in a call)\r\n\
Server: Carrier-SBC/4.2.1\r\n\
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REFER, NOTIFY\r\n\
Supported: replaces, timer\r\n\
P-Asserted-Identity: <sip:+15550104477@carrier.example.com>\r\n\
Content-Length: 0\r\n\
\r\n";

fn classification(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    let code_only = ClassifyInput {
        sip_code: Some(603),
        ..Default::default()
    };
    g.bench_function("code_only_603", |b| {
        b.iter(|| classify::classify(black_box(&code_only)))
    });
    let headers = ClassifyInput {
        sip_code: Some(486),
        reason_phrase: "Busy Here",
        reason_header: "Q.850;cause=17;text=\"User busy\";location=U",
        retry_after_header: "300 (in a call);duration=1800",
        ..Default::default()
    };
    g.bench_function("reason_and_retry_after_486", |b| {
        b.iter(|| classify::classify(black_box(&headers)))
    });
    assert!(
        (550..700).contains(&RAW_486.len()),
        "raw response is {} bytes",
        RAW_486.len()
    );
    let raw = ClassifyInput {
        raw_sip_response: Some(RAW_486),
        ..Default::default()
    };
    g.bench_function("raw_sip_response_600b", |b| {
        b.iter(|| classify::classify(black_box(&raw)))
    });
    let provider = ClassifyInput {
        provider: Some(ProviderInput {
            name: "telnyx",
            cause: "call_rejected",
        }),
        ..Default::default()
    };
    g.bench_function("provider_cause_telnyx", |b| {
        b.iter(|| classify::classify(black_box(&provider)))
    });
    g.finish();
}

fn destinations(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize");
    let us = Some(phonenumber::country::Id::US);
    for (name, input) in [
        ("e164", "+15550104477"),
        ("e164_formatted", "+1 (555) 010-4477"),
        ("national_us", "(555) 010-4477"),
        (
            "sip_uri",
            "sip:+4930123456789@carrier.example.com;user=phone",
        ),
        ("sip_user", "sip:Alice@Example.com;transport=tcp"),
        ("tel_uri", "tel:+44-20-7946-0958"),
    ] {
        g.bench_function(name, |b| b.iter(|| normalize(black_box(input), us)));
    }
    g.finish();
}

fn policy(c: &mut Criterion) {
    let policy = Policy::builtin();
    let outcome = Outcome {
        call_id: "c-42".into(),
        attempt: Some(2),
        to: "+15550104477".into(),
        sip_code: Some(486),
        retry_after_header: "300".into(),
        ..Default::default()
    };
    let classification = classify::classify_outcome(&outcome).expect("classifies");
    let now = SystemTime::now();
    let history = HistorySnapshot {
        destination: "+15550104477".into(),
        entries: (1..=3)
            .map(|i| HistoryEntry {
                at: now - Duration::from_secs(600 * i),
                attempt: 1,
                category: classification.category,
                sip_code: Some(486),
            })
            .collect(),
    };
    c.bench_function("policy/decide_486_with_history", |b| {
        b.iter(|| {
            policy.decide(black_box(&PolicyInput {
                tenant: "default",
                outcome: &outcome,
                classification: &classification,
                history: &history,
                includes_current: true,
                now,
                jitter_seed: jitter_seed("default", &outcome.call_id, 2),
            }))
        })
    });
}

fn report_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let pipeline = rt
        .block_on(call_outcome::server::backends::build(&Config::default()))
        .expect("pipeline")
        .pipeline;
    let tenant = Tenant::parse("default", 64).expect("tenant");
    let template = Outcome {
        attempt: Some(1),
        sip_code: Some(603),
        ..Default::default()
    };
    let destinations: Vec<String> = (0..10_000)
        .map(|i| format!("+1555010{:04}", i % 10_000))
        .collect();
    let mut next = 0u64;
    c.bench_function("pipeline/report_603_embedded", |b| {
        b.iter_custom(|iters| {
            // Outcomes are built before the clock starts: distinct call ids (a repeat
            // would short-circuit as a duplicate) over 10,000 destinations.
            let outcomes: Vec<Outcome> = (0..iters)
                .map(|_| {
                    next += 1;
                    Outcome {
                        call_id: format!("bench-{next}"),
                        to: destinations[(next % 10_000) as usize].clone(),
                        ..template.clone()
                    }
                })
                .collect();
            // Run on the runtime's worker, as a request handler does: the report task
            // is then spawned on the same thread (block_on's thread would hand it over).
            let pipeline = pipeline.clone();
            let tenant = tenant.clone();
            rt.block_on(rt.spawn(async move {
                let start = Instant::now();
                for outcome in outcomes {
                    let result = pipeline.report(tenant.clone(), outcome).await;
                    black_box(result.expect("report"));
                }
                start.elapsed()
            }))
            .expect("bench task")
        })
    });
}

/// One webhook signature check each, on realistic callbacks: what a callback costs
/// before it reaches the pipeline (docs/performance.md, "Webhooks").
fn webhook_signatures(c: &mut Criterion) {
    use call_outcome::CallbackParams;
    use call_outcome::auth::webhook::{self as wh, Ed25519Key, Secret, sign};
    let mut g = c.benchmark_group("webhook_verify");
    let now = SystemTime::now();
    let window = Duration::from_secs(300);
    // Telnyx: Ed25519 over timestamp|body of a ~900-byte call.hangup.
    let body = br#"{"data":{"record_type":"event","event_type":"call.hangup","id":"08464bf3-4e98-41f5-b526-09e9b04a66c7","occurred_at":"2026-05-19T23:30:23.738431Z","payload":{"call_control_id":"v3:CM8u1zCcmtZ3Jzb6vuXBSzCLS5p7ww8ypCUpyBJVrubAVjjLAAECYg","call_leg_id":"b0457f28-53da-11f1-9961-02420aef271f","call_session_id":"b04574f6-53da-11f1-8e4b-02420aef271f","connection_id":"2963572552552678752","client_state":"eyJjYWxsX2lkIjoib3JkZXItNzciLCJhdHRlbXB0IjoyfQ==","from":"+15129342627","to":"+15122548727","start_time":"2026-05-19T23:30:15.038431Z","end_time":"2026-05-19T23:30:23.738431Z","state":"hangup","hangup_cause":"call_rejected","hangup_source":"callee","sip_hangup_cause":"603"}},"meta":{"attempt":1,"delivered_to":"https://hooks.example.com/v1/webhooks/telnyx/acme"}}"#;
    let (public, signer) = sign::telnyx_keys([9; 32]).expect("keys");
    let keys = [Ed25519Key::from_base64(&public).expect("key")];
    let ts = now
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    let signature = signer.sign(&ts, body);
    g.bench_function("telnyx_ed25519", |b| {
        b.iter(|| {
            wh::verify_telnyx(
                black_box(&keys),
                Some(ts.as_bytes()),
                Some(signature.as_bytes()),
                black_box(body),
                now,
                window,
            )
            .expect("verifies")
        })
    });
    // Twilio: HMAC-SHA1 over the URL and 15 form parameters, two URL variants.
    let params = CallbackParams(
        [
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", "CA0123456789abcdef0123456789abcdef"),
            ("CallStatus", "busy"),
            ("CallDuration", "0"),
            ("Called", "+15550104477"),
            ("Caller", "+12013800532"),
            ("CallbackSource", "call-progress-events"),
            ("Direction", "outbound-api"),
            ("Duration", "0"),
            ("From", "+12013800532"),
            ("SequenceNumber", "3"),
            ("SipResponseCode", "486"),
            ("Timestamp", "Tue, 01 Nov 2016 01:59:13 +0000"),
            ("To", "+15550104477"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
    );
    let url = "https://hooks.example.com/v1/webhooks/twilio/acme?call_id=order-1&attempt=1";
    let urls = wh::url_variants(url);
    let secrets = [Secret::new("0123456789abcdef0123456789abcdef")];
    let signature = sign::twilio("0123456789abcdef0123456789abcdef", url, &params);
    g.bench_function("twilio_hmac_sha1", |b| {
        b.iter(|| {
            wh::verify_twilio(
                black_box(&secrets),
                black_box(&urls),
                black_box(&params),
                Some(signature.as_bytes()),
                "X-Twilio-Signature",
            )
            .expect("verifies")
        })
    });
    let nonce = "31078932148946291237";
    let signature = sign::plivo("0123456789abcdef0123456789abcdef", url, &params, nonce);
    g.bench_function("plivo_v3_hmac_sha256", |b| {
        b.iter(|| {
            wh::verify_plivo(
                black_box(&secrets),
                black_box(&urls),
                black_box(&params),
                Some(nonce.as_bytes()),
                Some(signature.as_bytes()),
            )
            .expect("verifies")
        })
    });
    let vonage_body = br#"{"status":"busy","uuid":"63f61863-4a51-4f6b-86e1-46edebcf9356","conversation_uuid":"CON-f972836a-550f-45fa-956c-12a2ab5b7d22","from":"447700900000","to":"447700900001","timestamp":"2026-05-19T23:30:23.738Z","direction":"outbound"}"#;
    let iat = i64::try_from(
        now.duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("seconds");
    let token = format!(
        "Bearer {}",
        sign::vonage("0123456789abcdef", vonage_body, iat, "jti-1")
    );
    let vonage_secrets = [Secret::new("0123456789abcdef")];
    g.bench_function("vonage_jwt_hs256", |b| {
        b.iter(|| {
            wh::verify_vonage(
                black_box(&vonage_secrets),
                Some(token.as_bytes()),
                black_box(vonage_body),
                now,
                window,
            )
            .expect("verifies")
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    classification,
    destinations,
    policy,
    report_path,
    webhook_signatures
);
criterion_main!(benches);
