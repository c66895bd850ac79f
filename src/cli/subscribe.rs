//! `call-outcome subscribe`: prints one JSON line per event, reconnects with its last
//! resume token when the connection drops, and says so on standard error when a gap is
//! signalled.

use super::CliError;
use super::output::result_json;
use crate::api::convert::system_time;
use crate::domain::Decision;
use crate::domain::{Category, Classification};
use crate::proto as pb;
use clap::Args;
use serde_json::json;
use std::time::Duration;
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub connect: super::ConnectArgs,
    /// Categories to receive (comma-separated) [default: declined,rejected_unwanted].
    #[arg(long, value_delimiter = ',', conflicts_with = "all_categories")]
    pub categories: Vec<Category>,
    /// Receive every category (the whole log, e.g. for `policy diff`).
    #[arg(long)]
    pub all_categories: bool,
    /// Only these effective SIP codes (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sip_codes: Vec<i32>,
    /// Only these destinations (repeatable).
    #[arg(long = "destination")]
    pub destinations: Vec<String>,
    /// Only events with this label, as key=value (repeatable; all must match).
    #[arg(long = "label", value_parser = super::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Tenant [default: the server's default tenant, or the token's].
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Resume right after the event this token names.
    #[arg(long, conflicts_with = "from_oldest")]
    pub from_token: Option<String>,
    /// Start from the oldest retained event (default: new events only).
    #[arg(long)]
    pub from_oldest: bool,
    /// Exit after this many events (default: run until interrupted).
    #[arg(long)]
    pub max_events: Option<u64>,
    /// Print heartbeats as JSON lines too.
    #[arg(long)]
    pub heartbeats: bool,
    /// One JSON line per event: what `subscribe` always prints; accepted like the other
    /// commands' `--json`, so scripts can pass it to every command.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub token: super::TokenArgs,
}

/// Whether a failed stream is worth reconnecting.
fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
    )
}

