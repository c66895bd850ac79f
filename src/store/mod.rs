//! History and idempotency: what the service remembers between reports.
//!
//! Owns the [`Store`] trait and its backends. The embedded [`memory::MemoryStore`] is the
//! default (one replica, zero setup); a NATS JetStream KV backend implements the same
//! trait for several replicas. This module knows nothing of gRPC, classification rules
//! or policy: it keeps data and answers questions about it.
//!
//! Contract of a report, as driven by the report pipeline:
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
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The idempotency key of a report. `attempt` is 0 when the caller did not send one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReportKey {
    pub tenant: String,
    pub call_id: String,
    pub attempt: u32,
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
    /// How long a duplicate waits for the first report still in flight.
    #[serde(with = "humantime_serde")]
    pub in_flight_wait: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            history_window: Duration::from_secs(24 * 3600),
            max_entries_per_destination: 64,
            max_destinations: 1_000_000,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            max_report_keys: 250_000,
            in_flight_wait: Duration::from_secs(10),
        }
    }
}

/// History and idempotency backend.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Claims `key` for a new report, or returns the stored result of an earlier one.
    async fn claim(&self, key: &ReportKey) -> Result<Claim, StoreError>;

    /// Releases a claim whose report failed.
    async fn abandon(&self, key: &ReportKey);

    /// Stores the result of a claimed report.
    async fn complete(&self, key: &ReportKey, report: &Arc<StoredReport>)
    -> Result<(), StoreError>;

    /// Appends `entry`, the outcome of report `call_id`, to the history of
    /// `(tenant, destination)` and returns the snapshot that includes it (oldest first,
    /// inside the window). An entry with the same call id and attempt is replaced.
    async fn record(
        &self,
        tenant: &str,
        destination: &str,
        call_id: &str,
        entry: HistoryEntry,
    ) -> Result<HistorySnapshot, StoreError>;

    /// The history of `(tenant, destination)` inside the window, oldest first.
    async fn history(&self, tenant: &str, destination: &str)
    -> Result<HistorySnapshot, StoreError>;

    /// The synchronous face of an in-process backend, whose operations never wait on
    /// anything but a short lock; `None` for a networked one.
    fn inline(&self) -> Option<&dyn InlineStore> {
        None
    }

    /// Whether the backend can serve requests (readiness).
    async fn ready(&self) -> bool {
        true
    }
}

/// What an inline claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InlineClaim {
    /// The key is now claimed for this report.
    New,
    /// An earlier report with this key completed: its result.
    Done(Arc<StoredReport>),
    /// Another report holds the key: wait for it with [`Store::claim`].
    Busy,
}

/// The operations of an in-process store as plain functions.
///
/// The pipeline runs a report through these without an `.await` between the claim and
/// the completion, so a dropped request cannot leave a report half done; and a report
/// then builds no future per step (each one was a boxed future and a copy of the
/// caller's state, which together cost more than the steps themselves).
pub trait InlineStore: Send + Sync {
    /// Claims `key` at `now` without waiting: [`InlineClaim::Busy`] when a report with
    /// the same key is in flight.
    fn try_claim(&self, key: &ReportKey, now: Instant) -> Result<InlineClaim, StoreError>;

    /// Releases a claim whose report failed.
    fn abandon_now(&self, key: &ReportKey);

    /// Stores the result of a claimed report ([`Store::complete`]).
    fn complete_now(
        &self,
        key: &ReportKey,
        report: &StoredReport,
        now: Instant,
    ) -> Result<(), StoreError>;

    /// [`Store::record`]; the window is counted back from `entry.at`.
    fn record_now(
        &self,
        tenant: &str,
        destination: &str,
        call_id: &str,
        entry: HistoryEntry,
    ) -> Result<HistorySnapshot, StoreError>;

    /// [`Store::history`]; the window is counted back from `now`.
    fn history_now(
        &self,
        tenant: &str,
        destination: &str,
        now: SystemTime,
    ) -> Result<HistorySnapshot, StoreError>;
}
