//! A destination's history as the memory store keeps it: fixed-size rows in one
//! allocation per destination, in sharded hash tables keyed by tenant and destination.

#![allow(clippy::wildcard_imports)]
use super::*;

/// `u16 tenant length, tenant, destination`: the length prefix keeps tenants apart.
/// Built on the stack for the usual sizes (no allocation per lookup).
pub(super) struct HistoryKey {
    pub(super) buf: [u8; HistoryKey::INLINE],
    pub(super) len: usize,
    pub(super) heap: Vec<u8>,
}

impl HistoryKey {
    const INLINE: usize = 128;

    pub(super) fn new(tenant: &str, destination: &str) -> Result<Self, StoreError> {
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

    pub(super) fn bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.buf[..self.len]
        } else {
            &self.heap
        }
    }
}

#[derive(Default)]
pub(super) struct Shard {
    pub(super) table: HashTable<Destination>,
    /// Logical clock: unique per access, so LRU eviction removes exactly what it must.
    /// 32 bits keep a destination's slot small; at the end of the range the ticks are
    /// renumbered in their order (see [`Shard::tick`]).
    pub(super) clock: u32,
    pub(super) next_idle_sweep: u32,
}

impl Shard {
    pub(super) fn tick(&mut self) -> u32 {
        if self.clock == u32::MAX {
            self.renumber();
        }
        self.clock += 1;
        self.clock
    }

    /// Gives the destinations ticks 1..=n in their present order (after 4 billion
    /// accesses to one shard: rare, and O(n log n) once).
    pub(super) fn renumber(&mut self) {
        let mut ticks: Vec<u32> = self.table.iter().map(|slot| slot.tick).collect();
        ticks.sort_unstable();
        for slot in self.table.iter_mut() {
            // Ticks are unique: the position is the new tick.
            let rank = ticks.partition_point(|t| *t < slot.tick);
            slot.tick = u32::try_from(rank + 1).unwrap_or(u32::MAX);
        }
        self.clock = u32::try_from(ticks.len()).unwrap_or(u32::MAX);
    }

    /// Drops destinations idle for a whole window, at most every quarter window.
    pub(super) fn sweep_idle(&mut self, now: u32, window: u32) {
        if now < self.next_idle_sweep {
            return;
        }
        self.table
            .retain(|slot| now.saturating_sub(slot.touched) < window);
        self.next_idle_sweep = now.saturating_add((window / 4).max(1));
    }

