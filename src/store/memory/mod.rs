//! The embedded, in-process [`Store`]: one replica, zero setup, nothing survives a
//! restart.
//!
//! Owns the in-memory idempotency keys, in-flight claims and destination histories. It
//! must not block the runtime: every lock is a short `parking_lot` critical section
//! that is never held across an `.await`.
//!
//! Memory bounds, in plain words:
//! - Completed report keys: at most `max_report_keys`, each forgotten `idempotency_ttl`
//!   after completion; when full, the oldest completed key is forgotten first (sharded
//!   insertion-ordered maps: a lookup is one short lock and one hash probe, and nothing
//!   ever waits for housekeeping). This is the largest per-item cost: a key keeps its
//!   [`StoredReport`], postcard-encoded after the packed key in one allocation (about
//!   500 bytes with its table slot).
//! - In-flight claims: one small marker per report being processed. A marker expires
//!   after its lease (`3 × in_flight_wait`, at least one second) and expired markers are
//!   swept as the map grows, so abandoned claims cannot accumulate.
//! - Histories: at most `max_destinations` destinations (rounded up to a multiple of
//!   64), each with at most `max_entries_per_destination` entries. A destination is kept
//!   as a single byte buffer (key + fixed-size entries of 23 bytes, the call id kept as
//!   a 64-bit hash), about 90 bytes per destination with one entry including the hash
//!   table slot (120 bytes of RSS measured). Destinations not touched for
//!   `history_window` are swept; when full, the least recently used eighth of a shard is
//!   evicted.
//!
//! Cancellation: `claim` has no await point after it marks a key in flight, so a
//! cancelled `claim` never leaves a marker behind. A caller that got [`Claim::New`] and
//! is then dropped before `complete`/`abandon` leaves a marker that holds duplicates off
//! for at most its lease: waiters give up with [`StoreError::InProgress`] after
//! `in_flight_wait`, and the first claim after the lease takes the key over. A cancelled
//! waiter holds nothing. `abandon` and `complete` release whatever marker the key has
//! (claims carry no token), and the first `complete` of a key wins.

mod history;
mod reports;
#[cfg(test)]
mod tests;

use super::{Claim, ReportKey, Store, StoreError, StoreLimits, StoredReport, from_nanos, to_nanos};
use crate::compact::Compactor;
use crate::domain::{Category, HistoryEntry, HistorySnapshot};
use crate::step::Step;
use hashbrown::HashTable;
use history::*;
use parking_lot::Mutex;
use reports::*;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// Number of history shards: enough to keep lock contention negligible.
const SHARDS: usize = 64;
/// An in-flight marker lives this many times `in_flight_wait`...
const LEASE_FACTOR: u32 = 3;
/// ...and at least this long.
const MIN_LEASE: Duration = Duration::from_secs(1);
/// Longest idempotency TTL honoured, so that `now + ttl` cannot overflow.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Number of completed-key shards.
const DONE_SHARDS: usize = 16;
/// A report-key shard is swept of expired markers when it holds this many (then twice
/// its live count).
const MIN_SWEEP_AT: usize = 64;

/// The embedded store. Cheap to clone; clones share the same data.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    limits: StoreLimits,
    lease: Duration,
    reports: ReportKeys,
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    /// Picks the shard and slot of a destination.
    hasher: foldhash::fast::RandomState,
    /// Turns call ids into the report ids of history entries (see [`Destination`]).
    id_hasher: foldhash::quality::RandomState,
}

impl MemoryStore {
    pub fn new(limits: StoreLimits) -> Self {
        let shard_cap =
            usize::try_from(limits.max_destinations.div_ceil(SHARDS as u64)).unwrap_or(usize::MAX);
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        let lease = limits
            .in_flight_wait
            .saturating_mul(LEASE_FACTOR)
            .max(MIN_LEASE);
        MemoryStore {
            inner: Arc::new(Inner {
                lease,
                reports: ReportKeys::new(
                    limits.max_report_keys,
                    limits.idempotency_ttl,
                    limits.compact_results,
                ),
                limits,
                shards,
                shard_cap,
                hasher: foldhash::fast::RandomState::default(),
                id_hasher: foldhash::quality::RandomState::default(),
            }),
        }
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        // Bits that the table does not use: it takes the low ones for the bucket and the
        // top seven as the tag it compares before a key (taking those here would leave
        // each shard's table 8 tags instead of 128, and send a lookup to compare keys
        // in other destinations' buffers).
        &self.inner.shards[(hash >> 32) as usize % SHARDS]
    }

    /// Seconds since the store started: the clock of idle expiry (and of the report
    /// keys' expiry).
    fn now_secs(&self) -> u32 {
        self.inner.reports.secs(Instant::now())
    }

    fn window_secs(&self) -> u32 {
        u32::try_from(self.inner.limits.history_window.as_secs()).unwrap_or(u32::MAX)
    }

