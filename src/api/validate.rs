//! Request validation: turns a wire `CallOutcome` into a domain [`Outcome`], or lists
//! every field violation at once.
//!
//! Checks shape only (presence, lengths, counts, ranges, timestamps); what a SIP code
//! *means* is the classifier's business. Nothing here touches a backend, so a rejected
//! request changes nothing.

use super::convert::system_time;
use crate::domain::Outcome;
use crate::proto as pb;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Size limits of a request's fields. Every limit is configurable (`[limits]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLimits {
    /// Longest `call_id`, in bytes.
    pub max_call_id_bytes: usize,
    /// Longest `from` / `to`, in bytes.
    pub max_party_bytes: usize,
    /// Longest tenant name, in bytes.
    pub max_tenant_bytes: usize,
    /// Longest reason phrase, Reason or Retry-After header, in bytes.
    pub max_header_bytes: usize,
    /// Largest `raw_sip_response`, in bytes.
    pub max_raw_sip_bytes: usize,
    /// Most header lines in `raw_sip_response` (folded continuation lines count).
    pub max_raw_sip_headers: usize,
    /// Most labels on one outcome.
    pub max_labels: usize,
    /// Longest label key, in bytes.
    pub max_label_key_bytes: usize,
    /// Longest label value, in bytes.
    pub max_label_value_bytes: usize,
    /// Longest provider name or cause, in bytes.
    pub max_provider_bytes: usize,
    /// Highest attempt number accepted.
    pub max_attempt: u32,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_call_id_bytes: 256,
            max_party_bytes: 512,
            max_tenant_bytes: crate::domain::DEFAULT_MAX_TENANT_BYTES,
            max_header_bytes: 4096,
            max_raw_sip_bytes: 65_536,
            max_raw_sip_headers: 256,
            max_labels: 32,
            max_label_key_bytes: 64,
            max_label_value_bytes: 256,
            max_provider_bytes: 64,
            max_attempt: 10_000,
        }
    }
}

/// One invalid field: a path like `outcome.sip.code` and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// What the outcome is for: a report needs an id and a destination, a classification not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Report,
    Classify,
}

/// Oldest timestamp accepted: 2000-01-01T00:00:00Z. Older ones are clock or unit errors.
const EARLIEST: Duration = Duration::from_secs(946_684_800);
/// How far in the future a timestamp may be (clock skew between hosts).
const FUTURE_SKEW: Duration = Duration::from_secs(24 * 3600);

