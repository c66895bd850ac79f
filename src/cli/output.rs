//! How the CLI prints results: one JSON object (lower-case reference vocabulary) or a
//! readable explanation for people at a terminal.

use crate::domain::Classification;
use crate::domain::Decision;
use serde_json::{Value, json};
use std::fmt::Write;

/// What a report adds to a classification.
#[derive(Debug, Clone)]
pub struct ReportInfo {
    pub event_id: String,
    pub duplicate: bool,
    pub destination: String,
}

pub fn print_json(value: &Value) {
    println!("{value}");
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The JSON shape of a classification and decision (and report details).
pub fn result_json(c: &Classification, d: &Decision, report: Option<&ReportInfo>) -> Value {
    let mut value = json!({
        "category": c.category.as_str(),
        "fault": c.fault.as_str(),
        "retryable": c.retryable.as_str(),
        "retry_after_seconds": c.retry_after.map(|r| r.seconds),
        "retry_after_scope": c.retry_after.map(|r| r.scope.as_str()),
        "sip_code": c.sip_code,
        "reported_sip_code": c.reported_sip_code,
        "sip_phrase": c.sip_phrase,
        "q850_cause": c.q850_cause,
        "q850_source": c.q850_source.map(|s| s.as_str()),
        "q850_location": c.q850_location,
        "reason_text": c.reason_text,
        "summary": c.summary,
        "basis": c.basis.as_str(),
        "override": c.override_name.as_deref(),
        "decision": {
            "action": d.action.as_str(),
            "notify_user": d.notify_user,
            "user_message": d.user_message,
            "alternatives": d.alternatives.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            "retry": d.retry.as_ref().map(|r| json!({
                "not_before": rfc3339(r.not_before),
                "delay_seconds": r.delay_seconds,
                "next_attempt": r.next_attempt,
                "max_attempts": r.max_attempts,
                "honours_retry_after": r.honours_retry_after,
            })),
            "avoid_route_seconds": d.avoid_route_seconds,
            "alert_operator": d.alert_operator,
            "suppressed": d.suppressed,
            "rule": d.rule,
            "policy_version": &*d.policy_version,
            "explanation": d.explanation,
            "attempt": d.attempt,
        },
    });
    if let (Some(r), Some(map)) = (report, value.as_object_mut()) {
        map.insert("event_id".into(), json!(r.event_id));
        map.insert("duplicate".into(), json!(r.duplicate));
        map.insert("destination".into(), json!(r.destination));
    }
    value
}

/// A readable explanation, several lines, ending with a newline.
pub fn explain(c: &Classification, d: &Decision) -> String {
    let mut out = String::new();
    let code = match (c.sip_code, c.reported_sip_code) {
        (Some(code), Some(reported)) if code != reported => {
            format!(
                "SIP {reported} (unregistered; treated as {code} {})",
                c.sip_phrase
            )
        }
        (Some(code), _) => format!("SIP {code} {}", c.sip_phrase),
        (None, _) => "no SIP code".to_owned(),
    };
    let _ = writeln!(out, "{code} → {}", c.category);
    let _ = writeln!(out, "  {}", c.summary);
    let _ = writeln!(out, "  fault:        {}", c.fault);
    let _ = writeln!(out, "  retryable:    {}", c.retryable);
    if let Some(ra) = c.retry_after {
        let _ = writeln!(out, "  retry-after:  {} s ({} scope)", ra.seconds, ra.scope);
    }
    if let Some(cause) = c.q850_cause {
        let source = c.q850_source.map_or("", |s| s.as_str());
        let location = c
            .q850_location
            .as_deref()
            .map(|l| format!(", location {l}"))
            .unwrap_or_default();
        let _ = writeln!(out, "  Q.850 cause:  {cause} (from {source}{location})");
    }
    if let Some(text) = &c.reason_text {
        let _ = writeln!(out, "  reason text:  {text}");
    }
    match &c.override_name {
        Some(name) => {
            let _ = writeln!(out, "  decided by:   override `{name}`");
        }
        None => {
            let _ = writeln!(out, "  decided by:   {}", c.basis);
        }
    }
    let _ = writeln!(out, "Decision (rule \"{}\"): {}", d.rule, d.action);
    let _ = writeln!(out, "  {}", d.explanation);
    if d.notify_user {
        let _ = writeln!(out, "  tell the user: {}", d.user_message);
    }
    if !d.alternatives.is_empty() {
        let list: Vec<&str> = d.alternatives.iter().map(|a| a.as_str()).collect();
        let _ = writeln!(out, "  suggest:      {}", list.join(", "));
    }
    if let Some(r) = &d.retry {
        let _ = writeln!(
            out,
            "  retry:        attempt {} of {} not before {} (in {} s{})",
            r.next_attempt,
            r.max_attempts,
            rfc3339(r.not_before),
            r.delay_seconds,
            if r.honours_retry_after {
                ", as Retry-After asks"
            } else {
                ""
            }
        );
    }
    if d.avoid_route_seconds > 0 {
        let _ = writeln!(out, "  avoid route:  {} s", d.avoid_route_seconds);
    }
    if d.alert_operator {
        let _ = writeln!(out, "  alert an operator");
    }
    if d.suppressed {
        let _ = writeln!(out, "  destination suppressed by its recent history");
    }
    out
}
