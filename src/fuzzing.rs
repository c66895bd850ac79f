//! The checks behind the `cargo fuzz` targets in `fuzz/` (one function per target), kept
//! in the crate so that `tests/fuzz_corpus.rs` replays the committed corpus through
//! exactly the same code on stable Rust.
//!
//! Owns the invariants each parser must keep on any input. Each check takes raw fuzzer
//! bytes and **panics** when an invariant breaks: a panic is how libFuzzer and the
//! replay test report a finding, so `assert!` is the point here, unlike in service
//! code. It must not do I/O beyond what the checked function itself does, nor depend on
//! the environment or the clock, so a finding replays identically.

use crate::classify::{self, ClassifyError, ClassifyInput};
use crate::config::{Config, ConfigError};
use crate::domain::Action;
use crate::domain::{Basis, Category, Classification, RetryAfterScope, Retryable};
use crate::domain::{HistoryEntry, HistorySnapshot, Outcome};
use crate::policy::{Policy, PolicyInput};
use crate::sip::reason::{Location, ReasonValue, is_token};
use crate::sip::{parse_reason_header, parse_response, parse_retry_after, reason_values};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One target's check: panics when an input breaks an invariant.
pub type Check = fn(&[u8]);

/// Fuzz targets by name, with their check: what `tests/fuzz_corpus.rs` replays.
pub const TARGETS: &[(&str, Check)] = &[
    ("sip_message", sip_message),
    ("reason", reason),
    ("retry_after", retry_after),
    ("policy", policy),
    ("config", config),
    ("webhook_telnyx", webhook_telnyx),
    ("webhook_twilio", webhook_twilio),
    ("webhook_vonage", webhook_vonage),
    ("webhook_plivo", webhook_plivo),
];

/// A provider's callback reader on both encodings, then the classifier on what it read.
///
/// Invariants: reading never panics; a terminal callback's outcome carries the
/// callback's delivery id, which names the provider; its call id is not empty; the
/// outcome classifies (or is refused as R0) without panicking, and a provider cause it
/// names is not empty, under a provider name the classifier knows.
fn webhook(provider: crate::providers::callback::WebhookProvider, data: &[u8]) {
    use crate::providers::callback::{BodyFormat, read};
    for format in [BodyFormat::Json, BodyFormat::Form] {
        let Ok(callback) = read(provider, format, data) else {
            continue;
        };
        assert!(
            callback
                .delivery
                .starts_with(&format!("{}:", provider.as_str())),
            "{}",
            callback.delivery
        );
        let Some(outcome) = callback.outcome else {
            continue;
        };
        assert_eq!(
            outcome.delivery.as_deref(),
            Some(callback.delivery.as_str())
        );
        assert!(!outcome.call_id.is_empty());
        assert_eq!(
            outcome.labels.get("provider").map(String::as_str),
            Some(provider.as_str())
        );
        if let Some((name, cause)) = &outcome.provider {
            assert!(
                crate::providers::Provider::from_name(name).is_some(),
                "{name}"
            );
            assert!(!cause.is_empty());
        }
        let _ = classify::classify_outcome(&outcome);
    }
}

/// Telnyx v2 JSON and TeXML forms: see [`webhook`].
pub fn webhook_telnyx(data: &[u8]) {
    webhook(crate::providers::callback::WebhookProvider::Telnyx, data);
}

/// Twilio and SignalWire forms and flat JSON: see [`webhook`].
pub fn webhook_twilio(data: &[u8]) {
    webhook(crate::providers::callback::WebhookProvider::Twilio, data);
    webhook(
        crate::providers::callback::WebhookProvider::SignalWire,
        data,
    );
}

/// Vonage JSON events: see [`webhook`].
pub fn webhook_vonage(data: &[u8]) {
    webhook(crate::providers::callback::WebhookProvider::Vonage, data);
}

/// Plivo forms: see [`webhook`].
pub fn webhook_plivo(data: &[u8]) {
    webhook(crate::providers::callback::WebhookProvider::Plivo, data);
}

