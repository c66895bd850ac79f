//! The domain form of a reported outcome and of a destination's recent history.
//!
//! These types are shared by classification, policy, store and events. They carry no
//! tonic or protobuf types: the edges convert to and from their wire formats.

use super::Category;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// A validated call outcome report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub call_id: String,
    /// 1-based attempt number; `None` when the caller did not send one.
    pub attempt: Option<u32>,
    pub from: String,
    pub to: String,
    pub sip_code: Option<i64>,
    pub reason_phrase: String,
    pub reason_header: String,
    pub retry_after_header: String,
    pub raw_sip_response: Option<Vec<u8>>,
    /// Provider name and cause, when sent.
    pub provider: Option<(String, String)>,
    pub started_at: Option<SystemTime>,
    pub ended_at: Option<SystemTime>,
    pub labels: BTreeMap<String, String>,
    /// The provider's own id of the callback that carried this outcome (a webhook's
    /// idempotency key, e.g. Telnyx `data.id` or Twilio `CallSid/SequenceNumber`).
    /// When set, it and not `(call_id, attempt)` tells a redelivery from a new report:
    /// two terminal statuses of one call are two outcomes. Always serialised (the memory
    /// log's postcard has no field names to skip by); `default` reads events written
    /// before it existed.
    #[serde(default)]
    pub delivery: Option<String>,
}

/// One remembered outcome of a destination. The store also keeps which report it came
/// from (to recognise a retried report), but the policy never needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: SystemTime,
    pub attempt: u32,
    pub category: Category,
    pub sip_code: Option<u16>,
}

/// What the store knows about a destination when a decision is made: its recent
/// outcomes inside the history window, oldest first. For a report, the current outcome
/// is the last entry; for a classification (which records nothing) it is not included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistorySnapshot {
    /// Normalised destination key (E.164 when the number parses, else the raw value).
    pub destination: String,
    pub entries: Vec<HistoryEntry>,
}

impl HistorySnapshot {
    /// Outcomes in `categories` at or after `since`.
    pub fn count_since(&self, categories: &[Category], since: SystemTime) -> usize {
        self.entries
            .iter()
            .filter(|e| {
                e.at >= since && (categories.is_empty() || categories.contains(&e.category))
            })
            .count()
    }

    /// Unanswered attempts since the last answered outcome (the current run of tries).
    pub fn consecutive_unanswered(&self) -> usize {
        self.entries
            .iter()
            .rev()
            .take_while(|e| e.category != Category::Answered)
            .count()
    }
}
