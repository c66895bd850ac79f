//! The embedded event log: bounded in-process rings of recent events, one per tenant,
//! that subscribers read from their own position.
//!
//! Positions are per tenant: each tenant's events are numbered 1, 2, 3… in its own
//! ring, so a subscriber (its events' `sequence`, its resume tokens, its gaps) learns
//! nothing of other tenants' volume. Memory is bounded in all: `max_events` across
//! every tenant (the oldest event of the whole log is evicted first, whoever's it is)
//! and `max_age` (older events are evicted on the next append). A subscriber holds only
//! its position and a watch receiver on its tenant's ring; it reads at most
//! [`READ_BATCH`] events at a time. Publishing appends under a short write lock and
//! bumps the tenant's `watch` value: it never waits for a subscriber.
//!
//! The ring keeps each event serialised (postcard) and packed against earlier events
//! ([`Compactor`]: several times fewer bytes) in one allocation, with the fields
//! that filters test first (category, SIP code) readable without decoding, instead of
//! a dozen separate allocations that eviction would walk long after they left the
//! cache. A subscriber decodes only the events that pass its
//! category and code filters, and the newest [`READ_BATCH`] events of the log are also
//! kept decoded, so that the subscribers that keep up share one copy.
//!
//! Sequences start at 1 in every process; the log's `epoch`, chosen at start, tells one
//! incarnation from the next so that a token from before a restart is recognised. A
//! tenant's entry (its counter) stays for the life of the process, so that its sequence
//! never goes back; it costs a few dozen bytes once its events are gone.

use super::{
    Delivery, EventCounters, EventError, EventLog, GapReason, NewEvent, Position, Published,
    RecordedEvent, Start, Subscription, SubscriptionRequest,
};
use crate::compact::Compactor;
use crate::domain::Category;
use crate::step::Step;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// Most events a subscriber copies out of the log per read.
pub const READ_BATCH: usize = 256;

/// Retention of the embedded log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventRetention {
    /// Most events kept, across all tenants.
    pub max_events: usize,
    /// Oldest event kept.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Keep events compressed (several times fewer bytes, for some CPU on every
    /// report). Off trades memory for throughput.
    pub compact: bool,
}

impl Default for EventRetention {
    fn default() -> Self {
        EventRetention {
            max_events: 100_000,
            max_age: Duration::from_secs(24 * 3600),
            compact: true,
        }
    }
}

/// One tenant's events.
#[derive(Debug)]
struct Ring {
    events: VecDeque<Kept>,
    /// Sequence of the tenant's newest event ever appended (0: none yet).
    last: u64,
    /// The newest sequence; the tenant's subscribers wait on its changes.
    head: watch::Sender<u64>,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            events: VecDeque::new(),
            last: 0,
            head: watch::Sender::new(0),
        }
    }

    /// Sequence of the oldest retained event; `last + 1` when nothing is retained.
    fn first(&self) -> u64 {
        self.events.front().map_or(self.last + 1, |e| e.sequence)
    }
}

/// The whole log: the tenants' rings and the order events arrived in, for eviction.
#[derive(Debug, Default)]
struct Log {
    tenants: HashMap<Arc<str>, Ring, foldhash::fast::RandomState>,
    /// The tenant and sequence of every retained event, oldest first.
    order: VecDeque<(Arc<str>, u64)>,
}

/// An event as the ring keeps it.
#[derive(Debug, Clone)]
struct Kept {
    sequence: u64,
    recorded_at: SystemTime,
    category: Category,
    sip_code: Option<u16>,
    /// `postcard(NewEvent)`, packed; shared by the readers that copied it out of the ring.
    data: Arc<[u8]>,
    /// The event itself, kept while it is among the log's newest [`DECODED_RECENT`]: the
    /// subscribers that keep up share it instead of each decoding the bytes.
    recent: Option<Arc<RecordedEvent>>,
}

/// How many of the newest events the log also keeps decoded (see [`Kept::recent`]).
const DECODED_RECENT: usize = READ_BATCH;

