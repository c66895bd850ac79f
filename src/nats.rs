//! The shared NATS connection of the JetStream backend: configuration, connecting,
//! creating the stream and KV buckets, and watching whether the server is reachable.
//!
//! Owns the one [`async_nats::Client`] that [`crate::store::nats::NatsStore`] and
//! [`crate::events::nats::NatsEventLog`] share, and the readiness signal derived from
//! its connection events. It knows nothing of reports, histories or subscriptions, and
//! it must not cache anything about the server beyond the client itself: async-nats
//! reconnects on its own, and every caller asks the server afresh after a reconnect.
//!
//! Names on the wire (documented in the README):
//! - events: one stream per tenant, `<stream>-<tenant>`, subjects
//!   `<subject_prefix>.events.<tenant>.<category>`: each tenant's events are numbered on
//!   their own (a subscriber learns nothing of another tenant's volume) and retained on
//!   their own (another tenant's flood evicts none of them);
//! - tenants become one subject token through [`tenant_token`] (`.` and `_` escaped);
//! - free-form values in KV keys (call ids, destinations) are base64url without padding.

use async_nats::jetstream;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// `[nats]`: where the JetStream backend lives and how its stream and buckets look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma separated (`nats://host:4222`).
    pub url: String,
    /// First part of the names of the JetStream streams that hold the events, one per
    /// tenant: `<stream>-<tenant>`.
    pub stream: String,
    /// First subject tokens of the events (`<prefix>.events.<tenant>.<category>`).
    pub subject_prefix: String,
    /// KV bucket of the destination histories (TTL: `store.history_window`).
    pub history_bucket: String,
    /// KV bucket of the report keys (TTL: `store.idempotency_ttl`).
    pub reports_bucket: String,
    /// JetStream replicas of the stream and buckets (1 for a single server, 3 in a cluster).
    pub replicas: usize,
    /// Oldest event kept in a tenant's stream.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Most events kept in a tenant's stream; 0 means no limit besides `max_age`.
    pub max_messages: u64,
    /// How long JetStream remembers a report's `Nats-Msg-Id` to drop a retried publish.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long connecting may take at start.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Ceiling on every JetStream request (publish ack, KV read/write).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// NATS credentials file (JWT + nkey seed), when the server requires one.
    pub credentials_file: Option<PathBuf>,
    /// How often readiness asks JetStream whether the KV buckets exist and have a
    /// leader (a quorum of their replicas); a lost connection is seen at once.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "CALL_OUTCOMES".to_owned(),
            subject_prefix: "calloutcome".to_owned(),
            history_bucket: "call_outcome_history".to_owned(),
            reports_bucket: "call_outcome_reports".to_owned(),
            replicas: 1,
            max_age: Duration::from_secs(24 * 3600),
            max_messages: 0,
            duplicate_window: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            credentials_file: None,
            health_interval: Duration::from_secs(1),
        }
    }
}

impl NatsConfig {
    /// Checks names and durations before anything connects; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        for (key, value) in [
            ("nats.stream", &self.stream),
            ("nats.history_bucket", &self.history_bucket),
            ("nats.reports_bucket", &self.reports_bucket),
        ] {
            if !name_ok(value) {
                return Err(format!("{key}: `{value}` must be letters, digits, _ or -"));
            }
        }
        if !self.subject_prefix.split('.').all(name_ok) {
            return Err(format!(
                "nats.subject_prefix: `{}` must be dot-separated tokens of letters, digits, _ or -",
                self.subject_prefix
            ));
        }
        self.server_addrs()?;
        if !(1..=5).contains(&self.replicas) {
            return Err("nats.replicas: must be 1 to 5".into());
        }
        if self.max_age.is_zero() || self.duplicate_window.is_zero() {
            return Err("nats.max_age and nats.duplicate_window: must be more than zero".into());
        }
        if self.duplicate_window > self.max_age {
            return Err("nats.duplicate_window: must not exceed nats.max_age".into());
        }
        if self.health_interval < Duration::from_millis(100) {
            return Err("nats.health_interval: must be at least 100ms".into());
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(
                "nats.request_timeout and nats.connect_timeout: must be more than zero".into(),
            );
        }
        Ok(())
    }

    /// The servers of `url`: one URL, or several separated by commas (the seeds of a
    /// cluster; the client learns the other members from the servers themselves).
    pub fn server_addrs(&self) -> Result<Vec<async_nats::ServerAddr>, String> {
        let urls: Vec<&str> = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err("nats.url: must not be empty".into());
        }
        urls.into_iter()
            .map(|url| {
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|e| format!("nats.url: `{url}` is not a NATS server URL: {e}"))
            })
            .collect()
    }

    /// Subjects of every tenant's events (the one stream of versions before per-tenant
    /// streams).
    pub fn events_wildcard(&self) -> String {
        format!("{}.events.>", self.subject_prefix)
    }

    /// The stream of one tenant's events.
    pub fn tenant_stream(&self, tenant: &str) -> String {
        format!("{}-{}", self.stream, tenant_token(tenant))
    }

    /// Subjects of one tenant's events.
    pub fn tenant_filter(&self, tenant: &str) -> String {
        format!("{}.events.{}.>", self.subject_prefix, tenant_token(tenant))
    }

    /// The subject of one event.
    pub fn event_subject(&self, tenant: &str, category: &str) -> String {
        format!(
            "{}.events.{}.{category}",
            self.subject_prefix,
            tenant_token(tenant)
        )
    }
}

