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

use super::{Claim, ReportKey, Store, StoreError, StoreLimits, StoredReport};
use crate::domain::{Category, HistoryEntry, HistorySnapshot};
use crate::step::Step;
use hashbrown::HashTable;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::hash::BuildHasher;
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
    /// Picks the shard and slot of a destination.
    hasher: foldhash::fast::RandomState,
    /// Turns call ids into the report ids of history entries (see [`Destination`]).
    id_hasher: foldhash::quality::RandomState,
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
                hasher: foldhash::fast::RandomState::default(),
                id_hasher: foldhash::quality::RandomState::default(),
                started: Instant::now(),
            }),
        }
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        // The high bits pick the shard; the table uses the low ones.
        &self.inner.shards[(hash >> 58) as usize % SHARDS]
    }

    /// Seconds since the store started: the clock of idle expiry.
    fn now_secs(&self) -> u32 {
        u32::try_from(self.inner.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn window_secs(&self) -> u32 {
        u32::try_from(self.inner.limits.history_window.as_secs()).unwrap_or(u32::MAX)
    }

    /// [`Store::record`], the window counted back from `now`.
    fn record_at(
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
        match shard
            .table
            .find_mut(hash, |slot| slot.hash == hash && slot.key() == key.bytes())
        {
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
                        .find_entry(hash, |slot| slot.hash == hash && slot.key() == key.bytes())
                    {
                        found.remove();
                    }
                }
            }
            None if new.at < cutoff || max_entries == 0 => {}
            None => {
                if shard.make_room(self.inner.shard_cap, now, window) {
                    let slot = Destination::new(hash, key.bytes(), new, tick, now);
                    shard.table.insert_unique(hash, slot, |slot| slot.hash);
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
        if let Some(slot) = shard
            .table
            .find_mut(hash, |slot| slot.hash == hash && slot.key() == key.bytes())
        {
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

/// `u16 tenant length, tenant, destination`: the length prefix keeps tenants apart.
/// Built on the stack for the usual sizes (no allocation per lookup).
struct HistoryKey {
    buf: [u8; HistoryKey::INLINE],
    len: usize,
    heap: Vec<u8>,
}

impl HistoryKey {
    const INLINE: usize = 128;

    fn new(tenant: &str, destination: &str) -> Result<Self, StoreError> {
        let too_long =
            || StoreError::Backend("tenant or destination too long for the history".into());
        let tenant_len = u16::try_from(tenant.len()).map_err(|_| too_long())?;
        let total = 2 + tenant.len() + destination.len();
        if total > usize::from(u16::MAX) {
            return Err(too_long());
        }
        let parts: [&[u8]; 3] = [
            &tenant_len.to_le_bytes(),
            tenant.as_bytes(),
            destination.as_bytes(),
        ];
        let mut key = HistoryKey {
            buf: [0; Self::INLINE],
            len: total,
            heap: Vec::new(),
        };
        if total <= Self::INLINE {
            let mut at = 0;
            for part in parts {
                key.buf[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
        } else {
            key.heap = parts.concat();
        }
        Ok(key)
    }

    fn bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.buf[..self.len]
        } else {
            &self.heap
        }
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
    table: HashTable<Destination>,
    /// Logical clock: unique per access, so LRU eviction removes exactly what it must.
    clock: u64,
    next_idle_sweep: u32,
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
        self.table
            .retain(|slot| now.saturating_sub(slot.touched) < window);
        self.next_idle_sweep = now.saturating_add((window / 4).max(1));
    }

    /// Makes room for one new destination; false when the capacity is zero.
    fn make_room(&mut self, cap: usize, now: u32, window: u32) -> bool {
        if cap == 0 {
            return false;
        }
        if self.table.len() < cap {
            return true;
        }
        self.next_idle_sweep = 0;
        self.sweep_idle(now, window);
        if self.table.len() < cap {
            return true;
        }
        // Evict the least recently used eighth at once, so that this O(n) pass runs at
        // most once per cap/8 insertions.
        let keep = (cap - cap / 8).max(1);
        // At least one goes: len >= cap >= keep.
        let evict = (self.table.len() + 1).saturating_sub(keep).max(1);
        let mut ticks: Vec<u64> = self.table.iter().map(|slot| slot.tick).collect();
        if evict >= ticks.len() {
            self.table.clear();
            return true;
        }
        let (_, &mut threshold, _) = ticks.select_nth_unstable(evict - 1);
        self.table.retain(|slot| slot.tick > threshold);
        true
    }
}

/// One destination: its key and entries in a single allocation,
/// `u16 key length, key, entries` (oldest first), each entry [`ROW`] bytes:
/// `u64 at (ns since epoch), u64 report id, u32 attempt, u16 sip code, u8 flags`.
/// Flags: bits 0–6 the category's index in [`Category::ALL`], bit 7 "has a SIP code".
///
/// The report id is a 64-bit hash of the call id under a per-process key: it is only
/// compared, to recognise a retried report (same call id and attempt), and two call
/// ids of one destination colliding is a 1-in-2^58 event for a full history of 64.
/// Keeping the hash rather than the call id makes every entry the same size, so an
/// entry is appended (or the oldest dropped) in place, with no decoding or copy of
/// the others.
struct Destination {
    hash: u64,
    /// `u16 key length, key, rows`: the rows form a ring of `capacity()` slots, of
    /// which `len` are used, the oldest at slot `head`. When full, a new entry takes the
    /// oldest's slot (nothing is shifted); until then the ring grows by doubling (an
    /// exact fit would copy the whole history on every append).
    buf: Box<[u8]>,
    tick: u64,
    /// Seconds since the store started.
    touched: u32,
    len: u16,
    head: u16,
}

const ROW: usize = 8 + 8 + 4 + 2 + 1;
/// Where a row keeps its report id and attempt.
const ROW_ID_AND_ATTEMPT: std::ops::Range<usize> = 8..20;
const HAS_CODE: u8 = 0x80;

impl Destination {
    fn new(hash: u64, key: &[u8], row: Row, tick: u64, touched: u32) -> Self {
        let mut buf = Vec::with_capacity(2 + key.len() + ROW);
        // The key's length was checked against u16 by `HistoryKey::new`.
        buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(&row.encode());
        Destination {
            hash,
            buf: buf.into_boxed_slice(),
            tick,
            touched,
            len: 1,
            head: 0,
        }
    }

    fn key_len(&self) -> usize {
        self.buf
            .first_chunk::<2>()
            .map_or(0, |b| usize::from(u16::from_le_bytes(*b)))
    }

    fn key(&self) -> &[u8] {
        self.buf.get(2..2 + self.key_len()).unwrap_or_default()
    }

    fn slots(&self) -> &[u8] {
        self.buf.get(2 + self.key_len()..).unwrap_or_default()
    }

    /// Number of row slots.
    fn capacity(&self) -> usize {
        self.slots().len() / ROW
    }

    /// Number of entries.
    fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// The row in slot `slot`.
    fn slot(&self, slot: usize) -> Option<Row> {
        self.slots()
            .get(slot * ROW..(slot + 1) * ROW)
            .and_then(Row::decode)
    }

    /// The `i`-th entry, oldest first.
    fn row(&self, i: usize) -> Option<Row> {
        let capacity = self.capacity();
        if i >= self.len() || capacity == 0 {
            return None;
        }
        self.slot((usize::from(self.head) + i) % capacity)
    }

    /// The encoded entries, oldest first, as the ring's two runs of whole rows: from
    /// `head` to the end of the slots, then from the start. (Walking runs rather than
    /// indexing the ring costs no division, nor a branch per entry.)
    fn runs(&self) -> [&[u8]; 2] {
        let slots = self.slots();
        let head = usize::from(self.head);
        let len = self.len();
        let capacity = slots.len() / ROW;
        let first = len.min(capacity.saturating_sub(head));
        let second = len - first;
        [
            slots
                .get(head * ROW..(head + first) * ROW)
                .unwrap_or_default(),
            slots.get(..second * ROW).unwrap_or_default(),
        ]
    }

    /// Appends the entries at or after `cutoff` to `out`, oldest first.
    fn snapshot_into(&self, cutoff: u64, out: &mut Vec<HistoryEntry>) {
        out.reserve_exact(self.len());
        for run in self.runs() {
            let rows = run.chunks_exact(ROW).map_while(Row::decode);
            if cutoff == 0 {
                out.extend(rows.map(Row::to_entry));
            } else {
                out.extend(rows.filter(|r| r.at >= cutoff).map(Row::to_entry));
            }
        }
    }

    /// The entries, oldest first. The buffer is only ever written by this type in whole
    /// rows; a malformed row (impossible) would end the list rather than panic.
    fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.runs()
            .into_iter()
            .flat_map(|run| run.chunks_exact(ROW))
            .map_while(Row::decode)
    }

    /// Replaces the entries with `rows` (oldest first), in a buffer of `capacity` slots.
    fn rewrite(&mut self, rows: &[Row], capacity: usize) {
        let head = 2 + self.key_len();
        let mut buf = Vec::with_capacity(head + capacity * ROW);
        buf.extend_from_slice(self.buf.get(..head).unwrap_or_default());
        for row in rows {
            buf.extend_from_slice(&row.encode());
        }
        buf.resize(head + capacity * ROW, 0);
        self.buf = buf.into_boxed_slice();
        // At most `max_entries` rows, which the configuration bounds far below u16::MAX.
        self.len = u16::try_from(rows.len()).unwrap_or(u16::MAX);
        self.head = 0;
    }

    /// Adds `new` in time order: entries before `cutoff` are dropped, a retried report
    /// replaces its own entry rather than counting twice, and the oldest go beyond
    /// `max_entries`.
    fn record(&mut self, new: Row, cutoff: u64, max_entries: usize) {
        let len = self.len();
        let capacity = self.capacity();
        let last_at = len.checked_sub(1).and_then(|i| self.row(i)).map(|r| r.at);
        let oldest_at = self.row(0).map(|r| r.at);
        // Compared encoded, without decoding every entry: the report id and attempt.
        let encoded = new.encode();
        let retried = self.runs().iter().any(|run| {
            run.chunks_exact(ROW)
                .any(|r| r.get(ROW_ID_AND_ATTEMPT) == encoded.get(ROW_ID_AND_ATTEMPT))
        });
        let in_order = last_at.is_none_or(|at| at <= new.at);
        let none_expired = oldest_at.is_none_or(|at| at >= cutoff);
        let fits = len <= max_entries && capacity <= max_entries.max(1) && max_entries > 0;
        if in_order && none_expired && !retried && fits && new.at >= cutoff {
            // The usual case, in place.
            if len == max_entries {
                // Full: the new entry takes the oldest's slot.
                self.write_slot(usize::from(self.head), &new);
                self.head =
                    u16::try_from((usize::from(self.head) + 1) % capacity.max(1)).unwrap_or(0);
                return;
            }
            if len == capacity {
                let rows: Vec<Row> = self.rows().collect();
                let grown = (capacity * 2).clamp(1, max_entries);
                self.rewrite(&rows, grown);
            }
            let slot = (usize::from(self.head) + len) % self.capacity().max(1);
            self.write_slot(slot, &new);
            self.len += 1;
            return;
        }
        // Anything else (a late report, expiry, a retry): rebuild the list.
        let mut kept: Vec<Row> = self
            .rows()
            .filter(|r| r.at >= cutoff && !(r.id == new.id && r.attempt == new.attempt))
            .collect();
        if new.at >= cutoff {
            let at = kept.partition_point(|r| r.at <= new.at);
            kept.insert(at, new);
        }
        let excess = kept.len().saturating_sub(max_entries);
        let kept = &kept[excess..];
        self.rewrite(kept, kept.len());
    }

    fn write_slot(&mut self, slot: usize, row: &Row) {
        let at = 2 + self.key_len() + slot * ROW;
        if let Some(target) = self.buf.get_mut(at..at + ROW) {
            target.copy_from_slice(&row.encode());
        }
    }
}

/// One history entry as the store keeps it.
#[derive(Debug, Clone, Copy)]
struct Row {
    at: u64,
    id: u64,
    attempt: u32,
    sip_code: Option<u16>,
    category: Category,
}

impl Row {
    fn to_entry(self) -> HistoryEntry {
        HistoryEntry {
            at: UNIX_EPOCH + Duration::from_nanos(self.at),
            attempt: self.attempt,
            category: self.category,
            sip_code: self.sip_code,
        }
    }

    fn encode(&self) -> [u8; ROW] {
        let category = Category::ALL
            .iter()
            .position(|c| *c == self.category)
            .unwrap_or_default() as u8;
        let flags = category | if self.sip_code.is_some() { HAS_CODE } else { 0 };
        let mut out = [0; ROW];
        out[..8].copy_from_slice(&self.at.to_le_bytes());
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
        out[16..20].copy_from_slice(&self.attempt.to_le_bytes());
        out[20..22].copy_from_slice(&self.sip_code.unwrap_or(0).to_le_bytes());
        out[22] = flags;
        out
    }

    fn decode(buf: &[u8]) -> Option<Self> {
        let (at, buf) = buf.split_first_chunk::<8>()?;
        let (id, buf) = buf.split_first_chunk::<8>()?;
        let (attempt, buf) = buf.split_first_chunk::<4>()?;
        let (code, buf) = buf.split_first_chunk::<2>()?;
        let &flags = buf.first()?;
        Some(Row {
            at: u64::from_le_bytes(*at),
            id: u64::from_le_bytes(*id),
            attempt: u32::from_le_bytes(*attempt),
            sip_code: (flags & HAS_CODE != 0).then(|| u16::from_le_bytes(*code)),
            category: *Category::ALL.get(usize::from(flags & !HAS_CODE))?,
        })
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
///
/// A completed key keeps its result serialised (postcard) right after the key, in one
/// allocation of a few hundred bytes: it is read back only for a duplicate, and
/// forgetting it is one `free` rather than a walk through a dozen small allocations
/// that have long left the cache.
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
    /// The packed key (see [`PackedKey`]); once done, followed by the encoded result.
    data: Box<[u8]>,
    state: SlotState,
}

impl ReportSlot {
    fn key(&self) -> &[u8] {
        PackedKey::prefix(&self.data)
    }

    fn result(&self) -> &[u8] {
        self.data.get(self.key().len()..).unwrap_or_default()
    }

    fn is(&self, hash: u64, key: &PackedKey) -> bool {
        self.hash == hash && self.key() == key.bytes()
    }
}

enum SlotState {
    /// Being processed until `expires`. Waiters subscribe to `wake` (made for the first
    /// waiter); dropping the sender, when the state changes, wakes them.
    InFlight {
        expires: Instant,
        wake: Option<watch::Sender<()>>,
    },
    Done {
        expires: Instant,
        number: u64,
    },
}

/// A report key as bytes: `u32 length of what follows, u32 attempt, u16 tenant length,
/// tenant, call id`. The length prefix lets a slot hold the key and its result in one
/// buffer; the tenant length keeps `("a", "bc")` and `("ab", "c")` apart.
struct PackedKey(Vec<u8>);

impl PackedKey {
    fn new(key: &ReportKey) -> Result<Self, StoreError> {
        let too_long = || StoreError::Backend("tenant or call id too long for a report key".into());
        let tenant_len = u16::try_from(key.tenant.len()).map_err(|_| too_long())?;
        let rest = 4 + 2 + key.tenant.len() + key.call_id.len();
        let rest_len = u32::try_from(rest).map_err(|_| too_long())?;
        let mut out = Vec::with_capacity(4 + rest);
        out.extend_from_slice(&rest_len.to_le_bytes());
        out.extend_from_slice(&key.attempt.to_le_bytes());
        out.extend_from_slice(&tenant_len.to_le_bytes());
        out.extend_from_slice(key.tenant.as_bytes());
        out.extend_from_slice(key.call_id.as_bytes());
        Ok(PackedKey(out))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key at the start of a slot's buffer.
    fn prefix(data: &[u8]) -> &[u8] {
        let len = data
            .first_chunk::<4>()
            .map_or(0, |b| u32::from_le_bytes(*b) as usize);
        data.get(..4 + len).unwrap_or(data)
    }
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

    fn locate(&self, key: &PackedKey) -> (u64, &Mutex<ReportShard>) {
        let hash = self.hasher.hash_one(key.bytes());
        // The high bits pick the shard; the table uses the low ones.
        (hash, &self.shards[(hash >> 57) as usize % DONE_SHARDS])
    }

    fn claim(
        &self,
        key: &ReportKey,
        now: Instant,
        lease: Duration,
    ) -> Result<ClaimState, StoreError> {
        let key = PackedKey::new(key)?;
        let (hash, shard) = self.locate(&key);
        let mut shard = shard.lock();
        let shard = &mut *shard;
        let found = shard.table.find_mut(hash, |slot| slot.is(hash, &key));
        let marker = SlotState::InFlight {
            expires: now + lease,
            wake: None,
        };
        Ok(match found {
            Some(slot) => match &mut slot.state {
                SlotState::Done { expires, .. } if *expires > now => {
                    ClaimState::Done(Arc::new(decode_result(slot.result())?))
                }
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
                        data: key.0.into_boxed_slice(),
                        state: marker,
                    },
                    |slot| slot.hash,
                );
                ClaimState::New
            }
        })
    }

    /// Drops the key's marker, if it has one (waking its waiters).
    fn release(&self, key: &ReportKey) {
        let Ok(key) = PackedKey::new(key) else {
            // Such a key was never claimed.
            return;
        };
        let (hash, shard) = self.locate(&key);
        let removed = {
            let mut shard = shard.lock();
            let entry = shard.table.find_entry(hash, |slot| {
                slot.is(hash, &key) && matches!(slot.state, SlotState::InFlight { .. })
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
    fn complete(
        &self,
        key: &ReportKey,
        report: &StoredReport,
        now: Instant,
    ) -> Result<(), StoreError> {
        if self.shard_cap == 0 || self.ttl.is_zero() {
            self.release(key);
            return Ok(());
        }
        let packed = PackedKey::new(key)?;
        // Encoded outside the lock: key and result in one exact allocation.
        let data = encode_result(packed.bytes(), report)?;
        let (hash, shard) = self.locate(&packed);
        let released = {
            let mut guard = shard.lock();
            let shard = &mut *guard;
            shard.completed += 1;
            let number = shard.completed;
            let expires = now + self.ttl;
            let done = SlotState::Done { expires, number };
            let released = match shard.table.find_mut(hash, |slot| slot.is(hash, &packed)) {
                Some(slot) => match &slot.state {
                    SlotState::Done { expires: first, .. } if *first > now => return Ok(()),
                    SlotState::Done { .. } => {
                        slot.state = done;
                        slot.data = data;
                        None
                    }
                    SlotState::InFlight { .. } => {
                        shard.in_flight -= 1;
                        slot.data = data;
                        Some(std::mem::replace(&mut slot.state, done))
                    }
                },
                None => {
                    shard.table.insert_unique(
                        hash,
                        ReportSlot {
                            hash,
                            data,
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
        Ok(())
    }
}

/// `key` followed by the postcard encoding of `report`, in one exact allocation.
fn encode_result(key: &[u8], report: &StoredReport) -> Result<Box<[u8]>, StoreError> {
    let failed = |e: postcard::Error| StoreError::Backend(format!("cannot encode a report: {e}"));
    let size = postcard::experimental::serialized_size(report).map_err(failed)?;
    let mut data = vec![0; key.len() + size];
    let (head, tail) = data.split_at_mut(key.len());
    head.copy_from_slice(key);
    postcard::to_slice(report, tail).map_err(failed)?;
    Ok(data.into_boxed_slice())
}

fn decode_result(bytes: &[u8]) -> Result<StoredReport, StoreError> {
    postcard::from_bytes(bytes)
        .map_err(|e| StoreError::Backend(format!("cannot decode a stored report: {e}")))
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
    use crate::domain::Category;
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
        use crate::domain::{Action, Decision};
        use crate::domain::{Basis, Classification, Fault, Retryable};
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

    /// An entry `ago_secs` in the past whose SIP code (`code`) tells it apart in tests.
    fn entry(code: u16, attempt: u32, ago_secs: u64) -> HistoryEntry {
        HistoryEntry {
            at: SystemTime::now() - Duration::from_secs(ago_secs),
            attempt,
            category: Category::Busy,
            sip_code: Some(code),
        }
    }

    fn ids(snapshot: &HistorySnapshot) -> Vec<(u16, u32)> {
        snapshot
            .entries
            .iter()
            .map(|e| (e.sip_code.unwrap_or(0), e.attempt))
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

    /// Kept results decode back; garbage does not (the rich round trip through a whole
    /// report is `pipeline::tests::kept_results_round_trip_exactly`).
    #[test]
    fn packed_keys_and_results_decode() {
        let packed = PackedKey::new(&key("k")).unwrap();
        assert!(decode_result(b"\xff\xff").is_err());
        assert_eq!(PackedKey::prefix(packed.bytes()), packed.bytes());
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
        let shard_of = |k: &ReportKey| reports.locate(&PackedKey::new(k).unwrap()).1 as *const _;
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
        let packed = PackedKey::new(&same_shard[0]).unwrap();
        let shard = reports.locate(&packed).1.lock();
        assert_eq!(shard.table.len(), 1, "expired markers swept");
        assert_eq!(shard.in_flight, 1);
    }

    /// The ring of a destination: it grows by doubling up to the cap, then the newest
    /// entry takes the oldest's slot. Its order must hold however often it wrapped, and
    /// a retry or a late report inside a wrapped ring must land where a list would put
    /// them. Checked against a plain sorted list, entry by entry.
    #[tokio::test]
    async fn history_ring_matches_a_plain_list() {
        let cap = 5;
        let store = MemoryStore::new(StoreLimits {
            max_entries_per_destination: cap,
            ..limits()
        });
        let d = "+15550104478";
        let base = SystemTime::now() - Duration::from_secs(3600);
        let mut expected: Vec<(u64, u16, u32)> = Vec::new();
        let record = |secs: u64, code: u16, attempt: u32, expected: &mut Vec<(u64, u16, u32)>| {
            let entry = HistoryEntry {
                at: base + Duration::from_secs(secs),
                attempt,
                category: Category::Busy,
                sip_code: Some(code),
            };
            let call_id = format!("call-{code}");
            expected.retain(|&(_, c, a)| !(c == code && a == attempt));
            let at = expected.partition_point(|&(t, _, _)| t <= secs);
            expected.insert(at, (secs, code, attempt));
            let excess = expected.len().saturating_sub(cap);
            expected.drain(..excess);
            let store = &store;
            async move { store.record("acme", d, &call_id, entry).await.unwrap() }
        };
        let check = |s: &HistorySnapshot, expected: &[(u64, u16, u32)]| {
            let got: Vec<(u64, u16, u32)> = s
                .entries
                .iter()
                .map(|e| {
                    let secs = e.at.duration_since(base).unwrap().as_secs();
                    (secs, e.sip_code.unwrap(), e.attempt)
                })
                .collect();
            assert_eq!(got, expected);
        };
        // Growth (1, 2, 4, 5 slots), then wrapping around three times.
        for i in 0..17u16 {
            let s = record(u64::from(i) * 10, 100 + i, 1, &mut expected).await;
            check(&s, &expected);
        }
        // A retry of an entry in the wrapped ring replaces it (same call id and attempt).
        let s = record(165, 114, 1, &mut expected).await;
        check(&s, &expected);
        // A late report lands in time order; a new attempt of the same call counts.
        let s = record(155, 200, 1, &mut expected).await;
        check(&s, &expected);
        let s = record(170, 200, 2, &mut expected).await;
        check(&s, &expected);
        // And appending in place works again after those rebuilds.
        for i in 0..7u16 {
            let s = record(200 + u64::from(i), 300 + i, 1, &mut expected).await;
            check(&s, &expected);
        }
        check(
            &store.history("acme", d, SystemTime::now()).await.unwrap(),
            &expected,
        );
    }

    #[tokio::test]
    async fn history_appends_in_order_with_a_cap() {
        let store = MemoryStore::new(limits());
        let d = "+15550104477";
        store
            .record("acme", d, "c1", entry(1, 1, 50))
            .await
            .unwrap();
        store
            .record("acme", d, "c3", entry(3, 1, 10))
            .await
            .unwrap();
        // A late report lands in time order, not at the end.
        let s = store
            .record("acme", d, "c2", entry(2, 1, 30))
            .await
            .unwrap();
        assert_eq!(ids(&s), [(1, 1), (2, 1), (3, 1)]);
        assert_eq!(s.destination, d);
        store.record("acme", d, "c4", entry(4, 1, 5)).await.unwrap();
        let s = store.record("acme", d, "c5", entry(5, 1, 1)).await.unwrap();
        assert_eq!(ids(&s), [(2, 1), (3, 1), (4, 1), (5, 1)]);
        assert_eq!(
            store.history("acme", d, SystemTime::now()).await.unwrap(),
            s
        );
        // Full: the oldest goes, in place, at every new report.
        let s = store.record("acme", d, "c6", entry(6, 1, 0)).await.unwrap();
        assert_eq!(ids(&s), [(3, 1), (4, 1), (5, 1), (6, 1)]);
        // Entries round-trip exactly.
        let e = HistoryEntry {
            sip_code: None,
            category: Category::Other,
            ..entry(0, 0, 0)
        };
        let s = store.record("acme", d, "c7", e).await.unwrap();
        assert_eq!(s.entries.last(), Some(&e));
        assert_eq!(s.entries.len(), 4);
    }

    #[tokio::test]
    async fn history_prunes_entries_outside_the_window() {
        let store = MemoryStore::new(StoreLimits {
            history_window: Duration::from_secs(3600),
            ..limits()
        });
        let d = "+15550104477";
        store
            .record("acme", d, "old", entry(1, 1, 3500))
            .await
            .unwrap();
        store
            .record("acme", d, "new", entry(2, 1, 10))
            .await
            .unwrap();
        let s = store
            .record("acme", d, "older", entry(3, 1, 7200))
            .await
            .unwrap();
        assert_eq!(ids(&s), [(1, 1), (2, 1)]);
        // A report outside the window for an unknown destination stores nothing.
        let s = store
            .record("acme", "+15550109999", "late", entry(4, 1, 7200))
            .await
            .unwrap();
        assert!(s.entries.is_empty());
        assert!(
            store
                .history("acme", "+15550109999", SystemTime::now())
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        let store2 = MemoryStore::new(StoreLimits {
            history_window: Duration::from_secs(100),
            ..limits()
        });
        store2
            .record("acme", d, "a", entry(1, 1, 99))
            .await
            .unwrap();
        store2.record("acme", d, "b", entry(2, 1, 1)).await.unwrap();
        // "a" leaves the window as time passes (1 s resolution is enough here).
        std::thread::sleep(Duration::from_millis(1100));
        let s = store2.history("acme", d, SystemTime::now()).await.unwrap();
        assert_eq!(ids(&s), [(2, 1)]);
        // Recording drops it from the kept entries too.
        let s = store2.record("acme", d, "c", entry(3, 1, 0)).await.unwrap();
        assert_eq!(ids(&s), [(2, 1), (3, 1)]);
    }

    #[tokio::test]
    async fn record_is_idempotent_per_call_and_attempt() {
        let store = MemoryStore::new(limits());
        let d = "+15550104477";
        store
            .record("acme", d, "c1", entry(1, 1, 20))
            .await
            .unwrap();
        store
            .record("acme", d, "c1", entry(2, 0, 20))
            .await
            .unwrap();
        let retried = HistoryEntry {
            category: Category::NoAnswer,
            ..entry(3, 1, 10)
        };
        let s = store.record("acme", d, "c1", retried).await.unwrap();
        assert_eq!(ids(&s), [(2, 0), (3, 1)]);
        assert_eq!(s.entries[1], retried);
        let s = store.record("acme", d, "c1", entry(4, 0, 5)).await.unwrap();
        assert_eq!(ids(&s), [(3, 1), (4, 0)]);
        // Another call id with the same attempt is another report.
        let s = store.record("acme", d, "c2", entry(5, 0, 1)).await.unwrap();
        assert_eq!(ids(&s), [(3, 1), (4, 0), (5, 0)]);
        // A retry that is the newest entry of a full history replaces, not appends.
        store.record("acme", d, "c3", entry(6, 0, 0)).await.unwrap();
        let s = store.record("acme", d, "c3", entry(7, 0, 0)).await.unwrap();
        assert_eq!(ids(&s), [(3, 1), (4, 0), (5, 0), (7, 0)]);
    }

    #[tokio::test]
    async fn tenants_are_isolated() {
        let store = MemoryStore::new(limits());
        let d = "+15550104477";
        store.record("acme", d, "c1", entry(1, 1, 5)).await.unwrap();
        store
            .record("globex", d, "c2", entry(2, 1, 5))
            .await
            .unwrap();
        // A tenant/destination split that concatenates to the same bytes.
        store
            .record("acme+1", "5550104477", "c3", entry(3, 1, 5))
            .await
            .unwrap();
        assert_eq!(
            ids(&store.history("acme", d, SystemTime::now()).await.unwrap()),
            [(1, 1)]
        );
        assert_eq!(
            ids(&store.history("globex", d, SystemTime::now()).await.unwrap()),
            [(2, 1)]
        );
        assert!(
            store
                .history("other", d, SystemTime::now())
                .await
                .unwrap()
                .entries
                .is_empty()
        );
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
                        .record("acme", "+15550104477", &format!("c{i}"), entry(i, 1, 0))
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let s = store
            .history("acme", "+15550104477", SystemTime::now())
            .await
            .unwrap();
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
                .record("acme", &format!("d{i}"), "c", entry(1, 1, 0))
                .await
                .unwrap();
            // Keep "d0" in use: it must survive.
            store
                .history("acme", "d0", SystemTime::now())
                .await
                .unwrap();
        }
        let total: usize = store
            .inner
            .shards
            .iter()
            .map(|s| s.lock().table.len())
            .sum();
        assert!(total <= 64 * 8, "{total}");
        assert_eq!(
            store
                .history("acme", "d0", SystemTime::now())
                .await
                .unwrap()
                .entries
                .len(),
            1
        );
        assert_eq!(
            store
                .history("acme", "d4999", SystemTime::now())
                .await
                .unwrap()
                .entries
                .len(),
            1
        );
        let zero = MemoryStore::new(StoreLimits {
            max_destinations: 0,
            ..limits()
        });
        let s = zero.record("acme", "d", "c", entry(1, 1, 0)).await.unwrap();
        assert_eq!(s.entries.len(), 1);
        assert!(
            zero.history("acme", "d", SystemTime::now())
                .await
                .unwrap()
                .entries
                .is_empty()
        );
    }

    #[tokio::test]
    async fn oversized_fields_are_errors_not_panics() {
        let store = MemoryStore::new(limits());
        let long = "x".repeat(70_000);
        assert!(store.record(&long, "d", "c", entry(1, 1, 0)).await.is_err());
        assert!(store.record("t", &long, "c", entry(1, 1, 0)).await.is_err());
        assert!(store.history(&long, "d", SystemTime::now()).await.is_err());
        // A call id is kept as a fixed-size hash: any length is fine.
        let s = store.record("t", "d", &long, entry(1, 1, 0)).await.unwrap();
        assert_eq!(s.entries.len(), 1);
        // Keys longer than the inline buffer work as well.
        let tenant = "t".repeat(200);
        store
            .record(&tenant, "d", "c", entry(2, 1, 0))
            .await
            .unwrap();
        assert_eq!(
            ids(&store
                .history(&tenant, "d", SystemTime::now())
                .await
                .unwrap()),
            [(2, 1)]
        );
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
            store
                .record(
                    "acme",
                    &format!("+1555{i:07}"),
                    &format!("{i:08}-6c1e-4b8e-9d7f-3a2b1c0d9e8f"),
                    entry(486, 1, 0),
                )
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
                let slot = std::mem::size_of::<Destination>() + 1;
                let packed: usize = s.table.iter().map(|d| d.buf.len()).sum();
                (s.table.capacity() * slot, packed)
            })
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        let structural = (slots + packed) / n;
        println!("structural bytes/destination: {structural}");
        assert!(structural < 110, "{structural}");
        if let (Some(before), Some(after)) = (before, after) {
            let measured = after.saturating_sub(before) / n;
            println!("measured RSS bytes/destination: {measured}");
            assert!(measured < 180, "{measured}");
        }
    }
}