impl Kept {
    fn new(sequence: u64, event: &NewEvent, compactor: &Compactor) -> Result<Self, EventError> {
        let data = compactor
            .pack_value(&[], event)
            .map_err(|e| EventError::Backend(format!("cannot encode an event: {e}")))?;
        Ok(Kept {
            sequence,
            recorded_at: event.recorded_at,
            category: event.classification.category,
            sip_code: event.classification.sip_code,
            data: data.into(),
            recent: None,
        })
    }

    fn decode(&self, compactor: &Compactor) -> Result<Arc<RecordedEvent>, EventError> {
        if let Some(event) = &self.recent {
            return Ok(Arc::clone(event));
        }
        let failed = |e: String| EventError::Backend(format!("cannot decode a kept event: {e}"));
        let record = compactor
            .unpack(&self.data)
            .map_err(|e| failed(e.to_string()))?;
        let event = postcard::from_bytes(&record).map_err(|e| failed(e.to_string()))?;
        Ok(Arc::new(RecordedEvent {
            sequence: self.sequence,
            event,
        }))
    }
}

#[derive(Debug)]
struct Shared {
    retention: EventRetention,
    epoch: u64,
    log: RwLock<Log>,
    counters: EventCounters,
    compactor: Compactor,
}

/// In-process event log.
#[derive(Debug, Clone)]
pub struct MemoryEventLog {
    shared: Arc<Shared>,
}

impl MemoryEventLog {
    pub fn new(retention: EventRetention) -> Self {
        // The epoch only has to differ between incarnations of the log; the start time
        // in nanoseconds does that without a random number generator.
        let epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        MemoryEventLog {
            shared: Arc::new(Shared {
                epoch,
                log: RwLock::new(Log::default()),
                counters: EventCounters::default(),
                compactor: Compactor::packing(retention.compact),
                retention,
            }),
        }
    }

    /// Identifies this incarnation of the log.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }
}

impl Shared {
    /// Drops the log's oldest events while it is over its size or age.
    fn evict(&self, log: &mut Log, now: SystemTime) {
        loop {
            let Some((tenant, _)) = log.order.front() else {
                return;
            };
            let Some(ring) = log.tenants.get_mut(tenant) else {
                log.order.pop_front();
                continue;
            };
            let over = log.order.len() > self.retention.max_events
                || ring.events.front().is_some_and(|e| {
                    now.duration_since(e.recorded_at).unwrap_or_default() > self.retention.max_age
                });
            if !over {
                return;
            }
            ring.events.pop_front();
            log.order.pop_front();
        }
    }

    /// `tenant`'s events after `after` (at most `READ_BATCH`), its first retained
    /// sequence and its newest sequence.
    fn read_after(&self, tenant: &str, after: u64, out: &mut Vec<Kept>) -> (u64, u64) {
        let log = self.log.read();
        let Some(ring) = log.tenants.get(tenant) else {
            return (1, 0);
        };
        let first = ring.first();
        let start = after.saturating_add(1).max(first);
        // Sequences are contiguous in a ring, so the index is an offset from `first`.
        let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
        out.extend(ring.events.iter().skip(skip).take(READ_BATCH).cloned());
        (first, ring.last)
    }

    /// The tenant's ring bounds and a receiver of its head (the ring is created empty
    /// for a tenant that has published nothing yet).
    fn follow(&self, tenant: &str) -> (u64, u64, watch::Receiver<u64>) {
        if let Some(ring) = self.log.read().tenants.get(tenant) {
            return (ring.first(), ring.last, ring.head.subscribe());
        }
        let mut log = self.log.write();
        let ring = log
            .tenants
            .entry(Arc::from(tenant))
            .or_insert_with(Ring::new);
        (ring.first(), ring.last, ring.head.subscribe())
    }
}

