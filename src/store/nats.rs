//! The [`Store`] on JetStream KV: histories and report keys shared by every replica.
//!
//! Owns the two buckets' key and value formats and the compare-and-set loops on them.
//! It holds no state of its own beyond the bucket handles, so a replica can be
//! restarted, or NATS restarted under it, without anything going stale here.
//!
//! - Report keys (bucket `nats.reports_bucket`, TTL `store.idempotency_ttl`), key
//!   `<tenant token>.<attempt>.<call id, base64url>`. [`Store::claim`] creates a
//!   `pending` marker (KV `create`: only one replica wins); [`Store::complete`] replaces
//!   it with the result by revision (first result wins); [`Store::abandon`] deletes the
//!   marker by revision. A replica that finds a marker watches the key until the result
//!   arrives, bounded by `store.in_flight_wait`; a marker older than its lease
//!   (`3 × in_flight_wait`, at least one second: the memory store's rule) belonged to a
//!   replica that died mid-report and is taken over by revision.
//! - Histories (bucket `nats.history_bucket`, TTL `store.history_window`), key
//!   `<tenant token>.<destination, base64url>`, value the list of entries in the compact
//!   format below. Every update is read-modify-write with `update(key, value, revision)`
//!   and a retry on conflict, so concurrent replicas never lose an entry. The bucket TTL
//!   drops a destination idle for a whole window; `max_entries_per_destination` and the window
//!   bound each value. `max_destinations` and `max_report_keys` do not apply: the
//!   buckets are bounded by age, on disk.
//!
//! A history value is one byte `0x01`, then the entries as a postcard sequence of
//! `(call id digest, nanoseconds since the epoch, attempt, category number, SIP code)`:
//! ~22 bytes an entry, where the JSON of earlier versions took ~145 (a destination at
//! the 64-entry cap was ~9 KB, read, parsed, rewritten and stored again by every report:
//! on one nats-server that halved the reports a second). JSON values (they start with
//! `[`) are still read, and rewritten compact by the next report; a replica of an
//! earlier version reads a compact value as unreadable and starts that destination
//! afresh, so replicas are not mixed across this change (docs/nats.md, Upgrading).
//!
//! Every async-nats future is boxed before it is awaited (`Box::pin(...).await`). They
//! are large (the KV ones several KB), and an async fn holds each future it awaits
//! inline, so a report's store step was ~20 KB, copied whole at each move (into
//! `unless_lost`, into its [`Step`]'s box): `memmove` was 17 % of the service's CPU on
//! NATS. Boxed, a step is a few hundred bytes and each client future is copied once.

use super::{Claim, ReportKey, Store, StoreError, StoreLimits, StoredReport, from_nanos, to_nanos};
use crate::domain::{Category, HistoryEntry, HistorySnapshot};
use crate::nats::{NatsConnection, NatsError, key_token, tenant_token};
use crate::step::Step;
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_stream::StreamExt;

/// A marker lives this many times `in_flight_wait`, and at least [`MIN_LEASE`].
const LEASE_FACTOR: u32 = 3;
const MIN_LEASE: Duration = Duration::from_secs(1);
/// Compare-and-set attempts before a write gives up (each failure means another
/// replica wrote the same key in between, so this is only reached under a storm).
const MAX_CAS_ATTEMPTS: usize = 64;

/// The value under a report key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum ReportValue {
    /// Claimed by a replica at `since` (milliseconds since the Unix epoch).
    Pending {
        since_ms: u64,
    },
    Done {
        report: Box<StoredReport>,
    },
}

/// Store on JetStream KV; cheap to clone.
#[derive(Clone)]
pub struct NatsStore {
    connection: NatsConnection,
    /// The two buckets, created on the first use once NATS answers (a replica may
    /// start before NATS).
    buckets: Arc<tokio::sync::OnceCell<Buckets>>,
    limits: StoreLimits,
    lease: Duration,
    /// The revision of each pending marker this replica wrote and has not completed or
    /// released yet: completing is then one compare-and-set at that revision instead of
    /// a read and a write (a round trip less per report). Bounded by the reports in
    /// flight; a marker someone else changed makes the compare-and-set fail, and the
    /// completion falls back to reading what is there.
    claimed: Arc<parking_lot::Mutex<HashMap<String, u64>>>,
}

