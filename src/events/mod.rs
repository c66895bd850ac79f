//! The outcome event log: every recorded outcome becomes an event, and subscribers read
//! the log from a position they choose.
//!
//! Owns the [`EventLog`] trait, resume tokens, subscription filters and the delivery
//! vocabulary (event, gap, heartbeat). The embedded [`memory::MemoryEventLog`] keeps a
//! bounded in-process log (one replica); a NATS JetStream backend implements the same
//! trait for several replicas. This module knows nothing of gRPC or of the rules that
//! produced a classification or decision.
//!
//! # Delivery contract
//! - Each tenant's events are numbered 1, 2, 3… on their own (per-tenant positions):
//!   a subscriber learns nothing of another tenant's volume.
//! - Events arrive in log order, each at most once per subscription, and with no gap
//!   while the subscriber keeps up with retention.
//! - Publishing never waits for a subscriber: subscribers *pull* from the shared log and
//!   hold only their position, so a subscriber that stops reading costs nothing but its
//!   position, and delays no one.
//! - Whatever a subscriber cannot get is signalled, never skipped silently: a
//!   [`Delivery::Gap`] names the sequences lost and why ([`GapReason::Evicted`] when its
//!   position fell out of retention, [`GapReason::EpochChanged`] when its token came from
//!   another incarnation of the log), then delivery continues from the oldest retained
//!   event.
//! - Heartbeats carry the current position even when filters let nothing through, so an
//!   idle subscriber resumes cheaply.

pub mod memory;
pub mod nats;

use crate::domain::Decision;
use crate::domain::Outcome;
use crate::domain::{Category, Classification};
use crate::step::Step;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio_stream::Stream;

/// An outcome to append to the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Globally unique, time-ordered id (UUIDv7).
    pub event_id: String,
    pub tenant: String,
    /// Normalised destination key.
    pub destination: String,
    pub outcome: Outcome,
    /// Shared with the stored report (one copy in memory for both).
    pub classification: Arc<Classification>,
    pub decision: Arc<Decision>,
    pub recorded_at: SystemTime,
}

/// An event as stored in the log, with its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Position in its tenant's log: starts at 1, increases by 1 per event of the tenant.
    pub sequence: u64,
    #[serde(flatten)]
    pub event: NewEvent,
}

/// Where a published event landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    /// The log already held this report's event (a retry that took over a report whose
    /// first attempt published, then died): that event, which subscribers get, and not
    /// the one offered. `None` when the offered event was appended.
    pub existing: Option<Arc<RecordedEvent>>,
}

/// A subscriber's place in its tenant's log: the log's incarnation and the last sequence
/// it has seen (delivered or passed over by its filter). Sequence 0 means "before the
/// first". Positions are per tenant, so that nothing a subscriber sees (sequences,
/// tokens, gaps) counts another tenant's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub epoch: u64,
    pub sequence: u64,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Only events published after the subscription starts.
    New,
    /// The oldest retained event.
    Oldest,
    /// Right after this position (from a resume token).
    After(Position),
}

/// Which events a subscriber wants. Empty lists match everything, except `categories`,
/// which defaults to the decline events (`declined`, `rejected_unwanted`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub categories: Vec<Category>,
    pub sip_codes: Vec<u16>,
    /// Normalised destination keys.
    pub destinations: Vec<String>,
    /// Label pairs that must all be present.
    pub labels: BTreeMap<String, String>,
}

impl Filter {
    /// The part of [`Filter::matches`] that reads only the category and the SIP code,
    /// so that a log can skip an event without decoding it.
    pub fn may_match(&self, category: Category, sip_code: Option<u16>) -> bool {
        let category_ok = if self.categories.is_empty() {
            category.is_decline()
        } else {
            self.categories.contains(&category)
        };
        category_ok
            && (self.sip_codes.is_empty() || sip_code.is_some_and(|c| self.sip_codes.contains(&c)))
    }

    pub fn matches(&self, event: &NewEvent) -> bool {
        self.may_match(event.classification.category, event.classification.sip_code)
            && (self.destinations.is_empty() || self.destinations.contains(&event.destination))
            && self
                .labels
                .iter()
                .all(|(k, v)| event.outcome.labels.get(k) == Some(v))
    }
}

/// What a subscription asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRequest {
    pub tenant: String,
    pub filter: Filter,
    pub start: Start,
    /// Interval of heartbeats while no event is delivered.
    pub heartbeat: Duration,
}

/// Why events were not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The subscriber's position fell behind retention.
    Evicted,
    /// The token came from another incarnation of the log.
    EpochChanged,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Evicted => "evicted",
            GapReason::EpochChanged => "epoch_changed",
        }
    }
}