impl MemoryEventLog {
    /// Appends an event under the log's lock; never waits on anything else.
    fn publish_now(&self, event: NewEvent) -> Result<Published, EventError> {
        let shared = &self.shared;
        let now = event.recorded_at;
        // Encoded before the lock, with a placeholder sequence (the ring's is kept beside
        // the bytes, not in them).
        let mut kept = Kept::new(0, &event, &self.shared.compactor)?;
        let mut recent = RecordedEvent { sequence: 0, event };
        let (sequence, dropped) = {
            let mut guard = shared.log.write();
            let log = &mut *guard;
            let tenant = match log.tenants.get_key_value(recent.event.tenant.as_str()) {
                Some((name, _)) => Arc::clone(name),
                None => {
                    let name: Arc<str> = Arc::from(recent.event.tenant.as_str());
                    log.tenants.insert(Arc::clone(&name), Ring::new());
                    name
                }
            };
            let Some(ring) = log.tenants.get_mut(&tenant) else {
                return Err(EventError::Backend("the tenant's ring vanished".into()));
            };
            ring.last += 1;
            let sequence = ring.last;
            kept.sequence = sequence;
            recent.sequence = sequence;
            kept.recent = Some(Arc::new(recent));
            ring.events.push_back(kept);
            // Waking costs a lock per waiter list even with nobody waiting; a subscriber
            // that arrives after this check reads the ring, which already holds the event.
            if ring.head.receiver_count() > 0 {
                ring.head.send_replace(sequence);
            }
            log.order.push_back((tenant, sequence));
            // The event that just left the log's newest ones keeps only its bytes.
            let dropped = log
                .order
                .len()
                .checked_sub(DECODED_RECENT + 1)
                .and_then(|i| log.order.get(i))
                .and_then(|(t, seq)| {
                    let ring = log.tenants.get_mut(t)?;
                    let index = usize::try_from(seq.checked_sub(ring.first())?).ok()?;
                    ring.events.get_mut(index)?.recent.take()
                });
            shared.evict(log, now);
            (sequence, dropped)
        };
        // Freed outside the lock.
        drop(dropped);
        EventCounters::add(&shared.counters.published, 1);
        Ok(Published {
            sequence,
            existing: None,
        })
    }
}

#[async_trait::async_trait]
impl EventLog for MemoryEventLog {
    fn in_process(&self) -> bool {
        true
    }

