//! #16's chaos run, with the real binary: two replicas on one nats-server, 300 reports in
//! flight, one replica killed with SIGKILL half way, every report not acknowledged
//! retried on the other with the same call id and attempt. Then: every acknowledged
//! event id is the delivered one, nothing is lost, nothing is delivered twice, and the
//! retries see only the documented codes (never `CANCELLED`). Bounded in time and
//! count; loopback only.

mod common;
#[path = "common/nats.rs"]
mod nats_server;

use call_outcome::proto as pb;
use call_outcome::proto::call_outcome_service_client::CallOutcomeServiceClient;
use common::{outcome, report};
use nats_server::{NatsServer, free_port};
use pb::subscribe_outcomes_response::Kind;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

const REPORTS: usize = 300;
const WORKERS: usize = 30;
const TO: &str = "+15550100930";

struct Replica {
    child: Child,
    url: String,
}

impl Replica {
    fn start(nats: &NatsServer) -> Replica {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_call-outcome"))
            .args(["serve", "--backend", "nats", "--admin-listen", ""])
            .args(["--nats-url", &nats.url()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            // A claim left by the killed replica is taken over after 3 × 1 s.
            .env("CALL_OUTCOME_STORE__IN_FLIGHT_WAIT", "1s")
            // The subscriber below stops at its first heartbeat.
            .env("CALL_OUTCOME_SUBSCRIPTIONS__HEARTBEAT", "300ms")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        Replica {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn client(&self) -> CallOutcomeServiceClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(c) = CallOutcomeServiceClient::connect(self.url.clone()).await {
                return c;
            }
            assert!(Instant::now() < deadline, "{} never served", self.url);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_flight_loses_nothing_and_acknowledges_what_is_delivered() {
    let nats = NatsServer::start().await;
    let mut a = Replica::start(&nats);
    let b = Replica::start(&nats);
    let (ca, cb) = (a.client().await, b.client().await);
    let acked = Arc::new(AtomicUsize::new(0));

    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (mut ca, mut cb) = (ca.clone(), cb.clone());
        let acked = Arc::clone(&acked);
        workers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut codes_on_b: HashMap<Code, usize> = HashMap::new();
            for i in (w..REPORTS).step_by(WORKERS) {
                let call_id = format!("chaos-{i}");
                let request = || report(outcome(&call_id, 1, TO, 603));
                let answer = match ca.report_outcome(request()).await {
                    Ok(r) => r.into_inner(),
                    Err(_) => {
                        // The other replica, until it answers (bounded).
                        let deadline = Instant::now() + Duration::from_secs(60);
                        loop {
                            match cb.report_outcome(request()).await {
                                Ok(r) => break r.into_inner(),
                                Err(status) => {
                                    *codes_on_b.entry(status.code()).or_default() += 1;
                                    assert!(
                                        matches!(status.code(), Code::Unavailable | Code::Aborted),
                                        "{call_id} on the other replica: {status:?}"
                                    );
                                    assert!(
                                        Instant::now() < deadline,
                                        "{call_id} never acknowledged"
                                    );
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                            }
                        }
                    }
                };
                acked.fetch_add(1, Ordering::Relaxed);
                answers.push((call_id, answer.event_id));
            }
            (answers, codes_on_b)
        }));
    }
    // Half way, replica A dies without a chance to drain.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < REPORTS / 2 {
        assert!(Instant::now() < deadline, "stuck before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.child.kill().expect("SIGKILL");
    let _ = a.child.wait();

    let mut acknowledged: HashMap<String, String> = HashMap::new();
    let mut retries: HashMap<Code, usize> = HashMap::new();
    for worker in workers {
        let (answers, codes) = tokio::time::timeout(Duration::from_secs(120), worker)
            .await
            .expect("all acknowledged within 120 s")
            .expect("worker");
        for (call_id, event_id) in answers {
            assert!(acknowledged.insert(call_id, event_id).is_none());
        }
        for (code, n) in codes {
            *retries.entry(code).or_default() += n;
        }
    }
    assert_eq!(acknowledged.len(), REPORTS);
    eprintln!("retry answers on the surviving replica: {retries:?}");

    // Everything retained, from the surviving replica, until the first heartbeat.
    let mut cb = cb;
    let mut stream = cb
        .subscribe_outcomes(pb::SubscribeOutcomesRequest {
            start: pb::StartPosition::Oldest as i32,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut delivered: HashMap<String, String> = HashMap::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a message")
            .expect("open")
            .expect("message");
        match msg.kind.expect("kind") {
            Kind::Event(e) => {
                let call_id = e.outcome.expect("outcome").call_id;
                assert!(
                    delivered.insert(call_id.clone(), e.event_id).is_none(),
                    "{call_id} delivered twice"
                );
            }
            Kind::Heartbeat(_) => break,
            Kind::Gap(g) => panic!("a gap: {g:?}"),
        }
    }
    assert_eq!(delivered.len(), REPORTS, "nothing lost, nothing extra");
    for (call_id, event_id) in &acknowledged {
        assert_eq!(
            delivered.get(call_id),
            Some(event_id),
            "{call_id}: the acknowledged event id is the delivered one"
        );
    }
}
