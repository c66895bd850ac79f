//! Wiring: builds the backends, the pipeline and the gRPC server, runs it until a
//! shutdown signal, then drains under a deadline.
//!
//! Owns the server's shape, and nothing else: it holds no business rules and parses no
//! requests. One file per concern:
//! - [`backends`]: the pipeline on the configured backend (also used by the CLI);
//! - [`stack`]: the tower layers in front of the public service, in one visible order;
//! - [`admin`]: the admin listener (metrics, liveness, readiness, gRPC health);
//! - [`connections`]: the connection loop and its hygiene, for every listener;
//! - [`health`]: gRPC health whose watches end at shutdown;
//! - [`reload`]: the policy's hot reload on SIGHUP and when its file changes;
//! - [`runtime`]: the Tokio runtime's settings (the binary's);
//! - [`shutdown`]: signals and the owned shutdown state (tokens, tracked tasks).

pub mod admin;
pub mod backends;
pub mod connections;
pub mod health;
pub mod reload;
pub mod runtime;
pub mod shutdown;
pub mod stack;

use crate::admission::{Admission, AdmissionLimits};
use crate::api::subscribe::SubscriptionPermits;
use crate::api::{ApiSettings, CallOutcomeApi, SERVICE_NAME};
use crate::config::{Config, ConfigError};
use crate::nats::{NatsConnection, NatsError};
use crate::proto::call_outcome_service_server::CallOutcomeServiceServer;
use crate::quota::RateLimits;
use crate::telemetry::{Metrics, OtlpSettings, TelemetryError};
use crate::tls::serve::TlsServer;
use backends::Backends;
pub use shutdown::shutdown_signal;
use shutdown::{MIN_TASK_DRAIN, Shutdown};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("server task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error(transparent)]
    Nats(#[from] NatsError),
}

/// The bound sockets of a server.
#[derive(Debug)]
struct Listeners {
    public: TcpListener,
    admin: Option<TcpListener>,
    webhooks: Option<TcpListener>,
}

/// Follows the NATS backend: gRPC health is SERVING only while it can serve (connected,
/// JetStream answering, the buckets with a leader); `/readyz` says why not.
fn follow_nats(
    health: tonic_health::server::HealthReporter,
    connection: &NatsConnection,
    shutdown: &Shutdown,
) {
    let mut condition = connection.condition();
    let stop = shutdown.streams.clone();
    shutdown.tasks.spawn(async move {
        loop {
            let status = if *condition.borrow_and_update() == crate::nats::NatsCondition::Ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            health.set_service_status(SERVICE_NAME, status).await;
            // Stops at the drain, so that a reconnect cannot flip health back on.
            tokio::select! {
                () = stop.cancelled() => break,
                changed = condition.changed() => if changed.is_err() { break },
            }
        }
    });
}

/// Binds the configured address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves on `listener` until `shutdown` completes, then drains within
/// `config.shutdown_grace`. The admin listener (when configured) is bound here too.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let admin = match config.admin_addr()? {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let webhooks = match config.webhooks_addr()? {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let tls = tls_server(&config)?;
    let built = backends::build(&config).await?;
    let listeners = Listeners {
        public: listener,
        admin,
        webhooks,
    };
    let (reloads, _) = watch::channel(reload::ReloadStatus::of(&built.pipeline));
    serve_built(config, listeners, built, tls, reloads, shutdown).await
}

/// The TLS side of the public port, when `[tls]` is configured.
fn tls_server(config: &Config) -> Result<Option<Arc<TlsServer>>, ConfigError> {
    Ok(config.tls.clone().map(TlsServer::new).transpose()?)
}

/// Logs who may call, and warns when nobody has to prove it on a public address.
fn log_auth(config: &Config, auth: Option<&crate::auth::Authenticator>, local: Option<SocketAddr>) {
    match auth {
        Some(auth) => tracing::info!(
            sources = %auth.summary(),
            "auth: credentials required on {SERVICE_NAME}"
        ),
        None if config.allow_insecure_public_listen
            && local.is_some_and(|a| !a.ip().is_loopback()) =>
        {
            tracing::warn!(
                "allow_insecure_public_listen = true: serving WITHOUT authentication on a \
                 non-loopback address; anyone who reaches this port can read and write every tenant"
            );
        }
        None => tracing::info!("auth: disabled (loopback only)"),
    }
}

/// What both edges share: in-flight admission and per-tenant rate limits.
struct SharedLimits {
    admission: Arc<Admission>,
    rate_limits: Option<Arc<RateLimits>>,
}