struct Buckets {
    reports: kv::Store,
    history: kv::Store,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl NatsStore {
    /// The store; its buckets are created (or their TTLs updated) now when NATS answers,
    /// else on first use.
    pub async fn open(connection: NatsConnection, limits: StoreLimits) -> Result<Self, NatsError> {
        let lease = limits
            .in_flight_wait
            .saturating_mul(LEASE_FACTOR)
            .max(MIN_LEASE);
        let store = NatsStore {
            connection,
            buckets: Arc::default(),
            limits,
            lease,
            claimed: Arc::default(),
        };
        if store.connection.is_connected() {
            let _ = store.buckets().await;
        }
        // Also when that failed or NATS is not up yet: readiness then says why, and the
        // health check creates the buckets once NATS accepts them.
        let config = &store.connection.config;
        store
            .connection
            .watch_bucket(&config.reports_bucket, store.limits.idempotency_ttl);
        store
            .connection
            .watch_bucket(&config.history_bucket, store.limits.history_window);
        Ok(store)
    }

    /// The buckets, created once NATS answers.
    async fn buckets(&self) -> Result<&Buckets, StoreError> {
        check_store(&self.connection)?;
        match self.buckets.get() {
            Some(buckets) => Ok(buckets),
            // Boxed: the creation's futures would otherwise sit in every operation's.
            None => Box::pin(self.create_buckets()).await,
        }
    }

    async fn create_buckets(&self) -> Result<&Buckets, StoreError> {
        self.buckets
            .get_or_try_init(|| async {
                let connection = &self.connection;
                let config = &connection.config;
                let setup = async {
                    let reports = connection
                        .ensure_bucket(&config.reports_bucket, self.limits.idempotency_ttl)
                        .await?;
                    let history = connection
                        .ensure_bucket(&config.history_bucket, self.limits.history_window)
                        .await?;
                    Ok::<_, NatsError>(Buckets { reports, history })
                };
                tokio::time::timeout(config.request_timeout, setup)
                    .await
                    .map_err(|_| unavailable("no answer creating the KV buckets in time"))?
                    // Already says `nats: cannot set up ...`.
                    .map_err(|e| StoreError::Unavailable(e.to_string()))
            })
            .await
    }

    /// `<tenant>.<attempt>.<call id>`, or `<tenant>.d.<delivery id>` for a provider
    /// callback (`d` is never an attempt number, so the two cannot meet).
    fn report_key(key: &ReportKey) -> String {
        match &key.delivery {
            None => format!(
                "{}.{}.{}",
                tenant_token(&key.tenant),
                key.attempt,
                key_token(&key.call_id)
            ),
            Some(delivery) => format!("{}.d.{}", tenant_token(&key.tenant), key_token(delivery)),
        }
    }

    fn history_key(tenant: &str, destination: &str) -> String {
        format!("{}.{}", tenant_token(tenant), key_token(destination))
    }

    /// The live entry of a key (a deleted or purged key reads as absent).
    async fn live(store: &kv::Store, key: &str) -> Result<Option<kv::Entry>, StoreError> {
        let entry = Box::pin(store.entry(key)).await.map_err(unavailable)?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put))
    }

    /// Waits until the marker at `revision` changes, `until` passes, or the key watch
    /// fails (then the caller reads again).
    async fn wait_for_change(&self, key: &str, revision: u64, until: Instant) {
        // From the key's last value on, not only later changes: a completion that lands
        // between our read and this watch is then seen at once, instead of after the
        // whole `until` (a duplicate used to wait `in_flight_wait` for nothing).
        let Ok(buckets) = self.buckets().await else {
            return;
        };
        let Ok(mut watch) = buckets.reports.watch_with_history(key).await else {
            return;
        };
        let _ = tokio::time::timeout_at(until, async {
            while let Some(item) = watch.next().await {
                match item {
                    Ok(entry) if entry.revision == revision => {}
                    _ => return,
                }
            }
        })
        .await;
    }

    fn entries_of(entry: Option<&kv::Entry>) -> Vec<KeptEntry> {
        // A value this replica cannot read (written by a newer version, or damaged) is
        // started afresh rather than failing every report to that destination.
        entry
            .and_then(|e| decode_history(&e.value))
            .unwrap_or_default()
    }

    fn cutoff(&self) -> SystemTime {
        SystemTime::now()
            .checked_sub(self.limits.history_window)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("nats kv: {e}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A history entry as kept in the KV bucket: with a digest of its report's call id, so
/// that a retried report replaces its own entry (the first 8 bytes of the id's
/// SHA-256: stable across replicas and versions, and a false match in one destination's
/// 64 entries has odds of about 1 in 10^17; the memory store keeps a 64-bit hash too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeptEntry {
    call: [u8; 8],
    entry: HistoryEntry,
}

fn call_digest(call_id: &str) -> [u8; 8] {
    let digest = Sha256::digest(call_id.as_bytes());
    let mut call = [0; 8];
    call.copy_from_slice(&digest[..8]);
    call
}

/// The first byte of a history value in the compact format (JSON starts with `[`).
const COMPACT_HISTORY: u8 = 0x01;

/// A history entry in the compact format, 22 bytes for a typical entry: postcard writes
/// it as a tuple, the integers as varints.
#[derive(Serialize, Deserialize)]
struct CompactEntry {
    call: [u8; 8],
    at_nanos: u64,
    attempt: u32,
    /// [`category_code`]: fixed numbers, not the enum's order.
    category: u8,
    sip_code: Option<u16>,
}

/// The stored number of a category. Numbers are never reused; a new category takes the
/// next one (this match fails to compile until it has one).
fn category_code(category: Category) -> u8 {
    match category {
        Category::Answered => 1,
        Category::Busy => 2,
        Category::NoAnswer => 3,
        Category::Unavailable => 4,
        Category::Declined => 5,
        Category::RejectedUnwanted => 6,
        Category::InvalidNumber => 7,
        Category::Redirect => 8,
        Category::Canceled => 9,
        Category::ConfigError => 10,
        Category::NetworkError => 11,
        Category::Other => 12,
    }
}

impl CompactEntry {
    fn of(kept: &KeptEntry) -> Self {
        let entry = &kept.entry;
        CompactEntry {
            call: kept.call,
            at_nanos: to_nanos(entry.at),
            attempt: entry.attempt,
            category: category_code(entry.category),
            sip_code: entry.sip_code,
        }
    }

    /// `None` for a category this version does not know (a newer replica's).
    fn kept(self) -> Option<KeptEntry> {
        let category = *Category::ALL
            .iter()
            .find(|c| category_code(**c) == self.category)?;
        Some(KeptEntry {
            call: self.call,
            entry: HistoryEntry {
                at: from_nanos(self.at_nanos),
                attempt: self.attempt,
                category,
                sip_code: self.sip_code,
            },
        })
    }
}

/// An entry as versions before the compact format wrote it: the JSON of
/// [`HistoryEntry`] plus `call_id`.
#[derive(Deserialize)]
struct JsonEntry {
    call_id: String,
    #[serde(flatten)]
    entry: HistoryEntry,
}

/// A history value, compact or JSON (earlier versions); `None` when it is neither.
fn decode_history(value: &[u8]) -> Option<Vec<KeptEntry>> {
    match value.split_first() {
        Some((&COMPACT_HISTORY, rows)) => {
            let rows: Vec<CompactEntry> = postcard::from_bytes(rows).ok()?;
            Some(rows.into_iter().filter_map(CompactEntry::kept).collect())
        }
        Some((b'[', _)) => {
            let rows: Vec<JsonEntry> = serde_json::from_slice(value).ok()?;
            Some(
                rows.into_iter()
                    .map(|row| KeptEntry {
                        call: call_digest(&row.call_id),
                        entry: row.entry,
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

/// The compact history value of `entries`.
fn encode_history(entries: &[KeptEntry]) -> Result<bytes::Bytes, StoreError> {
    struct Rows<'a>(&'a [KeptEntry]);
    impl Serialize for Rows<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(self.0.iter().map(CompactEntry::of))
        }
    }
    let mut value = Vec::with_capacity(2 + 24 * entries.len());
    value.push(COMPACT_HISTORY);
    postcard::to_extend(&Rows(entries), value)
        .map(bytes::Bytes::from)
        .map_err(|e| StoreError::Backend(format!("cannot encode a history: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes, StoreError> {
    serde_json::to_vec(value)
        .map(bytes::Bytes::from)
        .map_err(|e| StoreError::Backend(format!("cannot encode a KV value: {e}")))
}

/// The report-path operations, as async functions; [`Store`] hands them out as steps.
impl NatsStore {
    async fn claim_kv(&self, key: &ReportKey) -> Result<Claim, StoreError> {
        let buckets = self.buckets().await?;
        let k = Self::report_key(key);
        let deadline = Instant::now() + self.limits.in_flight_wait;
        let pending = || encode(&ReportValue::Pending { since_ms: now_ms() });
        // Most reports are new: create the marker first (one round trip) and read only
        // when the key exists. `create` is atomic, so two replicas cannot both win.
        let mut try_create = true;
        loop {
            if try_create {
                match Box::pin(buckets.reports.create(&k, pending()?)).await {
                    Ok(revision) => {
                        self.claimed.lock().insert(k, revision);
                        return Ok(Claim::New);
                    }
                    // Claimed before us (or in between): read what is there.
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                    Err(e) => return Err(unavailable(e)),
                }
            }
            let Some(entry) = Self::live(&buckets.reports, &k).await? else {
                // Released or expired since: try to claim it again.
                try_create = true;
                continue;
            };
            try_create = false;
            let since_ms = match serde_json::from_slice::<ReportValue>(&entry.value) {
                Ok(ReportValue::Done { report }) => return Ok(Claim::Done(Arc::from(report))),
                Ok(ReportValue::Pending { since_ms }) => since_ms,
                // Unreadable: treat it as an abandoned marker.
                Err(_) => 0,
            };
            let age = Duration::from_millis(now_ms().saturating_sub(since_ms));
            if age >= self.lease {
                // The claimer died mid-report: take the key over, unless someone else
                // did first (then the next turn reads what they wrote).
                match Box::pin(buckets.reports.update(&k, pending()?, entry.revision)).await {
                    Ok(revision) => {
                        self.claimed.lock().insert(k, revision);
                        return Ok(Claim::New);
                    }
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(unavailable(e)),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::InProgress);
            }
            let lease_end = now + (self.lease - age);
            Box::pin(self.wait_for_change(&k, entry.revision, deadline.min(lease_end))).await;
        }
    }

    async fn abandon_kv(&self, key: &ReportKey) {
        self.claimed.lock().remove(&Self::report_key(key));
        if !self.connection.is_connected() {
            // Asking a dead connection would only delay the caller's UNAVAILABLE by a
            // request timeout; the marker's lease releases the key instead.
            return;
        }
        let Ok(buckets) = self.buckets().await else {
            return;
        };
        let k = Self::report_key(key);
        // Only a pending marker is released: a completed result must stay. Failure here
        // (NATS down) leaves the marker to its lease.
        if let Ok(Some(entry)) = Self::live(&buckets.reports, &k).await
            && matches!(
                serde_json::from_slice::<ReportValue>(&entry.value),
                Ok(ReportValue::Pending { .. })
            )
            && let Err(e) = Box::pin(
                buckets
                    .reports
                    .delete_expect_revision(&k, Some(entry.revision)),
            )
            .await
        {
            tracing::debug!(error = %e, "nats kv: claim not released; its lease will expire");
        }
    }

    async fn complete_kv(
        &self,
        key: &ReportKey,
        report: &Arc<StoredReport>,
    ) -> Result<(), StoreError> {
        let buckets = self.buckets().await?;
        let k = Self::report_key(key);
        let value = encode(&ReportValue::Done {
            report: Box::new(StoredReport::clone(report)),
        })?;
        // Our own pending marker, unchanged since the claim: one compare-and-set.
        let ours = self.claimed.lock().remove(&k);
        if let Some(revision) = ours {
            match Box::pin(buckets.reports.update(&k, value.clone(), revision)).await {
                Ok(_) => return Ok(()),
                // Taken over or completed by another replica: read what is there.
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        for _ in 0..MAX_CAS_ATTEMPTS {
            let result = match Self::live(&buckets.reports, &k).await? {
                Some(entry) => {
                    if let Ok(ReportValue::Done { .. }) = serde_json::from_slice(&entry.value) {
                        // The first result wins.
                        return Ok(());
                    }
                    Box::pin(buckets.reports.update(&k, value.clone(), entry.revision))
                        .await
                        .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision)
                }
                None => Box::pin(buckets.reports.create(&k, value.clone()))
                    .await
                    .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
            };
            match result {
                Ok(_) => return Ok(()),
                Err(true) => continue,
                Err(false) => {
                    return Err(StoreError::Unavailable(
                        "nats kv: cannot store the report result".into(),
                    ));
                }
            }
        }
        Err(StoreError::Backend(
            "nats kv: too many concurrent writes to one report key".into(),
        ))
    }

    async fn record_kv(
        &self,
        tenant: &str,
        destination: &str,
        call_id: &str,
        entry: HistoryEntry,
    ) -> Result<HistorySnapshot, StoreError> {
        let buckets = self.buckets().await?;
        let entry = KeptEntry {
            call: call_digest(call_id),
            entry,
        };
        let k = Self::history_key(tenant, destination);
        let max_entries = self.limits.max_entries_per_destination;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = Self::live(&buckets.history, &k).await?;
            let cutoff = self.cutoff();
            let mut entries = Self::entries_of(current.as_ref());
            // A retried report replaces its own entry rather than counting twice.
            entries.retain(|e| {
                e.entry.at >= cutoff
                    && !(e.entry.attempt == entry.entry.attempt && e.call == entry.call)
            });
            if entry.entry.at >= cutoff {
                let at = entries.partition_point(|e| e.entry.at <= entry.entry.at);
                entries.insert(at, entry);
            }
            let excess = entries.len().saturating_sub(max_entries);
            entries.drain(..excess);
            let value = encode_history(&entries)?;
            let written = match &current {
                Some(e) => Box::pin(buckets.history.update(&k, value, e.revision))
                    .await
                    .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision),
                None => Box::pin(buckets.history.create(&k, value))
                    .await
                    .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
            };
            match written {
                Ok(_) => {
                    return Ok(HistorySnapshot {
                        destination: destination.to_owned(),
                        entries: entries.into_iter().map(|e| e.entry).collect(),
                    });
                }
                // Another replica wrote in between: read its version and apply ours on top.
                Err(true) => continue,
                Err(false) => {
                    return Err(StoreError::Unavailable(
                        "nats kv: cannot write the history".into(),
                    ));
                }
            }
        }
        Err(StoreError::Backend(
            "nats kv: too many concurrent writes to one history".into(),
        ))
    }

    async fn history_kv(
        &self,
        tenant: &str,
        destination: &str,
    ) -> Result<HistorySnapshot, StoreError> {
        let buckets = self.buckets().await?;
        let k = Self::history_key(tenant, destination);
        let current = Self::live(&buckets.history, &k).await?;
        let cutoff = self.cutoff();
        let entries = Self::entries_of(current.as_ref())
            .into_iter()
            .map(|e| e.entry)
            .filter(|e| e.at >= cutoff)
            .collect();
        Ok(HistorySnapshot {
            destination: destination.to_owned(),
            entries,
        })
    }
}

#[async_trait::async_trait]
impl Store for NatsStore {
    fn claim<'a>(&'a self, key: &'a ReportKey) -> Step<'a, Result<Claim, StoreError>> {
        Step::pending(self.connection.unless_lost(self.claim_kv(key), lost))
    }

    fn abandon<'a>(&'a self, key: &'a ReportKey) -> Step<'a, ()> {
        Step::pending(self.abandon_kv(key))
    }

    fn complete<'a>(
        &'a self,
        key: &'a ReportKey,
        report: &'a Arc<StoredReport>,
    ) -> Step<'a, Result<(), StoreError>> {
        Step::pending(
            self.connection
                .unless_lost(self.complete_kv(key, report), lost),
        )
    }

    fn record<'a>(
        &'a self,
        tenant: &'a str,
        destination: &'a str,
        call_id: &'a str,
        entry: HistoryEntry,
    ) -> Step<'a, Result<HistorySnapshot, StoreError>> {
        Step::pending(
            self.connection
                .unless_lost(self.record_kv(tenant, destination, call_id, entry), lost),
        )
    }

    fn history<'a>(
        &'a self,
        tenant: &'a str,
        destination: &'a str,
        _now: SystemTime,
    ) -> Step<'a, Result<HistorySnapshot, StoreError>> {
        // The window is counted from this replica's clock when the read happens.
        Step::pending(
            self.connection
                .unless_lost(self.history_kv(tenant, destination), lost),
        )
    }

    async fn not_ready(&self) -> Option<String> {
        // The shared condition first, so that the store and the log say the same.
        if let Some(reason) = self.connection.not_ready() {
            return Some(reason);
        }
        self.buckets().await.err().map(|e| e.to_string())
    }
}

