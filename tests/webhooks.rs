//! Provider webhooks through the real listener (in-process, 127.0.0.1:0): for each
//! provider a signed terminal callback becomes an event with the right classification
//! and decision; tampered, stale, replayed and re-encoded callbacks are refused and
//! record nothing; a redelivery is a duplicate and a later status its own outcome;
//! non-terminal events record nothing; HTTP refusals have their documented status.
//!
//! "Records nothing" is checked on the event log itself: a subscriber from the oldest
//! event reads everything up to a sentinel report sent last, and compares.
//!
//! Run alone: `cargo test --test webhooks`.

mod common;

use base64::Engine;
use call_outcome::CallbackParams;
use call_outcome::auth::webhook::sign;
use call_outcome::config::Config;
use call_outcome::proto as pb;
use call_outcome::server::RunningServer;
use common::*;
use pb::subscribe_outcomes_response::Kind;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_stream::StreamExt;

const TWILIO_TOKEN: &str = "test-twilio-token";
const SIGNALWIRE_KEY: &str = "PSK-test-signalwire";
const VONAGE_SECRET: &str = "test-vonage-secret";
const PLIVO_TOKEN: &str = "test-plivo-token";
const TELNYX_SEED: [u8; 32] = [42; 32];

fn config() -> Config {
    let (telnyx_public, _) = sign::telnyx_keys(TELNYX_SEED).expect("keys");
    let text = format!(
        r#"
[webhooks]
listen = "127.0.0.1:0"
[webhooks.tenants.acme.telnyx]
public_keys = ["{telnyx_public}"]
[webhooks.tenants.acme.twilio]
# An old token first: rotation keeps two valid at once.
auth_tokens = ["old-twilio-token", "{TWILIO_TOKEN}"]
[webhooks.tenants.acme.signalwire]
signing_keys = ["{SIGNALWIRE_KEY}"]
[webhooks.tenants.acme.vonage]
signature_secrets = ["{VONAGE_SECRET}"]
[webhooks.tenants.acme.plivo]
auth_tokens = ["{PLIVO_TOKEN}"]
"#
    );
    Config::from_toml_str(&text, Path::new("webhooks-test.toml")).expect("config")
}

