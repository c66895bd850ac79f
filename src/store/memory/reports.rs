//! Report keys, in flight or completed, for duplicate detection: sharded hash tables
//! of packed keys, with completed results kept postcard-encoded beside their key.

#![allow(clippy::wildcard_imports)]
use super::*;

/// What [`ReportKeys::claim`] found.
pub(super) enum ClaimState {
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
/// A completed key keeps its result serialised (postcard) and packed against earlier
/// results ([`Compactor`]: about 60 bytes instead of 300) right after the key, in one
/// allocation: it is read back only for a duplicate, and forgetting it is one `free`
/// rather than a walk through a dozen small allocations that have long left the cache.
pub(super) struct ReportKeys {
    pub(super) shards: Box<[Mutex<ReportShard>]>,
    pub(super) shard_cap: usize,
    pub(super) ttl: Duration,
    pub(super) hasher: foldhash::fast::RandomState,
    pub(super) compactor: Compactor,
    /// The origin of the store's clocks in seconds (completed keys' expiry, and the
    /// destinations' idle time).
    pub(super) started: Instant,
}

#[derive(Default)]
pub(super) struct ReportShard {
    pub(super) table: HashTable<ReportSlot>,
    /// Completed keys in completion order: (hash, completion number, expiry in
    /// seconds since the store started).
    pub(super) order: VecDeque<(u64, u32, u32)>,
    /// Numbers completions; wraps after 4 billion, far beyond any key still queued.
    pub(super) completed: u32,
    /// Markers in the table; expired ones are swept when this reaches `sweep_at`.
    pub(super) in_flight: usize,
    pub(super) sweep_at: usize,
}

pub(super) struct ReportSlot {
    pub(super) hash: u64,
    /// The packed key (see [`PackedKey`]); once done, followed by the encoded result.
    pub(super) data: Box<[u8]>,
    pub(super) state: SlotState,
}

impl ReportSlot {
    pub(super) fn key(&self) -> &[u8] {
        PackedKey::prefix(&self.data)
    }

    pub(super) fn result(&self) -> &[u8] {
        self.data.get(self.key().len()..).unwrap_or_default()
    }

    pub(super) fn is(&self, hash: u64, key: &PackedKey) -> bool {
        self.hash == hash && self.key() == key.bytes()
    }
}

/// 16 bytes: a table at its usual load holds about twice as many slots as keys, so
/// each byte here counts twice. Completed keys are the many; the few in flight keep
/// their marker in an allocation of its own.
pub(super) enum SlotState {
    InFlight(Box<Marker>),
    /// `expires`: seconds since the store started (a key lives its TTL rounded up to
    /// the second).
    Done {
        expires: u32,
        number: u32,
    },
}

/// A report in flight holds its key until `expires`. Waiters subscribe to `wake` (made
/// for the first waiter); dropping the sender, when the state changes, wakes them.
pub(super) struct Marker {
    pub(super) expires: Instant,
    pub(super) wake: Option<watch::Sender<()>>,
}

/// A report key as bytes: `u32 length of what follows, u32 attempt, u16 tenant length,
/// tenant, kind, call id` — or, for a provider callback, `0, u16 tenant length, tenant,
/// kind, delivery id`. The length prefix lets a slot hold the key and its result in one
/// buffer; the tenant length keeps `("a", "bc")` and `("ab", "c")` apart, and the kind
/// byte keeps a call id apart from a delivery id.
pub(super) struct PackedKey(Vec<u8>);

impl PackedKey {
    pub(super) fn new(key: &ReportKey) -> Result<Self, StoreError> {
        let too_long = || StoreError::Backend("tenant or call id too long for a report key".into());
        let (attempt, kind, id) = match &key.delivery {
            None => (key.attempt, 0u8, key.call_id.as_bytes()),
            Some(delivery) => (0, 1u8, delivery.as_bytes()),
        };
        let tenant_len = u16::try_from(key.tenant.len()).map_err(|_| too_long())?;
        let rest = 4 + 2 + key.tenant.len() + 1 + id.len();
        let rest_len = u32::try_from(rest).map_err(|_| too_long())?;
        let mut out = Vec::with_capacity(4 + rest);
        out.extend_from_slice(&rest_len.to_le_bytes());
        out.extend_from_slice(&attempt.to_le_bytes());
        out.extend_from_slice(&tenant_len.to_le_bytes());
        out.extend_from_slice(key.tenant.as_bytes());
        out.push(kind);
        out.extend_from_slice(id);
        Ok(PackedKey(out))
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key at the start of a slot's buffer.
    pub(super) fn prefix(data: &[u8]) -> &[u8] {
        let len = data
            .first_chunk::<4>()
            .map_or(0, |b| u32::from_le_bytes(*b) as usize);
        data.get(..4 + len).unwrap_or(data)
    }
}

impl ReportKeys {
    pub(super) fn new(capacity: u64, ttl: Duration, compact: bool) -> Self {
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
            compactor: Compactor::packing(compact),
            started: Instant::now(),
        }
    }

