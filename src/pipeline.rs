//! The report pipeline: a validated outcome flows one way through
//! classify → store (idempotency + history) → policy → events → result.
//!
//! Owns the order of those steps and their failure handling, nothing else: the rules
//! live in `classify` and `policy`, the data in `store` and `events`, and the wire format
//! in `api`. No tonic types here.

use crate::classify::{self, Classification, ClassifyError};
use crate::events::{EventError, EventLog, NewEvent};
use crate::outcome::{HistoryEntry, HistorySnapshot, Outcome};
use crate::policy::{Decision, Policy, PolicyInput};
use crate::store::destination::normalize;
use crate::store::{Claim, ReportKey, Store, StoreError, StoredReport};
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{Instrument, debug_span};

/// Why a report or classification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// The outcome cannot be classified (R0); nothing was recorded.
    #[error(transparent)]
    Invalid(#[from] ClassifyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Events(#[from] EventError),
    /// The report task ended abnormally (a bug); nothing is acknowledged.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The result of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportResult {
    pub report: Arc<StoredReport>,
    /// True when the report repeats an earlier one; `report` is the first result.
    pub duplicate: bool,
}

/// The result of a classification (nothing recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifyResult {
    pub classification: Classification,
    pub decision: Decision,
    pub destination: String,
}

/// Runs reports and classifications against a store, an event log and a policy.
#[derive(Clone)]
pub struct Pipeline {
    store: Arc<dyn Store>,
    events: Arc<dyn EventLog>,
    policy: Arc<Policy>,
    default_region: Option<phonenumber::country::Id>,
    /// Both backends are in-process: reports run inline (see [`Pipeline::report`]).
    inline_reports: bool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("default_region", &self.default_region)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    pub fn new(
        store: Arc<dyn Store>,
        events: Arc<dyn EventLog>,
        policy: Arc<Policy>,
        default_region: Option<phonenumber::country::Id>,
    ) -> Self {
        let inline_reports = store.in_process() && events.in_process();
        Pipeline {
            store,
            events,
            policy,
            default_region,
            inline_reports,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn events(&self) -> &Arc<dyn EventLog> {
        &self.events
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The history key of a called party.
    pub fn destination(&self, to: &str) -> String {
        normalize(to, self.default_region)
    }

    /// Classifies an outcome and returns the decision the policy would take. Reads the
    /// destination's history (when `to` is set) but records nothing.
    pub async fn classify(
        &self,
        tenant: &str,
        outcome: &Outcome,
    ) -> Result<ClassifyResult, PipelineError> {
        let classification =
            debug_span!("classify").in_scope(|| classify::classify(&outcome.classify_input()))?;
        let destination = if outcome.to.is_empty() {
            String::new()
        } else {
            self.destination(&outcome.to)
        };
        let history = if destination.is_empty() {
            HistorySnapshot::default()
        } else {
            self.store
                .history(tenant, &destination)
                .instrument(debug_span!("store.history"))
                .await?
        };
        let decision = debug_span!("policy.decide").in_scope(|| {
            self.policy.decide(&PolicyInput {
                tenant,
                outcome,
                classification: &classification,
                history: &history,
                includes_current: false,
                now: SystemTime::now(),
                jitter_seed: jitter_seed(tenant, &outcome.call_id, outcome.attempt.unwrap_or(0)),
            })
        });
        Ok(ClassifyResult {
            classification,
            decision,
            destination,
        })
    }

    /// Records an outcome: idempotent on `(tenant, call_id, attempt)`.
    ///
    /// A client that goes away mid-report must not leave it half done (history recorded,
    /// event not published, key still claimed). With networked backends the work runs in
    /// its own task for that. With in-process backends it runs inline: their operations
    /// never suspend once the key is claimed, so a dropped request can only interrupt
    /// the claim's wait for a concurrent duplicate, which leaves nothing behind — and a
    /// task per report cost more than the report itself.
    pub async fn report(
        &self,
        tenant: String,
        outcome: Outcome,
    ) -> Result<ReportResult, PipelineError> {
        // Classification is pure and cheap: do it before touching the store, so that an
        // invalid outcome changes nothing.
        let classification =
            debug_span!("classify").in_scope(|| classify::classify(&outcome.classify_input()))?;
        if self.inline_reports {
            return self.record(tenant, outcome, classification).await;
        }
        let pipeline = self.clone();
        tokio::spawn(
            async move { pipeline.record(tenant, outcome, classification).await }
                // The task continues the request's span, so its logs and child spans
                // belong to the RPC's trace.
                .instrument(tracing::Span::current()),
        )
        .await
        .map_err(|e| PipelineError::Internal(format!("report task failed: {e}")))?
    }

    async fn record(
        &self,
        tenant: String,
        outcome: Outcome,
        classification: Classification,
    ) -> Result<ReportResult, PipelineError> {
        let key = ReportKey {
            tenant,
            call_id: outcome.call_id.clone(),
            attempt: outcome.attempt.unwrap_or(0),
        };
        match self
            .store
            .claim(&key)
            .instrument(debug_span!("store.claim"))
            .await?
        {
            Claim::Done(report) => {
                return Ok(ReportResult {
                    report,
                    duplicate: true,
                });
            }
            Claim::New => {}
        }
        match self.record_claimed(&key, outcome, classification).await {
            Ok(report) => Ok(ReportResult {
                report,
                duplicate: false,
            }),
            Err(e) => {
                self.store.abandon(&key).await;
                Err(e)
            }
        }
    }

    async fn record_claimed(
        &self,
        key: &ReportKey,
        outcome: Outcome,
        classification: Classification,
    ) -> Result<Arc<StoredReport>, PipelineError> {
        let now = SystemTime::now();
        let destination = self.destination(&outcome.to);
        let history = self
            .store
            .record(
                &key.tenant,
                &destination,
                &key.call_id,
                HistoryEntry {
                    at: now,
                    attempt: key.attempt,
                    category: classification.category,
                    sip_code: classification.sip_code,
                },
            )
            .instrument(debug_span!("store.record"))
            .await?;
        let decision = debug_span!("policy.decide").in_scope(|| {
            self.policy.decide(&PolicyInput {
                tenant: &key.tenant,
                outcome: &outcome,
                classification: &classification,
                history: &history,
                includes_current: true,
                now,
                jitter_seed: jitter_seed(&key.tenant, &key.call_id, key.attempt),
            })
        });
        let event_id = uuid::Uuid::now_v7().to_string();
        let report = Arc::new(StoredReport {
            classification: Arc::new(classification),
            decision: Arc::new(decision),
            event_id,
            destination,
            recorded_at: now,
        });
        self.events
            .publish(NewEvent {
                event_id: report.event_id.clone(),
                tenant: key.tenant.clone(),
                destination: report.destination.clone(),
                outcome,
                classification: Arc::clone(&report.classification),
                decision: Arc::clone(&report.decision),
                recorded_at: now,
            })
            .instrument(debug_span!("events.publish"))
            .await?;
        self.store
            .complete(key, &report)
            .instrument(debug_span!("store.complete"))
            .await?;
        Ok(report)
    }

    /// Whether every backend can serve requests.
    pub async fn ready(&self) -> bool {
        self.store.ready().await && self.events.ready().await
    }
}

/// A stable per-report seed for the policy's backoff jitter (FNV-1a), so that the same
/// report always gets the same jitter without a random number generator.
pub fn jitter_seed(tenant: &str, call_id: &str, attempt: u32) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in tenant
        .bytes()
        .chain([0])
        .chain(call_id.bytes())
        .chain([0])
        .chain(attempt.to_le_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}