    /// Makes room for one new destination; false when the capacity is zero.
    pub(super) fn make_room(&mut self, cap: usize, now: u32, window: u32) -> bool {
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
        let mut ticks: Vec<u32> = self.table.iter().map(|slot| slot.tick).collect();
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
/// `u16 key length, u16 entries, u16 oldest slot, key, slots`, each slot [`ROW`] bytes:
/// `u64 at (ns since epoch), u64 report id, u32 attempt, u16 sip code, u8 flags`.
/// Flags: bits 0–6 the category's index in [`Category::ALL`], bit 7 "has a SIP code".
///
/// The report id is a 64-bit hash of the call id under a per-process key: it is only
/// compared, to recognise a retried report (same call id and attempt), and two call
/// ids of one destination colliding is a 1-in-2^58 event for a full history of 64.
/// Keeping the hash rather than the call id makes every entry the same size, so an
/// entry is appended (or the oldest dropped) in place, with no decoding or copy of
/// the others.
///
/// The slot in the hash table is 24 bytes (a table at its usual load holds about twice
/// as many slots as destinations, so each byte here counts twice): the counts live in
/// the buffer, and the hash is computed again from the key when the table grows.
pub(super) struct Destination {
    /// The slots form a ring of `capacity()`, of which `len()` are used, the oldest at
    /// slot `head()`. When full, a new entry takes the oldest's slot (nothing is
    /// shifted); until then the ring grows by doubling (an exact fit would copy the
    /// whole history on every append).
    pub(super) buf: Box<[u8]>,
    pub(super) tick: u32,
    /// Seconds since the store started.
    pub(super) touched: u32,
}

/// Bytes before the key: its length, the number of entries, the oldest's slot.
const HEADER: usize = 6;

pub(super) const ROW: usize = 8 + 8 + 4 + 2 + 1;
/// Where a row keeps its report id and attempt.
pub(super) const ROW_ID_AND_ATTEMPT: std::ops::Range<usize> = 8..20;
pub(super) const HAS_CODE: u8 = 0x80;

impl Destination {
    pub(super) fn new(key: &[u8], row: Row, tick: u32, touched: u32) -> Self {
        let mut buf = Vec::with_capacity(HEADER + key.len() + ROW);
        // The key's length was checked against u16 by `HistoryKey::new`.
        buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
        buf.extend_from_slice(&1u16.to_le_bytes());
        buf.extend_from_slice(&0u16.to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(&row.encode());
        Destination {
            buf: buf.into_boxed_slice(),
            tick,
            touched,
        }
    }

    /// The header's `n`-th u16.
    fn header(&self, n: usize) -> u16 {
        self.buf
            .get(2 * n..2 * n + 2)
            .and_then(|b| b.first_chunk::<2>())
            .map_or(0, |b| u16::from_le_bytes(*b))
    }

    fn set_header(&mut self, n: usize, value: u16) {
        if let Some(b) = self.buf.get_mut(2 * n..2 * n + 2) {
            b.copy_from_slice(&value.to_le_bytes());
        }
    }

    pub(super) fn key_len(&self) -> usize {
        usize::from(self.header(0))
    }

    /// The slot of the oldest entry.
    fn head(&self) -> u16 {
        self.header(2)
    }

    pub(super) fn key(&self) -> &[u8] {
        self.buf
            .get(HEADER..HEADER + self.key_len())
            .unwrap_or_default()
    }

    pub(super) fn slots(&self) -> &[u8] {
        self.buf.get(HEADER + self.key_len()..).unwrap_or_default()
    }

    /// Number of row slots.
    pub(super) fn capacity(&self) -> usize {
        self.slots().len() / ROW
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        usize::from(self.header(1))
    }

    /// The row in slot `slot`.
    pub(super) fn slot(&self, slot: usize) -> Option<Row> {
        self.slots()
            .get(slot * ROW..(slot + 1) * ROW)
            .and_then(Row::decode)
    }

    /// The `i`-th entry, oldest first.
    pub(super) fn row(&self, i: usize) -> Option<Row> {
        let capacity = self.capacity();
        if i >= self.len() || capacity == 0 {
            return None;
        }
        self.slot((usize::from(self.head()) + i) % capacity)
    }

    /// The encoded entries, oldest first, as the ring's two runs of whole rows: from
    /// `head` to the end of the slots, then from the start. (Walking runs rather than
    /// indexing the ring costs no division, nor a branch per entry.)
    pub(super) fn runs(&self) -> [&[u8]; 2] {
        let slots = self.slots();
        let head = usize::from(self.head());
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
    pub(super) fn snapshot_into(&self, cutoff: u64, out: &mut Vec<HistoryEntry>) {
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
    pub(super) fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.runs()
            .into_iter()
            .flat_map(|run| run.chunks_exact(ROW))
            .map_while(Row::decode)
    }

    /// Replaces the entries with `rows` (oldest first), in a buffer of `capacity` slots.
    pub(super) fn rewrite(&mut self, rows: &[Row], capacity: usize) {
        let head = HEADER + self.key_len();
        let mut buf = Vec::with_capacity(head + capacity * ROW);
        buf.extend_from_slice(self.buf.get(..head).unwrap_or_default());
        for row in rows {
            buf.extend_from_slice(&row.encode());
        }
        buf.resize(head + capacity * ROW, 0);
        self.buf = buf.into_boxed_slice();
        // At most `max_entries` rows, which the configuration bounds far below u16::MAX.
        self.set_header(1, u16::try_from(rows.len()).unwrap_or(u16::MAX));
        self.set_header(2, 0);
    }

    /// Adds `new` in time order: entries before `cutoff` are dropped, a retried report
    /// replaces its own entry rather than counting twice, and the oldest go beyond
    /// `max_entries`.
    pub(super) fn record(&mut self, new: Row, cutoff: u64, max_entries: usize) {
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
                let head = usize::from(self.head());
                self.write_slot(head, &new);
                self.set_header(2, u16::try_from((head + 1) % capacity.max(1)).unwrap_or(0));
                return;
            }
            if len == capacity {
                let rows: Vec<Row> = self.rows().collect();
                let grown = (capacity * 2).clamp(1, max_entries);
                self.rewrite(&rows, grown);
            }
            let slot = (usize::from(self.head()) + len) % self.capacity().max(1);
            self.write_slot(slot, &new);
            // Below max_entries, itself bounded far below u16::MAX.
            self.set_header(1, u16::try_from(len + 1).unwrap_or(u16::MAX));
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

    pub(super) fn write_slot(&mut self, slot: usize, row: &Row) {
        let at = HEADER + self.key_len() + slot * ROW;
        if let Some(target) = self.buf.get_mut(at..at + ROW) {
            target.copy_from_slice(&row.encode());
        }
    }
}

/// One history entry as the store keeps it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    pub(super) at: u64,
    pub(super) id: u64,
    pub(super) attempt: u32,
    pub(super) sip_code: Option<u16>,
    pub(super) category: Category,
}

impl Row {
    pub(super) fn to_entry(self) -> HistoryEntry {
        HistoryEntry {
            at: from_nanos(self.at),
            attempt: self.attempt,
            category: self.category,
            sip_code: self.sip_code,
        }
    }

    pub(super) fn encode(&self) -> [u8; ROW] {
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

    pub(super) fn decode(buf: &[u8]) -> Option<Self> {
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
