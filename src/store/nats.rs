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
//!   `<tenant token>.<destination, base64url>`, value the JSON list of entries. Every
//!   update is read-modify-write with `update(key, value, revision)` and a retry on
//!   conflict, so concurrent replicas never lose an entry. The bucket TTL drops a
//!   destination idle for a whole window; `max_entries_per_destination` and the window
//!   bound each value. `max_destinations` and `max_report_keys` do not apply: the
//!   buckets are bounded by age, on disk.
//!
//! Every async-nats future is boxed before it is awaited (`Box::pin(...).await`). They
//! are large (the KV ones several KB), and an async fn holds each future it awaits
//! inline, so a report's store step was ~20 KB, copied whole at each move (into
//! `unless_lost`, into its [`Step`]'s box): `memmove` was 17 % of the service's CPU on
//! NATS. Boxed, a step is a few hundred bytes and each client future is copied once.

use super::{Claim, ReportKey, Store, StoreError, StoreLimits, StoredReport};
use crate::domain::{HistoryEntry, HistorySnapshot};
use crate::nats::{NatsConnection, NatsError, key_token, tenant_token};
use crate::step::Step;
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
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
            .and_then(|e| serde_json::from_slice(&e.value).ok())
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

/// A history entry as kept in the KV bucket: with the call id of its report, so that a
/// retried report replaces its own entry. The JSON is that of [`HistoryEntry`] plus
/// `call_id`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct KeptEntry {
    call_id: String,
    #[serde(flatten)]
    entry: HistoryEntry,
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
            call_id: call_id.to_owned(),
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
                    && !(e.entry.attempt == entry.entry.attempt && e.call_id == entry.call_id)
            });
            if entry.entry.at >= cutoff {
                let at = entries.partition_point(|e| e.entry.at <= entry.entry.at);
                entries.insert(at, entry.clone());
            }
            let excess = entries.len().saturating_sub(max_entries);
            entries.drain(..excess);
            let value = encode(&entries)?;
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
