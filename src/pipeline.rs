//! The report pipeline: a validated outcome flows one way through
//! classify → store (idempotency + history) → policy → events → result.
//!
//! Owns the order of those steps and their failure handling, nothing else: the rules
//! live in `classify` and `policy`, the data in `store` and `events`, and the wire format
//! in `api`. No tonic types here.

use crate::classify::ClassifyError;
use crate::domain::Classification;
use crate::domain::Decision;
use crate::domain::destination::normalize;
use crate::domain::{HistoryEntry, HistorySnapshot, Outcome, Tenant};
use crate::events::{EventError, EventLog, NewEvent};
use crate::policy::{Policy, PolicyInput};
use crate::step::Step;
use crate::store::{Claim, ReportKey, Store, StoreError, StoredReport};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;
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

/// What a report carries from its classification to its decision: the outcome, its
/// classification and the policy that made it (which also decides).
type ReportInputs = (Outcome, Classification, Arc<Policy>);

/// Runs reports and classifications against a store, an event log and a policy.
#[derive(Clone)]
pub struct Pipeline {
    store: Arc<dyn Store>,
    events: Arc<dyn EventLog>,
    /// The live policy, swapped whole by a reload. A decision is made under the read
    /// lock, so it sees one policy from start to end (one version per decision).
    policy: Arc<parking_lot::RwLock<Arc<Policy>>>,
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
            policy: Arc::new(parking_lot::RwLock::new(policy)),
            default_region,
            tasks: TaskTracker::new(),
        }
    }

    /// The same backends under another policy (the CLI's `classify --policy`).
    pub fn with_policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = Arc::new(parking_lot::RwLock::new(policy));
        self
    }

    /// Makes `policy` the live one for every clone of this pipeline: the next decisions
    /// use it; decisions under way finish with the one they started with.
    pub fn replace_policy(&self, policy: Arc<Policy>) {
        *self.policy.write() = policy;
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

    /// The live policy.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read())
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
        // One policy for the classification (its overrides) and the decision.
        let policy = self.policy();
        let classification =
            debug_span!("classify").in_scope(|| policy.classify(tenant, outcome))?;
        let destination = if outcome.to.is_empty() {
            String::new()
        } else {
            self.destination(&outcome.to)
        };
        let now = SystemTime::now();
        let history = if destination.is_empty() {
            HistorySnapshot::default()
        } else {
            self.store
                .history(tenant, &destination, now)
                .traced(debug_span!("store.history"))
                .await?
        };
        let decision = debug_span!("policy.decide").in_scope(|| {
            policy.decide(&PolicyInput {
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
    /// event not published, key still claimed). On in-process backends every step after
    /// the claim is answered at once ([`crate::step`]), so the report runs to its end
    /// within this call, before the returned step is even awaited, and dropping the
    /// request cannot cut it. With a networked backend it runs in a task of its own,
    /// tracked so that a shutdown drains it. The flow is the same [`Pipeline::record`]
    /// either way.
    pub fn report(
        &self,
        tenant: Tenant,
        outcome: Outcome,
    ) -> Step<'_, Result<ReportResult, PipelineError>> {
        // Classification is pure and cheap: do it before touching the store, so that an
        // invalid outcome changes nothing. The policy read here also decides: a reload
        // in between cannot give one report two policies.
        let policy = self.policy();
        let classification =
            match debug_span!("classify").in_scope(|| policy.classify(tenant.as_str(), &outcome)) {
                Ok(classification) => classification,
                Err(e) => return Step::ready(Err(e.into())),
            };
        let key = ReportKey {
            tenant: tenant.into_string(),
            call_id: outcome.call_id.clone(),
            attempt: outcome.attempt.unwrap_or(0),
            delivery: outcome.delivery.clone(),
        };
        let mut inputs = Some((outcome, classification, policy));
        if self.store.in_process() && self.events.in_process() {
            // One poll runs the whole flow here, its state on this stack frame: an
            // in-process backend answers every step at once once the claim is won. Only
            // a claim that waits for a duplicate in flight is pending; dropping it leaves
            // nothing behind (the inputs are still ours), and the flow is then awaited.
            {
                let flow = std::pin::pin!(self.record(&key, &mut inputs));
                if let Poll::Ready(result) = flow.poll(&mut Context::from_waker(Waker::noop())) {
                    return Step::ready(result);
                }
            }
            return Step::pending(self.record_owned(key, inputs));
        }
        let pipeline = self.clone();
        let task = self.tasks.spawn(
            async move { pipeline.record_owned(key, inputs).await }
                // The task continues the request's span, so its logs and child spans
                // belong to the RPC's trace.
                .instrument(tracing::Span::current()),
        );
        Step::pending(async move {
            task.await
                .map_err(|e| PipelineError::Internal(format!("report task failed: {e}")))?
        })
    }

    /// [`Pipeline::record`] on values it owns (a boxed or spawned flow).
    async fn record_owned(
        &self,
        key: ReportKey,
        mut inputs: Option<ReportInputs>,
    ) -> Result<ReportResult, PipelineError> {
        self.record(&key, &mut inputs).await
    }

    /// The one report flow: claim the key (or find the earlier result), record the
    /// history, decide, publish the event, complete the key; on failure release it.
    ///
    /// The outcome and its classification are taken from `inputs` only once the claim
    /// is won: a flow dropped while its claim waits leaves them to the caller.
    async fn record(
        &self,
        key: &ReportKey,
        inputs: &mut Option<ReportInputs>,
    ) -> Result<ReportResult, PipelineError> {
        match self
            .store
            .claim(key)
            .traced(debug_span!("store.claim"))
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
        let Some((outcome, classification, policy)) = inputs.take() else {
            self.store.abandon(key).await;
            return Err(PipelineError::Internal(
                "a report's flow ran twice past its claim".into(),
            ));
        };
        match self
            .record_claimed(key, outcome, classification, &policy)
            .await
        {
            Ok((report, duplicate)) => Ok(ReportResult { report, duplicate }),
            Err(e) => {
                self.store.abandon(key).await;
                Err(e)
            }
        }
    }

    async fn record_claimed(
        &self,
        key: &ReportKey,
        outcome: Outcome,
        classification: Classification,
        policy: &Policy,
    ) -> Result<(Arc<StoredReport>, bool), PipelineError> {
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
            .traced(debug_span!("store.record"))
            .await?;
        let decision = debug_span!("policy.decide").in_scope(|| {
            policy.decide(&PolicyInput {
                tenant: &key.tenant,
                outcome: &outcome,
                classification: &classification,
                history: &history,
                includes_current: true,
                now,
                jitter_seed: jitter_seed(&key.tenant, &key.call_id, key.attempt),
            })
        });
        let report = Arc::new(StoredReport {
            classification: Arc::new(classification),
            decision: Arc::new(decision),
            event_id: uuid::Uuid::now_v7().to_string(),
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
        let published = self
            .events
            .publish(event)
            .traced(debug_span!("events.publish"))
            .await?;
        // What the caller is told is what subscribers get: when the log already held
        // this report's event (a takeover after the first attempt published), that event
        // is the result, and the report is a duplicate of it.
        let (report, duplicate) = match published.existing {
            None => (report, false),
            Some(existing) => {
                let e = &existing.event;
                let kept = Arc::new(StoredReport {
                    classification: Arc::clone(&e.classification),
                    decision: Arc::clone(&e.decision),
                    event_id: e.event_id.clone(),
                    destination: e.destination.clone(),
                    recorded_at: e.recorded_at,
                });
                (kept, true)
            }
        };
        self.store
            .complete(key, &report)
            .traced(debug_span!("store.complete"))
            .await?;
        Ok((report, duplicate))
    }

    /// Whether every backend can serve requests.
    pub async fn ready(&self) -> bool {
        self.readiness().await.is_ok()
    }

    /// `Err` with the reason when a backend cannot serve requests (both share one
    /// connection on NATS, so the same reason is said once).
    pub async fn readiness(&self) -> Result<(), String> {
        let store = self.store.not_ready().await;
        let events = self.events.not_ready().await;
        match (store, events) {
            (None, None) => Ok(()),
            (Some(a), Some(b)) if a != b => Err(format!("{a}; {b}")),
            (Some(reason), _) | (None, Some(reason)) => Err(reason),
        }
    }
}

pin_project_lite::pin_project! {
    /// A step inside its span when the span records anything, or the bare step: a DEBUG
    /// span is off unless logs ask for it or traces are exported, and wrapping every
    /// step anyway cost a tenth of an in-process report.
    #[project = TracedProj]
    enum Traced<F> {
        Bare { #[pin] future: F },
        Spanned { #[pin] future: tracing::instrument::Instrumented<F> },
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            TracedProj::Bare { future } => future.poll(cx),
            TracedProj::Spanned { future } => future.poll(cx),
        }
    }
}

/// [`Traced`] for any future.
trait TracedExt: Future + Sized {
    fn traced(self, span: tracing::Span) -> Traced<Self> {
        if span.is_disabled() {
            Traced::Bare { future: self }
        } else {
            Traced::Spanned {
                future: self.instrument(span),
            }
        }
    }
}

impl<F: Future> TracedExt for F {}

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
        // Before and after the memory backends learnt their dictionaries (from the
        // first ~100 results): kept raw, then packed against earlier results.
        let filler = |i: usize| Outcome {
            call_id: format!("fill-{i}"),
            to: format!("+1555010{:04}", i % 10_000),
            sip_code: Some([486, 603, 480, 503, 404, 487, 408][i % 7]),
            retry_after_header: if i % 7 == 3 {
                "120".into()
            } else {
                String::new()
            },
            ..Outcome::default()
        };
        let mut firsts = Vec::new();
        for outcome in
            outcomes
                .iter()
                .cloned()
                .chain((0..600).map(filler))
                .chain(outcomes.iter().map(|o| Outcome {
                    call_id: format!("{}-later", o.call_id),
                    ..o.clone()
                }))
        {
            let first = pipeline
                .report(acme.clone(), outcome.clone())
                .await
                .unwrap();
            firsts.push((outcome, first));
        }
        for (outcome, first) in firsts {
            let again = pipeline.report(acme.clone(), outcome).await.unwrap();
            assert!(again.duplicate);
            assert_eq!(again.report, first.report);
        }
    }
}