/// The public service and what it needs besides the pipeline, with the limits it
/// shares with the webhook edge.
fn api(
    config: &Config,
    pipeline: &crate::pipeline::Pipeline,
    permits: Arc<SubscriptionPermits>,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Result<(CallOutcomeApi, SharedLimits), ServerError> {
    // Configured tenants are named in metrics; any other is `other`.
    let known = config
        .auth
        .api_keys
        .iter()
        .map(|k| k.tenant.clone())
        .chain(config.webhooks.tenants.keys().map(|t| t.0.clone()))
        .chain([config.default_tenant.clone()]);
    let tuning = &config.server;
    let admission = Admission::new(
        AdmissionLimits {
            max_in_flight: tuning.max_in_flight,
            per_tenant: tuning.max_in_flight_per_tenant,
            per_connection: tuning.max_in_flight_per_connection,
        },
        known.clone(),
        Some(&metrics.meter()),
    );
    let api = CallOutcomeApi::new(
        pipeline.clone(),
        ApiSettings {
            limits: config.limits.clone(),
            default_tenant: config.default_tenant()?,
            subscriptions: config.subscriptions.clone(),
            auth_required: config.auth.enabled,
        },
        permits,
        Arc::clone(&admission),
        Arc::clone(metrics),
        shutdown.streams.clone(),
    );
    if !config.rate_limits.enabled {
        let shared = SharedLimits {
            admission,
            rate_limits: None,
        };
        return Ok((api, shared));
    }
    let limits = Arc::new(RateLimits::new(
        &config.rate_limits,
        known,
        Some(&metrics.meter()),
    ));
    limits.spawn_housekeeping(
        Duration::from_secs(10),
        shutdown.streams.clone(),
        &shutdown.tasks,
    );
    tracing::info!(limits = ?config.rate_limits, "per-tenant rate limits on");
    let shared = SharedLimits {
        admission,
        rate_limits: Some(Arc::clone(&limits)),
    };
    Ok((api.with_rate_limits(limits), shared))
}

/// The webhook edge on its listener, stopped with the public port.
fn spawn_webhooks(
    config: &Config,
    listener: TcpListener,
    pipeline: &crate::pipeline::Pipeline,
    shared: SharedLimits,
    metrics: &Arc<Metrics>,
    tls: Option<&Arc<TlsServer>>,
    stop: CancellationToken,
) -> Result<JoinHandle<()>, ServerError> {
    use crate::webhooks::{OutcomeBounds, WebhookEdge, WebhookSettings};
    let webhooks = &config.webhooks;
    let limits = &config.limits;
    let routes = webhooks
        .routes(limits.max_tenant_bytes)
        .map_err(ConfigError::Invalid)?;
    let count = routes.len();
    let serve_tls = webhooks.tls.then_some(tls).flatten();
    let edge = WebhookEdge::new(
        pipeline.clone(),
        routes,
        WebhookSettings {
            max_body_bytes: webhooks.max_body_bytes,
            timestamp_tolerance: webhooks.timestamp_tolerance,
            replay_memory: webhooks.replay_memory,
            trusted_proxies: webhooks.trusted_proxies.clone(),
            tls: serve_tls.is_some(),
            body_read_timeout: config.server.body_read_timeout,
            bounds: OutcomeBounds {
                max_call_id_bytes: limits.max_call_id_bytes,
                max_party_bytes: limits.max_party_bytes,
                max_label_value_bytes: limits.max_label_value_bytes,
                max_attempt: limits.max_attempt,
            },
        },
        shared.admission,
        shared.rate_limits,
        Arc::clone(metrics),
        limits.max_tenant_bytes,
    )
    .map_err(ConfigError::Invalid)?;
    edge.spawn_reloader(
        webhooks.clone(),
        limits.max_tenant_bytes,
        webhooks.reload_interval,
        stop.clone(),
    );
    let router = edge.router();
    let local = listener.local_addr().ok();
    let settings = connections::ConnectionSettings {
        listener: "webhooks",
        http2_only: false,
        ..connection_settings(config)
    };
    tracing::info!(
        webhooks = %local.map_or_else(|| "?".to_owned(), |a| a.to_string()),
        routes = count,
        tls = serve_tls.is_some(),
        "webhook listener: POST {}",
        crate::webhooks::ROUTE
    );
    let incoming = connections::tcp_incoming(listener, "webhooks");
    Ok(match serve_tls {
        Some(tls) => tokio::spawn(connections::serve(
            tls.incoming(incoming),
            router,
            settings,
            stop,
        )),
        None => tokio::spawn(connections::serve(incoming, router, settings, stop)),
    })
}

/// As [`serve`], with the listeners bound and the backends built.
async fn serve_built(
    config: Config,
    listeners: Listeners,
    built: Backends,
    tls: Option<Arc<TlsServer>>,
    reloads: watch::Sender<reload::ReloadStatus>,
    signal: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let Backends { pipeline, nats } = built;
    let shutdown = Shutdown::default();
    // Reports of a networked backend run in tasks of their own: drained, never cut.
    let pipeline = pipeline.with_tasks(shutdown.tasks.clone());
    let local = listeners.public.local_addr().ok();
    let auth = config.authenticator()?.map(Arc::new);
    log_auth(&config, auth.as_deref(), local);
    let permits = Arc::new(SubscriptionPermits::new(
        config.subscriptions.max_total,
        config.subscriptions.max_per_tenant,
    ));
    let metrics = {
        let permits = Arc::clone(&permits);
        Arc::new(Metrics::new(
            &OtlpSettings::from_env(),
            Arc::clone(pipeline.events()),
            Arc::new(move || permits.active() as u64),
            &config.metrics,
        )?)
    };
    let reloader = Arc::new(reload::Reloader::new(
        config.clone(),
        pipeline.clone(),
        reload::PolicyMetrics::new(&metrics, &pipeline),
        reloads,
    ));
    reload::spawn_on_sighup(Arc::clone(&reloader), &shutdown);
    reload::spawn_watcher(reloader, &shutdown);
    let (api, shared) = api(&config, &pipeline, permits, &metrics, &shutdown)?;
    let service = stack::public_service(&config, api, auth);

    let health = tonic_health::server::HealthReporter::new();
    let health_service = health::service(health.clone(), shutdown.streams.clone());
    health
        .set_serving::<CallOutcomeServiceServer<CallOutcomeApi>>()
        .await;
    if let Some(connection) = &nats {
        follow_nats(health.clone(), connection, &shutdown);
    }
    let (reflection_v1, reflection_v1alpha) = if config.server.reflection {
        let error = |e: tonic_reflection::server::Error| ServerError::Reflection(e.to_string());
        (
            Some(reflection_builder().build_v1().map_err(error)?),
            Some(reflection_builder().build_v1alpha().map_err(error)?),
        )
    } else {
        (None, None)
    };

    // The admin listener outlives the drain (its own token): liveness stays up and
    // readiness reports the shutdown while in-flight work finishes.
    let admin_stop = CancellationToken::new();
    let admin_task = match listeners.admin {
        Some(listener) => {
            let admin_local = listener.local_addr().ok();
            let router = admin::router(
                admin::grpc_routes(tonic::service::Routes::new(health_service.clone()))?,
                Arc::clone(&metrics),
                pipeline.clone(),
                shutdown.streams.clone(),
            );
            let stop = admin_stop.clone();
            tracing::info!(
                admin = %admin_local.map_or_else(|| "?".to_owned(), |a| a.to_string()),
                "admin listener: /metrics /healthz /readyz and grpc.health.v1"
            );
            let settings = connections::ConnectionSettings {
                listener: "admin",
                max_connections: ADMIN_MAX_CONNECTIONS,
                http2_only: false,
                ..connection_settings(&config)
            };
            Some(tokio::spawn(connections::serve(
                connections::tcp_incoming(listener, "admin"),
                router,
                settings,
                stop,
            )))
        }
        None => None,
    };

    let mut routes = tonic::service::Routes::new(health_service).add_service(service);
    if let Some(r) = reflection_v1 {
        routes = routes.add_service(r);
    }
    if let Some(r) = reflection_v1alpha {
        routes = routes.add_service(r);
    }
    let port = stack::public_port(&config, routes);
    let settings = connection_settings(&config);
    let stop_accepting = CancellationToken::new();
    let webhooks_task = match listeners.webhooks {
        Some(listener) => Some(spawn_webhooks(
            &config,
            listener,
            &pipeline,
            shared,
            &metrics,
            tls.as_ref(),
            stop_accepting.clone(),
        )?),
        None => None,
    };
    let mut serving: JoinHandle<()> = match &tls {
        Some(tls) => {
            tls.spawn_reloader(shutdown.streams.clone(), &shutdown.tasks);
            tokio::spawn(connections::serve(
                tls.incoming(connections::tcp_incoming(listeners.public, "public")),
                port,
                settings,
                stop_accepting.clone(),
            ))
        }
        None => tokio::spawn(connections::serve(
            connections::tcp_incoming(listeners.public, "public"),
            port,
            settings,
            stop_accepting.clone(),
        )),
    };
    tracing::info!(
        listen = %local.map_or_else(|| "?".to_owned(), |a| a.to_string()),
        reflection = config.server.reflection,
        tls = match &tls {
            None => "off",
            Some(t) if t.client_cert_required() => "on, client certificate required",
            Some(_) => "on",
        },
        "serving {SERVICE_NAME}"
    );

    let stopped_early = tokio::select! {
        result = &mut serving => Some(result),
        () = signal => None,
    };
    let deadline = Instant::now() + config.shutdown_grace;
    let result = match stopped_early {
        // The server stopped on its own: a panic.
        Some(Ok(())) => Err(ServerError::Task("the public listener stopped".into())),
        Some(Err(e)) => Err(ServerError::Task(e.to_string())),
        None => {
            tracing::info!(grace = ?config.shutdown_grace, "shutting down: draining");
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            health
                .set_not_serving::<CallOutcomeServiceServer<CallOutcomeApi>>()
                .await;
            shutdown.streams.cancel();
            stop_accepting.cancel();
            // Connections get the grace less a little, so tracked tasks still have time.
            let connections_deadline = deadline
                .checked_sub(MIN_TASK_DRAIN)
                .unwrap_or(deadline)
                .max(Instant::now());
            if let Some(mut task) = webhooks_task {
                // Callbacks in flight finish (a provider retries what gets no answer).
                if tokio::time::timeout_at(connections_deadline, &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                }
            }
            match tokio::time::timeout_at(connections_deadline, &mut serving).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ServerError::Task(e.to_string())),
                Err(_) => {
                    // Connections still open at the deadline are cut. A report of an
                    // in-process backend runs to its end inside one poll, and a
                    // networked backend's runs in a tracked task, so none is cut half way.
                    tracing::warn!(grace = ?config.shutdown_grace, "drain deadline passed: closing remaining connections");
                    serving.abort();
                    Ok(())
                }
            }
        }
    };
    shutdown
        .drain(deadline.max(Instant::now() + MIN_TASK_DRAIN))
        .await;
    admin_stop.cancel();
    if let Some(task) = admin_task {
        // Bounded: a scraper holding a connection open must not hold the process.
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), task).await {
            tracing::warn!(error = %e, "admin listener task failed");
        }
    }
    metrics.shutdown();
    tracing::info!("stopped");
    result
}