    fn publish(&self, event: NewEvent) -> Step<'_, Result<Published, EventError>> {
        Step::ready(self.publish_now(event))
    }

    async fn subscribe(&self, request: SubscriptionRequest) -> Result<Subscription, EventError> {
        let shared = Arc::clone(&self.shared);
        let epoch = shared.epoch;
        let (first, last, mut head) = shared.follow(&request.tenant);
        // `position` is the last sequence seen; a pending gap is signalled first.
        let (mut position, mut pending_gap) = match request.start {
            Start::New => (last, None),
            Start::Oldest => (first - 1, None),
            Start::After(p) if p.epoch != epoch => (
                first - 1,
                Some((p.sequence.saturating_add(1), 0, GapReason::EpochChanged)),
            ),
            Start::After(p) if p.sequence > last => {
                return Err(EventError::TokenFromTheFuture {
                    sequence: p.sequence,
                    last,
                });
            }
            Start::After(p) => (p.sequence, None),
        };
        let heartbeat_every = request.heartbeat.max(Duration::from_millis(10));
        let stream = async_stream::stream! {
            let mut batch = Vec::with_capacity(16);
            let mut heartbeat = tokio::time::interval_at(
                tokio::time::Instant::now() + heartbeat_every,
                heartbeat_every,
            );
            heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                if let Some((from, to, reason)) = pending_gap.take() {
                    let (from, to): (u64, u64) = (from, to);
                    EventCounters::add(&shared.counters.gaps, 1);
                    EventCounters::add(&shared.counters.skipped, (to + 1).saturating_sub(from));
                    yield Ok(Delivery::Gap {
                        first: from,
                        last: to,
                        reason,
                        position: Position { epoch, sequence: position },
                    });
                }
                // Mark the head as seen *before* reading, so a publish that lands after
                // the read wakes us up.
                head.borrow_and_update();
                batch.clear();
                let (first, _last) = shared.read_after(&request.tenant, position, &mut batch);
                if position + 1 < first {
                    // Our next event was evicted while we were away: say so, then go on
                    // from the oldest retained event.
                    pending_gap = Some((position + 1, first - 1, GapReason::Evicted));
                    position = first - 1;
                    continue;
                }
                let full = batch.len() == READ_BATCH;
                let mut delivered = 0_u64;
                for kept in batch.drain(..) {
                    position = kept.sequence;
                    if !request.filter.may_match(kept.category, kept.sip_code) {
                        continue;
                    }
                    let event = match kept.decode(&shared.compactor) {
                        Ok(event) => event,
                        Err(e) => {
                            yield Err(e);
                            break;
                        }
                    };
                    if request.filter.matches(&event.event) {
                        delivered += 1;
                        yield Ok(Delivery::Event {
                            event,
                            position: Position { epoch, sequence: position },
                        });
                    }
                }
                if delivered > 0 {
                    EventCounters::add(&shared.counters.delivered, delivered);
                    heartbeat.reset();
                }
                if full {
                    continue;
                }
                tokio::select! {
                    changed = head.changed() => {
                        if changed.is_err() {
                            // The log is gone (shutdown): end the stream.
                            break;
                        }
                    }
                    _ = heartbeat.tick() => {
                        EventCounters::add(&shared.counters.heartbeats, 1);
                        yield Ok(Delivery::Heartbeat {
                            position: Position { epoch, sequence: position },
                        });
                    }
                }
            }
        };
        Ok(Box::pin(stream))
    }

    async fn head(&self, tenant: &str) -> Result<Position, EventError> {
        let log = self.shared.log.read();
        Ok(Position {
            epoch: self.shared.epoch,
            sequence: log.tenants.get(tenant).map_or(0, |r| r.last),
        })
    }

    fn counters(&self) -> &EventCounters {
        &self.shared.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Action, Alternative, AppliedRetryAfter, Basis, Classification, Decision, Fault, Outcome,
        Q850Source, RetryAfterScope, RetryPlan, Retryable,
    };
    use crate::events::Filter;
    use tokio_stream::StreamExt;

    /// A report with every kind of field: labels, raw SIP bytes, provider, times.
    fn rich_event(tenant: &str, call_id: &str, sip_code: i64) -> NewEvent {
        let outcome = Outcome {
            call_id: call_id.into(),
            attempt: Some(3),
            from: "+15550100000".into(),
            to: "+15550104477".into(),
            sip_code: Some(sip_code),
            reason_phrase: "Decline".into(),
            reason_header: "Q.850;cause=21;text=\"Call rejected\"".into(),
            retry_after_header: "3600".into(),
            raw_sip_response: Some(format!("SIP/2.0 {sip_code} X\r\n\r\n\u{fffd}").into_bytes()),
            provider: Some(("telnyx".into(), "call_rejected".into())),
            started_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            ended_at: Some(
                SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_001_500_000_123),
            ),
            labels: [
                ("campaign".into(), "spring".into()),
                ("é".into(), "✓".into()),
            ]
            .into(),
            delivery: Some("v1:delivery-7".into()),
        };
        // Built by hand, as the classifier and the policy would (this module sits below
        // both): a 603 with a Q.850 Reason and a Retry-After, and a rendered decision.
        let classification = Classification {
            category: if sip_code == 603 {
                Category::Declined
            } else {
                Category::Busy
            },
            fault: Fault::CalleeChoice,
            retryable: Retryable::No,
            sip_code: u16::try_from(sip_code).ok(),
            reported_sip_code: u16::try_from(sip_code).ok(),
            sip_phrase: "Decline".into(),
            q850_cause: Some(21),
            q850_source: Some(Q850Source::ReasonHeader),
            q850_location: Some("U".into()),
            reason_text: Some("Call rejected".into()),
            retry_after: Some(AppliedRetryAfter {
                seconds: 3600,
                scope: RetryAfterScope::Callee,
            }),
            summary: "The call was declined by the recipient.".into(),
            basis: Basis::Override,
            override_name: Some("tenant:acme/carrier-603".into()),
        };
        let decision = Decision {
            action: Action::Stop,
            notify_user: true,
            user_message: "+15550104477 declined your call (é ✓).".into(),
            alternatives: vec![Alternative::Sms, Alternative::Callback],
            retry: Some(RetryPlan {
                not_before: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_003_600),
                delay_seconds: 3600,
                next_attempt: 4,
                max_attempts: 5,
                honours_retry_after: true,
            }),
            avoid_route_seconds: 0,
            alert_operator: false,
            suppressed: false,
            rule: "declined".into(),
            explanation: "Declined by the callee; Retry-After 3600 s.".into(),
            attempt: 3,
            policy_version: "a1b2c3d4e5f6".into(),
        };
        NewEvent {
            event_id: format!("id-{call_id}"),
            tenant: tenant.into(),
            destination: "+15550104477".into(),
            outcome,
            classification: Arc::new(classification),
            decision: Arc::new(decision),
            recorded_at: SystemTime::now(),
        }
    }

    /// Events come back from the ring exactly as published, only to their tenant, and
    /// the category filter skips events without decoding them.
    #[tokio::test]
    async fn kept_events_round_trip_exactly() {
        let log = MemoryEventLog::new(EventRetention::default());
        // A report without a delivery id (every gRPC one), read back from its bytes,
        // beside ones with it.
        let mut declined = rich_event("acme", "c1", 603);
        declined.outcome.delivery = None;
        let busy = rich_event("acme", "c2", 486);
        let other_tenant = rich_event("globex", "c3", 603);
        // Another tenant's events first, so that the log has learnt its dictionary and
        // acme's are kept packed.
        for i in 0..600 {
            log.publish(rich_event("initech", &format!("f{i}"), 486))
                .await
                .unwrap();
        }
        assert_eq!(log.shared.compactor.dictionaries(), 1);
        for event in [declined.clone(), busy.clone(), other_tenant] {
            log.publish(event).await.unwrap();
        }
        let packed = log.shared.log.read().tenants["acme"].events[0].data.len();
        let encoded = postcard::to_allocvec(&declined).unwrap().len();
        assert!(packed * 2 < encoded, "{packed} of {encoded}");
        // Enough others that the first events are kept as bytes only.
        for _ in 0..DECODED_RECENT {
            log.publish(busy.clone()).await.unwrap();
        }
        assert!(
            log.shared.log.read().tenants["acme"].events[0]
                .recent
                .is_none()
        );
        let last = rich_event("acme", "c4", 603);
        log.publish(last.clone()).await.unwrap();
        let mut stream = log
            .subscribe(SubscriptionRequest {
                tenant: "acme".into(),
                filter: Filter::default(),
                start: Start::Oldest,
                heartbeat: Duration::from_secs(60),
            })
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            match stream.next().await.unwrap().unwrap() {
                Delivery::Event { event, .. } => got.push(event),
                other => panic!("unexpected {other:?}"),
            }
        }
        // acme's own numbering: globex's event between them is not counted.
        assert_eq!(got[0].sequence, 1);
        assert_eq!(got[0].event, declined);
        assert_eq!(got[1].sequence, 3 + DECODED_RECENT as u64);
        assert_eq!(got[1].event, last);
    }

    /// Positions are per tenant; retention is shared, oldest first, whoever's it is.
    #[tokio::test]
    async fn sequences_are_per_tenant_and_retention_is_global() {
        let log = MemoryEventLog::new(EventRetention {
            max_events: 3,
            ..EventRetention::default()
        });
        let a1 = log.publish(rich_event("acme", "a1", 603)).await.unwrap();
        let g1 = log.publish(rich_event("globex", "g1", 603)).await.unwrap();
        let g2 = log.publish(rich_event("globex", "g2", 603)).await.unwrap();
        let a2 = log.publish(rich_event("acme", "a2", 603)).await.unwrap();
        assert_eq!(
            [a1.sequence, g1.sequence, g2.sequence, a2.sequence],
            [1, 1, 2, 2]
        );
        // a1 was the oldest of the log: evicted.
        let mut stream = log
            .subscribe(SubscriptionRequest {
                tenant: "acme".into(),
                filter: Filter::default(),
                start: Start::Oldest,
                heartbeat: Duration::from_secs(60),
            })
            .await
            .unwrap();
        match stream.next().await.unwrap().unwrap() {
            Delivery::Event { event, position } => {
                assert_eq!((event.sequence, position.sequence), (2, 2));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(log.head("acme").await.unwrap().sequence, 2);
        assert_eq!(log.head("initech").await.unwrap().sequence, 0);
        assert_eq!(log.shared.log.read().order.len(), 3);
    }
}
