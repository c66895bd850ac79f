//! The embedded event log: a bounded in-process ring of recent events that subscribers
//! read from their own position.
//!
//! Memory is bounded by `max_events` (oldest evicted first) and `max_age` (older events
//! are evicted on the next append). A subscriber holds only its position and a watch
//! receiver; it reads at most [`READ_BATCH`] events at a time. Publishing appends under a
//! short write lock and bumps a `watch` value: it never waits for a subscriber.
//!
//! The ring keeps each event serialised (postcard) in one allocation, with the few
//! fields that filters test first (sequence, tenant, category, SIP code) readable
//! without decoding: about 500 bytes an event instead of a dozen separate allocations
//! (the outcome's strings, the classification, the decision) that eviction would walk
//! long after they left the cache. A subscriber decodes only the events that pass its
//! tenant, category and code filters, and the newest [`READ_BATCH`] events are also
//! kept decoded, so that the subscribers that keep up share one copy.
//!
//! Sequences start at 1 in every process; the log's `epoch`, chosen at start, tells one
//! incarnation from the next so that a token from before a restart is recognised.

use super::{
    Delivery, EventCounters, EventError, EventLog, GapReason, NewEvent, Position, Published,
    RecordedEvent, Start, Subscription, SubscriptionRequest,
};
use crate::domain::Category;
use crate::step::Step;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
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
    /// Most events kept.
    pub max_events: usize,
    /// Oldest event kept.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for EventRetention {
    fn default() -> Self {
        EventRetention {
            max_events: 100_000,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<Kept>,
    /// Sequence of the newest event ever appended (0: none yet).
    last: u64,
}

/// An event as the ring keeps it.
#[derive(Debug, Clone)]
struct Kept {
    sequence: u64,
    recorded_at: SystemTime,
    category: Category,
    sip_code: Option<u16>,
    /// `u16 tenant length, tenant, postcard(NewEvent)`; shared by the readers that
    /// copied it out of the ring.
    data: Arc<[u8]>,
    /// The event itself, kept while it is among the newest [`DECODED_RECENT`]: the
    /// subscribers that keep up share it instead of each decoding the bytes.
    recent: Option<Arc<RecordedEvent>>,
}

/// How many of the newest events the ring also keeps decoded (see [`Kept::recent`]).
const DECODED_RECENT: usize = READ_BATCH;

impl Kept {
    fn new(sequence: u64, event: &NewEvent) -> Result<Self, EventError> {
        let failed =
            |e: postcard::Error| EventError::Backend(format!("cannot encode an event: {e}"));
        let tenant_len = u16::try_from(event.tenant.len())
            .map_err(|_| EventError::Backend("tenant too long for the event log".into()))?;
        let size = postcard::experimental::serialized_size(event).map_err(failed)?;
        let head = 2 + event.tenant.len();
        let mut data = vec![0; head + size];
        data[..2].copy_from_slice(&tenant_len.to_le_bytes());
        data[2..head].copy_from_slice(event.tenant.as_bytes());
        postcard::to_slice(event, &mut data[head..]).map_err(failed)?;
        Ok(Kept {
            sequence,
            recorded_at: event.recorded_at,
            category: event.classification.category,
            sip_code: event.classification.sip_code,
            data: data.into(),
            recent: None,
        })
    }

    fn split(&self) -> (&[u8], &[u8]) {
        let len = self
            .data
            .first_chunk::<2>()
            .map_or(0, |b| usize::from(u16::from_le_bytes(*b)));
        let body = self.data.get(2..).unwrap_or_default();
        body.split_at_checked(len).unwrap_or((body, &[]))
    }

    fn tenant(&self) -> &[u8] {
        self.split().0
    }

    fn decode(&self) -> Result<Arc<RecordedEvent>, EventError> {
        if let Some(event) = &self.recent {
            return Ok(Arc::clone(event));
        }
        let event = postcard::from_bytes(self.split().1)
            .map_err(|e| EventError::Backend(format!("cannot decode a kept event: {e}")))?;
        Ok(Arc::new(RecordedEvent {
            sequence: self.sequence,
            event,
        }))
    }
}

impl Ring {
    /// Sequence of the oldest retained event; `last + 1` when nothing is retained.
    fn first(&self) -> u64 {
        self.events.front().map_or(self.last + 1, |e| e.sequence)
    }
}

#[derive(Debug)]
struct Shared {
    retention: EventRetention,
    epoch: u64,
    ring: RwLock<Ring>,
    /// The newest sequence; subscribers wait on its changes.
    head: watch::Sender<u64>,
    counters: EventCounters,
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
                retention,
                epoch,
                ring: RwLock::new(Ring {
                    events: VecDeque::new(),
                    last: 0,
                }),
                head: watch::Sender::new(0),
                counters: EventCounters::default(),
            }),
        }
    }

    /// Identifies this incarnation of the log.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }
}