/// One item of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// An event that matched the filter; `position` is right after it.
    Event {
        event: Arc<RecordedEvent>,
        position: Position,
    },
    /// Events `first..=last` will not be delivered (`first > last` when the lost range is
    /// unknown, as after an epoch change). Delivery continues after `position`.
    Gap {
        first: u64,
        last: u64,
        reason: GapReason,
        position: Position,
    },
    /// Nothing new; the current position.
    Heartbeat { position: Position },
}

impl Delivery {
    pub fn position(&self) -> Position {
        match self {
            Delivery::Event { position, .. }
            | Delivery::Gap { position, .. }
            | Delivery::Heartbeat { position } => *position,
        }
    }
}

/// A subscription's items, ending when the log closes.
pub type Subscription = Pin<Box<dyn Stream<Item = Result<Delivery, EventError>> + Send>>;

/// Errors of an event backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The backend cannot be reached; the event was not stored.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error.
    #[error("event log error: {0}")]
    Backend(String),
    /// A resume token names a position this tenant's log has not reached.
    #[error("the resume token names sequence {sequence}, beyond the tenant's last ({last})")]
    TokenFromTheFuture { sequence: u64, last: u64 },
}

/// Counters of the log, read by metrics.
#[derive(Debug, Default)]
pub struct EventCounters {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub gaps: AtomicU64,
    /// Events lost to subscribers through gaps (sum of gap sizes, when known).
    pub skipped: AtomicU64,
    pub heartbeats: AtomicU64,
}

impl EventCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The event log backend.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends an event. Returns only once the event is stored: a report is
    /// acknowledged to its caller after this succeeds, never before.
    ///
    /// A [`Step`]: an in-process log answers at once, a networked one with a future.
    fn publish(&self, event: NewEvent) -> Step<'_, Result<Published, EventError>>;

    /// Subscribes to the events of `request.tenant` that match its filter.
    async fn subscribe(&self, request: SubscriptionRequest) -> Result<Subscription, EventError>;

    /// The position of `tenant`'s newest event (what `Start::New` starts after).
    async fn head(&self, tenant: &str) -> Result<Position, EventError>;

    /// Counters for metrics.
    fn counters(&self) -> &EventCounters;

    /// True for a log in this process, whose `publish` is answered at once.
    fn in_process(&self) -> bool {
        false
    }

    /// Why the backend cannot serve requests now (readiness), or `None` when it can.
    async fn not_ready(&self) -> Option<String> {
        None
    }
}

/// Why a resume token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the resume token is malformed")]
    Malformed,
    #[error("the resume token belongs to another tenant")]
    OtherTenant,
}

/// Opaque resume tokens: URL-safe base64 of `v1:<epoch>:<sequence>:<tenant fingerprint>`.
/// The fingerprint binds a token to its tenant; it is not a secret (authorisation is
/// checked separately), it only stops a token from being replayed in another tenant.
pub mod token {
    use super::{Position, TokenError};
    use base64::Engine;

    const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn fingerprint(tenant: &str) -> u32 {
        // FNV-1a, 32 bits.
        tenant.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
    }

    pub fn encode(tenant: &str, position: Position) -> String {
        ENGINE.encode(format!(
            "v1:{:x}:{}:{:08x}",
            position.epoch,
            position.sequence,
            fingerprint(tenant)
        ))
    }

    pub fn decode(tenant: &str, token: &str) -> Result<Position, TokenError> {
        if token.len() > 128 {
            return Err(TokenError::Malformed);
        }
        let bytes = ENGINE.decode(token).map_err(|_| TokenError::Malformed)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| TokenError::Malformed)?;
        let mut parts = text.split(':');
        let (Some("v1"), Some(epoch), Some(sequence), Some(fp), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let epoch = u64::from_str_radix(epoch, 16).map_err(|_| TokenError::Malformed)?;
        let sequence = sequence.parse().map_err(|_| TokenError::Malformed)?;
        let fp = u32::from_str_radix(fp, 16).map_err(|_| TokenError::Malformed)?;
        if fp != fingerprint(tenant) {
            return Err(TokenError::OtherTenant);
        }
        Ok(Position { epoch, sequence })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn tokens_round_trip_and_are_bound_to_their_tenant() {
            let p = Position {
                epoch: 0xdead_beef,
                sequence: 42,
            };
            let t = encode("acme", p);
            assert_eq!(decode("acme", &t), Ok(p));
            assert_eq!(decode("globex", &t), Err(TokenError::OtherTenant));
            assert_eq!(decode("acme", "not a token!"), Err(TokenError::Malformed));
            assert_eq!(decode("acme", ""), Err(TokenError::Malformed));
            let forged = ENGINE.encode("v1:1:2:3:4");
            assert_eq!(decode("acme", &forged), Err(TokenError::Malformed));
        }
    }
}