/// The error of an operation cut by the connection dropping.
fn lost() -> StoreError {
    StoreError::Unavailable("the connection to NATS was lost".into())
}

/// `Unavailable` when not connected or a quorum is lost: callers fail fast instead of
/// queueing a request behind a dead connection.
fn check_store(connection: &NatsConnection) -> Result<(), StoreError> {
    match connection.refusal() {
        None => Ok(()),
        Some(reason) => Err(StoreError::Unavailable(format!("nats: {reason}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(call_id: &str, at_nanos: u64, attempt: u32, category: Category) -> KeptEntry {
        KeptEntry {
            call: call_digest(call_id),
            entry: HistoryEntry {
                at: SystemTime::UNIX_EPOCH + Duration::from_nanos(at_nanos),
                attempt,
                category,
                sip_code: (category != Category::NoAnswer).then_some(486),
            },
        }
    }

    #[test]
    fn a_compact_history_reads_back_exactly() {
        let entries: Vec<KeptEntry> = [0, 1_764_979_200_123_456_789, u64::MAX]
            .into_iter()
            .zip(Category::ALL.iter().cycle())
            .enumerate()
            .map(|(n, (at, category))| kept(&format!("call-{n}"), at, n as u32, *category))
            .chain(
                Category::ALL
                    .iter()
                    .map(|c| kept(c.as_str(), 5, u32::MAX, *c)),
            )
            .collect();
        let value = encode_history(&entries).expect("encodes");
        assert_eq!(value[0], COMPACT_HISTORY);
        assert_eq!(decode_history(&value), Some(entries));
        assert_eq!(
            decode_history(&encode_history(&[]).expect("encodes")),
            Some(vec![])
        );
    }

    #[test]
    fn every_category_has_its_own_number() {
        let mut codes: Vec<u8> = Category::ALL.iter().map(|c| category_code(*c)).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Category::ALL.len());
        assert!(!codes.contains(&0), "0 is left unused");
    }

    /// A destination at the default cap (64 entries) was ~9 KB of JSON, read, parsed,
    /// rewritten and stored by every report to it.
    #[test]
    fn a_full_history_is_several_times_smaller_than_its_json() {
        let entries: Vec<KeptEntry> = (0..64u64)
            .map(|n| {
                kept(
                    &format!("lg-5f3a9c21-{}", 1_000_000 + n),
                    1_764_979_200_000_000_000 + n * 1_234_567_891,
                    1,
                    Category::Busy,
                )
            })
            .collect();
        let compact = encode_history(&entries).expect("encodes").len();
        // As earlier versions wrote them.
        let json = serde_json::to_vec(
            &(0..64u64)
                .zip(&entries)
                .map(|(n, e)| {
                    let mut v = serde_json::to_value(e.entry).expect("json");
                    v["call_id"] = format!("lg-5f3a9c21-{}", 1_000_000 + n).into();
                    v
                })
                .collect::<Vec<_>>(),
        )
        .expect("json")
        .len();
        eprintln!("64 entries: {compact} bytes compact, {json} bytes JSON");
        assert!(compact <= 64 * 23, "{compact} bytes for 64 entries");
        assert!(compact * 6 < json, "{compact} bytes against {json} of JSON");
    }

    /// What versions before the compact format wrote (a value NATS may still hold): read,
    /// so that an upgrade keeps every history, and a report retried after the upgrade
    /// still finds its own entry; the next report rewrites it compact.
    #[test]
    fn a_json_history_of_earlier_versions_is_still_read() {
        let earlier = br#"[{"call_id":"c-1","at":{"secs_since_epoch":1764979200,"nanos_since_epoch":5},"attempt":1,"category":"busy","sip_code":486},{"call_id":"c-2","at":{"secs_since_epoch":1764979260,"nanos_since_epoch":0},"attempt":3,"category":"no_answer","sip_code":null}]"#;
        assert_eq!(
            decode_history(earlier),
            Some(vec![
                kept("c-1", 1_764_979_200_000_000_005, 1, Category::Busy),
                kept("c-2", 1_764_979_260_000_000_000, 3, Category::NoAnswer),
            ])
        );
    }

    #[test]
    fn an_unreadable_value_or_an_unknown_category_is_dropped_not_fatal() {
        assert_eq!(decode_history(b""), None);
        assert_eq!(decode_history(b"\x02garbage"), None);
        assert_eq!(decode_history(b"[{\"call_id\": 1}]"), None);
        assert_eq!(decode_history(&[COMPACT_HISTORY, 0xff, 0xff]), None);
        // A row of a category a newer version added: the others stay.
        let row = |call_id: &str, category| CompactEntry {
            call: call_digest(call_id),
            at_nanos: 7,
            attempt: 1,
            category,
            sip_code: Some(486),
        };
        let mut value = vec![COMPACT_HISTORY];
        value.extend(postcard::to_allocvec(&vec![row("a", 2), row("b", 200)]).expect("encodes"));
        assert_eq!(
            decode_history(&value),
            Some(vec![kept("a", 7, 1, Category::Busy)])
        );
    }

    /// docs/performance.md measures what each request of a report costs with
    /// `benches/nats_bounds.patch`, switches that skip them in a throwaway build of
    /// this file: the patch must keep applying, or the figures cannot be reproduced.
    #[test]
    fn the_bounds_patch_applies_to_this_file() {
        let root = env!("CARGO_MANIFEST_DIR");
        let out = std::process::Command::new("git")
            .args(["apply", "--check", "benches/nats_bounds.patch"])
            .current_dir(root)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "benches/nats_bounds.patch no longer applies to src/store/nats.rs; refresh \
             it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
