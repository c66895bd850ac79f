//! History and idempotency: what the service remembers between reports.
//!
//! Owns the [`Store`] trait and its backends. The embedded [`memory::MemoryStore`] is the
//! default (one replica, zero setup); a NATS JetStream KV backend implements the same
//! trait for several replicas. This module knows nothing of gRPC, classification rules
//! or policy: it keeps data and answers questions about it.
//!
//! Contract of a report, as driven by the report pipeline (`tests/backend_contract.rs`
//! checks it against both backends):
//! 1. [`Store::claim`] the report key `(tenant, call_id, attempt)`. A key completed before
//!    returns [`Claim::Done`] with the first result (the report is a duplicate). A key
//!    claimed by a report still in flight makes the second caller wait for the first.
//! 2. [`Store::record`] appends the outcome to the destination's history and returns the
//!    snapshot that includes it. Recording is idempotent on `(call_id, attempt)`: a
//!    retried report replaces its own entry rather than counting twice.
//! 3. [`Store::complete`] stores the result under the key; [`Store::abandon`] releases
//!    the key when the report failed, so that a retry can proceed.

pub mod memory;
pub mod nats;

use crate::domain::Classification;
use crate::domain::Decision;
use crate::domain::{HistoryEntry, HistorySnapshot};
use crate::step::Step;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Nanoseconds since the epoch, how both backends keep a history entry's instant: exact
/// from 1970 to 2554; earlier instants read as the epoch (always outside any window)
/// and later ones as 2554.
pub(crate) fn to_nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The instant [`to_nanos`] kept.
pub(crate) fn from_nanos(nanos: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// The idempotency key of a report. `attempt` is 0 when the caller did not send one.
///
/// A report that came as a provider callback carries the provider's delivery id: the
/// key is then `(tenant, delivery)`, and `call_id` and `attempt` only say whose history
/// the outcome joins.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReportKey {
    pub tenant: String,
    pub call_id: String,
    pub attempt: u32,
    #[serde(default)]
    pub delivery: Option<String>,
}

/// The result of a report, kept so that a duplicate gets the first response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReport {
    /// Shared with the event of the report (one copy in memory for both).
    pub classification: Arc<Classification>,
    pub decision: Arc<Decision>,
    pub event_id: String,
    pub destination: String,
    pub recorded_at: SystemTime,
}

/// The answer to [`Store::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours: go on with the report.
    New,
    /// The key was completed before: this report is a duplicate.
    Done(Arc<StoredReport>),
}

/// Errors of a store backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached; nothing was stored.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A report with the same key is still in flight and did not finish in time.
    #[error("a report with the same key is still in progress")]
    InProgress,
    /// The backend answered with an error.
    #[error("store backend error: {0}")]
    Backend(String),
}

/// Bounds of the embedded store. Every map is bounded by capacity and age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreLimits {
    /// How far back a destination's history reaches.
    #[serde(with = "humantime_serde")]
    pub history_window: Duration,
    /// Most outcomes kept per destination (oldest dropped first).
    pub max_entries_per_destination: usize,
    /// Most destinations tracked (least recently used dropped first).
    pub max_destinations: u64,
    /// How long a report key is remembered for duplicate detection.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// Most report keys remembered.
    pub max_report_keys: u64,
    /// How long a duplicate waits for the first report still in flight (then
    /// `ABORTED`). Below `server.request_timeout`, so that clients see the documented
    /// code; a first report's marker older than 3 × this is taken over (its replica died).
    #[serde(with = "humantime_serde")]
    pub in_flight_wait: Duration,
    /// Embedded backend: keep completed keys' results compressed (several times fewer
    /// bytes, for some CPU on every report). Off trades memory for throughput.
    pub compact_results: bool,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            history_window: Duration::from_secs(24 * 3600),
            max_entries_per_destination: 64,
            max_destinations: 1_000_000,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            max_report_keys: 250_000,
            in_flight_wait: Duration::from_secs(4),
            compact_results: true,
        }
    }
}

/// History and idempotency backend.
///
/// The operations a report runs through return a [`Step`]: an in-process backend answers
/// at once (nothing allocated, nothing suspended), a networked one with a future. The
/// pipeline awaits them the same way; see [`crate::step`].
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Claims `key` for a new report, or returns the stored result of an earlier one.
    /// A report with the same key in flight is waited for (at most
    /// `in_flight_wait`, then [`StoreError::InProgress`]).
    fn claim<'a>(&'a self, key: &'a ReportKey) -> Step<'a, Result<Claim, StoreError>>;

    /// Releases a claim whose report failed.
    fn abandon<'a>(&'a self, key: &'a ReportKey) -> Step<'a, ()>;

    /// Stores the result of a claimed report. The first result wins: a report retried
    /// after its lease ran out does not change what duplicates of the first are told.
    fn complete<'a>(
        &'a self,
        key: &'a ReportKey,
        report: &'a Arc<StoredReport>,
    ) -> Step<'a, Result<(), StoreError>>;

    /// Appends `entry`, the outcome of report `call_id`, to the history of
    /// `(tenant, destination)` and returns the snapshot that includes it (oldest first,
    /// inside the window counted back from now). An entry with the same call id and
    /// attempt is replaced.
    fn record<'a>(
        &'a self,
        tenant: &'a str,
        destination: &'a str,
        call_id: &'a str,
        entry: HistoryEntry,
    ) -> Step<'a, Result<HistorySnapshot, StoreError>>;

    /// The history of `(tenant, destination)` inside the window counted back from `now`,
    /// oldest first.
    fn history<'a>(
        &'a self,
        tenant: &'a str,
        destination: &'a str,
        now: SystemTime,
    ) -> Step<'a, Result<HistorySnapshot, StoreError>>;

    /// True for a backend in this process, whose steps are all answered at once (once
    /// a claim is won): the pipeline then runs a report inline instead of in a task.
    fn in_process(&self) -> bool {
        false
    }

    /// Why the backend cannot serve requests now (readiness), or `None` when it can.
    async fn not_ready(&self) -> Option<String> {
        None
    }
}