/// Why the NATS backend cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("nats: cannot read credentials file {path}: {source}")]
    Credentials {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("nats: cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("nats: cannot set up {what}: {message}")]
    Setup { what: String, message: String },
    /// A stream of an earlier layout is in the way: an operator must act.
    #[error("nats: cannot use stream {stream}: {message}")]
    Layout { stream: String, message: String },
}

/// Why the JetStream backend cannot serve right now: what readiness and gRPC health
/// report, in the words an operator needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsCondition {
    /// Connected, JetStream answers and both KV buckets have a leader.
    Ready,
    /// No connection to any of the servers (the client keeps trying all of them).
    NotConnected,
    /// Connected, but JetStream does not answer: not enabled on the server, or no
    /// answer in time.
    NoJetStream(String),
    /// The cluster has no JetStream meta leader: fewer than a quorum of its servers are
    /// up, so nothing can be created or changed.
    NoMetaQuorum,
    /// A bucket's stream cannot commit a write: it has no leader (an election, or
    /// fewer than a quorum of its replicas up), or its leader hears from too few
    /// followers.
    NoQuorum {
        stream: String,
        leader: bool,
        up: usize,
        replicas: usize,
    },
    /// Just after the client lost its server and moved to another: the stream's leader
    /// has not yet heard from enough followers since (its view from before may include
    /// servers that died with the one the client was on). Requests are not refused: the
    /// quorum is not known to be lost. Lasts at most [`PEER_SILENCE`].
    Confirming {
        stream: String,
        heard: usize,
        replicas: usize,
    },
    /// A bucket's stream does not exist (deleted behind the service's back); it is
    /// created again, and readiness returns once that succeeded.
    StreamMissing(String),
    /// A bucket cannot be created: NATS refuses its configuration (e.g. `nats.replicas`
    /// above the number of servers). Stays until the configuration or NATS changes.
    SetupRefused(String),
}

impl std::fmt::Display for NatsCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsCondition::Ready => f.write_str("ready"),
            NatsCondition::NotConnected => f.write_str("no connection to NATS"),
            NatsCondition::NoJetStream(why) => write!(f, "JetStream unavailable: {why}"),
            NatsCondition::NoMetaQuorum => f.write_str(
                "no JetStream quorum: the cluster has no meta leader (fewer than a quorum of \
                 its servers are up)",
            ),
            NatsCondition::NoQuorum {
                stream,
                leader,
                up,
                replicas,
            } => {
                let quorum = replicas / 2 + 1;
                if *leader {
                    write!(
                        f,
                        "no JetStream quorum for stream {stream}: {up} of {replicas} replicas \
                         up, {quorum} needed"
                    )
                } else {
                    write!(
                        f,
                        "stream {stream} has no leader: {up} of {replicas} replicas up, \
                         a quorum of {quorum} needed to elect one"
                    )
                }
            }
            NatsCondition::Confirming {
                stream,
                heard,
                replicas,
            } => {
                let majority = replicas / 2 + 1;
                write!(
                    f,
                    "reconnected to another server: stream {stream} has heard from {heard} of \
                     {replicas} replicas since, waiting for {majority}"
                )
            }
            NatsCondition::StreamMissing(stream) => {
                write!(f, "stream {stream} missing (being created again)")
            }
            NatsCondition::SetupRefused(why) => f.write_str(why),
        }
    }
}