/// Most connections the admin listener keeps open (probes and scrapers need few).
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// The connection limits of the public port (the admin listener's start from them).
fn connection_settings(config: &Config) -> connections::ConnectionSettings {
    let tuning = &config.server;
    connections::ConnectionSettings {
        listener: "public",
        max_connections: tuning.max_connections,
        handshake_timeout: tuning.handshake_timeout,
        idle_timeout: tuning.idle_timeout,
        http2_only: true,
        http2_keepalive_interval: Some(tuning.http2_keepalive_interval),
        http2_keepalive_timeout: tuning.http2_keepalive_timeout,
        max_concurrent_streams: tuning.max_concurrent_streams,
    }
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// A server running in the background (tests, benchmarks, embedding).
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The admin listener's address, when one is configured.
    pub admin_addr: Option<SocketAddr>,
    /// The webhook listener's address, when one is configured.
    pub webhooks_addr: Option<SocketAddr>,
    /// The TLS side, when `[tls]` is configured (its reload status, for tests).
    pub tls: Option<Arc<TlsServer>>,
    policy_status: watch::Receiver<reload::ReloadStatus>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl RunningServer {
    /// Binds `config.listen` (use port 0 for a free port) and serves in the background.
    pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
        // The security rules hold for embedded servers too, before anything binds.
        config.authenticator()?;
        config.check_tls()?;
        config.check_listen_security()?;
        let tls = tls_server(&config)?;
        let listener = bind(config.listen).await?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let admin = match config.admin_addr()? {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        config.check_webhooks()?;
        let webhooks = match config.webhooks_addr()? {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let webhooks_addr = webhooks.as_ref().and_then(|l| l.local_addr().ok());
        // Fail fast on configuration and backend errors instead of inside the task.
        let built = backends::build(&config).await?;
        let (reloads, policy_status) = watch::channel(reload::ReloadStatus::of(&built.pipeline));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_built(
            config,
            Listeners {
                public: listener,
                admin,
                webhooks,
            },
            built,
            tls.clone(),
            reloads,
            async move {
                let _ = rx.await;
            },
        ));
        Ok(RunningServer {
            addr,
            admin_addr,
            webhooks_addr,
            tls,
            policy_status,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The live policy's version and the reloads so far (SIGHUP or a file change). The
    /// counts only grow: to wait for the reload of a change you make, note
    /// `applied + rejected` before making it and `wait_for` a greater sum. Waiting with
    /// `changed()` after the change can miss it, since the watcher may already have
    /// applied it.
    pub fn policy_status(&self) -> watch::Receiver<reload::ReloadStatus> {
        self.policy_status.clone()
    }

    /// `http://addr` (`https://` with TLS), for clients.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Triggers a graceful shutdown and waits for it.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| ServerError::Task(e.to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