pub async fn run(args: SubscribeArgs) -> Result<(), CliError> {
    // TLS files are read once: a bad flag fails now instead of being retried.
    let endpoint = args.connect.endpoint()?;
    let mut token = args.from_token.clone().unwrap_or_default();
    let mut delivered = 0_u64;
    let mut backoff = Duration::from_millis(100);
    loop {
        let request = pb::SubscribeOutcomesRequest {
            tenant: args.tenant.clone(),
            categories: if args.all_categories {
                Category::ALL.iter().map(|c| i32::from(*c)).collect()
            } else {
                args.categories.iter().map(|c| i32::from(*c)).collect()
            },
            sip_codes: args.sip_codes.clone(),
            destinations: args.destinations.clone(),
            labels: args.labels.iter().cloned().collect(),
            start: if args.from_oldest {
                pb::StartPosition::Oldest as i32
            } else {
                pb::StartPosition::New as i32
            },
            resume_token: token.clone(),
        };
        let failure = match args.connect.connect_to(&endpoint).await {
            Err(e) => e.to_string(),
            Ok(mut client) => match client
                .subscribe_outcomes(args.token.authorize(request)?)
                .await
            {
                Err(status) if !retryable(status.code()) => {
                    return Err(super::status_error(status));
                }
                Err(status) => format!("{:?}: {}", status.code(), status.message()),
                Ok(response) => {
                    backoff = Duration::from_millis(100);
                    let mut stream = response.into_inner();
                    loop {
                        match stream.next().await {
                            None => break "the server ended the stream".to_owned(),
                            Some(Err(status)) => {
                                if let Some(t) = status
                                    .metadata()
                                    .get(crate::api::subscribe::RESUME_TOKEN_METADATA)
                                    .and_then(|v| v.to_str().ok())
                                {
                                    token = t.to_owned();
                                }
                                if !retryable(status.code()) {
                                    return Err(super::status_error(status));
                                }
                                break format!("{:?}: {}", status.code(), status.message());
                            }
                            Some(Ok(message)) => {
                                use pb::subscribe_outcomes_response::Kind;
                                match message.kind {
                                    Some(Kind::Event(event)) => {
                                        token = event.resume_token.clone();
                                        println!("{}", event_json(&event));
                                        delivered += 1;
                                        if args.max_events.is_some_and(|max| delivered >= max) {
                                            return Ok(());
                                        }
                                    }
                                    Some(Kind::Heartbeat(h)) => {
                                        token = h.resume_token.clone();
                                        if args.heartbeats {
                                            println!(
                                                "{}",
                                                json!({"heartbeat": {"resume_token": h.resume_token}})
                                            );
                                        }
                                    }
                                    Some(Kind::Gap(gap)) => {
                                        token = gap.resume_token.clone();
                                        let reason = gap_reason(&gap);
                                        if gap.first_sequence <= gap.last_sequence {
                                            eprintln!(
                                                "gap: events {}..={} were not delivered ({}); continuing",
                                                gap.first_sequence, gap.last_sequence, reason
                                            );
                                        } else {
                                            eprintln!(
                                                "gap: events after sequence {} were not delivered ({}); continuing from the oldest retained event",
                                                gap.first_sequence.saturating_sub(1),
                                                reason
                                            );
                                        }
                                    }
                                    None => {}
                                }
                            }
                        }
                    }
                }
            },
        };
        eprintln!(
            "connection lost ({failure}); reconnecting in {} ms{}",
            backoff.as_millis(),
            if token.is_empty() {
                String::new()
            } else {
                " with the last resume token".to_owned()
            }
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn event_json(e: &pb::OutcomeEvent) -> serde_json::Value {
    let classification = e.classification.as_ref().map(Classification::from);
    let decision = e.decision.as_ref().map(Decision::from);
    let mut value = match (&classification, &decision) {
        (Some(c), Some(d)) => result_json(c, d, None),
        _ => json!({}),
    };
    let outcome = e.outcome.clone().unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("event_id".into(), json!(e.event_id));
        map.insert("sequence".into(), json!(e.sequence));
        map.insert("resume_token".into(), json!(e.resume_token));
        map.insert("tenant".into(), json!(e.tenant));
        map.insert("destination".into(), json!(e.destination));
        map.insert(
            "recorded_at".into(),
            json!(
                e.recorded_at
                    .as_ref()
                    .and_then(system_time)
                    .map(|t| humantime::format_rfc3339_millis(t).to_string())
            ),
        );
        // Everything classification reads, so that `policy diff` can replay the line.
        let sip = outcome.sip.clone().unwrap_or_default();
        let provider = outcome.provider.clone().unwrap_or_default();
        let time = |t: &Option<prost_types::Timestamp>| {
            t.as_ref()
                .and_then(system_time)
                .map(|t| humantime::format_rfc3339_millis(t).to_string())
        };
        map.insert(
            "outcome".into(),
            json!({
                "call_id": outcome.call_id,
                "attempt": outcome.attempt,
                "from": outcome.from,
                "to": outcome.to,
                "sip_code": sip.code,
                "reason_phrase": sip.reason_phrase,
                "reason_header": sip.reason_header,
                "retry_after_header": sip.retry_after_header,
                "raw_sip_response": (!outcome.raw_sip_response.is_empty())
                    .then(|| String::from_utf8_lossy(&outcome.raw_sip_response).into_owned()),
                "provider": provider.name,
                "provider_cause": provider.cause,
                "started_at": time(&outcome.started_at),
                "ended_at": time(&outcome.ended_at),
                "labels": outcome.labels,
            }),
        );
    }
    value
}

/// Why a gap happened, from `reason_code`, or from the text of a server that predates it.
fn gap_reason(gap: &pb::Gap) -> &str {
    match gap.reason_code() {
        pb::GapReason::Evicted => "evicted",
        pb::GapReason::EpochChanged => "epoch_changed",
        #[allow(deprecated)]
        pb::GapReason::Unspecified => &gap.reason,
    }
}