/// Sets the connection flag, waking its followers only on a change (a repeated
/// `Connected` event must not make the health task ask JetStream again).
fn set_connected(tx: &watch::Sender<bool>, up: bool) {
    tx.send_if_modified(|current| std::mem::replace(current, up) != up);
}

/// A KV bucket the health check looks after: its stream must exist and have a leader.
#[derive(Debug, Clone)]
struct WatchedBucket {
    bucket: String,
    ttl: Duration,
}

/// A connected client, its JetStream context and whether the backend can serve now.
#[derive(Debug, Clone)]
pub struct NatsConnection {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub config: NatsConfig,
    connected: watch::Receiver<bool>,
    condition: watch::Receiver<NatsCondition>,
    watched: std::sync::Arc<parking_lot::Mutex<Vec<WatchedBucket>>>,
}

impl NatsConnection {
    /// Starts connecting and returns at once: a replica started before NATS (a Helm
    /// rollout that starts both together) serves, reports not-ready and keeps
    /// connecting with backoff, instead of exiting. The client keeps reconnecting
    /// forever, to any server of `nats.url` or that the cluster announced;
    /// [`NatsConnection::condition`] follows it and JetStream. Only a bad URL or
    /// credentials file fails here.
    pub async fn connect(config: &NatsConfig) -> Result<NatsConnection, NatsError> {
        let (tx, rx) = watch::channel(false);
        let tx = std::sync::Arc::new(tx);
        let events_tx = std::sync::Arc::clone(&tx);
        let lost_at: LostAt = std::sync::Arc::default();
        let events_lost_at = std::sync::Arc::clone(&lost_at);
        let mut options = match &config.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| NatsError::Credentials {
                    path: path.clone(),
                    source,
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        options = options
            .name("call-outcome")
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.request_timeout))
            // Never give up: a replica must recover by itself when NATS returns.
            .max_reconnects(None)
            .retry_on_initial_connect()
            // Bounded back-off so that a restarted server is found again within a second.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((50 * attempts as u64).min(1000))
            })
            .event_callback(move |event| {
                let tx = std::sync::Arc::clone(&events_tx);
                let lost_at = std::sync::Arc::clone(&events_lost_at);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("nats: connected");
                            set_connected(&tx, true);
                        }
                        async_nats::Event::Disconnected | async_nats::Event::Closed => {
                            tracing::warn!(%event, "nats: connection lost");
                            // Kept apart from the flag: a reconnect within
                            // milliseconds may flip it back before the health task
                            // looks, and the loss must still be seen.
                            *lost_at.lock() = Some(std::time::Instant::now());
                            set_connected(&tx, false);
                        }
                        async_nats::Event::ClientError(e) => {
                            // Also the failed attempts of the first connection: say why
                            // the replica is not ready.
                            tracing::warn!(error = %e, "nats: not connected, retrying");
                        }
                        other => tracing::debug!(event = %other, "nats event"),
                    }
                }
            });
        // Returns at once (`retry_on_initial_connect`); only a malformed URL fails.
        let servers = config
            .server_addrs()
            .map_err(|message| NatsError::Connect {
                url: config.url.clone(),
                message,
            })?;
        let client = options
            .connect(servers)
            .await
            .map_err(|e| NatsError::Connect {
                url: config.url.clone(),
                message: e.to_string(),
            })?;
        // A short wait, so that a replica whose NATS is up starts ready and sets its
        // streams and buckets up front; one whose NATS is not starts not-ready.
        let mut up = rx.clone();
        let _ = tokio::time::timeout(config.connect_timeout, up.wait_for(|c| *c)).await;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        // The first Connected event may still be on its way to the callback.
        if client.connection_state() == async_nats::connection::State::Connected {
            set_connected(&tx, true);
        }
        let (condition_tx, condition) = watch::channel(if *rx.borrow() {
            NatsCondition::Ready
        } else {
            NatsCondition::NotConnected
        });
        let watched = std::sync::Arc::default();
        let monitor = HealthMonitor {
            jetstream: jetstream.clone(),
            config: config.clone(),
            connected: rx.clone(),
            lost_at,
            watched: std::sync::Arc::clone(&watched),
        };
        tokio::spawn(monitor.run(condition_tx));
        Ok(NatsConnection {
            client,
            jetstream,
            config: config.clone(),
            connected: rx,
            condition,
            watched,
        })
    }

    /// Follows what keeps the backend from serving ([`NatsCondition::Ready`] when
    /// nothing does): the connection at once, JetStream every `nats.health_interval`.
    pub fn condition(&self) -> watch::Receiver<NatsCondition> {
        self.condition.clone()
    }

    /// Why a request must be refused before it is sent: no connection, or a quorum
    /// known to be lost (a write could not commit, so the caller is told at once
    /// instead of after `nats.request_timeout`). Other conditions let requests try.
    pub fn refusal(&self) -> Option<String> {
        self.reason_if(|c| {
            matches!(
                c,
                NatsCondition::NoQuorum { .. } | NatsCondition::NoMetaQuorum
            )
        })
    }

    /// Why the backend cannot serve now, or `None` when it can.
    pub fn not_ready(&self) -> Option<String> {
        self.reason_if(|c| *c != NatsCondition::Ready)
    }

    /// The reason when not connected (seen at once, before the health task updates the
    /// condition) or when the condition is one that `stops`.
    fn reason_if(&self, stops: impl Fn(&NatsCondition) -> bool) -> Option<String> {
        if !self.is_connected() {
            return Some(NatsCondition::NotConnected.to_string());
        }
        let condition = self.condition.borrow();
        stops(&condition).then(|| condition.to_string())
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Follows the connection: `true` while connected.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Runs `op`, failing with `lost()` as soon as the connection drops: a report in
    /// flight when NATS goes away fails at once instead of waiting out
    /// `nats.request_timeout`.
    pub async fn unless_lost<T, E>(
        &self,
        op: impl std::future::Future<Output = Result<T, E>>,
        lost: impl FnOnce() -> E,
    ) -> Result<T, E> {
        let mut connected = self.connected();
        tokio::select! {
            biased;
            result = op => result,
            _ = connected.wait_for(|up| !*up) => Err(lost()),
        }
    }

    /// Refuses to start beside the single event stream of earlier versions: its subjects
    /// overlap every tenant's stream, which JetStream would refuse one by one.
    pub async fn check_no_shared_stream(&self) -> Result<(), NatsError> {
        let c = &self.config;
        match self.jetstream.get_stream(&c.stream).await {
            Ok(mut stream) => {
                let subjects = stream
                    .info()
                    .await
                    .map(|i| i.config.subjects.clone())
                    .unwrap_or_default();
                if subjects.contains(&c.events_wildcard()) {
                    return Err(NatsError::Layout {
                        stream: c.stream.clone(),
                        message: format!(
                            "it holds every tenant's events (the layout before per-tenant streams); \
                             events now live in one stream per tenant ({}-<tenant>). Delete it once \
                             its subscribers have caught up: nats stream rm {}",
                            c.stream, c.stream
                        ),
                    });
                }
                Ok(())
            }
            Err(e) if is_stream_not_found(&e) => Ok(()),
            Err(e) => Err(NatsError::Setup {
                what: format!("stream {}", c.stream),
                message: e.to_string(),
            }),
        }
    }

    /// Creates a tenant's event stream, or updates its limits when it exists.
    pub async fn ensure_tenant_stream(&self, tenant: &str) -> Result<(), NatsError> {
        let c = &self.config;
        let name = c.tenant_stream(tenant);
        let config = jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![c.tenant_filter(tenant)],
            storage: jetstream::stream::StorageType::File,
            retention: jetstream::stream::RetentionPolicy::Limits,
            discard: jetstream::stream::DiscardPolicy::Old,
            max_age: c.max_age,
            max_messages: i64::try_from(c.max_messages)
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or(-1),
            duplicate_window: c.duplicate_window,
            num_replicas: c.replicas,
            allow_direct: true,
            ..Default::default()
        };
        self.jetstream
            .create_or_update_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| NatsError::Setup {
                what: format!("stream {name}"),
                message: e.to_string(),
            })
    }

    /// Creates a KV bucket (or updates its TTL) and returns it, and has the health check
    /// look after it (see [`NatsConnection::watch_bucket`]).
    pub async fn ensure_bucket(
        &self,
        bucket: &str,
        ttl: Duration,
    ) -> Result<jetstream::kv::Store, NatsError> {
        let store = create_bucket(&self.jetstream, &self.config, bucket, ttl).await;
        self.watch_bucket(bucket, ttl);
        store
    }

    /// From now on readiness requires the bucket's stream to exist and to have a leader
    /// with a quorum; a bucket that does not exist (deleted behind the service's back,
    /// or never created because NATS refused it) is created by the health check, and
    /// while that fails readiness says why.
    pub fn watch_bucket(&self, bucket: &str, ttl: Duration) {
        let mut watched = self.watched.lock();
        if !watched.iter().any(|w| w.bucket == bucket) {
            watched.push(WatchedBucket {
                bucket: bucket.to_owned(),
                ttl,
            });
        }
    }
}

