//! Tests of the memory store: claims and completions, the history ring, bounds.

use super::history::*;
use super::reports::*;
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
        delivery: None,
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
            override_name: None,
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
            policy_version: "0123456789ab".into(),
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
    assert!(decode_result(&Compactor::new(), b"\xff\xff").is_err());
    assert!(decode_result(&Compactor::new(), b"\x00\xff\xff").is_err());
    assert_eq!(PackedKey::prefix(packed.bytes()), packed.bytes());
}

/// The bytes a completed key keeps for its result.
fn kept_len(store: &MemoryStore, key: &ReportKey) -> usize {
    let packed = PackedKey::new(key).unwrap();
    let (hash, shard) = store.inner.reports.locate(&packed);
    let kept = shard
        .lock()
        .table
        .find(hash, |slot| slot.is(hash, &packed))
        .map(|slot| slot.result().len());
    kept.unwrap()
}

/// Results are kept packed once the store learnt a dictionary from the first ones,
/// and every one comes back exactly, packed or not.
#[tokio::test]
async fn kept_results_are_packed_and_come_back_exactly() {
    let store = MemoryStore::new(limits());
    let results: Vec<_> = (0..2000)
        .map(|i| {
            let mut r = (*report(&format!("0193a1b2-c3d4-7e5f-8a9b-{i:012x}"))).clone();
            r.destination = format!("+1555{i:07}");
            Arc::new(r)
        })
        .collect();
    for (i, r) in results.iter().enumerate() {
        let k = key(&format!("call-{i}"));
        assert_eq!(store.claim(&k).await, Ok(Claim::New));
        store.complete(&k, r).await.unwrap();
    }
    assert_eq!(store.inner.reports.compactor.dictionaries(), 1);
    for (i, r) in results.iter().enumerate() {
        let k = key(&format!("call-{i}"));
        assert_eq!(store.claim(&k).await, Ok(Claim::Done(Arc::clone(r))));
    }
    // The last one is kept in a fraction of its encoded size.
    let kept = kept_len(&store, &key("call-1999"));
    let encoded = postcard::to_allocvec(&*results[1999]).unwrap().len();
    assert!(kept * 2 < encoded, "{kept} of {encoded}");
}

/// `store.compact_results = false`: results are kept as they are, and still returned.
#[tokio::test]
async fn results_are_kept_raw_when_compaction_is_off() {
    let store = MemoryStore::new(StoreLimits {
        compact_results: false,
        ..limits()
    });
    for i in 0..1000 {
        let k = key(&format!("call-{i}"));
        store.complete(&k, &report(&format!("e{i}"))).await.unwrap();
    }
    assert_eq!(store.inner.reports.compactor.dictionaries(), 0);
    let k = key("call-999");
    assert_eq!(store.claim(&k).await, Ok(Claim::Done(report("e999"))));
    let kept = kept_len(&store, &k);
    let encoded = postcard::to_allocvec(&*report("e999")).unwrap().len();
    assert_eq!(kept, 1 + encoded);
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

/// At the end of the 32-bit clock, ticks are renumbered in their order: least
/// recently used stays least recently used.
#[test]
fn the_lru_clock_renumbers_in_order_when_it_runs_out() {
    let hasher = foldhash::fast::RandomState::default();
    let mut shard = Shard::default();
    let row = Row {
        at: 1,
        id: 7,
        attempt: 1,
        sip_code: Some(486),
        category: Category::Busy,
    };
    // Used in the order c, a, b.
    for (key, tick) in [(&b"a"[..], u32::MAX - 5), (b"b", u32::MAX - 1), (b"c", 9)] {
        let slot = Destination::new(key, row, tick, 0);
        shard
            .table
            .insert_unique(hasher.hash_one(key), slot, |s| hasher.hash_one(s.key()));
    }
    shard.clock = u32::MAX;
    assert_eq!(shard.tick(), 4);
    let mut ticks: Vec<(Vec<u8>, u32)> = shard
        .table
        .iter()
        .map(|s| (s.key().to_vec(), s.tick))
        .collect();
    ticks.sort();
    assert_eq!(
        ticks,
        [(b"a".to_vec(), 2), (b"b".to_vec(), 3), (b"c".to_vec(), 1)]
    );
    // The entries survived the move of the counts into the buffer.
    let slot = shard.table.iter().next().unwrap();
    assert_eq!(slot.len(), 1);
    assert_eq!(slot.rows().next().map(|r| r.id), Some(7));
}
/// The table slots stay small: at the tables' usual load each byte of a slot is paid
/// about twice per key or destination (docs/performance.md, memory).
#[test]
fn table_slots_stay_small() {
    assert_eq!(std::mem::size_of::<ReportSlot>(), 40);
    assert_eq!(std::mem::size_of::<Destination>(), 24);
}
