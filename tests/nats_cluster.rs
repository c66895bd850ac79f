//! High availability on the shape platform teams run: three `nats-server` nodes
//! clustered over routes on 127.0.0.1, JetStream on each, the event stream and both KV
//! buckets with `nats.replicas = 3`, and two service replicas given all three URLs.
//!
//! - the stream leader killed (-9) under a steady report load split across both
//!   replicas: nothing acknowledged is lost or delivered twice, reports during the
//!   election fail with `UNAVAILABLE`, both replicas serve again within a measured
//!   bound, and a subscriber resumes by itself with no gap; the node restarted catches
//!   up and the cluster is whole again with no restart of the service;
//! - two of three killed, the survivor leading the meta group and every stream (it
//!   still calls the dead nodes current for seconds): never `ready`, neither on the
//!   replica that moved to it nor on the one already there; no quorum, every report
//!   refused, health `NOT_SERVING` with the reason at `/readyz`; one brought back: the
//!   service returns by itself;
//! - a replica given one URL follows the cluster to the other nodes when that one dies.
//!
//! Every wait is on a delivered message or a polled state with a bound, never a fixed
//! sleep. Recovery figures are printed (`--nocapture`) and documented in docs/nats.md.

mod common;
#[path = "common/nats.rs"]
mod nats_server;

use call_outcome::proto as pb;
use call_outcome::proto::call_outcome_service_client::CallOutcomeServiceClient;
use call_outcome::server::RunningServer;
use common::{client, get, outcome, report};
use nats_server::{NatsCluster, final_status_token, wait_health};
use pb::subscribe_outcomes_response::Kind;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::ServingStatus;

type Client = CallOutcomeServiceClient<Channel>;

/// The events of the default tenant (no auth) and the two buckets.
const EVENTS: &str = "CALL_OUTCOMES-default";
const STREAMS: [&str; 3] = [EVENTS, "KV_call_outcome_reports", "KV_call_outcome_history"];
/// 603 Decline: a decline event, delivered by the default filter.
const DECLINE: i32 = 603;
/// The bound on a replica serving again after the stream leader dies (measured 4-9 s
/// on a 2-core machine: NATS's election timeout, then the client's next request).
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

async fn replicas(cluster: &NatsCluster) -> [(RunningServer, Client); 2] {
    let mut config = cluster.config();
    // A claim left behind by a report cut off mid-way is taken over within 3 s.
    config.store.in_flight_wait = Duration::from_secs(1);
    let a = RunningServer::start(config.clone()).await.expect("a");
    let b = RunningServer::start(config).await.expect("b");
    let ca = client(&a).await;
    let cb = client(&b).await;
    [(a, ca), (b, cb)]
}

/// `/readyz` of a replica: status and body.
async fn readyz(server: &RunningServer) -> (u16, String) {
    get(server.admin_addr.expect("admin listener"), "/readyz").await
}

/// Reports `call_id` until acknowledged (see [`nats_server::until_acknowledged`]).
async fn until_acknowledged(client: &mut Client, call_id: &str, to: &str) -> usize {
    nats_server::until_acknowledged(client, call_id, to, Duration::from_secs(120)).await
}

/// What one load worker saw.
#[derive(Default)]
struct Worked {
    acknowledged: Vec<(String, Instant)>,
    refused: usize,
}