async fn start() -> (RunningServer, SocketAddr) {
    let server = start_with(config()).await;
    let addr = server.webhooks_addr.expect("webhook listener");
    (server, addr)
}

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn params(pairs: &[(&str, &str)]) -> CallbackParams {
    CallbackParams(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

fn form_body(p: &CallbackParams) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(p.0.iter())
        .finish()
}

/// A Telnyx `call.hangup` v2 body.
fn telnyx_hangup(
    event_id: &str,
    call: &str,
    cause: &str,
    sip: &str,
    client_state: Option<&str>,
) -> String {
    serde_json::json!({
        "data": {
            "record_type": "event",
            "event_type": "call.hangup",
            "id": event_id,
            "occurred_at": "2026-05-19T23:30:23.738431Z",
            "payload": {
                "call_control_id": call,
                "call_leg_id": "b0457f28-53da-11f1-9961-02420aef271f",
                "call_session_id": "b04574f6-53da-11f1-8e4b-02420aef271f",
                "connection_id": "2963572552552678752",
                "client_state": client_state,
                "from": "+15129342627",
                "to": "+15122548727",
                "start_time": "2026-05-19T23:30:15.038431Z",
                "end_time": "2026-05-19T23:30:23.738431Z",
                "state": "hangup",
                "hangup_cause": cause,
                "hangup_source": "callee",
                "sip_hangup_cause": sip,
            }
        },
        "meta": {"attempt": 1, "delivered_to": "https://outcome.example.com/v1/webhooks/telnyx/acme"}
    })
    .to_string()
}

async fn post_telnyx(addr: SocketAddr, body: &str, timestamp: u64) -> Answer {
    let (_, signer) = sign::telnyx_keys(TELNYX_SEED).expect("keys");
    let ts = timestamp.to_string();
    let signature = signer.sign(&ts, body.as_bytes());
    post(
        addr,
        "/v1/webhooks/telnyx/acme",
        JSON,
        &[
            ("telnyx-timestamp", ts),
            ("telnyx-signature-ed25519", signature),
        ],
        body.as_bytes(),
    )
    .await
}

/// Posts a Twilio form callback to `path`, signed for the URL the listener sees.
async fn post_twilio(addr: SocketAddr, path: &str, p: &CallbackParams, token: &str) -> Answer {
    let url = format!("http://{addr}{path}");
    let signature = sign::twilio(token, &url, p);
    post(
        addr,
        path,
        FORM,
        &[("X-Twilio-Signature", signature)],
        form_body(p).as_bytes(),
    )
    .await
}

fn twilio_status(call: &str, status: &str, sequence: &str, sip: &str) -> CallbackParams {
    params(&[
        ("AccountSid", "AC0123"),
        ("CallSid", call),
        ("CallStatus", status),
        ("SequenceNumber", sequence),
        ("SipResponseCode", sip),
        ("From", "+12013800532"),
        ("To", "+15550104477"),
        ("Direction", "outbound-api"),
        ("ApiVersion", "2010-04-01"),
    ])
}

async fn post_plivo(addr: SocketAddr, p: &CallbackParams, nonce: &str) -> Answer {
    let path = "/v1/webhooks/plivo/acme";
    let url = format!("http://{addr}{path}");
    let signature = sign::plivo(PLIVO_TOKEN, &url, p, nonce);
    post(
        addr,
        path,
        FORM,
        &[
            ("X-Plivo-Signature-V3", signature),
            ("X-Plivo-Signature-V3-Nonce", nonce.to_owned()),
        ],
        form_body(p).as_bytes(),
    )
    .await
}

async fn post_vonage(addr: SocketAddr, body: &str, iat: u64, jti: &str, secret: &str) -> Answer {
    let token = sign::vonage(secret, body.as_bytes(), iat as i64, jti);
    post(
        addr,
        "/v1/webhooks/vonage/acme",
        JSON,
        &[("Authorization", format!("Bearer {token}"))],
        body.as_bytes(),
    )
    .await
}

/// Every event of tenant `acme` from the oldest, up to a sentinel report sent now.
async fn events(server: &RunningServer) -> Vec<pb::OutcomeEvent> {
    let mut client = client(server).await;
    client
        .report_outcome(pb::ReportOutcomeRequest {
            tenant: "acme".into(),
            outcome: Some(outcome("sentinel", 1, "+15550100000", 603)),
        })
        .await
        .expect("sentinel report");
    let mut stream = client
        .subscribe_outcomes(pb::SubscribeOutcomesRequest {
            tenant: "acme".into(),
            categories: (1..=12).collect(),
            start: pb::StartPosition::Oldest as i32,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut out = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event within 30 s")
            .expect("stream open")
            .expect("message");
        match message.kind.expect("kind") {
            Kind::Event(e) if e.outcome.as_ref().is_some_and(|o| o.call_id == "sentinel") => {
                return out;
            }
            Kind::Event(e) => out.push(e),
            Kind::Heartbeat(_) => {}
            Kind::Gap(g) => panic!("unexpected gap {g:?}"),
        }
    }
}

fn category(e: &pb::OutcomeEvent) -> pb::Category {
    e.classification
        .as_ref()
        .expect("classification")
        .category()
}

fn action(e: &pb::OutcomeEvent) -> pb::Action {
    e.decision.as_ref().expect("decision").action()
}

fn label<'a>(e: &'a pb::OutcomeEvent, name: &str) -> &'a str {
    e.outcome
        .as_ref()
        .and_then(|o| o.labels.get(name))
        .map_or("", String::as_str)
}

fn call_id(e: &pb::OutcomeEvent) -> &str {
    e.outcome.as_ref().map_or("", |o| o.call_id.as_str())
}