    /// [`Store::record`], the window counted back from `now`: the clock of a replay
    /// (`call-outcome policy diff` replays events on their own time).
    pub fn record_at(
        &self,
        tenant: &str,
        destination: &str,
        call_id: &str,
        entry: HistoryEntry,
        now: SystemTime,
    ) -> Result<HistorySnapshot, StoreError> {
        let key = HistoryKey::new(tenant, destination)?;
        let cutoff = self.cutoff(now);
        let max_entries = self.inner.limits.max_entries_per_destination;
        let now = self.now_secs();
        let window = self.window_secs();
        let new = Row {
            at: to_nanos(entry.at),
            id: self.inner.id_hasher.hash_one(call_id),
            attempt: entry.attempt,
            sip_code: entry.sip_code,
            category: entry.category,
        };
        let hash = self.inner.hasher.hash_one(key.bytes());
        let mut shard = self.shard(hash).lock();
        let shard = &mut *shard;
        shard.sweep_idle(now, window);
        let tick = shard.tick();
        let mut entries = Vec::new();
        match shard.table.find_mut(hash, |slot| slot.key() == key.bytes()) {
            Some(slot) => {
                slot.record(new, cutoff, max_entries);
                slot.tick = tick;
                slot.touched = now;
                // `record` dropped what is before the cutoff.
                slot.snapshot_into(0, &mut entries);
                if entries.is_empty() {
                    // Nothing left inside the window: forget the destination.
                    if let Ok(found) = shard
                        .table
                        .find_entry(hash, |slot| slot.key() == key.bytes())
                    {
                        found.remove();
                    }
                }
            }
            None if new.at < cutoff || max_entries == 0 => {}
            None => {
                if shard.make_room(self.inner.shard_cap, now, window) {
                    let slot = Destination::new(key.bytes(), new, tick, now);
                    let hasher = &self.inner.hasher;
                    shard
                        .table
                        .insert_unique(hash, slot, |slot| hasher.hash_one(slot.key()));
                }
                entries.push(new.to_entry());
            }
        }
        Ok(HistorySnapshot {
            destination: destination.to_owned(),
            entries,
        })
    }

    /// Entries at or after this instant (nanoseconds since the epoch) are in the window.
    fn cutoff(&self, now: SystemTime) -> u64 {
        let window = u64::try_from(self.inner.limits.history_window.as_nanos()).unwrap_or(u64::MAX);
        to_nanos(now).saturating_sub(window)
    }
}

/// The report-path operations that may wait.
impl MemoryStore {
    /// Waits for the report in flight with `key` (claimed at `now`), then claims it or
    /// returns its result.
    async fn claim_after_wait(
        &self,
        key: &ReportKey,
        mut woken: watch::Receiver<()>,
        mut expires: Instant,
        mut now: Instant,
    ) -> Result<Claim, StoreError> {
        let deadline = now + self.inner.limits.in_flight_wait;
        loop {
            let until = expires.min(deadline);
            // `changed` fails when the marker's sender is dropped: the first report
            // completed or abandoned, or another claimer replaced an expired marker.
            if tokio::time::timeout_at(until, woken.changed())
                .await
                .is_err()
            {
                now = Instant::now();
                if now >= deadline && now < expires {
                    return Err(StoreError::InProgress);
                }
                // The lease ran out: the next turn of the loop takes the key over.
            } else {
                now = Instant::now();
            }
            // No await point between a claim and its return: a cancelled claim leaves
            // nothing behind.
            (woken, expires) = match self.inner.reports.claim(key, now, self.inner.lease)? {
                ClaimState::New => return Ok(Claim::New),
                ClaimState::Done(report) => return Ok(Claim::Done(report)),
                ClaimState::InFlight { woken, expires } => (woken, expires),
            };
        }
    }

    fn history_now(
        &self,
        tenant: &str,
        destination: &str,
        now: SystemTime,
    ) -> Result<HistorySnapshot, StoreError> {
        let key = HistoryKey::new(tenant, destination)?;
        let cutoff = self.cutoff(now);
        let now = self.now_secs();
        let hash = self.inner.hasher.hash_one(key.bytes());
        let mut shard = self.shard(hash).lock();
        let shard = &mut *shard;
        shard.sweep_idle(now, self.window_secs());
        let tick = shard.tick();
        let mut entries = Vec::new();
        if let Some(slot) = shard.table.find_mut(hash, |slot| slot.key() == key.bytes()) {
            slot.snapshot_into(cutoff, &mut entries);
            // Reading counts as use, for idle expiry and LRU eviction alike.
            slot.tick = tick;
            slot.touched = now;
        }
        Ok(HistorySnapshot {
            destination: destination.to_owned(),
            entries,
        })
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn claim<'a>(&'a self, key: &'a ReportKey) -> Step<'a, Result<Claim, StoreError>> {
        let now = Instant::now();
        match self.inner.reports.claim(key, now, self.inner.lease) {
            Ok(ClaimState::New) => Step::ready(Ok(Claim::New)),
            Ok(ClaimState::Done(report)) => Step::ready(Ok(Claim::Done(report))),
            // Another report holds the key: wait for it (the only step that suspends).
            Ok(ClaimState::InFlight { woken, expires }) => {
                Step::pending(self.claim_after_wait(key, woken, expires, now))
            }
            Err(e) => Step::ready(Err(e)),
        }
    }

    fn abandon<'a>(&'a self, key: &'a ReportKey) -> Step<'a, ()> {
        self.inner.reports.release(key);
        Step::ready(())
    }

    fn complete<'a>(
        &'a self,
        key: &'a ReportKey,
        report: &'a Arc<StoredReport>,
    ) -> Step<'a, Result<(), StoreError>> {
        // The first result wins: a report retried after its lease ran out must not
        // change what duplicates of the first one are told.
        Step::ready(self.inner.reports.complete(key, report, Instant::now()))
    }

    fn record<'a>(
        &'a self,
        tenant: &'a str,
        destination: &'a str,
        call_id: &'a str,
        entry: HistoryEntry,
    ) -> Step<'a, Result<HistorySnapshot, StoreError>> {
        Step::ready(self.record_at(tenant, destination, call_id, entry, SystemTime::now()))
    }

    fn history<'a>(
        &'a self,
        tenant: &'a str,
        destination: &'a str,
        now: SystemTime,
    ) -> Step<'a, Result<HistorySnapshot, StoreError>> {
        Step::ready(self.history_now(tenant, destination, now))
    }

    fn in_process(&self) -> bool {
        true
    }
}