impl Shared {
    fn evict(&self, ring: &mut Ring, now: SystemTime) {
        while ring.events.len() > self.retention.max_events {
            ring.events.pop_front();
        }
        while let Some(front) = ring.events.front() {
            let age = now.duration_since(front.recorded_at).unwrap_or_default();
            if age <= self.retention.max_age {
                break;
            }
            ring.events.pop_front();
        }
    }

    /// Events after `after` (at most `READ_BATCH`), the first retained sequence and the
    /// newest sequence.
    fn read_after(&self, after: u64, out: &mut Vec<Kept>) -> (u64, u64) {
        let ring = self.ring.read();
        let first = ring.first();
        let start = after.saturating_add(1).max(first);
        // Sequences are contiguous in the ring, so the index is an offset from `first`.
        let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
        out.extend(ring.events.iter().skip(skip).take(READ_BATCH).cloned());
        (first, ring.last)
    }
}

impl MemoryEventLog {
    /// Appends an event under the ring's lock; never waits on anything else.
    fn publish_now(&self, event: NewEvent) -> Result<Published, EventError> {
        let shared = &self.shared;
        let now = event.recorded_at;
        // Encoded before the lock, with a placeholder sequence (the ring's is kept beside
        // the bytes, not in them).
        let mut kept = Kept::new(0, &event)?;
        let mut recent = RecordedEvent { sequence: 0, event };
        let sequence = {
            let mut ring = shared.ring.write();
            ring.last += 1;
            let sequence = ring.last;
            kept.sequence = sequence;
            recent.sequence = sequence;
            kept.recent = Some(Arc::new(recent));
            ring.events.push_back(kept);
            // The event that just left the newest ones keeps only its bytes.
            let older = ring.events.len().checked_sub(DECODED_RECENT + 1);
            let dropped = older
                .and_then(|i| ring.events.get_mut(i))
                .and_then(|e| e.recent.take());
            shared.evict(&mut ring, now);
            (sequence, dropped)
        };
        // Freed outside the lock.
        let (sequence, dropped) = sequence;
        drop(dropped);
        // Waking costs a lock per waiter list even with nobody waiting; a subscriber that
        // arrives after this check reads the ring, which already holds the event.
        if shared.head.receiver_count() > 0 {
            shared.head.send_replace(sequence);
        }
        EventCounters::add(&shared.counters.published, 1);
        Ok(Published { sequence })
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
        let mut head = shared.head.subscribe();
        let (first, last) = {
            let ring = shared.ring.read();
            (ring.first(), ring.last)
        };
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
                let (first, _last) = shared.read_after(position, &mut batch);
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
                    if kept.tenant() != request.tenant.as_bytes()
                        || !request.filter.may_match(kept.category, kept.sip_code)
                    {
                        continue;
                    }
                    let event = match kept.decode() {
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

    async fn head(&self) -> Result<Position, EventError> {
        Ok(Position {
            epoch: self.shared.epoch,
            sequence: self.shared.ring.read().last,
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
            basis: Basis::SipCode,
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
        let declined = rich_event("acme", "c1", 603);
        let busy = rich_event("acme", "c2", 486);
        let other_tenant = rich_event("globex", "c3", 603);
        for event in [declined.clone(), busy.clone(), other_tenant] {
            log.publish(event).await.unwrap();
        }
        // Enough others that the first events are kept as bytes only.
        for _ in 0..DECODED_RECENT {
            log.publish(busy.clone()).await.unwrap();
        }
        assert!(log.shared.ring.read().events[0].recent.is_none());
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
        assert_eq!(got[0].sequence, 1);
        assert_eq!(got[0].event, declined);
        assert_eq!(got[1].sequence, 4 + DECODED_RECENT as u64);
        assert_eq!(got[1].event, last);
    }
}
