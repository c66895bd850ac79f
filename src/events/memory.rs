//! The embedded event log: a bounded in-process ring of recent events that subscribers
//! read from their own position.
//!
//! Memory is bounded by `max_events` (oldest evicted first) and `max_age` (older events
//! are evicted on the next append). A subscriber holds only its position and a watch
//! receiver; it reads at most [`READ_BATCH`] events at a time. Publishing appends under a
//! short write lock and bumps a `watch` value: it never waits for a subscriber.
//!
//! Sequences start at 1 in every process; the log's `epoch`, chosen at start, tells one
//! incarnation from the next so that a token from before a restart is recognised.

use super::{
    Delivery, EventCounters, EventError, EventLog, GapReason, NewEvent, Position, Published,
    RecordedEvent, Start, Subscription, SubscriptionRequest,
};
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
    events: VecDeque<Arc<RecordedEvent>>,
    /// Sequence of the newest event ever appended (0: none yet).
    last: u64,
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

    /// The retained events, oldest first.
    pub fn retained(&self) -> Vec<Arc<RecordedEvent>> {
        self.shared.ring.read().events.iter().cloned().collect()
    }
}

impl Shared {
    fn evict(&self, ring: &mut Ring, now: SystemTime) {
        while ring.events.len() > self.retention.max_events {
            ring.events.pop_front();
        }
        while let Some(front) = ring.events.front() {
            let age = now
                .duration_since(front.event.recorded_at)
                .unwrap_or_default();
            if age <= self.retention.max_age {
                break;
            }
            ring.events.pop_front();
        }
    }

    /// Events after `after` (at most `READ_BATCH`), the first retained sequence and the
    /// newest sequence.
    fn read_after(&self, after: u64, out: &mut Vec<Arc<RecordedEvent>>) -> (u64, u64) {
        let ring = self.ring.read();
        let first = ring.first();
        let start = after.saturating_add(1).max(first);
        // Sequences are contiguous in the ring, so the index is an offset from `first`.
        let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
        out.extend(ring.events.iter().skip(skip).take(READ_BATCH).cloned());
        (first, ring.last)
    }
}

#[async_trait::async_trait]
impl EventLog for MemoryEventLog {
    fn in_process(&self) -> bool {
        true
    }

    async fn publish(&self, event: NewEvent) -> Result<Published, EventError> {
        let shared = &self.shared;
        let now = event.recorded_at;
        let sequence = {
            let mut ring = shared.ring.write();
            ring.last += 1;
            let sequence = ring.last;
            ring.events
                .push_back(Arc::new(RecordedEvent { sequence, event }));
            shared.evict(&mut ring, now);
            sequence
        };
        shared.head.send_replace(sequence);
        EventCounters::add(&shared.counters.published, 1);
        Ok(Published { sequence })
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
                for event in batch.drain(..) {
                    position = event.sequence;
                    if event.event.tenant == request.tenant && request.filter.matches(&event.event) {
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