/// Converts and validates an outcome. Returns every violation found, not only the first.
pub fn outcome(
    outcome: Option<&pb::CallOutcome>,
    purpose: Purpose,
    limits: &RequestLimits,
    now: SystemTime,
) -> Result<Outcome, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let Some(o) = outcome else {
        return Err(vec![FieldViolation::new("outcome", "is required")]);
    };

    text(
        &mut v,
        "outcome.call_id",
        &o.call_id,
        limits.max_call_id_bytes,
    );
    text(&mut v, "outcome.from", &o.from, limits.max_party_bytes);
    text(&mut v, "outcome.to", &o.to, limits.max_party_bytes);
    if purpose == Purpose::Report {
        if o.call_id.trim().is_empty() {
            v.push(FieldViolation::new(
                "outcome.call_id",
                "is required to report an outcome",
            ));
        }
        if o.to.trim().is_empty() {
            v.push(FieldViolation::new(
                "outcome.to",
                "is required to report an outcome (history is kept per destination)",
            ));
        }
    }
    if o.attempt > limits.max_attempt {
        v.push(FieldViolation::new(
            "outcome.attempt",
            format!("must be at most {}", limits.max_attempt),
        ));
    }

    let mut sip = o.sip.clone().unwrap_or_default();
    text(
        &mut v,
        "outcome.sip.reason_phrase",
        &sip.reason_phrase,
        limits.max_header_bytes,
    );
    // Optional headers: only their size is the caller's error; a malformed one (a control
    // character is never valid in a header value) is ignored, as docs/api.md says.
    optional_header(
        &mut v,
        "outcome.sip.reason_header",
        &mut sip.reason_header,
        limits.max_header_bytes,
    );
    optional_header(
        &mut v,
        "outcome.sip.retry_after_header",
        &mut sip.retry_after_header,
        limits.max_header_bytes,
    );
    if o.raw_sip_response.len() > limits.max_raw_sip_bytes {
        v.push(FieldViolation::new(
            "outcome.raw_sip_response",
            format!("larger than {} bytes", limits.max_raw_sip_bytes),
        ));
    } else if raw_sip_headers(&o.raw_sip_response) > limits.max_raw_sip_headers {
        v.push(FieldViolation::new(
            "outcome.raw_sip_response",
            format!("more than {} header lines", limits.max_raw_sip_headers),
        ));
    }

    let provider = o.provider.as_ref().and_then(|p| {
        text(
            &mut v,
            "outcome.provider.name",
            &p.name,
            limits.max_provider_bytes,
        );
        text(
            &mut v,
            "outcome.provider.cause",
            &p.cause,
            limits.max_provider_bytes,
        );
        if p.name.trim().is_empty() && !p.cause.trim().is_empty() {
            v.push(FieldViolation::new(
                "outcome.provider.name",
                "is required with a provider cause",
            ));
        }
        (!p.cause.trim().is_empty()).then(|| (p.name.trim().to_owned(), p.cause.trim().to_owned()))
    });

    if o.labels.len() > limits.max_labels {
        v.push(FieldViolation::new(
            "outcome.labels",
            format!("more than {} labels", limits.max_labels),
        ));
    }
    for (key, value) in &o.labels {
        let field = format!("outcome.labels[{key:?}]");
        if key.is_empty() {
            v.push(FieldViolation::new(
                "outcome.labels",
                "a label key is empty",
            ));
        }
        if key.len() > limits.max_label_key_bytes {
            v.push(FieldViolation::new(
                &field,
                format!("key longer than {} bytes", limits.max_label_key_bytes),
            ));
        }
        if value.len() > limits.max_label_value_bytes {
            v.push(FieldViolation::new(
                &field,
                format!("value longer than {} bytes", limits.max_label_value_bytes),
            ));
        }
        if key.chars().chain(value.chars()).any(char::is_control) {
            v.push(FieldViolation::new(&field, "contains control characters"));
        }
    }

    let started_at = time(&mut v, "outcome.started_at", o.started_at.as_ref(), now);
    let ended_at = time(&mut v, "outcome.ended_at", o.ended_at.as_ref(), now);
    if let (Some(start), Some(end)) = (started_at, ended_at)
        && end < start
    {
        v.push(FieldViolation::new(
            "outcome.ended_at",
            "is before outcome.started_at",
        ));
    }

    let outcome = Outcome {
        call_id: o.call_id.trim().to_owned(),
        attempt: (o.attempt > 0).then_some(o.attempt),
        from: o.from.trim().to_owned(),
        to: o.to.trim().to_owned(),
        sip_code: sip.code.map(i64::from),
        reason_phrase: sip.reason_phrase,
        reason_header: sip.reason_header,
        retry_after_header: sip.retry_after_header,
        raw_sip_response: (!o.raw_sip_response.is_empty()).then(|| o.raw_sip_response.clone()),
        provider,
        started_at,
        ended_at,
        labels: o
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        delivery: None,
    };
    if v.is_empty() {
        return Ok(outcome);
    }
    // Every violation is listed: what the classifier's R0 would refuse too (a 1xx code,
    // a code out of range, a raw message that is not a response), so that a caller fixes
    // everything in one round trip.
    if let Err(e) = crate::classify::classify_outcome(&outcome) {
        v.push(FieldViolation::new(
            format!("outcome.{}", e.field()),
            e.to_string(),
        ));
    }
    Err(v)
}

fn optional_header(v: &mut Vec<FieldViolation>, field: &str, value: &mut String, max: usize) {
    if value.len() > max {
        v.push(FieldViolation::new(
            field,
            format!("longer than {max} bytes"),
        ));
    } else if value.chars().any(|c| c.is_control() && c != '\t') {
        tracing::debug!(
            field,
            "malformed optional header ignored (control character)"
        );
        value.clear();
    }
}

/// Header lines of a raw SIP response: the lines after the status line, up to the
/// first empty one (the body is not counted).
fn raw_sip_headers(raw: &[u8]) -> usize {
    raw.split(|&b| b == b'\n')
        .skip(1)
        .take_while(|line| !matches!(line, [] | [b'\r']))
        .count()
}