async fn create_bucket(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
    bucket: &str,
    ttl: Duration,
) -> Result<jetstream::kv::Store, NatsError> {
    jetstream
        .create_or_update_key_value(jetstream::kv::Config {
            bucket: bucket.to_owned(),
            history: 1,
            max_age: ttl,
            storage: jetstream::stream::StorageType::File,
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| NatsError::Setup {
            what: format!("KV bucket {bucket}"),
            message: e.to_string(),
        })
}

/// The task behind [`NatsConnection::condition`]. It ends when the last
/// [`NatsConnection`] is dropped.
struct HealthMonitor {
    jetstream: jetstream::Context,
    config: NatsConfig,
    connected: watch::Receiver<bool>,
    lost_at: LostAt,
    watched: std::sync::Arc<parking_lot::Mutex<Vec<WatchedBucket>>>,
}

/// When the client last lost its connection.
type LostAt = std::sync::Arc<parking_lot::Mutex<Option<std::time::Instant>>>;

impl HealthMonitor {
    async fn run(mut self, condition: watch::Sender<NatsCondition>) {
        let mut since = tokio::time::Instant::now();
        loop {
            let now = if *self.connected.borrow_and_update() {
                self.probe().await
            } else {
                NatsCondition::NotConnected
            };
            // Receivers wake only on a change.
            let mut before = None;
            condition.send_if_modified(|current| {
                if *current == now {
                    return false;
                }
                before = Some(std::mem::replace(current, now.clone()));
                true
            });
            if before.is_some() {
                // Said once per change, with how long the previous state lasted.
                let lasted = since.elapsed();
                since = tokio::time::Instant::now();
                match &now {
                    NatsCondition::Ready => {
                        tracing::info!(not_ready_for = ?lasted, "nats: ready");
                    }
                    other => tracing::warn!(reason = %other, "nats: not ready"),
                }
            }
            tokio::select! {
                () = condition.closed() => break,
                changed = self.connected.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(self.config.health_interval) => {}
            }
        }
    }

    /// Asks JetStream (each request bounded by `nats.request_timeout`): every watched
    /// bucket's stream exists and has a quorum, then the account answers.
    async fn probe(&self) -> NatsCondition {
        let timeout = self.config.request_timeout;
        let no_answer = |stream: &str| {
            NatsCondition::NoJetStream(format!(
                "no answer about stream {stream} within {timeout:?} (its leader is down or \
                 being elected)"
            ))
        };
        let watched = self.watched.lock().clone();
        for WatchedBucket { bucket, ttl } in watched {
            let stream = format!("KV_{bucket}");
            match tokio::time::timeout(timeout, self.jetstream.get_stream(&stream)).await {
                Err(_) => return no_answer(&stream),
                Ok(Err(e)) if is_stream_not_found(&e) => {
                    // Said by the change of condition (logged once by `run`).
                    return match create_bucket(&self.jetstream, &self.config, &bucket, ttl).await {
                        Ok(_) => NatsCondition::StreamMissing(stream),
                        Err(e) => NatsCondition::SetupRefused(e.to_string()),
                    };
                }
                Ok(Err(e)) => {
                    return match e.kind() {
                        jetstream::context::GetStreamErrorKind::JetStream(err)
                            if err.error_code() == jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE =>
                        {
                            NatsCondition::NoMetaQuorum
                        }
                        jetstream::context::GetStreamErrorKind::Request => no_answer(&stream),
                        _ => NatsCondition::NoJetStream(e.to_string()),
                    };
                }
                Ok(Ok(found)) => {
                    let replicas = self.config.replicas;
                    if let Some(cluster) = &found.cached_info().cluster {
                        if let Some(up) = replicas_up(cluster, replicas, None) {
                            return NatsCondition::NoQuorum {
                                stream,
                                leader: cluster.leader.is_some(),
                                up,
                                replicas,
                            };
                        }
                        let since_loss = (*self.lost_at.lock()).map(|at| at.elapsed());
                        if let Some(heard) = replicas_up(cluster, replicas, since_loss) {
                            return NatsCondition::Confirming {
                                stream,
                                heard,
                                replicas,
                            };
                        }
                    }
                }
            }
        }
        // Last: the buckets' streams answer without the meta leader, so a lost
        // quorum is seen there first; this one asks the meta leader.
        match tokio::time::timeout(timeout, self.jetstream.query_account()).await {
            Err(_) => return NatsCondition::NoJetStream("no answer in time".into()),
            Ok(Err(e)) => {
                return match e.kind() {
                    jetstream::context::AccountErrorKind::JetStream(err)
                        if err.error_code() == jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE =>
                    {
                        NatsCondition::NoMetaQuorum
                    }
                    _ => NatsCondition::NoJetStream(e.to_string()),
                };
            }
            Ok(Ok(_)) => {}
        }
        NatsCondition::Ready
    }
}

/// A follower heard from within this long counts as up. The leader hears from its
/// followers every second even when idle (measured: never more than 1.7 s apart); a
/// killed one is silent, yet NATS calls it current, and the leader itself steps down,
/// only after ten seconds without a quorum (while its writes can no longer commit).
const PEER_SILENCE: Duration = Duration::from_secs(3);

/// `Some(replicas up)` when a replicated stream has no quorum: no leader, or a leader
/// that hears from too few followers. `None` when it has one (a single server's streams
/// always do).
///
/// `since_loss` is how long ago this client last lost its connection. Within
/// [`PEER_SILENCE`] of a loss, only a follower heard from since counts: the node the
/// client was on may have died with others, and the node it moved to still calls them
/// current (the leader learns of their death only after their silence). Live followers
/// are heard from within a second.
fn replicas_up(
    cluster: &jetstream::stream::ClusterInfo,
    replicas: usize,
    since_loss: Option<Duration>,
) -> Option<usize> {
    let quorum = replicas / 2 + 1;
    let heard_within = since_loss
        .filter(|since| *since < PEER_SILENCE)
        .unwrap_or(PEER_SILENCE);
    let just_moved = heard_within < PEER_SILENCE;
    let followers_up = cluster
        .replicas
        .iter()
        .filter(|p| {
            if p.offline {
                false
            } else if p.active.is_zero() {
                // Not heard from since this leader was elected (a leaderless group also
                // reports its dead members so): a current one voted for it.
                p.current && !just_moved
            } else {
                // Not `current`: NATS keeps a silent follower current for ten seconds.
                p.active <= heard_within
            }
        })
        .count();
    let up = match cluster.leader {
        Some(_) => followers_up + 1,
        None => followers_up,
    };
    (up < quorum || cluster.leader.is_none()).then_some(up)
}

/// Whether a `get_stream` failed because the stream does not exist.
pub fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(err)
            if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// A tenant as one subject or key token: letters, digits and `-` stay as they are; `.`
/// (the subject separator), `_` (the escape character) and any other byte become `_XX`
/// (hex), so that two tenants never share a token.
pub fn tenant_token(tenant: &str) -> String {
    let mut out = String::with_capacity(tenant.len());
    for b in tenant.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// Free-form text as a KV key token (base64url, no padding: letters, digits, - and _).
pub fn key_token(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream's cluster info as NATS sends it: `leader`, and per follower
    /// `(current, milliseconds since heard from)`.
    fn cluster(leader: Option<&str>, followers: &[(bool, u64)]) -> jetstream::stream::ClusterInfo {
        let replicas: Vec<_> = followers
            .iter()
            .enumerate()
            .map(|(i, (current, ms))| {
                serde_json::json!({"name": format!("n{i}"), "current": current, "active": ms * 1_000_000})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "name": "c", "leader": leader, "replicas": replicas
        }))
        .expect("cluster info")
    }

    #[test]
    fn a_quorum_needs_a_leader_and_enough_followers_heard_from() {
        let secs = Duration::from_secs;
        // Healthy: both followers heard from within the second.
        assert_eq!(
            replicas_up(&cluster(Some("n"), &[(true, 400), (true, 900)]), 3, None),
            None
        );
        // A single server's stream: no followers, a quorum of one.
        assert_eq!(replicas_up(&cluster(Some("n"), &[]), 1, None), None);
        // No leader: never a quorum, whatever the followers say.
        assert_eq!(
            replicas_up(&cluster(None, &[(true, 100), (true, 100)]), 3, None),
            Some(2)
        );
        // Both followers silent for longer than PEER_SILENCE: lost, though NATS still
        // calls them current (it does for ten seconds).
        let silent = cluster(Some("n"), &[(true, 5000), (true, 5000)]);
        assert_eq!(replicas_up(&silent, 3, None), Some(1));
        // A leader just elected has heard from nobody yet: its current followers voted.
        let elected = cluster(Some("n"), &[(true, 0), (false, 0)]);
        assert_eq!(replicas_up(&elected, 3, None), None);
        let alone = cluster(Some("n"), &[(false, 0), (false, 0)]);
        assert_eq!(replicas_up(&alone, 3, None), Some(1));
        // One follower left: still a quorum of two.
        assert_eq!(
            replicas_up(&cluster(Some("n"), &[(true, 300), (false, 5000)]), 3, None),
            None
        );
        // Just after this client lost its node: the node it moved to still calls the
        // dead followers current, heard from 1.2 s ago, before the loss (0.2 s ago).
        let dead = cluster(Some("n"), &[(true, 1200), (true, 1150)]);
        assert_eq!(replicas_up(&dead, 3, None), None);
        assert_eq!(
            replicas_up(&dead, 3, Some(Duration::from_millis(200))),
            Some(1)
        );
        // A follower heard from since the loss counts: the cluster lost only that node.
        let moved = cluster(Some("n"), &[(true, 100), (true, 1150)]);
        assert_eq!(
            replicas_up(&moved, 3, Some(Duration::from_millis(200))),
            None
        );
        // A loss long ago changes nothing.
        assert_eq!(replicas_up(&dead, 3, Some(secs(60))), None);
    }

    #[test]
    fn tenant_tokens_are_single_tokens_and_distinct() {
        assert_eq!(tenant_token("acme"), "acme");
        assert_eq!(tenant_token("a.b"), "a_2Eb");
        assert_eq!(tenant_token("a_2Eb"), "a_5F2Eb");
        assert_ne!(tenant_token("a.b"), tenant_token("a_b"));
        assert!(!tenant_token("x.y.z").contains('.'));
        let c = NatsConfig::default();
        assert_eq!(
            c.event_subject("a.b", "declined"),
            "calloutcome.events.a_2Eb.declined"
        );
        assert_eq!(c.tenant_filter("a.b"), "calloutcome.events.a_2Eb.>");
    }

    #[test]
    fn config_is_validated() {
        assert_eq!(NatsConfig::default().validate(), Ok(()));
        let cluster = NatsConfig {
            url: "nats://a:4222, nats://b:4222,nats://c:4222".into(),
            ..NatsConfig::default()
        };
        assert_eq!(cluster.validate(), Ok(()));
        assert_eq!(cluster.server_addrs().map(|a| a.len()), Ok(3));
        let bad = NatsConfig {
            url: "nats://a:4222,nats://b:x".into(),
            ..NatsConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("`nats://b:x`"));
        let bad = NatsConfig {
            url: " , ".into(),
            ..NatsConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("must not be empty"));
        let bad = NatsConfig {
            stream: "has.dot".into(),
            ..NatsConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("nats.stream"));
        let bad = NatsConfig {
            subject_prefix: "a..b".into(),
            ..NatsConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = NatsConfig {
            duplicate_window: Duration::from_secs(7200),
            max_age: Duration::from_secs(60),
            ..NatsConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