#[tokio::test]
async fn each_provider_turns_a_signed_terminal_callback_into_an_event() {
    let (server, addr) = start().await;

    // Telnyx Call Control v2: a callee's 603.
    let body = telnyx_hangup("ev-telnyx-1", "v3:call-1", "call_rejected", "603", None);
    let a = post_telnyx(addr, &body, now()).await;
    assert_eq!(
        (a.status, a.json()["result"].as_str()),
        (200, Some("accepted")),
        "{a:?}"
    );
    assert_eq!(a.json()["category"], "declined");

    // Telnyx TeXML: a Twilio-shaped form signed with Ed25519.
    let texml = "CallSid=v3%3Atexml-1&CallStatus=completed&SequenceNumber=4&HangupCause=user_busy\
        &SipHangupCause=486&To=%2B15550104477&From=%2B15550100001";
    let (_, signer) = sign::telnyx_keys(TELNYX_SEED).expect("keys");
    let ts = now().to_string();
    let a = post(
        addr,
        "/v1/webhooks/telnyx/acme",
        FORM,
        &[
            ("telnyx-timestamp", ts.clone()),
            (
                "telnyx-signature-ed25519",
                signer.sign(&ts, texml.as_bytes()),
            ),
        ],
        texml.as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");

    // Twilio: busy with its SIP code.
    let a = post_twilio(
        addr,
        "/v1/webhooks/twilio/acme",
        &twilio_status("CA01", "busy", "3", "486"),
        TWILIO_TOKEN,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");

    // SignalWire: Twilio's form and algorithm under its own header and key.
    let p = twilio_status("sw-01", "no-answer", "2", "487");
    let path = "/v1/webhooks/signalwire/acme";
    let sig = sign::twilio(SIGNALWIRE_KEY, &format!("http://{addr}{path}"), &p);
    let a = post(
        addr,
        path,
        FORM,
        &[("X-SignalWire-Signature", sig)],
        form_body(&p).as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");

    // Vonage: failed, detail declined.
    let body = r#"{"status":"failed","detail":"declined","uuid":"vg-1","conversation_uuid":"CON-1","from":"447700900000","to":"447700900001","timestamp":"2026-05-19T23:30:23.738Z"}"#;
    let a = post_vonage(addr, body, now(), "jti-1", VONAGE_SECRET).await;
    assert_eq!(a.status, 200, "{a:?}");

    // Plivo: failed, 2000 invalid destination.
    let p = params(&[
        ("CallUUID", "pl-1"),
        ("CallStatus", "failed"),
        ("HangupCauseCode", "2000"),
        ("HangupCauseName", "Invalid Destination Address"),
        ("From", "14155550100"),
        ("To", "14155550111"),
        ("Event", "Hangup"),
    ]);
    let a = post_plivo(addr, &p, "nonce-1").await;
    assert_eq!(a.status, 200, "{a:?}");

    let got = events(&server).await;
    let seen: Vec<(&str, &str, pb::Category, pb::Action)> = got
        .iter()
        .map(|e| (label(e, "provider"), call_id(e), category(e), action(e)))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "telnyx",
                "v3:call-1",
                pb::Category::Declined,
                pb::Action::Stop
            ),
            (
                "telnyx",
                "v3:texml-1",
                pb::Category::Busy,
                pb::Action::RetryLater
            ),
            ("twilio", "CA01", pb::Category::Busy, pb::Action::RetryLater),
            (
                "signalwire",
                "sw-01",
                pb::Category::NoAnswer,
                pb::Action::RetryLater
            ),
            ("vonage", "vg-1", pb::Category::Declined, pb::Action::Stop),
            (
                "plivo",
                "pl-1",
                pb::Category::InvalidNumber,
                pb::Action::FixNumber
            ),
        ]
    );
    // The SIP code and the destination came through.
    let telnyx = &got[0];
    assert_eq!(
        telnyx.classification.as_ref().and_then(|c| c.sip_code),
        Some(603)
    );
    assert_eq!(telnyx.destination, "+15122548727");
    assert_eq!(got[4].destination, "+447700900001");
    assert_eq!(label(telnyx, "connection_id"), "2963572552552678752");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn tampered_stale_replayed_and_reencoded_callbacks_are_refused_and_record_nothing() {
    let (server, addr) = start().await;
    let (_, signer) = sign::telnyx_keys(TELNYX_SEED).expect("keys");

    // Telnyx: one flipped byte, a stale and a future timestamp, a missing header.
    let body = telnyx_hangup("ev-bad-1", "v3:bad-1", "call_rejected", "603", None);
    let ts = now().to_string();
    let signature = signer.sign(&ts, body.as_bytes());
    let flipped = body.replacen("603", "604", 1);
    let refused = [
        post(
            addr,
            "/v1/webhooks/telnyx/acme",
            JSON,
            &[
                ("telnyx-timestamp", ts.clone()),
                ("telnyx-signature-ed25519", signature.clone()),
            ],
            flipped.as_bytes(),
        )
        .await,
        post_telnyx(addr, &body, now() - 301).await,
        post_telnyx(addr, &body, now() + 301).await,
        post(
            addr,
            "/v1/webhooks/telnyx/acme",
            JSON,
            &[("telnyx-timestamp", ts.clone())],
            body.as_bytes(),
        )
        .await,
    ];
    for a in &refused {
        assert_eq!(a.status, 401, "{a:?}");
        // Nothing that helps an attacker.
        assert_eq!(a.body, "unauthorized\n");
    }

    // Twilio: a wrong token, a changed value, a re-encoded query.
    let p = twilio_status("CA-bad", "busy", "3", "486");
    let a = post_twilio(addr, "/v1/webhooks/twilio/acme", &p, "not-the-token").await;
    assert_eq!(a.status, 401);
    let path = "/v1/webhooks/twilio/acme?call_id=order%201&attempt=1";
    let signature = sign::twilio(TWILIO_TOKEN, &format!("http://{addr}{path}"), &p);
    let mut changed = p.clone();
    changed.0[2].1 = "completed".into();
    let a = post(
        addr,
        path,
        FORM,
        &[("X-Twilio-Signature", signature.clone())],
        form_body(&changed).as_bytes(),
    )
    .await;
    assert_eq!(a.status, 401);
    // The same query with `+` for the space: what a framework's re-encoding does.
    let reencoded = "/v1/webhooks/twilio/acme?call_id=order+1&attempt=1";
    let a = post(
        addr,
        reencoded,
        FORM,
        &[("X-Twilio-Signature", signature.clone())],
        form_body(&p).as_bytes(),
    )
    .await;
    assert_eq!(a.status, 401);
    // As signed, it is accepted (the control).
    let a = post(
        addr,
        path,
        FORM,
        &[("X-Twilio-Signature", signature)],
        form_body(&p).as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");

    // Plivo: a replayed nonce.
    let p = params(&[
        ("CallUUID", "pl-replay"),
        ("CallStatus", "busy"),
        ("To", "14155550111"),
    ]);
    assert_eq!(post_plivo(addr, &p, "n-replay").await.status, 200);
    let again = params(&[
        ("CallUUID", "pl-replay-2"),
        ("CallStatus", "busy"),
        ("To", "14155550111"),
    ]);
    let a = post_plivo(addr, &again, "n-replay").await;
    assert_eq!(a.status, 401, "{a:?}");

    // Vonage: a wrong secret, a stale iat, a replayed jti.
    let body = r#"{"status":"busy","uuid":"vg-bad","to":"447700900001","timestamp":"t1"}"#;
    assert_eq!(
        post_vonage(addr, body, now(), "j-a", "wrong").await.status,
        401
    );
    assert_eq!(
        post_vonage(addr, body, now() - 400, "j-b", VONAGE_SECRET)
            .await
            .status,
        401
    );
    assert_eq!(
        post_vonage(addr, body, now(), "j-c", VONAGE_SECRET)
            .await
            .status,
        200
    );
    let other = body.replace("vg-bad", "vg-bad-2");
    assert_eq!(
        post_vonage(addr, &other, now(), "j-c", VONAGE_SECRET)
            .await
            .status,
        401
    );

    let got = events(&server).await;
    let ids: Vec<&str> = got.iter().map(call_id).collect();
    // Only the three controls were recorded.
    assert_eq!(ids, ["order 1", "pl-replay", "vg-bad"]);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn redeliveries_are_duplicates_and_later_statuses_are_their_own_outcomes() {
    let (server, addr) = start().await;

    let body = telnyx_hangup("ev-dup-1", "v3:dup", "call_rejected", "603", None);
    let first = post_telnyx(addr, &body, now()).await.json();
    let again = post_telnyx(addr, &body, now()).await.json();
    assert_eq!(again["result"], "duplicate");
    assert_eq!(again["event_id"], first["event_id"]);
    // Another event id of the same call (another leg's hangup): its own outcome.
    let later = telnyx_hangup("ev-dup-2", "v3:dup", "user_busy", "486", None);
    let third = post_telnyx(addr, &later, now()).await.json();
    assert_eq!(third["result"], "accepted");
    assert_ne!(third["event_id"], first["event_id"]);

    let p = twilio_status("CA-dup", "busy", "3", "486");
    let path = "/v1/webhooks/twilio/acme";
    assert_eq!(
        post_twilio(addr, path, &p, TWILIO_TOKEN).await.json()["result"],
        "accepted"
    );
    assert_eq!(
        post_twilio(addr, path, &p, TWILIO_TOKEN).await.json()["result"],
        "duplicate"
    );
    let p = twilio_status("CA-dup", "completed", "4", "200");
    assert_eq!(
        post_twilio(addr, path, &p, TWILIO_TOKEN).await.json()["result"],
        "accepted"
    );

    // Plivo retries with a new nonce: the same callback is a duplicate.
    let p = params(&[
        ("CallUUID", "pl-dup"),
        ("CallStatus", "busy"),
        ("To", "14155550111"),
        ("Event", "Hangup"),
    ]);
    assert_eq!(
        post_plivo(addr, &p, "n-1").await.json()["result"],
        "accepted"
    );
    assert_eq!(
        post_plivo(addr, &p, "n-2").await.json()["result"],
        "duplicate"
    );

    let got = events(&server).await;
    let ids: Vec<&str> = got.iter().map(call_id).collect();
    assert_eq!(ids, ["v3:dup", "v3:dup", "CA-dup", "CA-dup", "pl-dup"]);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn non_terminal_events_are_answered_and_record_nothing() {
    let (server, addr) = start().await;
    let answered = telnyx_hangup("ev-ans", "v3:ans", "normal_clearing", "200", None)
        .replace("call.hangup", "call.answered");
    let a = post_telnyx(addr, &answered, now()).await;
    assert_eq!(
        (a.status, a.json()["result"].as_str()),
        (200, Some("ignored"))
    );
    for status in ["initiated", "ringing", "in-progress"] {
        let p = twilio_status("CA-nt", status, "1", "");
        let a = post_twilio(addr, "/v1/webhooks/twilio/acme", &p, TWILIO_TOKEN).await;
        assert_eq!((a.status, a.json()["event"].as_str()), (200, Some(status)));
    }
    let body = r#"{"status":"ringing","uuid":"vg-nt","timestamp":"t"}"#;
    assert_eq!(
        post_vonage(addr, body, now(), "j-nt", VONAGE_SECRET)
            .await
            .json()["result"],
        "ignored"
    );
    assert!(events(&server).await.is_empty());
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn the_callers_call_id_and_attempt_come_from_client_state_or_the_url() {
    let (server, addr) = start().await;
    let state =
        base64::engine::general_purpose::STANDARD.encode(r#"{"call_id":"order-77","attempt":2}"#);
    let body = telnyx_hangup("ev-cs", "v3:cs", "call_rejected", "603", Some(&state));
    assert_eq!(post_telnyx(addr, &body, now()).await.status, 200);
    let p = twilio_status("CA-corr", "busy", "3", "486");
    let a = post_twilio(
        addr,
        "/v1/webhooks/twilio/acme?call_id=order-78&attempt=3",
        &p,
        TWILIO_TOKEN,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let bad = post_twilio(
        addr,
        "/v1/webhooks/twilio/acme?call_id=x&attempt=zero",
        &p,
        TWILIO_TOKEN,
    )
    .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let got = events(&server).await;
    let ids: Vec<(&str, u32, &str)> = got
        .iter()
        .map(|e| {
            let o = e.outcome.as_ref().expect("outcome");
            (o.call_id.as_str(), o.attempt, label(e, "provider_call_id"))
        })
        .collect();
    assert_eq!(ids, [("order-77", 2, "v3:cs"), ("order-78", 3, "CA-corr")]);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn http_refusals_have_their_status() {
    let (server, addr) = start().await;
    let get = send_raw(
        addr,
        format!(
            "GET /v1/webhooks/telnyx/acme?x=1 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(get.status, 405);
    assert!(
        get.head.to_ascii_lowercase().contains("allow: post"),
        "{get:?}"
    );
    let p = twilio_status("CA-x", "busy", "1", "486");
    assert_eq!(
        post_twilio(addr, "/v1/webhooks/twilio/globex", &p, TWILIO_TOKEN)
            .await
            .status,
        404
    );
    assert_eq!(
        post_twilio(addr, "/v1/webhooks/bandwidth/acme", &p, TWILIO_TOKEN)
            .await
            .status,
        404
    );
    assert_eq!(
        post_twilio(addr, "/v1/other", &p, TWILIO_TOKEN)
            .await
            .status,
        404
    );
    // Over the cap: refused from Content-Length, before the body is read.
    let big = vec![b'a'; 70 * 1024];
    let a = post(addr, "/v1/webhooks/twilio/acme", FORM, &[], &big).await;
    assert_eq!(a.status, 413);
    // And without a Content-Length (chunked), while reading.
    let mut chunked = format!(
        "POST /v1/webhooks/twilio/acme HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {FORM}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..70 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'a'; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(send_raw(addr, &chunked).await.status, 413);
    let a = post(
        addr,
        "/v1/webhooks/twilio/acme",
        "text/plain",
        &[],
        b"CallSid=1",
    )
    .await;
    assert_eq!(a.status, 415);
    // Verified but unreadable: 400 with the reason.
    let p = params(&[("CallSid", "CA-nostatus")]);
    let a = post_twilio(addr, "/v1/webhooks/twilio/acme", &p, TWILIO_TOKEN).await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("CallStatus"), "{a:?}");
    // Telnyx v1 is refused with what to change.
    let v1 = r#"{"record_type":"event","event_type":"call_hangup","id":"x","payload":{}}"#;
    let a = post_telnyx(addr, v1, now()).await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("API version to 2"), "{a:?}");
    assert!(events(&server).await.is_empty());
    // Every refusal is counted by provider and result.
    let (status, metrics) = get_metrics(&server).await;
    assert_eq!(status, 200);
    for needle in [
        r#"calloutcome_webhooks_total{provider="twilio",result="too_large"}"#,
        r#"calloutcome_webhooks_total{provider="twilio",result="not_found"}"#,
        r#"calloutcome_webhooks_total{provider="unknown",result="not_found"}"#,
        r#"calloutcome_webhooks_total{provider="telnyx",result="malformed"}"#,
    ] {
        assert!(metrics.contains(needle), "{needle} in {metrics}");
    }
    server.stop().await.expect("stop");
}

async fn get_metrics(server: &RunningServer) -> (u16, String) {
    get(server.admin_addr.expect("admin"), "/metrics").await
}

#[tokio::test]
async fn a_proxy_is_believed_only_when_trusted_and_the_public_url_wins() {
    // Behind a TLS-terminating proxy: Twilio signed https://hooks.example.com/...
    let mut trusted = config();
    trusted.webhooks.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    let server = start_with(trusted).await;
    let addr = server.webhooks_addr.expect("listener");
    let p = twilio_status("CA-proxy", "busy", "3", "486");
    let path = "/v1/webhooks/twilio/acme";
    let signature = sign::twilio(
        TWILIO_TOKEN,
        &format!("https://hooks.example.com{path}"),
        &p,
    );
    let forwarded = [
        ("X-Twilio-Signature", signature.clone()),
        ("X-Forwarded-Proto", "https".to_owned()),
        ("X-Forwarded-Host", "hooks.example.com".to_owned()),
    ];
    let a = post(addr, path, FORM, &forwarded, form_body(&p).as_bytes()).await;
    assert_eq!(a.status, 200, "{a:?}");
    server.stop().await.expect("stop");

    // The same headers from an untrusted peer are ignored.
    let (server, addr) = start().await;
    let a = post(addr, path, FORM, &forwarded, form_body(&p).as_bytes()).await;
    assert_eq!(a.status, 401);
    server.stop().await.expect("stop");

    // A configured public base URL needs no forwarded header at all.
    let mut public = config();
    public.webhooks.public_base_url = Some("https://hooks.example.com".into());
    let server = start_with(public).await;
    let addr = server.webhooks_addr.expect("listener");
    let a = post(
        addr,
        path,
        FORM,
        &[("X-Twilio-Signature", signature)],
        form_body(&p).as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    server.stop().await.expect("stop");
}

#[test]
fn configuration_errors_name_their_line() {
    let text = "[webhooks]\nlisten = \"127.0.0.1:0\"\n[webhooks.tenants.acme.telnyx]\npublic_keys = [\"AAAA\"]\n";
    let e = Config::from_toml_str(text, Path::new("w.toml"))
        .expect_err("bad key")
        .to_string();
    assert!(e.starts_with("w.toml:4:"), "{e}");
    assert!(e.contains("32 bytes"), "{e}");
    let text = "[webhooks.tenants.acme.twilio]\n";
    let e = Config::from_toml_str(text, Path::new("w.toml"))
        .expect_err("empty")
        .to_string();
    assert!(
        e.starts_with("w.toml:1:") && e.contains("auth_tokens"),
        "{e}"
    );
    let text = "[webhooks.tenants.acme.bandwidth]\nx = 1\n";
    let e = Config::from_toml_str(text, Path::new("w.toml"))
        .expect_err("provider")
        .to_string();
    assert!(e.contains("bandwidth"), "{e}");
    let text = "[webhooks.tenants.\"a b\".twilio]\nauth_tokens = [\"t\"]\n";
    let e = Config::from_toml_str(text, Path::new("w.toml"))
        .expect_err("tenant")
        .to_string();
    assert!(e.starts_with("w.toml:1:"), "{e}");
    let text = "[webhooks]\nlisten = \"127.0.0.1:0\"\n";
    let e = Config::from_toml_str(text, Path::new("w.toml"))
        .expect_err("no routes")
        .to_string();
    assert!(e.contains("no [webhooks.tenants"), "{e}");
    // Secrets from files: one per line, comments skipped, never printed.
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("token"),
        "# rotated 2026-12\nsecret-one\n\nsecret-two\n",
    )
    .expect("write");
    let text = "[webhooks.tenants.acme.twilio]\nauth_tokens_file = \"token\"\n";
    let config = Config::from_toml_str(text, &dir.path().join("c.toml")).expect("file");
    assert!(!format!("{config:?}").contains("secret-one"));
    let text = "[webhooks.tenants.acme.twilio]\nauth_tokens_file = \"missing\"\n";
    let e = Config::from_toml_str(text, &dir.path().join("c.toml"))
        .expect_err("missing")
        .to_string();
    assert!(e.contains("missing") && e.contains("cannot read"), "{e}");
}

/// The README's signed example verifies against examples/webhooks.toml's demo token.
#[test]
fn the_readme_example_is_signed_with_the_demo_token() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("readme");
    let signature = readme
        .split("X-Twilio-Signature: ")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("a signed curl line in README.md");
    let p = params(&[
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("CallStatus", "failed"),
        ("SipResponseCode", "603"),
        ("SequenceNumber", "2"),
        ("To", "+15550104477"),
    ]);
    let url = "http://127.0.0.1:8080/v1/webhooks/twilio/demo?call_id=order-1001&attempt=1";
    assert_eq!(sign::twilio("demo-twilio-auth-token", url, &p), signature);
}

/// A callback counts against its tenant's `ReportOutcome` rate limit, shared with gRPC:
/// over it the answer is 429 with Retry-After and nothing is recorded.
#[tokio::test]
async fn the_tenants_rate_limit_applies_to_callbacks() {
    let mut config = config();
    let limits = Config::from_toml_str(
        "[rate_limits]\nenabled = true\nreport_per_second = 1\nreport_burst = 1\n",
        Path::new("r.toml"),
    )
    .expect("rate limits");
    config.rate_limits = limits.rate_limits;
    let server = start_with(config).await;
    let addr = server.webhooks_addr.expect("listener");
    let path = "/v1/webhooks/twilio/acme";
    let first = post_twilio(
        addr,
        path,
        &twilio_status("CA-rl-1", "busy", "3", "486"),
        TWILIO_TOKEN,
    )
    .await;
    assert_eq!(first.status, 200, "{first:?}");
    let second = post_twilio(
        addr,
        path,
        &twilio_status("CA-rl-2", "busy", "3", "486"),
        TWILIO_TOKEN,
    )
    .await;
    assert_eq!(second.status, 429, "{second:?}");
    assert!(
        second.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{second:?}"
    );
    server.stop().await.expect("stop");
}

/// Out-of-order delivery: a `ringing` that arrives after the call's `completed` changes
/// nothing — the terminal outcome stays the one recorded.
#[tokio::test]
async fn a_late_non_terminal_event_does_not_overwrite_the_terminal_one() {
    let (server, addr) = start().await;
    let path = "/v1/webhooks/twilio/acme?call_id=order-9&attempt=1";
    let busy = post_twilio(
        addr,
        path,
        &twilio_status("CA-late", "busy", "3", "486"),
        TWILIO_TOKEN,
    )
    .await;
    assert_eq!(busy.json()["result"], "accepted");
    let ringing = post_twilio(
        addr,
        path,
        &twilio_status("CA-late", "ringing", "1", ""),
        TWILIO_TOKEN,
    )
    .await;
    assert_eq!(ringing.json()["result"], "ignored");
    // The busy callback redelivered after it is still the first answer.
    let again = post_twilio(
        addr,
        path,
        &twilio_status("CA-late", "busy", "3", "486"),
        TWILIO_TOKEN,
    )
    .await;
    assert_eq!(again.json()["event_id"], busy.json()["event_id"]);
    let got = events(&server).await;
    assert_eq!(got.len(), 1);
    assert_eq!(category(&got[0]), pb::Category::Busy);
    server.stop().await.expect("stop");
}

/// Rotation without a restart: the `*_file` secrets are re-read every
/// `webhooks.reload_interval`, so a token added to the mounted Secret is accepted soon
/// after, beside the old one; a file that cannot be read keeps the last good secrets.
#[tokio::test]
async fn a_rotated_secret_file_takes_effect_without_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("twilio-token");
    std::fs::write(&file, "first-token\n").expect("write");
    let text = format!(
        "[webhooks]\nlisten = \"127.0.0.1:0\"\nreload_interval = \"50ms\"\n\
         [webhooks.tenants.acme.twilio]\nauth_tokens_file = \"{}\"\n",
        file.display()
    );
    let config = Config::from_toml_str(&text, Path::new("r.toml")).expect("config");
    let server = start_with(config).await;
    let addr = server.webhooks_addr.expect("listener");
    let path = "/v1/webhooks/twilio/acme";
    let mut sequence = 0u32;
    let mut send = |token: &'static str| {
        sequence += 1;
        let p = twilio_status(&format!("CA-rot-{sequence}"), "busy", "3", "486");
        async move { post_twilio(addr, path, &p, token).await.status }
    };
    assert_eq!(send("second-token").await, 401);
    // The rotation: both tokens valid while the provider switches.
    std::fs::write(&file, "first-token\nsecond-token\n").expect("write");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while send("second-token").await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new token never took effect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(send("first-token").await, 200);
    // The file goes away (a broken mount): the last good secrets stay.
    std::fs::remove_file(&file).expect("remove");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(send("second-token").await, 200);
    }
    server.stop().await.expect("stop");
}