/// A worker sends reports with fresh call ids to one replica until `stop`, each retried
/// until acknowledged.
fn worker(
    mut client: Client,
    name: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Worked> {
    tokio::spawn(async move {
        let mut worked = Worked::default();
        let mut n = 0_u32;
        while !stop.load(Ordering::Relaxed) {
            let call_id = format!("{name}-{n}");
            let to = format!("+1555{:07}", (n * 7919) % 10_000_000);
            worked.refused += until_acknowledged(&mut client, &call_id, &to).await;
            worked.acknowledged.push((call_id, Instant::now()));
            n += 1;
        }
        worked
    })
}

/// What the subscriber saw.
struct Subscribed {
    call_ids: Vec<String>,
    /// Times its stream ended (`UNAVAILABLE` with the last token) and it resumed.
    resumed: usize,
}

/// A subscriber from the oldest event that resumes by itself with its last token when
/// its stream ends, alternating replicas, until it has seen every id in `wanted` (sent
/// once the load stopped) and then one heartbeat more (nothing extra follows).
fn subscriber(
    clients: [Client; 2],
    wanted: tokio::sync::oneshot::Receiver<HashSet<String>>,
) -> tokio::task::JoinHandle<Subscribed> {
    tokio::spawn(async move {
        let mut clients = clients;
        let mut wanted = wanted;
        let mut target: Option<HashSet<String>> = None;
        let mut seen: Vec<String> = Vec::new();
        let mut seen_set: HashSet<String> = HashSet::new();
        let mut last_sequence = 0_u64;
        let mut token: Option<String> = None;
        let mut which = 0;
        let mut resumed = 0;
        let deadline = Instant::now() + Duration::from_secs(240);
        'outer: loop {
            assert!(
                Instant::now() < deadline,
                "subscriber: {} events",
                seen.len()
            );
            let request = pb::SubscribeOutcomesRequest {
                start: pb::StartPosition::Oldest as i32,
                resume_token: token.clone().unwrap_or_default(),
                ..Default::default()
            };
            let mut stream = match clients[which].subscribe_outcomes(request).await {
                Ok(s) => s.into_inner(),
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    which ^= 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            loop {
                if target.is_none()
                    && let Ok(t) = wanted.try_recv()
                {
                    target = Some(t);
                }
                let next = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
                match next.expect("a message or heartbeat within 30 s") {
                    Some(Ok(msg)) => match msg.kind.expect("kind") {
                        Kind::Event(e) => {
                            assert_eq!(
                                e.sequence,
                                last_sequence + 1,
                                "events are contiguous: no gap, nothing twice"
                            );
                            last_sequence = e.sequence;
                            let call_id = e.outcome.expect("outcome").call_id;
                            assert!(
                                seen_set.insert(call_id.clone()),
                                "{call_id} delivered twice"
                            );
                            seen.push(call_id);
                            token = Some(e.resume_token);
                        }
                        Kind::Heartbeat(h) => {
                            token = Some(h.resume_token);
                            if let Some(t) = &target
                                && t.is_subset(&seen_set)
                            {
                                break 'outer;
                            }
                        }
                        Kind::Gap(g) => panic!("unexpected gap {g:?}"),
                    },
                    Some(Err(status)) => {
                        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                        resumed += 1;
                        token = Some(final_status_token(&status));
                        which ^= 1;
                        break;
                    }
                    None => {
                        which ^= 1;
                        break;
                    }
                }
            }
        }
        Subscribed {
            call_ids: seen,
            resumed,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_under_load_loses_nothing_and_the_node_catches_up() {
    let mut cluster = NatsCluster::start().await;
    let [(a, ca), (b, cb)] = replicas(&cluster).await;
    // Streams and buckets exist, on all three nodes.
    until_acknowledged(&mut ca.clone(), "first", "+15550000000").await;
    cluster.wait_whole(&STREAMS).await;

    let (wanted_tx, wanted_rx) = tokio::sync::oneshot::channel();
    let subscription = subscriber([ca.clone(), cb.clone()], wanted_rx);

    // Steady load split across both replicas: two workers each.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = [("a", &ca), ("b", &cb)]
        .into_iter()
        .flat_map(|(name, c)| (0..2).map(move |w| (format!("{name}{w}"), c.clone())))
        .map(|(name, c)| worker(c, name, Arc::clone(&stop)))
        .collect();

    // Let it run, then kill the events stream's leader.
    let jetstream = cluster.jetstream().await;
    let leader = cluster
        .stream_cluster(&jetstream, EVENTS)
        .await
        .and_then(|c| c.leader)
        .expect("the events stream has a leader");
    drop(jetstream);
    let victim = NatsCluster::index_of(&leader);
    let mut probe = [ca.clone(), cb.clone()];
    for i in 0..40 {
        until_acknowledged(&mut probe[i % 2], &format!("before-{i}"), "+15550000001").await;
    }
    let killed = Instant::now();
    cluster.nodes[victim].kill();

    // Each replica serves again: the first report begun after the kill and acknowledged,
    // both measured at once.
    let serves_again = |name: &'static str, mut c: Client| async move {
        let refused =
            until_acknowledged(&mut c, &format!("after-kill-{name}"), "+15550000002").await;
        let took = killed.elapsed();
        assert!(
            took < RECOVERY_BOUND,
            "replica {name} served again only after {took:?}"
        );
        (name, took, refused)
    };
    let recovery = tokio::join!(serves_again("a", ca.clone()), serves_again("b", cb.clone()));
    // More load after the election, then stop it.
    for i in 0..40 {
        until_acknowledged(&mut probe[i % 2], &format!("after-{i}"), "+15550000003").await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged: HashSet<String> = HashSet::new();
    let mut refused = 0;
    for w in workers {
        let worked = w.await.expect("worker");
        refused += worked.refused;
        let during = worked
            .acknowledged
            .iter()
            .filter(|(_, at)| *at > killed)
            .count();
        assert!(
            during > 0,
            "every worker was acknowledged after the election"
        );
        acknowledged.extend(worked.acknowledged.into_iter().map(|(id, _)| id));
    }
    acknowledged.insert("first".into());
    acknowledged.extend((0..40).map(|i| format!("before-{i}")));
    acknowledged.extend((0..40).map(|i| format!("after-{i}")));
    acknowledged.extend(["after-kill-a".to_owned(), "after-kill-b".to_owned()]);
    wanted_tx
        .send(acknowledged.clone())
        .expect("subscriber waits");
    let subscribed = tokio::time::timeout(Duration::from_secs(240), subscription)
        .await
        .expect("the subscriber finishes")
        .expect("subscriber ok");
    let delivered: HashSet<String> = subscribed.call_ids.iter().cloned().collect();
    let lost: Vec<_> = acknowledged.difference(&delivered).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but never delivered: {lost:?}"
    );
    // Every report was retried until acknowledged, so every event is an acknowledged one.
    let extra: Vec<_> = delivered.difference(&acknowledged).collect();
    assert!(
        extra.is_empty(),
        "events of no acknowledged report: {extra:?}"
    );
    eprintln!(
        "leader {leader} killed: {} reports acknowledged, {refused} refusals (UNAVAILABLE), \
         recovery {recovery:?}, subscriber resumed {} times",
        acknowledged.len(),
        subscribed.resumed
    );

    // The node comes back: it catches up and the cluster is whole, the service untouched.
    let restarted = Instant::now();
    cluster.nodes[victim].start_again();
    cluster.nodes[victim].wait_ready().await;
    let leaders = cluster.wait_whole(&STREAMS).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let theirs = cluster.nodes[victim].local_streams().await;
        let others: Vec<BTreeMap<String, u64>> = other_copies(&cluster, victim).await;
        let caught_up = STREAMS
            .iter()
            .all(|s| theirs.contains_key(*s) && others.iter().all(|o| o.get(*s) == theirs.get(*s)));
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n{} did not catch up within 60 s: {theirs:?} vs {others:?}",
            victim + 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "n{} restarted: whole again after {:?} (leaders {leaders:?})",
        victim + 1,
        restarted.elapsed()
    );
    // Both replicas, never restarted, are ready and serve.
    for (server, c) in [(&a, &ca), (&b, &cb)] {
        wait_health(server, ServingStatus::Serving).await;
        until_acknowledged(
            &mut c.clone(),
            &format!("whole-{}", server.addr),
            "+15550000004",
        )
        .await;
    }
    a.stop().await.expect("a stops");
    b.stop().await.expect("b stops");
}

/// Every running node's own copy of the streams, except `victim`'s.
async fn other_copies(cluster: &NatsCluster, victim: usize) -> Vec<BTreeMap<String, u64>> {
    let mut out = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i != victim && node.is_running() {
            out.push(node.local_streams().await);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_every_report_is_refused_until_a_node_returns() {
    let mut cluster = NatsCluster::start().await;
    // The hard case for readiness: the node that survives leads the meta group and
    // every stream, and `a` sits on a node that dies. Just after `a` moves, the
    // survivor still calls the dead followers current and answers for the account (it
    // learns of their death only after their silence); `a` must not call that ready.
    // `b` sits on the survivor: it loses nothing, and must see the silence.
    let survivor = NatsCluster::index_of(&cluster.meta_leader().await);
    let victims: Vec<usize> = (0..3).filter(|i| *i != survivor).collect();
    let on = |node: usize| {
        let mut config = cluster.config();
        config.nats.url = cluster.nodes[node].url();
        RunningServer::start(config)
    };
    let a = on(victims[0]).await.expect("a on a node that dies");
    let b = on(survivor).await.expect("b on the survivor");
    let (mut ca, mut cb) = (client(&a).await, client(&b).await);
    until_acknowledged(&mut ca, "before-a", "+15550000000").await;
    until_acknowledged(&mut cb, "before-b", "+15550000000").await;
    cluster
        .lead_on(&STREAMS, &format!("n{}", survivor + 1))
        .await;
    assert_eq!(readyz(&a).await, (200, "ready\n".to_owned()));
    assert_eq!(readyz(&b).await, (200, "ready\n".to_owned()));

    let lost_quorum = Instant::now();
    for victim in &victims {
        cluster.nodes[*victim].kill();
    }
    for server in [&a, &b] {
        wait_health(server, ServingStatus::NotServing).await;
        // `/readyz` says why: the quorum, once the client has moved to the live node.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut said = String::new();
        loop {
            let (status, body) = readyz(server).await;
            assert_eq!(status, 503, "{body}");
            if body != said {
                // The sequence an operator sees, with when.
                eprint!("{:?} {body}", lost_quorum.elapsed());
                said = body.clone();
            }
            if body.contains("quorum") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no quorum reason within 60 s: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let not_serving_after = lost_quorum.elapsed();
    // Every report is refused with UNAVAILABLE at once, saying why: the quorum is known
    // to be lost, so nothing waits out the request timeout.
    for (i, c) in [&mut ca, &mut cb].into_iter().enumerate() {
        for n in 0..3 {
            let started = Instant::now();
            let status = c
                .report_outcome(report(outcome(
                    &format!("no-quorum-{i}-{n}"),
                    1,
                    "+15550000001",
                    DECLINE,
                )))
                .await
                .expect_err("no acknowledgement without a quorum");
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(status.message().contains("quorum"), "{status:?}");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{:?}",
                started.elapsed()
            );
        }
    }

    // One node back: a quorum of two, and the service returns by itself.
    let returned = Instant::now();
    cluster.nodes[victims[1]].start_again();
    wait_health(&a, ServingStatus::Serving).await;
    wait_health(&b, ServingStatus::Serving).await;
    let serving_after = returned.elapsed();
    // Health follows the buckets; the events stream may still be electing its leader,
    // so a first report can be refused once more (UNAVAILABLE) before it is acknowledged.
    until_acknowledged(&mut ca, "back-a", "+15550000002").await;
    until_acknowledged(&mut cb, "back-b", "+15550000003").await;
    eprintln!(
        "two of three killed: NOT_SERVING with the quorum reason after {not_serving_after:?}; \
         one back: SERVING after {serving_after:?}"
    );
    a.stop().await.expect("a stops");
    b.stop().await.expect("b stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_given_one_url_follows_the_cluster_when_that_node_dies() {
    let mut cluster = NatsCluster::start().await;
    let mut config = cluster.config();
    // Only the first node: the others are learnt from the cluster itself.
    config.nats.url = cluster.nodes[0].url();
    let server = RunningServer::start(config).await.expect("replica");
    let mut c = client(&server).await;
    until_acknowledged(&mut c, "seed", "+15550000000").await;
    cluster.wait_whole(&STREAMS).await;
    let killed = Instant::now();
    cluster.nodes[0].kill();
    let refused = until_acknowledged(&mut c, "moved", "+15550000001").await;
    wait_health(&server, ServingStatus::Serving).await;
    eprintln!(
        "the one configured node killed: served again after {:?} ({refused} refusals)",
        killed.elapsed()
    );
    assert!(killed.elapsed() < RECOVERY_BOUND);
    // It is connected to a node it was never told about.
    let mut on_others = 0;
    for node in &cluster.nodes[1..] {
        let connz = node.monitor("/connz").await.expect("connz");
        on_others += connz["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["name"] == "call-outcome")
            .count();
    }
    assert_eq!(on_others, 1, "the replica reconnected to a discovered node");
    server.stop().await.expect("stops");
}