/// Raw SIP response parser, then the classifier on it.
///
/// Invariants: a parsed status code has three digits; header names are tokens and find
/// their own field; unfolded values hold no line break; the one-pass accessor agrees
/// with the separate ones; classification fails exactly when the bytes are not a
/// response with a final code, and equals the classification of the same code and
/// headers sent as explicit fields.
pub fn sip_message(data: &[u8]) {
    let raw_input = ClassifyInput {
        raw_sip_response: Some(data),
        ..ClassifyInput::default()
    };
    let classified = classify::classify(&raw_input);
    let response = match parse_response(data) {
        Ok(r) => r,
        Err(e) => {
            let nothing = data.is_empty();
            match classified {
                Err(ClassifyError::RawSipResponse(_)) if !nothing => {}
                Err(ClassifyError::NothingToClassify) if nothing => {}
                other => panic!("unparsable response ({e}) classified as {other:?}"),
            }
            return;
        }
    };
    let code = response.status_code();
    assert!(code <= 999, "status code {code} has more than three digits");
    let _ = response.reason_phrase();
    for h in response.headers() {
        assert!(is_token(h.name), "header name {:?} is not a token", h.name);
        assert!(
            response.header(h.name).is_some(),
            "header {:?} not found by name",
            h.name
        );
        let value = h.value();
        assert!(
            !value.contains(['\r', '\n']),
            "unfolded value of {:?} holds a line break: {value:?}",
            h.name
        );
        assert_eq!(value.trim_matches([' ', '\t']), value, "value not trimmed");
    }
    let (reason, retry) = response.reason_and_retry_after();
    assert_eq!(reason, response.reason(), "one-pass Reason differs");
    assert_eq!(
        retry,
        response.retry_after(),
        "one-pass Retry-After differs"
    );

    match (code, &classified) {
        (200..=699, Ok(c)) => {
            check_classification(c);
            assert_eq!(c.reported_sip_code, Some(code), "reported code differs");
            let reason = reason.as_deref().unwrap_or("");
            let retry = retry.as_deref().unwrap_or("");
            let explicit = classify::classify(&ClassifyInput {
                sip_code: Some(i64::from(code)),
                reason_header: reason,
                retry_after_header: retry,
                ..ClassifyInput::default()
            });
            assert_eq!(
                explicit.as_ref(),
                Ok(c),
                "explicit fields classify differently from the raw response"
            );
        }
        (100..=199, Err(ClassifyError::ProvisionalCode(_))) => {}
        (0..=99 | 700.., Err(ClassifyError::CodeOutOfRange(_))) => {}
        _ => panic!("status code {code} classified as {classified:?}"),
    }
}

/// What every classification must satisfy.
fn check_classification(c: &Classification) {
    if let Some(cause) = c.q850_cause {
        assert!(
            (1..=127).contains(&cause),
            "Q.850 cause {cause} out of range"
        );
    }
    assert_eq!(c.q850_cause.is_some(), c.q850_source.is_some());
    if let Some(code) = c.sip_code {
        assert!((200..=699).contains(&code), "effective code {code}");
        assert_eq!(
            c.reported_sip_code.map(|r| r / 100),
            Some(code / 100),
            "the effective code changed class"
        );
    }
    if let Some(loc) = &c.q850_location {
        assert!(Location::parse(loc).is_some(), "unknown location {loc:?}");
    }
    assert!(!c.summary.is_empty(), "empty summary");
}

/// Reason header parser (RFC 3326 / RFC 8606).
///
/// Invariants: values are well-formed (token protocol, Q.850 cause in 1..=127, a
/// location that spells back to itself) and re-serialising them in canonical form
/// parses back to the same values.
pub fn reason(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let values = parse_reason_header(&text);
    assert_eq!(values, reason_values(&text).collect::<Vec<_>>());
    for v in &values {
        assert!(is_token(v.protocol), "protocol {:?}", v.protocol);
        if let Some(cause) = v.q850_cause() {
            assert!((1..=127).contains(&cause), "Q.850 cause {cause}");
            assert!(v.is_q850());
        }
        if let Some(loc) = v.location {
            assert_eq!(Location::parse(loc.as_str()), Some(loc));
        }
    }
    let canonical = values
        .iter()
        .map(format_reason_value)
        .collect::<Vec<_>>()
        .join(", ");
    let again = parse_reason_header(&canonical);
    assert_eq!(
        values, again,
        "canonical form {canonical:?} parses differently"
    );
}