fn text(v: &mut Vec<FieldViolation>, field: &str, value: &str, max: usize) {
    if value.len() > max {
        v.push(FieldViolation::new(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        v.push(FieldViolation::new(field, "contains control characters"));
    }
}

fn time(
    v: &mut Vec<FieldViolation>,
    field: &str,
    ts: Option<&prost_types::Timestamp>,
    now: SystemTime,
) -> Option<SystemTime> {
    let ts = ts?;
    let Some(t) = system_time(ts) else {
        v.push(FieldViolation::new(field, "is not a valid timestamp"));
        return None;
    };
    if t < UNIX_EPOCH + EARLIEST {
        v.push(FieldViolation::new(field, "is before 2000-01-01"));
        return None;
    }
    if t > now + FUTURE_SKEW {
        v.push(FieldViolation::new(
            field,
            "is more than a day in the future",
        ));
        return None;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::CallOutcome {
        pb::CallOutcome {
            call_id: "c-1".into(),
            to: "+15550104477".into(),
            sip: Some(pb::SipResponse {
                code: Some(603),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn fields(r: Result<Outcome, Vec<FieldViolation>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn a_valid_outcome_converts() {
        let o = outcome(
            Some(&valid()),
            Purpose::Report,
            &RequestLimits::default(),
            SystemTime::now(),
        )
        .expect("valid");
        assert_eq!(o.sip_code, Some(603));
        assert_eq!(o.attempt, None);
    }

    #[test]
    fn report_requires_call_id_and_destination_but_classify_does_not() {
        let o = pb::CallOutcome {
            sip: Some(pb::SipResponse {
                code: Some(486),
                ..Default::default()
            }),
            ..Default::default()
        };
        let limits = RequestLimits::default();
        assert_eq!(
            fields(outcome(
                Some(&o),
                Purpose::Report,
                &limits,
                SystemTime::now()
            )),
            ["outcome.call_id", "outcome.to"]
        );
        assert!(outcome(Some(&o), Purpose::Classify, &limits, SystemTime::now()).is_ok());
        assert_eq!(
            fields(outcome(None, Purpose::Classify, &limits, SystemTime::now())),
            ["outcome"]
        );
    }

    #[test]
    fn every_violation_is_listed() {
        let mut o = valid();
        o.call_id = "x".repeat(300);
        o.labels = (0..40).map(|i| (format!("k{i}"), "v".into())).collect();
        o.started_at = Some(prost_types::Timestamp {
            seconds: 10,
            nanos: 0,
        });
        o.ended_at = Some(prost_types::Timestamp {
            seconds: 4_000_000_000,
            nanos: 0,
        });
        o.attempt = 1_000_000;
        let got = fields(outcome(
            Some(&o),
            Purpose::Report,
            &RequestLimits::default(),
            SystemTime::now(),
        ));
        for f in [
            "outcome.call_id",
            "outcome.labels",
            "outcome.started_at",
            "outcome.ended_at",
            "outcome.attempt",
        ] {
            assert!(got.iter().any(|g| g == f), "{f} missing from {got:?}");
        }
    }

    #[test]
    fn raw_sip_header_lines_are_capped() {
        assert_eq!(raw_sip_headers(b""), 0);
        assert_eq!(
            raw_sip_headers(b"SIP/2.0 486 Busy\r\nA: 1\r\nB: 2\r\n\r\nC: body"),
            2
        );
        assert_eq!(raw_sip_headers(b"SIP/2.0 486 Busy\nA: 1\n B: folded\n"), 2);
        let limits = RequestLimits {
            max_raw_sip_headers: 3,
            ..RequestLimits::default()
        };
        let mut o = valid();
        o.raw_sip_response = b"SIP/2.0 603 Decline\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n".to_vec();
        assert!(outcome(Some(&o), Purpose::Report, &limits, SystemTime::now()).is_ok());
        o.raw_sip_response = b"SIP/2.0 603 Decline\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n".to_vec();
        assert_eq!(
            fields(outcome(
                Some(&o),
                Purpose::Report,
                &limits,
                SystemTime::now()
            )),
            ["outcome.raw_sip_response"]
        );
    }

    #[test]
    fn end_before_start_is_rejected() {
        let mut o = valid();
        o.started_at = Some(prost_types::Timestamp {
            seconds: 1_700_000_100,
            nanos: 0,
        });
        o.ended_at = Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        });
        assert_eq!(
            fields(outcome(
                Some(&o),
                Purpose::Report,
                &RequestLimits::default(),
                SystemTime::now()
            )),
            ["outcome.ended_at"]
        );
    }

    #[test]
    fn tenant_names_are_restricted() {
        // The rule is the domain's (`Tenant::parse`), at the edge's default limit.
        let max = RequestLimits::default().max_tenant_bytes;
        let v: Vec<_> = ["acme-1.eu_west", "acme/../x", &"a".repeat(65)]
            .into_iter()
            .filter_map(|name| crate::domain::Tenant::parse(name, max).err())
            .collect();
        assert_eq!(v.len(), 2);
        assert!(crate::domain::Tenant::parse("acme-1.eu_west", max).is_ok());
    }
}