    /// Whole seconds from the start to `now`.
    pub(super) fn secs(&self, now: Instant) -> u32 {
        let elapsed = now.saturating_duration_since(self.started).as_secs();
        u32::try_from(elapsed).unwrap_or(u32::MAX)
    }

    /// When a key completed at `now` expires: `now + ttl` rounded up to the second.
    fn expiry(&self, now: Instant) -> u32 {
        let at = now.saturating_duration_since(self.started) + self.ttl;
        let secs = at.as_secs() + u64::from(at.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    pub(super) fn locate(&self, key: &PackedKey) -> (u64, &Mutex<ReportShard>) {
        let hash = self.hasher.hash_one(key.bytes());
        // Bits the table does not use (see `MemoryStore::shard`).
        (hash, &self.shards[(hash >> 32) as usize % DONE_SHARDS])
    }

    pub(super) fn claim(
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
        let now_secs = self.secs(now);
        // Made only when the key is won: a duplicate allocates nothing here.
        let marker = || {
            SlotState::InFlight(Box::new(Marker {
                expires: now + lease,
                wake: None,
            }))
        };
        Ok(match found {
            Some(slot) => match &mut slot.state {
                SlotState::Done { expires, .. } if *expires > now_secs => {
                    ClaimState::Done(Arc::new(decode_result(&self.compactor, slot.result())?))
                }
                SlotState::InFlight(marker) if marker.expires > now => {
                    let woken = marker
                        .wake
                        .get_or_insert_with(|| watch::channel(()).0)
                        .subscribe();
                    ClaimState::InFlight {
                        woken,
                        expires: marker.expires,
                    }
                }
                state => {
                    // Expired: a dead claimer's marker, or a result past its TTL whose
                    // queue entry will find a newer number and leave the key alone.
                    if matches!(state, SlotState::Done { .. }) {
                        shard.in_flight += 1;
                    }
                    *state = marker();
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
                        state: marker(),
                    },
                    |slot| slot.hash,
                );
                ClaimState::New
            }
        })
    }

    /// Drops the key's marker, if it has one (waking its waiters).
    pub(super) fn release(&self, key: &ReportKey) {
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
    pub(super) fn complete(
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
        let data = encode_result(&self.compactor, packed.bytes(), report)?;
        let (hash, shard) = self.locate(&packed);
        let released = {
            let mut guard = shard.lock();
            let shard = &mut *guard;
            shard.completed = shard.completed.wrapping_add(1);
            let number = shard.completed;
            let now_secs = self.secs(now);
            let expires = self.expiry(now);
            let done = SlotState::Done { expires, number };
            let released = match shard.table.find_mut(hash, |slot| slot.is(hash, &packed)) {
                Some(slot) => match &slot.state {
                    SlotState::Done { expires: first, .. } if *first > now_secs => return Ok(()),
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
            shard.evict(now_secs, self.shard_cap);
            released
        };
        // Waking waiters happens here, outside the lock.
        drop(released);
        Ok(())
    }
}

/// `key` followed by `report` (postcard, packed), in one exact allocation.
pub(super) fn encode_result(
    compactor: &Compactor,
    key: &[u8],
    report: &StoredReport,
) -> Result<Box<[u8]>, StoreError> {
    let packed = compactor
        .pack_value(key, report)
        .map_err(|e| StoreError::Backend(format!("cannot encode a report: {e}")))?;
    Ok(packed.into_boxed_slice())
}

pub(super) fn decode_result(
    compactor: &Compactor,
    bytes: &[u8],
) -> Result<StoredReport, StoreError> {
    let failed = |e: String| StoreError::Backend(format!("cannot decode a stored report: {e}"));
    let record = compactor.unpack(bytes).map_err(|e| failed(e.to_string()))?;
    postcard::from_bytes(&record).map_err(|e| failed(e.to_string()))
}

impl ReportShard {
    /// Forgets completed keys that expired, then the oldest beyond `cap`.
    pub(super) fn evict(&mut self, now: u32, cap: usize) {
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

    pub(super) fn sweep_expired_markers(&mut self, now: Instant) {
        let mut swept = 0;
        self.table.retain(|slot| match slot.state {
            SlotState::InFlight(ref marker) if marker.expires <= now => {
                swept += 1;
                false
            }
            _ => true,
        });
        self.in_flight -= swept;
        self.sweep_at = (self.in_flight * 2).max(MIN_SWEEP_AT);
    }
}