/// `protocol;cause=N;text="…";location=X` with `"` and `\` escaped.
fn format_reason_value(v: &ReasonValue<'_>) -> String {
    let mut out = v.protocol.to_owned();
    if let Some(cause) = v.cause {
        let _ = write!(out, ";cause={cause}");
    }
    if let Some(text) = &v.text {
        out.push_str(";text=\"");
        for c in text.chars() {
            if matches!(c, '"' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    if let Some(loc) = v.location {
        let _ = write!(out, ";location={}", loc.as_str());
    }
    out
}

/// Retry-After parser (RFC 3261 §20.33).
///
/// Invariants: surrounding whitespace does not change the result; a parsed value
/// formatted back (`seconds (comment);duration=d`) parses to the same value; the
/// seconds are the leading digits, saturated.
pub fn retry_after(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = parse_retry_after(&text);
    let padded = format!(" \t{text}\r\n ");
    assert_eq!(
        parse_retry_after(&padded),
        parsed,
        "padding changed the result"
    );
    let Some(ra) = parsed else {
        return;
    };
    let digits: String = text
        .trim_start_matches([' ', '\t', '\r', '\n'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let expected = digits.bytes().fold(0u32, |acc, b| {
        acc.saturating_mul(10)
            .saturating_add(u32::from(b.wrapping_sub(b'0')))
    });
    assert_eq!(ra.seconds, expected, "seconds are not the leading digits");
    let mut formatted = ra.seconds.to_string();
    if let Some(comment) = ra.comment {
        let _ = write!(formatted, " ({comment})");
    }
    if let Some(d) = ra.duration {
        let _ = write!(formatted, ";duration={d}");
    }
    assert_eq!(
        parse_retry_after(&formatted),
        Some(ra),
        "formatted {formatted:?} parses differently"
    );
}

/// Policy parser, then `decide` on fixed outcomes for every tenant.
///
/// Invariants: parsing is deterministic; an error points inside the text; a valid
/// policy decides every outcome by one of its own rules (the catch-all guarantee),
/// deterministically, with a retry plan exactly for retry actions below the limit.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = Policy::parse(text, "fuzz.toml");
    let second = Policy::parse(text, "fuzz.toml");
    let policy = match (first, second) {
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "non-deterministic error");
            let lines = text.split('\n').count();
            assert!(
                (1..=lines).contains(&a.line) && a.column >= 1,
                "error position {}:{} outside a {lines}-line text",
                a.line,
                a.column
            );
            assert!(a.to_string().starts_with("fuzz.toml:"), "{a}");
            return;
        }
        (Ok(a), Ok(b)) => {
            assert_eq!(a.rules().collect::<Vec<_>>(), b.rules().collect::<Vec<_>>());
            a
        }
        (a, b) => panic!(
            "non-deterministic parse: {:?} then {:?}",
            a.is_ok(),
            b.is_ok()
        ),
    };
    let mut tenants: Vec<&str> = policy.tenants().collect();
    tenants.push("fuzz-no-section");
    let cases = decide_cases();
    for tenant in tenants {
        let names: Vec<String> = policy.rules_for(tenant).map(|r| r.name).collect();
        for (outcome, classification, history, includes_current) in &cases {
            for jitter_seed in [0, u64::MAX] {
                let input = PolicyInput {
                    tenant,
                    outcome,
                    classification,
                    history,
                    includes_current: *includes_current,
                    now: fixed_now(),
                    jitter_seed,
                };
                let d = policy.decide(&input);
                assert_eq!(d, policy.decide(&input), "non-deterministic decision");
                assert!(
                    names.contains(&d.rule),
                    "tenant {tenant:?}: rule {:?} is not one of {names:?}",
                    d.rule
                );
                let retries = matches!(
                    d.action,
                    Action::RetryLater | Action::RetryNowAlternateRoute
                );
                assert_eq!(
                    d.retry.is_some(),
                    retries,
                    "retry plan vs action {}",
                    d.action
                );
                if let Some(r) = &d.retry {
                    assert_eq!(r.next_attempt, d.attempt.saturating_add(1));
                    assert!(d.attempt < r.max_attempts, "retry at the attempt limit");
                    assert!(r.not_before >= fixed_now());
                    // A Retry-After is a floor: the callee's value, or the clamped route one.
                    // A callee's value over the policy's max_retry_after is capped, and
                    // only then, and the explanation says so.
                    let capped = d.explanation.contains("(policy max_retry_after)");
                    let floor = match classification.retry_after {
                        Some(ra) if ra.scope == RetryAfterScope::Callee && !capped => ra.seconds,
                        Some(ra) if ra.scope == RetryAfterScope::Callee => {
                            assert!(r.delay_seconds < ra.seconds, "capped without need");
                            0
                        }
                        _ => d.avoid_route_seconds,
                    };
                    assert!(r.delay_seconds >= floor, "delay below the Retry-After");
                }
                if !d.notify_user {
                    assert!(d.user_message.is_empty(), "message without notify");
                }
                if let Some(ra) = classification.retry_after {
                    assert!(d.avoid_route_seconds <= ra.seconds);
                } else {
                    assert_eq!(d.avoid_route_seconds, 0);
                }
            }
            // The policy's overrides: deterministic, explained, and never a 6xx sent to
            // another route (R5).
            if let Ok(c) = policy.classify(tenant, outcome) {
                assert_eq!(Ok(&c), policy.classify(tenant, outcome).as_ref());
                assert_eq!(
                    c.basis == Basis::Override,
                    c.override_name.is_some(),
                    "an override decided without its name, or the reverse"
                );
                assert!(
                    c.retryable != Retryable::NowAlternateRoute
                        || c.sip_code.is_none_or(|code| code < 600),
                    "6xx now_alternate_route"
                );
                if c.basis != Basis::Override {
                    assert_eq!(Ok(&c), classify::classify_outcome(outcome).as_ref());
                }
            }
        }
    }
}

fn fixed_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

type DecideCase = (Outcome, Classification, HistorySnapshot, bool);

/// Realistic outcomes, classified by the real classifier, with a history that has a
/// run of declines after an answered call.
fn decide_cases() -> Vec<DecideCase> {
    const RAW: &[&str] = &[
        "SIP/2.0 603 Decline\r\nReason: Q.850;cause=21;text=\"CALL_REJECTED\";location=U\r\n\r\n",
        "SIP/2.0 486 Busy Here\r\nRetry-After: 300\r\n\r\n",
        "SIP/2.0 503 Service Unavailable\r\nRetry-After: 120\r\n\r\n",
        "SIP/2.0 480 Temporarily Unavailable\r\nReason: Q.850;cause=19\r\nRetry-After: 4294967295\r\n\r\n",
        "SIP/2.0 603 Network Blocked\r\nReason: SIP;cause=603;text=\"v=analytics1;reason=fraud\"\r\n\r\n",
        "SIP/2.0 404 Not Found\r\n\r\n",
        "SIP/2.0 200 OK\r\n\r\n",
        // A carrier's own code in the phrase, for the policy's overrides.
        "SIP/2.0 486 Busy Here D5\r\n\r\n",
        "SIP/2.0 603 Decline glitch\r\nRetry-After: 60\r\n\r\n",
    ];
    let now = fixed_now();
    let entry = |secs: u64, category| HistoryEntry {
        at: now - Duration::from_secs(secs),
        attempt: 1,
        category,
        sip_code: None,
    };
    let history = HistorySnapshot {
        destination: "+15557654321".into(),
        entries: vec![
            entry(90_000, Category::Answered),
            entry(7_200, Category::Declined),
            entry(3_600, Category::Declined),
            entry(60, Category::Busy),
        ],
    };
    let labels = BTreeMap::from([
        ("campaign".to_owned(), "renewals".to_owned()),
        ("vip".to_owned(), "yes".to_owned()),
    ]);
    let mut cases = Vec::new();
    for (i, raw) in RAW.iter().enumerate() {
        for attempt in [None, Some(1), Some(u32::MAX)] {
            let outcome = Outcome {
                call_id: format!("fuzz-{i}"),
                attempt,
                from: "+15551230000".into(),
                to: "+15557654321".into(),
                raw_sip_response: Some(raw.as_bytes().to_vec()),
                labels: labels.clone(),
                ..Outcome::default()
            };
            if let Ok(c) = classify::classify_outcome(&outcome) {
                cases.push((outcome, c, history.clone(), attempt.is_none()));
            }
        }
    }
    let provider = Outcome {
        call_id: "fuzz-provider".into(),
        provider: Some(("telnyx".into(), "timeout".into())),
        ..Outcome::default()
    };
    if let Ok(c) = classify::classify_outcome(&provider) {
        cases.push((provider, c, HistorySnapshot::default(), false));
    }
    cases
}

/// Service config parser (`Config::from_toml_str`: the path `Config::load` takes).
///
/// Invariants: deterministic; a syntax error points inside the text and names the file;
/// a valid config passes validation again, serialises back to TOML and reads back equal.
/// Inputs that name other files (`auth_file`, `[tls]`, JWT key files) are skipped:
/// loading them reads those files (an input could name `/dev/zero`).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz-config-dir/fuzz.toml");
    if crate::config::parse_file(text, path)
        .is_ok_and(|c| c.auth_file.is_some() || c.tls.is_some() || c.auth.jwt.is_some())
    {
        return;
    }
    let result = Config::from_toml_str(text, path);
    let again = Config::from_toml_str(text, path);
    match (&result, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "non-deterministic config"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "non-deterministic error"),
        _ => panic!("non-deterministic: {result:?} then {again:?}"),
    }
    let config = match result {
        Ok(config) => config,
        Err(ConfigError::Syntax {
            path: p,
            line,
            column,
            ..
        }) => {
            assert_eq!(p, path);
            let lines = text.split('\n').count();
            assert!(
                (1..=lines).contains(&line) && column >= 1,
                "error position {line}:{column} outside a {lines}-line text"
            );
            return;
        }
        Err(ConfigError::Invalid(_)) => return,
        Err(e) => panic!("unexpected kind of config error: {e}"),
    };
    if let Err(e) = config.validate() {
        panic!("a loaded config fails validation: {e}");
    }
    let written = match toml::to_string(&config) {
        Ok(t) => t,
        Err(e) => panic!("a loaded config does not serialise: {e}\n{config:?}"),
    };
    match crate::config::parse_file(&written, path) {
        Ok(back) => assert_eq!(back, config, "serialised config reads back differently"),
        Err(e) => panic!("serialised config does not parse: {e}\n{written}"),
    }
}
