//! A real `nats-server` with JetStream for one test: free loopback port, its own store
//! folder, killed on drop. The binary comes from `NATS_SERVER_BIN` or
//! `.tools/bin/nats-server` (installed by `.ci/tools.sh nats_server`); without it the
//! test fails, it never skips.
#![allow(dead_code)]

use call_outcome::NatsConfig;
use call_outcome::NatsConnection;
use call_outcome::SubscriptionConfig;
use call_outcome::config::{Backend, Config};
use call_outcome::server::RunningServer;
use call_outcome::store::StoreLimits;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

pub struct NatsServer {
    binary: PathBuf,
    pub port: u16,
    /// The HTTP monitoring port (`/connz`, `/varz`): what the server itself counts.
    pub monitor_port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    /// Arguments that make it a node of a cluster (empty for a single server).
    cluster_args: Vec<String>,
}

fn binary() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/nats-server")
        });
    assert!(
        path.is_file(),
        "nats-server not found at {}: run `.ci/tools.sh nats_server` (or set NATS_SERVER_BIN)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl NatsServer {
    /// Starts a server and waits until JetStream answers.
    pub async fn start() -> NatsServer {
        let mut server = NatsServer {
            binary: binary(),
            port: free_port(),
            monitor_port: free_port(),
            store: tempfile::tempdir().expect("store dir"),
            child: None,
            cluster_args: Vec::new(),
        };
        server.spawn();
        server.wait_ready().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor_port.to_string())
            .arg("-sd")
            .arg(self.store.path())
            .args(&self.cluster_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }

    /// Polls until a client connects and JetStream answers (bounded, no fixed sleep).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let attempt = async {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(1))
                    .connect(self.url())
                    .await
                    .ok()?;
                async_nats::jetstream::new(client)
                    .query_account()
                    .await
                    .ok()
            };
            if tokio::time::timeout(Duration::from_secs(2), attempt)
                .await
                .ok()
                .flatten()
                .is_some()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server on port {} not ready within 20 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages the server received from its clients so far (`/varz` `in_msgs`): every
    /// KV operation and JetStream publish is one request, so a difference over N reports
    /// divided by N is the requests (round trips) per report.
    pub async fn messages_in(&self) -> u64 {
        let varz = self.monitor("/varz").await.expect("varz");
        varz["in_msgs"].as_u64().expect("in_msgs")
    }

    /// A JSON page of the server's monitoring port (`None` while it does not answer).
    pub async fn monitor(&self, path: &str) -> Option<serde_json::Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.monitor_port))
            .await
            .ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let body = response.split("\r\n\r\n").nth(1)?;
        serde_json::from_str(body).ok()
    }

    /// This server's own copy of each stream it holds (`/jsz`): name -> last sequence.
    pub async fn local_streams(&self) -> std::collections::BTreeMap<String, u64> {
        let jsz = self
            .monitor("/jsz?accounts=true&streams=true")
            .await
            .unwrap_or_default();
        let mut out = std::collections::BTreeMap::new();
        for account in jsz["account_details"].as_array().into_iter().flatten() {
            for stream in account["stream_detail"].as_array().into_iter().flatten() {
                if let (Some(name), Some(last)) = (
                    stream["name"].as_str(),
                    stream["state"]["last_seq"].as_u64(),
                ) {
                    out.insert(name.to_owned(), last);
                }
            }
        }
        out
    }

    /// Whether the process is running (not killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server's process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    fn signal(&self, which: rustix::process::Signal) {
        let pid = self.child.as_ref().expect("running").id();
        let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
        rustix::process::kill_process(pid, which).expect("signal the server");
    }

    /// Starts it again on the same port and store, and waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// Starts it again without waiting: a cluster node alone answers nothing until it
    /// finds a quorum.
    pub fn start_again(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A service config on this server's JetStream.
    pub fn config(&self) -> Config {
        let defaults = Config::default();
        Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            admin_listen: "127.0.0.1:0".into(),
            backend: Backend::Nats,
            nats: NatsConfig {
                url: self.url(),
                request_timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_secs(5),
                health_interval: Duration::from_millis(200),
                ..NatsConfig::default()
            },
            subscriptions: SubscriptionConfig {
                heartbeat: Duration::from_millis(200),
                ..defaults.subscriptions.clone()
            },
            store: StoreLimits {
                in_flight_wait: Duration::from_secs(5),
                ..defaults.store.clone()
            },
            shutdown_grace: Duration::from_secs(5),
            ..defaults
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn health(server: &RunningServer) -> i32 {
    let channel = match tonic::transport::Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
    {
        Ok(c) => c,
        Err(_) => return -1,
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    match health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(r) => r.into_inner().status,
        Err(_) => -1,
    }
}

/// Polls gRPC health until it reports `status` (bounded).
pub async fn wait_health(server: &RunningServer, status: tonic_health::ServingStatus) {
    let want = match status {
        tonic_health::ServingStatus::Serving => 1,
        tonic_health::ServingStatus::NotServing => 2,
        tonic_health::ServingStatus::Unknown => 0,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(server).await != want {
        assert!(
            Instant::now() < deadline,
            "health did not become {status:?} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reports `call_id` (a 603 to `to`) until acknowledged, the way a client retries:
/// every refusal must be `UNAVAILABLE` (or `ABORTED` while its own earlier attempt is
/// still claimed); bounded by `within`. Returns the number of refusals.
pub async fn until_acknowledged(
    client: &mut call_outcome::proto::call_outcome_service_client::CallOutcomeServiceClient<
        tonic::transport::Channel,
    >,
    call_id: &str,
    to: &str,
    within: Duration,
) -> usize {
    let deadline = Instant::now() + within;
    let mut refused = 0;
    loop {
        match client
            .report_outcome(call_outcome::proto::ReportOutcomeRequest {
                outcome: Some(call_outcome::proto::CallOutcome {
                    call_id: call_id.into(),
                    attempt: 1,
                    to: to.into(),
                    sip: Some(call_outcome::proto::SipResponse {
                        code: Some(603),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                tenant: String::new(),
            })
            .await
        {
            Ok(_) => return refused,
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Aborted
                    ),
                    "{call_id}: a refusal must be UNAVAILABLE, got {status:?}"
                );
                assert!(
                    Instant::now() < deadline,
                    "{call_id} not acknowledged within {within:?}: {status:?}"
                );
                refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The resume token a stream's final `UNAVAILABLE` status carries.
pub fn final_status_token(status: &tonic::Status) -> String {
    status
        .metadata()
        .get(call_outcome::RESUME_TOKEN_METADATA)
        .expect("final status carries the resume token")
        .to_str()
        .expect("ascii token")
        .to_owned()
}

/// The pipeline and connection of one replica on `server`, without a gRPC server.
pub async fn backends(server: &NatsServer) -> (call_outcome::pipeline::Pipeline, NatsConnection) {
    let built = call_outcome::server::backends::build(&server.config())
        .await
        .expect("nats backends");
    (built.pipeline, built.nats.expect("a nats connection"))
}

/// Three `nats-server` nodes clustered over routes on 127.0.0.1, JetStream on each: the
/// shape of the official NATS Helm chart with JetStream. Nodes are `n1`..`n3`.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub async fn start() -> NatsCluster {
        let binary = binary();
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<NatsServer> = route_ports
            .iter()
            .enumerate()
            .map(|(i, route_port)| NatsServer {
                binary: binary.clone(),
                port: free_port(),
                monitor_port: free_port(),
                store: tempfile::tempdir().expect("store dir"),
                child: None,
                cluster_args: vec![
                    "-n".into(),
                    format!("n{}", i + 1),
                    "--cluster_name".into(),
                    "call-outcome-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{route_port}"),
                    "--routes".into(),
                    routes.clone(),
                ],
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        // JetStream answers on a node once the cluster elected its meta leader.
        for node in &nodes {
            node.wait_ready().await;
        }
        NatsCluster { nodes }
    }

    /// Every node's client URL, comma separated (what `nats.url` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node named `name` (`n1`..`n3`).
    pub fn index_of(name: &str) -> usize {
        name.trim_start_matches('n')
            .parse::<usize>()
            .expect("node name")
            .checked_sub(1)
            .expect("n1..n3")
    }

    /// A JetStream client on every running node.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(NatsServer::url)
            .collect();
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(urls)
            .await
            .expect("a client on the cluster");
        async_nats::jetstream::new(client)
    }

    /// The stream's cluster state as its leader reports it: `Some(leader)` once it has
    /// a leader; `None` while there is none or nothing answers.
    pub async fn stream_cluster(
        &self,
        jetstream: &async_nats::jetstream::Context,
        stream: &str,
    ) -> Option<async_nats::jetstream::stream::ClusterInfo> {
        let attempt = async {
            let mut found = jetstream.get_stream(stream).await.ok()?;
            let info = found.info().await.ok()?;
            info.cluster.clone()
        };
        tokio::time::timeout(Duration::from_secs(2), attempt)
            .await
            .ok()
            .flatten()
    }

    /// Waits until each stream has a leader and every other replica is current (the
    /// cluster is whole again), bounded; returns each stream's leader.
    pub async fn wait_whole(&self, streams: &[&str]) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let jetstream = self.jetstream().await;
        loop {
            let mut leaders = Vec::new();
            for stream in streams {
                match self.stream_cluster(&jetstream, stream).await {
                    Some(c)
                        if c.leader.is_some()
                            && c.replicas.len() == self.nodes.len() - 1
                            && c.replicas.iter().all(|p| p.current && !p.offline) =>
                    {
                        leaders.push(c.leader.unwrap_or_default());
                    }
                    _ => break,
                }
            }
            if leaders.len() == streams.len() {
                return leaders;
            }
            assert!(
                Instant::now() < deadline,
                "streams {streams:?} not whole within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node that leads the JetStream meta group (from `/jsz` of a running node).
    pub async fn meta_leader(&self) -> String {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            if let Some(jsz) = node.monitor("/jsz").await
                && let Some(leader) = jsz["meta_cluster"]["leader"].as_str()
            {
                return leader.to_owned();
            }
        }
        panic!("no node names a meta leader");
    }

    /// Moves the leadership of each stream to the node `name` (NATS 2.11+ takes a
    /// preferred node in a step-down request), then waits until the cluster is whole.
    pub async fn lead_on(&self, streams: &[&str], name: &str) {
        let jetstream = self.jetstream().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        for stream in streams {
            loop {
                let leader = self
                    .stream_cluster(&jetstream, stream)
                    .await
                    .and_then(|c| c.leader);
                if leader.as_deref() == Some(name) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{stream} not led by {name} within 60 s (leader {leader:?})"
                );
                if leader.is_some() {
                    let body = serde_json::json!({"placement": {"preferred": name}});
                    let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}");
                    // The answer is not needed: the loop checks the leader again.
                    let _ = jetstream
                        .client()
                        .request(subject, body.to_string().into())
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.wait_whole(streams).await;
    }

    /// A service config on the whole cluster: every URL, the stream and buckets
    /// replicated on all three nodes.
    pub fn config(&self) -> Config {
        let mut config = self.nodes[0].config();
        config.nats.url = self.urls();
        config.nats.replicas = 3;
        config.nats.health_interval = Duration::from_millis(200);
        config
    }
}
