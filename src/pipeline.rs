//! The report pipeline: a validated outcome flows one way through
//! classify → store (idempotency + history) → policy → events → result.
//!
//! Owns the order of those steps and their failure handling, nothing else: the rules
//! live in `classify` and `policy`, the data in `store` and `events`, and the wire format
//! in `api`. No tonic types here.

use crate::classify::{self, ClassifyError};
use crate::domain::Classification;
use crate::domain::Decision;
use crate::domain::destination::normalize;
use crate::domain::{HistoryEntry, HistorySnapshot, Outcome, Tenant};
use crate::events::{EventError, EventLog, InlinePublish, NewEvent};
use crate::policy::{Policy, PolicyInput};
use crate::store::{Claim, InlineClaim, InlineStore, ReportKey, Store, StoreError, StoredReport};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
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
    /// Where reports of a networked backend run, so that a stop drains them.
    tasks: TaskTracker,
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
        Pipeline {
            store,
            events,
            policy,
            default_region,
            tasks: TaskTracker::new(),
        }
    }

    /// The same backends under another policy (the CLI's `classify --policy`).
    pub fn with_policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// Runs the report tasks of a networked backend on `tasks` (the server's, which it
    /// drains at shutdown).
    pub fn with_tasks(mut self, tasks: TaskTracker) -> Self {
        self.tasks = tasks;
        self
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
        tenant: &Tenant,
        outcome: &Outcome,
    ) -> Result<ClassifyResult, PipelineError> {
        let tenant = tenant.as_str();
        let classification =
            debug_span!("classify").in_scope(|| classify::classify_outcome(outcome))?;
        let destination = if outcome.to.is_empty() {
            String::new()
        } else {
            self.destination(&outcome.to)
        };
        let now = SystemTime::now();
        let history = if destination.is_empty() {
            HistorySnapshot::default()
        } else if let Some(store) = self.store.inline() {
            debug_span!("store.history")
                .in_scope(|| store.history_now(tenant, &destination, now))?
        } else {
            Box::pin(
                self.store
                    .history(tenant, &destination)
                    .instrument(debug_span!("store.history")),
            )
            .await?
        };
        let decision = debug_span!("policy.decide").in_scope(|| {
            self.policy.decide(&PolicyInput {
                tenant,
                outcome,
                classification: &classification,
                history: &history,
                includes_current: false,
                now,
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
    /// event not published, key still claimed). With in-process backends the report runs
    /// inline, through their synchronous faces: nothing can interrupt it between the
    /// claim and the completion, since there is no `.await` in between. With networked
    /// backends it runs in its own task for that.
    pub async fn report(
        &self,
        tenant: Tenant,
        outcome: Outcome,
    ) -> Result<ReportResult, PipelineError> {
        // Classification is pure and cheap: do it before touching the store, so that an
        // invalid outcome changes nothing.
        let classification =
            debug_span!("classify").in_scope(|| classify::classify_outcome(&outcome))?;
        let key = ReportKey {
            tenant: tenant.into_string(),
            call_id: outcome.call_id.clone(),
            attempt: outcome.attempt.unwrap_or(0),
        };
        if let (Some(store), Some(events)) = (self.store.inline(), self.events.inline()) {
            let now = Instant::now();
            match debug_span!("store.claim").in_scope(|| store.try_claim(&key, now))? {
                InlineClaim::Done(report) => return Ok(duplicate(report)),
                InlineClaim::New => {
                    return self.record_inline(store, events, &key, outcome, classification, now);
                }
                // A report with the same key is in flight: wait for it below. (Boxed, so
                // that the usual path does not carry the waiting future's state.)
                InlineClaim::Busy => {}
            }
            return Box::pin(self.record(key, outcome, classification)).await;
        }
        let pipeline = self.clone();
        self.tasks
            .spawn(
                async move { pipeline.record(key, outcome, classification).await }
                    // The task continues the request's span, so its logs and child spans
                    // belong to the RPC's trace.
                    .instrument(tracing::Span::current()),
            )
            .await
            .map_err(|e| PipelineError::Internal(format!("report task failed: {e}")))?
    }

    /// [`Pipeline::report`] through the backends' synchronous faces, once `key` is
    /// claimed.
    fn record_inline(
        &self,
        store: &dyn InlineStore,
        events: &dyn InlinePublish,
        key: &ReportKey,
        outcome: Outcome,
        classification: Classification,
        claimed_at: Instant,
    ) -> Result<ReportResult, PipelineError> {
        let recorded = (|| {
            let now = SystemTime::now();
            let destination = self.destination(&outcome.to);
            let history = debug_span!("store.record").in_scope(|| {
                store.record_now(
                    &key.tenant,
                    &destination,
                    &key.call_id,
                    history_entry(key, &classification, now),
                )
            })?;
            let (report, event) =
                self.decide(key, outcome, classification, destination, &history, now);
            debug_span!("events.publish").in_scope(|| events.publish_now(event))?;
            // The claim's instant stands for "now": the report took microseconds.
            debug_span!("store.complete")
                .in_scope(|| store.complete_now(key, &report, claimed_at))?;
            Ok(report)
        })();
        match recorded {
            Ok(report) => Ok(ReportResult {
                report,
                duplicate: false,
            }),
            Err(e) => {
                store.abandon_now(key);
                Err(e)
            }
        }
    }

    /// The report once its history is recorded: the decision, the stored result and
    /// the event to publish.
    fn decide(
        &self,
        key: &ReportKey,
        outcome: Outcome,
        classification: Classification,
        destination: String,
        history: &HistorySnapshot,
        now: SystemTime,
    ) -> (Arc<StoredReport>, NewEvent) {
        let decision = debug_span!("policy.decide").in_scope(|| {
            self.policy.decide(&PolicyInput {
                tenant: &key.tenant,
                outcome: &outcome,
                classification: &classification,
                history,
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
        let event = NewEvent {
            event_id: report.event_id.clone(),
            tenant: key.tenant.clone(),
            destination: report.destination.clone(),
            outcome,
            classification: Arc::clone(&report.classification),
            decision: Arc::clone(&report.decision),
            recorded_at: now,
        };
        (report, event)
    }

    /// [`Pipeline::report`] through the asynchronous backend operations: claims `key`
    /// (waiting for a report with the same key in flight), then records.
    async fn record(
        &self,
        key: ReportKey,
        outcome: Outcome,
        classification: Classification,
    ) -> Result<ReportResult, PipelineError> {
        match self
            .store
            .claim(&key)
            .instrument(debug_span!("store.claim"))
            .await?
        {
            Claim::Done(report) => return Ok(duplicate(report)),
            Claim::New => {}
        }
        if let (Some(store), Some(events)) = (self.store.inline(), self.events.inline()) {
            return self.record_inline(
                store,
                events,
                &key,
                outcome,
                classification,
                Instant::now(),
            );
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
                history_entry(key, &classification, now),
            )
            .instrument(debug_span!("store.record"))
            .await?;
        let (report, event) = self.decide(key, outcome, classification, destination, &history, now);
        self.events
            .publish(event)
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

/// The result of a report that repeats an earlier one.
fn duplicate(report: Arc<StoredReport>) -> ReportResult {
    ReportResult {
        report,
        duplicate: true,
    }
}

/// The history entry of a report recorded at `now`.
fn history_entry(
    key: &ReportKey,
    classification: &Classification,
    now: SystemTime,
) -> HistoryEntry {
    HistoryEntry {
        at: now,
        attempt: key.attempt,
        category: classification.category,
        sip_code: classification.sip_code,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::memory::{EventRetention, MemoryEventLog};
    use crate::store::StoreLimits;
    use crate::store::memory::MemoryStore;

    /// A duplicate gets back exactly what the first report returned, every field of a
    /// rich result included (the memory store keeps it serialised).
    #[tokio::test]
    async fn kept_results_round_trip_exactly() {
        use crate::domain::Outcome;
        let pipeline = Pipeline::new(
            Arc::new(MemoryStore::new(StoreLimits::default())),
            Arc::new(MemoryEventLog::new(EventRetention::default())),
            Arc::new(Policy::builtin()),
            None,
        );
        let acme = Tenant::parse("acme", 64).unwrap();
        let outcomes = [
            Outcome {
                call_id: "rich-1".into(),
                to: "+15550104477".into(),
                sip_code: Some(503),
                retry_after_header: "120;duration=60 (maintenance)".into(),
                reason_header: "Q.850;cause=34;text=\"No circuit\";location=LN".into(),
                ..Outcome::default()
            },
            Outcome {
                call_id: "rich-2".into(),
                attempt: Some(2),
                to: "sip:+4930123456@example.com".into(),
                sip_code: Some(603),
                reason_header: "Q.850;cause=21".into(),
                ..Outcome::default()
            },
            Outcome {
                call_id: "rich-3".into(),
                provider: Some(("telnyx".into(), "call_rejected".into())),
                ..Outcome::default()
            },
        ];
        for outcome in outcomes {
            let first = pipeline
                .report(acme.clone(), outcome.clone())
                .await
                .unwrap();
            let again = pipeline.report(acme.clone(), outcome).await.unwrap();
            assert!(again.duplicate);
            assert_eq!(again.report, first.report);
        }
    }
}
