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
//!   whole [`StoredReport`] (roughly 1 KB each).
//! - In-flight claims: one small marker per report being processed. A marker expires
//!   after its lease (`3 × in_flight_wait`, at least one second) and expired markers are
//!   swept as the map grows, so abandoned claims cannot accumulate.
//! - Histories: at most `max_destinations` destinations (rounded up to a multiple of
//!   64), each with at most `max_entries_per_destination` entries. A destination is kept
//!   as a single packed byte buffer (key + entries + call ids, about 17 bytes per entry
//!   plus its call id), about 150 bytes per destination with one entry including the
//!   hash map slot. Destinations not touched for `history_window` are swept; when full,
//!   the least recently used eighth of a shard is evicted.
//!
//! Cancellation: `claim` has no await point after it marks a key in flight, so a
//! cancelled `claim` never leaves a marker behind. A caller that got [`Claim::New`] and
//! is then dropped before `complete`/`abandon` leaves a marker that holds duplicates off
//! for at most its lease: waiters give up with [`StoreError::InProgress`] after
//! `in_flight_wait`, and the first claim after the lease takes the key over. A cancelled
//! waiter holds nothing. `abandon` and `complete` release whatever marker the key has
//! (claims carry no token), and the first `complete` of a key wins.

use super::{Claim, ReportKey, Store, StoreError, StoreLimits, StoredReport};
use crate::classify::Category;
use crate::outcome::{HistoryEntry, HistorySnapshot};
use hashbrown::HashTable;
use parking_lot::Mutex;
use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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
    hasher: RandomState,
    started: Instant,
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
                reports: ReportKeys::new(limits.max_report_keys, limits.idempotency_ttl),
                limits,
                shards,
                shard_cap,
                hasher: RandomState::new(),
                started: Instant::now(),
            }),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        let index = self.inner.hasher.hash_one(key) as usize % SHARDS;
        &self.inner.shards[index]
    }

    /// Seconds since the store started: the clock of idle expiry.
    fn now_secs(&self) -> u32 {
        u32::try_from(self.inner.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn window_secs(&self) -> u32 {
        u32::try_from(self.inner.limits.history_window.as_secs()).unwrap_or(u32::MAX)
    }

    /// Entries at or after this instant (nanoseconds since the epoch) are in the window.
    fn cutoff(&self) -> u64 {
        let window = u64::try_from(self.inner.limits.history_window.as_nanos()).unwrap_or(u64::MAX);
        to_nanos(SystemTime::now()).saturating_sub(window)
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn claim(&self, key: &ReportKey) -> Result<Claim, StoreError> {
        let deadline = Instant::now() + self.inner.limits.in_flight_wait;
        loop {
            let (mut woken, expires) =
                match self
                    .inner
                    .reports
                    .claim(key, Instant::now(), self.inner.lease)
                {
                    // No await point before this return: a cancelled claim leaves nothing.
                    ClaimState::New => return Ok(Claim::New),
                    ClaimState::Done(report) => return Ok(Claim::Done(report)),
                    ClaimState::InFlight { woken, expires } => (woken, expires),
                };
            let until = expires.min(deadline);
            // `changed` fails when the marker's sender is dropped: the first report
            // completed or abandoned, or another claimer replaced an expired marker.
            if tokio::time::timeout_at(until, woken.changed())
                .await
                .is_err()
            {
                let now = Instant::now();
                if now >= deadline && now < expires {
                    return Err(StoreError::InProgress);
                }
                // The lease ran out: the next turn of the loop takes the key over.
            }
        }
    }

    async fn abandon(&self, key: &ReportKey) {
        self.inner.reports.release(key);
    }

    async fn complete(
        &self,
        key: &ReportKey,
        report: &Arc<StoredReport>,
    ) -> Result<(), StoreError> {
        // The first result wins: a report retried after its lease ran out must not
        // change what duplicates of the first one are told.
        self.inner.reports.complete(key, report, Instant::now());
        Ok(())
    }

    fn in_process(&self) -> bool {
        true
    }

    async fn record(
        &self,
        tenant: &str,
        destination: &str,
        entry: HistoryEntry,
    ) -> Result<HistorySnapshot, StoreError> {
        let key = history_key(tenant, destination)?;
        if entry.call_id.len() > usize::from(u16::MAX) {
            return Err(StoreError::Backend(
                "call id too long for the history".into(),
            ));
        }
        let cutoff = self.cutoff();
        let max_entries = self.inner.limits.max_entries_per_destination;
        let now = self.now_secs();
        let mut shard = self.shard(&key).lock();
        shard.sweep_idle(now, self.window_secs());

        let (snapshot, packed) = {
            let mut rows = shard
                .map
                .get_key_value(key.as_slice())
                .map(|(packed, _)| packed.rows())
                .unwrap_or_default();
            // A retried report replaces its own entry rather than counting twice.
            rows.retain(|r| {
                r.at >= cutoff && !(r.attempt == entry.attempt && r.call_id == entry.call_id)
            });
            let new = Row::of(&entry);
            if new.at >= cutoff {
                let at = rows.partition_point(|r| r.at <= new.at);
                rows.insert(at, new);
            }
            let excess = rows.len().saturating_sub(max_entries);
            rows.drain(..excess);
            let snapshot = snapshot(destination, &rows);
            let packed = (!rows.is_empty()).then(|| Packed::encode(&key, &rows));
            (snapshot, packed)
        };

        let existed = shard.map.remove(key.as_slice()).is_some();
        if let Some(packed) = packed
            && (existed || shard.make_room(self.inner.shard_cap, now, self.window_secs()))
        {
            let tick = shard.tick();
            shard.map.insert(packed, Meta { tick, touched: now });
        }
        Ok(snapshot)
    }

    async fn history(
        &self,
        tenant: &str,
        destination: &str,
    ) -> Result<HistorySnapshot, StoreError> {
        let key = history_key(tenant, destination)?;
        let cutoff = self.cutoff();
        let now = self.now_secs();
        let mut shard = self.shard(&key).lock();
        shard.sweep_idle(now, self.window_secs());
        let tick = shard.tick();
        let Some((packed, _)) = shard.map.get_key_value(key.as_slice()) else {
            return Ok(HistorySnapshot {
                destination: destination.to_owned(),
                entries: Vec::new(),
            });
        };
        let mut rows = packed.rows();
        rows.retain(|r| r.at >= cutoff);
        let snapshot = snapshot(destination, &rows);
        // Reading counts as use, for idle expiry and LRU eviction alike.
        if let Some(meta) = shard.map.get_mut(key.as_slice()) {
            *meta = Meta { tick, touched: now };
        }
        Ok(snapshot)
    }
}

/// `u16 tenant length, tenant, destination`: the length prefix keeps tenants apart.
fn history_key(tenant: &str, destination: &str) -> Result<Vec<u8>, StoreError> {
    let too_long = || StoreError::Backend("tenant or destination too long for the history".into());
    let tenant_len = u16::try_from(tenant.len()).map_err(|_| too_long())?;
    let total = 2 + tenant.len() + destination.len();
    if total > usize::from(u16::MAX) {
        return Err(too_long());
    }
    let mut key = Vec::with_capacity(total);
    key.extend_from_slice(&tenant_len.to_le_bytes());
    key.extend_from_slice(tenant.as_bytes());
    key.extend_from_slice(destination.as_bytes());
    Ok(key)
}

fn snapshot(destination: &str, rows: &[Row<'_>]) -> HistorySnapshot {
    HistorySnapshot {
        destination: destination.to_owned(),
        entries: rows.iter().map(Row::to_entry).collect(),
    }
}

/// Nanoseconds since the epoch: exact from 1970 to 2554; earlier instants read as the
/// epoch (always outside any window) and later ones as 2554.
fn to_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[derive(Default)]
struct Shard {
    map: HashMap<Packed, Meta>,
    /// Logical clock: unique per access, so LRU eviction removes exactly what it must.
    clock: u64,
    next_idle_sweep: u32,
}

#[derive(Clone, Copy)]
struct Meta {
    tick: u64,
    /// Seconds since the store started.
    touched: u32,
}

impl Shard {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Drops destinations idle for a whole window, at most every quarter window.
    fn sweep_idle(&mut self, now: u32, window: u32) {
        if now < self.next_idle_sweep {
            return;
        }
        self.map
            .retain(|_, meta| now.saturating_sub(meta.touched) < window);
        self.next_idle_sweep = now.saturating_add((window / 4).max(1));
    }

    /// Makes room for one new destination; false when the capacity is zero.
    fn make_room(&mut self, cap: usize, now: u32, window: u32) -> bool {
        if cap == 0 {
            return false;
        }
        if self.map.len() < cap {
            return true;
        }
        self.next_idle_sweep = 0;
        self.sweep_idle(now, window);
        if self.map.len() < cap {
            return true;
        }
        // Evict the least recently used eighth at once, so that this O(n) pass runs at
        // most once per cap/8 insertions.
        let keep = (cap - cap / 8).max(1);
        // At least one goes: len >= cap >= keep.
        let evict = (self.map.len() + 1).saturating_sub(keep).max(1);
        let mut ticks: Vec<u64> = self.map.values().map(|m| m.tick).collect();
        if evict >= ticks.len() {
            self.map.clear();
            return true;
        }
        let (_, &mut threshold, _) = ticks.select_nth_unstable(evict - 1);
        self.map.retain(|_, meta| meta.tick > threshold);
        true
    }
}

/// A destination's key and entries in one allocation:
/// `u16 key length, key, entries`, each entry being
/// `u64 at (ns since epoch), u32 attempt, u16 sip code, u8 flags, u16 id length, id`.
/// Flags: bits 0–6 the category's index in [`Category::ALL`], bit 7 "has a SIP code".
struct Packed(Box<[u8]>);

const ENTRY_HEADER: usize = 8 + 4 + 2 + 1 + 2;
const HAS_CODE: u8 = 0x80;

impl Packed {
    fn encode(key: &[u8], rows: &[Row<'_>]) -> Packed {
        let size = 2
            + key.len()
            + rows
                .iter()
                .map(|r| ENTRY_HEADER + r.call_id.len())
                .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        // Lengths were checked against u16 by `history_key` and `record`.
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
        for r in rows {
            let category = Category::ALL
                .iter()
                .position(|c| *c == r.category)
                .unwrap_or_default() as u8;
            let flags = category | if r.sip_code.is_some() { HAS_CODE } else { 0 };
            out.extend_from_slice(&r.at.to_le_bytes());
            out.extend_from_slice(&r.attempt.to_le_bytes());
            out.extend_from_slice(&r.sip_code.unwrap_or(0).to_le_bytes());
            out.push(flags);
            out.extend_from_slice(&(r.call_id.len() as u16).to_le_bytes());
            out.extend_from_slice(r.call_id.as_bytes());
        }
        Packed(out.into_boxed_slice())
    }

    fn split(&self) -> (&[u8], &[u8]) {
        let len = self
            .0
            .first_chunk::<2>()
            .map_or(0, |b| usize::from(u16::from_le_bytes(*b)));
        let body = self.0.get(2..).unwrap_or_default();
        body.split_at_checked(len).unwrap_or((body, &[]))
    }

    fn key(&self) -> &[u8] {
        self.split().0
    }

    /// The entries, oldest first. The buffer is only ever written by `encode`; a
    /// malformed tail (impossible) would end the list rather than panic.
    fn rows(&self) -> Vec<Row<'_>> {
        let mut rest = self.split().1;
        let mut rows = Vec::new();
        while let Some((row, tail)) = Row::decode(rest) {
            rows.push(row);
            rest = tail;
        }
        rows
    }
}

// The map is keyed by the key part of the buffer, so lookups take a borrowed `&[u8]`.
impl Borrow<[u8]> for Packed {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl Hash for Packed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for Packed {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Packed {}

/// One history entry, borrowing its call id.
struct Row<'a> {
    at: u64,
    attempt: u32,
    sip_code: Option<u16>,
    category: Category,
    call_id: &'a str,
}

impl<'a> Row<'a> {
    fn of(entry: &'a HistoryEntry) -> Self {
        Row {
            at: to_nanos(entry.at),
            attempt: entry.attempt,
            sip_code: entry.sip_code,
            category: entry.category,
            call_id: &entry.call_id,
        }
    }

    fn to_entry(&self) -> HistoryEntry {
        HistoryEntry {
            at: UNIX_EPOCH + Duration::from_nanos(self.at),
            call_id: self.call_id.to_owned(),
            attempt: self.attempt,
            category: self.category,
            sip_code: self.sip_code,
        }
    }

    fn decode(buf: &'a [u8]) -> Option<(Self, &'a [u8])> {
        let (at, buf) = buf.split_first_chunk::<8>()?;
        let (attempt, buf) = buf.split_first_chunk::<4>()?;
        let (code, buf) = buf.split_first_chunk::<2>()?;
        let (&flags, buf) = buf.split_first()?;
        let (id_len, buf) = buf.split_first_chunk::<2>()?;
        let (id, rest) = buf.split_at_checked(usize::from(u16::from_le_bytes(*id_len)))?;
        let row = Row {
            at: u64::from_le_bytes(*at),
            attempt: u32::from_le_bytes(*attempt),
            sip_code: (flags & HAS_CODE != 0).then(|| u16::from_le_bytes(*code)),
            category: *Category::ALL.get(usize::from(flags & !HAS_CODE))?,
            call_id: std::str::from_utf8(id).ok()?,
        };
        Some((row, rest))
    }
}

/// What [`ReportKeys::claim`] found.
enum ClaimState {
    /// The key was free (or its marker had expired): it is now marked in flight.
    New,
    Done(Arc<StoredReport>),
    /// Another report holds the key until `expires`; `woken` changes when it lets go.
    InFlight {
        woken: watch::Receiver<()>,
        expires: Instant,
    },
}

/// Report keys, in flight or completed, in sharded hash tables: a claim and a
/// completion are each one short lock and one hash probe.
///
/// Completed keys: at most `capacity` (oldest completed forgotten first), each for `ttl`
/// after completion. A completed key never changes (the first result wins), so the
/// completion order is both expiry order and eviction order: a queue of
/// `(hash, completion number)` finds the oldest without storing the key twice.
struct ReportKeys {
    shards: Box<[Mutex<ReportShard>]>,
    shard_cap: usize,
    ttl: Duration,
    hasher: foldhash::fast::RandomState,
}

#[derive(Default)]
struct ReportShard {
    table: HashTable<ReportSlot>,
    /// Completed keys in completion order: (hash, completion number, expiry).
    order: VecDeque<(u64, u64, Instant)>,
    completed: u64,
    /// Markers in the table; expired ones are swept when this reaches `sweep_at`.
    in_flight: usize,
    sweep_at: usize,
}

struct ReportSlot {
    hash: u64,
    key: ReportKey,
    state: SlotState,
}

enum SlotState {
    /// Being processed until `expires`. Waiters subscribe to `wake` (made for the first
    /// waiter); dropping the sender, when the state changes, wakes them.
    InFlight {
        expires: Instant,
        wake: Option<watch::Sender<()>>,
    },
    Done {
        report: Arc<StoredReport>,
        expires: Instant,
        number: u64,
    },
}

impl ReportKeys {
    fn new(capacity: u64, ttl: Duration) -> Self {
        let shard_cap =
            usize::try_from(capacity.div_ceil(DONE_SHARDS as u64)).unwrap_or(usize::MAX);
        ReportKeys {
            shards: (0..DONE_SHARDS)
                .map(|_| {
                    Mutex::new(ReportShard {
                        sweep_at: MIN_SWEEP_AT,
                        ..ReportShard::default()
                    })
                })
                .collect(),
            shard_cap,
            ttl: ttl.min(MAX_TTL),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn locate(&self, key: &ReportKey) -> (u64, &Mutex<ReportShard>) {
        let hash = self.hasher.hash_one(key);
        // The high bits pick the shard; the table uses the low ones.
        (hash, &self.shards[(hash >> 57) as usize % DONE_SHARDS])
    }

    fn claim(&self, key: &ReportKey, now: Instant, lease: Duration) -> ClaimState {
        let (hash, shard) = self.locate(key);
        let mut shard = shard.lock();
        let shard = &mut *shard;
        let found = shard
            .table
            .find_mut(hash, |slot| slot.hash == hash && slot.key == *key);
        let marker = SlotState::InFlight {
            expires: now + lease,
            wake: None,
        };
        match found {
            Some(slot) => match &mut slot.state {
                SlotState::Done {
                    report, expires, ..
                } if *expires > now => ClaimState::Done(Arc::clone(report)),
                SlotState::InFlight { expires, wake } if *expires > now => {
                    let woken = wake.get_or_insert_with(|| watch::channel(()).0).subscribe();
                    ClaimState::InFlight {
                        woken,
                        expires: *expires,
                    }
                }
                state => {
                    // Expired: a dead claimer's marker, or a result past its TTL whose
                    // queue entry will find a newer number and leave the key alone.
                    if matches!(state, SlotState::Done { .. }) {
                        shard.in_flight += 1;
                    }
                    *state = marker;
                    ClaimState::New
                }
            },
            None => {
                if shard.in_flight >= shard.sweep_at {
                    shard.sweep_expired_markers(now);
                }
                shard.in_flight += 1;
                shard.table.insert_unique(
                    hash,
                    ReportSlot {
                        hash,
                        key: key.clone(),
                        state: marker,
                    },
                    |slot| slot.hash,
                );
                ClaimState::New
            }
        }
    }

    /// Drops the key's marker, if it has one (waking its waiters).
    fn release(&self, key: &ReportKey) {
        let (hash, shard) = self.locate(key);
        let removed = {
            let mut shard = shard.lock();
            let entry = shard.table.find_entry(hash, |slot| {
                slot.hash == hash
                    && slot.key == *key
                    && matches!(slot.state, SlotState::InFlight { .. })
            });
            match entry {
                Ok(entry) => {
                    let (slot, _) = entry.remove();
                    shard.in_flight -= 1;
                    Some(slot)
                }
                Err(_) => None,
            }
        };
        // Waking waiters happens here, outside the lock.
        drop(removed);
    }

    /// Stores `report` as the key's result unless it already has a live one, and
    /// releases its marker.
    fn complete(&self, key: &ReportKey, report: &Arc<StoredReport>, now: Instant) {
        if self.shard_cap == 0 || self.ttl.is_zero() {
            self.release(key);
            return;
        }
        let (hash, shard) = self.locate(key);
        let released = {
            let mut guard = shard.lock();
            let shard = &mut *guard;
            shard.completed += 1;
            let number = shard.completed;
            let expires = now + self.ttl;
            let done = SlotState::Done {
                report: Arc::clone(report),
                expires,
                number,
            };
            let released = match shard
                .table
                .find_mut(hash, |slot| slot.hash == hash && slot.key == *key)
            {
                Some(slot) => match &slot.state {
                    SlotState::Done { expires: first, .. } if *first > now => return,
                    SlotState::Done { .. } => {
                        slot.state = done;
                        None
                    }
                    SlotState::InFlight { .. } => {
                        shard.in_flight -= 1;
                        Some(std::mem::replace(&mut slot.state, done))
                    }
                },
                None => {
                    shard.table.insert_unique(
                        hash,
                        ReportSlot {
                            hash,
                            key: key.clone(),
                            state: done,
                        },
                        |slot| slot.hash,
                    );
                    None
                }
            };
            shard.order.push_back((hash, number, expires));
            shard.evict(now, self.shard_cap);
            released
        };
        // Waking waiters happens here, outside the lock.
        drop(released);
    }
}

impl ReportShard {
    /// Forgets completed keys that expired, then the oldest beyond `cap`.
    fn evict(&mut self, now: Instant, cap: usize) {
        while let Some(&(hash, number, expires)) = self.order.front() {
            if expires > now && self.order.len() <= cap {
                break;
            }
            self.order.pop_front();
            // A key completed again after it expired has a newer number: keep that one.
            if let Ok(entry) = self.table.find_entry(hash, |slot| {
                slot.hash == hash
                    && matches!(slot.state, SlotState::Done { number: n, .. } if n == number)
            }) {
                entry.remove();
            }
        }
    }

    fn sweep_expired_markers(&mut self, now: Instant) {
        let mut swept = 0;
        self.table.retain(|slot| match slot.state {
            SlotState::InFlight { expires, .. } if expires <= now => {
                swept += 1;
                false
            }
            _ => true,
        });
        self.in_flight -= swept;
        self.sweep_at = (self.in_flight * 2).max(MIN_SWEEP_AT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Category;
    use std::time::SystemTime;

    fn limits() -> StoreLimits {
        StoreLimits {
            in_flight_wait: Duration::from_secs(5),
            max_entries_per_destination: 4,
            ..StoreLimits::default()
        }
    }

    fn key(call_id: &str) -> ReportKey {
        ReportKey {
            tenant: "acme".into(),
            call_id: call_id.into(),
            attempt: 1,
        }
    }

    fn report(event_id: &str) -> Arc<StoredReport> {
        use crate::classify::{Basis, Classification, Fault, Retryable};
        use crate::policy::{Action, Decision};
        Arc::new(StoredReport {
            classification: Arc::new(Classification {
                category: Category::Busy,
                fault: Fault::CalleeDevice,
                retryable: Retryable::Later,
                sip_code: Some(486),
                reported_sip_code: Some(486),
                sip_phrase: "Busy Here".into(),
                q850_cause: Some(17),
                q850_source: None,
                q850_location: None,
                reason_text: None,
                retry_after: None,
                summary: "The line was busy.".into(),
                basis: Basis::SipCode,
            }),
            decision: Arc::new(Decision {
                action: Action::RetryLater,
                notify_user: false,
                user_message: String::new(),
                alternatives: Vec::new(),
                retry: None,
                avoid_route_seconds: 0,
                alert_operator: false,
                suppressed: false,
                rule: "busy".into(),
                explanation: "busy: retry later".into(),
                attempt: 1,
            }),
            event_id: event_id.into(),
            destination: "+15550104477".into(),
            recorded_at: SystemTime::UNIX_EPOCH,
        })
    }

    fn entry(call_id: &str, attempt: u32, ago_secs: u64) -> HistoryEntry {
        HistoryEntry {
            at: SystemTime::now() - Duration::from_secs(ago_secs),
            call_id: call_id.into(),
            attempt,
            category: Category::Busy,
            sip_code: Some(486),
        }
    }

    fn ids(snapshot: &HistorySnapshot) -> Vec<(&str, u32)> {
        snapshot
            .entries
            .iter()
            .map(|e| (e.call_id.as_str(), e.attempt))
            .collect()
    }

    #[tokio::test]
    async fn duplicate_after_complete_is_done() {
        let store = MemoryStore::new(limits());
        assert_eq!(store.claim(&key("a")).await, Ok(Claim::New));
        store.complete(&key("a"), &report("e1")).await.unwrap();
        assert_eq!(store.claim(&key("a")).await, Ok(Claim::Done(report("e1"))));
        // The first result wins.
        store.complete(&key("a"), &report("e2")).await.unwrap();
        assert_eq!(store.claim(&key("a")).await, Ok(Claim::Done(report("e1"))));
        // Other attempts and tenants are other keys.
        let mut other = key("a");
        other.attempt = 2;
        assert_eq!(store.claim(&other).await, Ok(Claim::New));
        other.tenant = "globex".into();
        assert_eq!(store.claim(&other).await, Ok(Claim::New));
    }

    #[tokio::test(start_paused = true)]
    async fn completed_keys_are_forgotten_after_the_ttl() {
        let store = MemoryStore::new(StoreLimits {
            idempotency_ttl: Duration::from_secs(60),
            ..limits()
        });
        assert_eq!(store.claim(&key("a")).await, Ok(Claim::New));
        store.complete(&key("a"), &report("e1")).await.unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(store.claim(&key("a")).await, Ok(Claim::Done(report("e1"))));
        tokio::time::advance(Duration::from_secs(2)).await;
        // Expired: the key is new again, and a second result is kept from then on.
        assert_eq!(store.claim(&key("a")).await, Ok(Claim::New));
        store.complete(&key("a"), &report("e2")).await.unwrap();
        // Inserting others sweeps the expired entry of "a" without losing the new one.
        for i in 0..100 {
            store
                .complete(&key(&format!("x{i}")), &report("x"))
                .await
                .unwrap();
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(store.claim(&key("a")).await, Ok(Claim::Done(report("e2"))));
    }

    #[tokio::test]
    async fn completed_keys_are_bounded_oldest_first() {
        let store = MemoryStore::new(StoreLimits {
            max_report_keys: 32,
            ..limits()
        });
        for i in 0..1000 {
            store
                .complete(&key(&format!("k{i}")), &report(&format!("e{i}")))
                .await
                .unwrap();
        }
        let kept: usize = store
            .inner
            .reports
            .shards
            .iter()
            .map(|s| s.lock().table.len())
            .sum();
        assert!(kept <= 32, "{kept} keys kept");
        assert!(kept >= 16, "{kept} keys kept");
        // The newest is kept, the oldest is not.
        assert_eq!(
            store.claim(&key("k999")).await,
            Ok(Claim::Done(report("e999")))
        );
        assert_eq!(store.claim(&key("k0")).await, Ok(Claim::New));
        let none = MemoryStore::new(StoreLimits {
            max_report_keys: 0,
            ..limits()
        });
        none.complete(&key("a"), &report("e1")).await.unwrap();
        assert_eq!(none.claim(&key("a")).await, Ok(Claim::New));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_claim_waits_then_gets_done() {
        let store = MemoryStore::new(limits());
        assert_eq!(store.claim(&key("a")).await, Ok(Claim::New));
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.claim(&key("a")).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        store.complete(&key("a"), &report("e1")).await.unwrap();
        assert_eq!(waiter.await.unwrap(), Ok(Claim::Done(report("e1"))));
    }

    #[tokio::test(start_paused = true)]
    async fn abandon_lets_the_waiter_take_over() {
        let store = MemoryStore::new(limits());
        assert_eq!(store.claim(&key("a")).await, Ok(Claim::New));
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.claim(&key("a")).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        store.abandon(&key("a")).await;
        assert_eq!(waiter.await.unwrap(), Ok(Claim::New));
        // The waiter now holds the claim: a third caller waits again.
        let third = tokio::spawn({
            let store = store.clone();
            async move { store.claim(&key("a")).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third.is_finished());
        store.complete(&key("a"), &report("e2")).await.unwrap();
        assert_eq!(third.await.unwrap(), Ok(Claim::Done(report("e2"))));
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_wait_times_out() {
        let store = MemoryStore::new(limits());
        assert_eq!(store.claim(&key("a")).await, Ok(Claim::New));
        let start = Instant::now();
        assert_eq!(store.claim(&key("a")).await, Err(StoreError::InProgress));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_claimer_does_not_block_forever() {
        let store = MemoryStore::new(limits());
        // A report pipeline that claims and is then cancelled.
        let pipeline = tokio::spawn({
            let store = store.clone();
            async move {
                let claim = store.claim(&key("a")).await;
                std::future::pending::<()>().await;
                claim
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        pipeline.abort();
        let _ = pipeline.await;
        // Within the lease (3 × 5 s) duplicates are held off...
        assert_eq!(store.claim(&key("a")).await, Err(StoreError::InProgress));
        // ...and a waiter that overlaps the end of the lease takes the key over.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(store.claim(&key("a")).await, Ok(Claim::New));
        // A cancelled waiter leaves nothing behind either.
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.claim(&key("a")).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        waiter.abort();
        store.complete(&key("a"), &report("e1")).await.unwrap();
        assert_eq!(store.claim(&key("a")).await, Ok(Claim::Done(report("e1"))));
    }

    #[tokio::test]
    async fn expired_markers_are_swept() {
        let store = MemoryStore::new(StoreLimits {
            in_flight_wait: Duration::ZERO,
            ..limits()
        });
        let reports = &store.inner.reports;
        let shard_of = |k: &ReportKey| reports.locate(k).1 as *const _;
        // Keys that all land in one shard, so that its sweep threshold is reached.
        let first = shard_of(&key("0"));
        let same_shard: Vec<ReportKey> = (0..)
            .map(|i| key(&i.to_string()))
            .filter(|k| shard_of(k) == first)
            .take(MIN_SWEEP_AT + 1)
            .collect();
        for k in &same_shard[..MIN_SWEEP_AT] {
            store.claim(k).await.unwrap();
        }
        tokio::time::pause();
        tokio::time::advance(MIN_LEASE * 2).await;
        store.claim(&same_shard[MIN_SWEEP_AT]).await.unwrap();
        let shard = reports.locate(&same_shard[0]).1.lock();
        assert_eq!(shard.table.len(), 1, "expired markers swept");
        assert_eq!(shard.in_flight, 1);
    }

    #[tokio::test]
    async fn history_appends_in_order_with_a_cap() {
        let store = MemoryStore::new(limits());
        let d = "+15550104477";
        store.record("acme", d, entry("c1", 1, 50)).await.unwrap();
        store.record("acme", d, entry("c3", 1, 10)).await.unwrap();
        // A late report lands in time order, not at the end.
        let s = store.record("acme", d, entry("c2", 1, 30)).await.unwrap();
        assert_eq!(ids(&s), [("c1", 1), ("c2", 1), ("c3", 1)]);
        assert_eq!(s.destination, d);
        store.record("acme", d, entry("c4", 1, 5)).await.unwrap();
        let s = store.record("acme", d, entry("c5", 1, 1)).await.unwrap();
        assert_eq!(ids(&s), [("c2", 1), ("c3", 1), ("c4", 1), ("c5", 1)]);
        assert_eq!(store.history("acme", d).await.unwrap(), s);
        // Entries round-trip exactly.
        let e = HistoryEntry {
            sip_code: None,
            category: Category::Other,
            ..entry("c6", 0, 0)
        };
        let s = store.record("acme", d, e.clone()).await.unwrap();
        assert_eq!(s.entries.last(), Some(&e));
    }

    #[tokio::test]
    async fn history_prunes_entries_outside_the_window() {
        let store = MemoryStore::new(StoreLimits {
            history_window: Duration::from_secs(3600),
            ..limits()
        });
        let d = "+15550104477";
        store
            .record("acme", d, entry("old", 1, 3500))
            .await
            .unwrap();
        store.record("acme", d, entry("new", 1, 10)).await.unwrap();
        let s = store
            .record("acme", d, entry("older", 1, 7200))
            .await
            .unwrap();
        assert_eq!(ids(&s), [("old", 1), ("new", 1)]);
        let store2 = MemoryStore::new(StoreLimits {
            history_window: Duration::from_secs(100),
            ..limits()
        });
        store2.record("acme", d, entry("a", 1, 99)).await.unwrap();
        store2.record("acme", d, entry("b", 1, 1)).await.unwrap();
        // "a" leaves the window as time passes (1 s resolution is enough here).
        std::thread::sleep(Duration::from_millis(1100));
        let s = store2.history("acme", d).await.unwrap();
        assert_eq!(ids(&s), [("b", 1)]);
    }

    #[tokio::test]
    async fn record_is_idempotent_per_call_and_attempt() {
        let store = MemoryStore::new(limits());
        let d = "+15550104477";
        store.record("acme", d, entry("c1", 1, 20)).await.unwrap();
        store.record("acme", d, entry("c1", 0, 20)).await.unwrap();
        let retried = HistoryEntry {
            category: Category::NoAnswer,
            ..entry("c1", 1, 10)
        };
        let s = store.record("acme", d, retried.clone()).await.unwrap();
        assert_eq!(ids(&s), [("c1", 0), ("c1", 1)]);
        assert_eq!(s.entries[1], retried);
        let s = store.record("acme", d, entry("c1", 0, 5)).await.unwrap();
        assert_eq!(ids(&s), [("c1", 1), ("c1", 0)]);
    }

    #[tokio::test]
    async fn tenants_are_isolated() {
        let store = MemoryStore::new(limits());
        let d = "+15550104477";
        store.record("acme", d, entry("c1", 1, 5)).await.unwrap();
        store.record("globex", d, entry("c2", 1, 5)).await.unwrap();
        // A tenant/destination split that concatenates to the same bytes.
        store
            .record("acme+1", "5550104477", entry("c3", 1, 5))
            .await
            .unwrap();
        assert_eq!(ids(&store.history("acme", d).await.unwrap()), [("c1", 1)]);
        assert_eq!(ids(&store.history("globex", d).await.unwrap()), [("c2", 1)]);
        assert!(store.history("other", d).await.unwrap().entries.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_records_lose_nothing() {
        let store = MemoryStore::new(StoreLimits {
            max_entries_per_destination: 1000,
            ..limits()
        });
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .record("acme", "+15550104477", entry(&format!("c{i}"), 1, 0))
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let s = store.history("acme", "+15550104477").await.unwrap();
        assert_eq!(s.entries.len(), 400);
        assert!(s.entries.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[tokio::test]
    async fn destinations_are_bounded_lru() {
        let store = MemoryStore::new(StoreLimits {
            max_destinations: 64 * 8,
            ..limits()
        });
        for i in 0..5000 {
            store
                .record("acme", &format!("d{i}"), entry("c", 1, 0))
                .await
                .unwrap();
            // Keep "d0" in use: it must survive.
            store.history("acme", "d0").await.unwrap();
        }
        let total: usize = store.inner.shards.iter().map(|s| s.lock().map.len()).sum();
        assert!(total <= 64 * 8, "{total}");
        assert_eq!(store.history("acme", "d0").await.unwrap().entries.len(), 1);
        assert_eq!(
            store.history("acme", "d4999").await.unwrap().entries.len(),
            1
        );
        let zero = MemoryStore::new(StoreLimits {
            max_destinations: 0,
            ..limits()
        });
        let s = zero.record("acme", "d", entry("c", 1, 0)).await.unwrap();
        assert_eq!(s.entries.len(), 1);
        assert!(zero.history("acme", "d").await.unwrap().entries.is_empty());
    }

    #[tokio::test]
    async fn oversized_fields_are_errors_not_panics() {
        let store = MemoryStore::new(limits());
        let long = "x".repeat(70_000);
        assert!(store.record(&long, "d", entry("c", 1, 0)).await.is_err());
        assert!(store.record("t", &long, entry("c", 1, 0)).await.is_err());
        assert!(store.record("t", "d", entry(&long, 1, 0)).await.is_err());
        assert!(store.history(&long, "d").await.is_err());
    }

    fn rss_bytes() -> Option<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }

    /// Memory per destination: measured when /proc is there, printed with
    /// `--nocapture`, and checked against the budget (1 M destinations in ≤ 256 MB).
    /// The structural size is asserted everywhere.
    #[tokio::test]
    async fn memory_per_destination_is_small() {
        let store = MemoryStore::new(limits());
        let n = 200_000;
        let before = rss_bytes();
        for i in 0..n {
            let e = HistoryEntry {
                call_id: format!("{i:08}-6c1e-4b8e-9d7f-3a2b1c0d9e8f"),
                ..entry("", 1, 0)
            };
            store
                .record("acme", &format!("+1555{i:07}"), e)
                .await
                .unwrap();
        }
        let after = rss_bytes();
        let (slots, packed): (usize, usize) = store
            .inner
            .shards
            .iter()
            .map(|s| {
                let s = s.lock();
                let slot = std::mem::size_of::<(Packed, Meta)>() + 1;
                let packed: usize = s.map.keys().map(|p| p.0.len()).sum();
                (s.map.capacity() * slot, packed)
            })
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        let structural = (slots + packed) / n;
        println!("structural bytes/destination: {structural}");
        assert!(structural < 160, "{structural}");
        if let (Some(before), Some(after)) = (before, after) {
            let measured = after.saturating_sub(before) / n;
            println!("measured RSS bytes/destination: {measured}");
            assert!(measured < 230, "{measured}");
        }
    }
}
