//! Wiring: builds the backends, the pipeline and the gRPC server, and runs it until a
//! shutdown signal, then drains under a deadline.
//!
//! Owns the server's shape (services, health, reflection, limits, keepalive, shutdown
//! order). It holds no business rules and parses no requests.
//!
//! Shutdown order: health flips to NOT_SERVING (load balancers stop sending), the
//! shutdown token is cancelled (streams end with their last token), the listener stops
//! accepting and in-flight requests drain; whatever is still running after
//! `shutdown_grace` is cut off so the process always exits.

use crate::api::auth::AuthLayer;
use crate::api::in_flight::InFlightLayer;
use crate::api::rate_limit::RateLimits;
use crate::api::subscribe::SubscriptionPermits;
use crate::api::{ApiSettings, CallOutcomeApi};
use crate::config::{Backend, Config, ConfigError};
use crate::events::EventLog;
use crate::events::memory::MemoryEventLog;
use crate::events::nats::NatsEventLog;
use crate::nats::{NatsConnection, NatsError};
use crate::pipeline::Pipeline;
use crate::proto::call_outcome_service_server::CallOutcomeServiceServer;
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::nats::NatsStore;
use crate::telemetry::{Metrics, OtlpSettings, TelemetryError};
use crate::tls::serve::TlsServer;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;

/// The fully qualified name of the public service.
pub const SERVICE_NAME: &str = "calloutcome.v1.CallOutcomeService";

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
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error(transparent)]
    Nats(#[from] NatsError),
}

/// Builds the pipeline on the embedded backends.
pub fn pipeline(config: &Config) -> Result<Pipeline, ConfigError> {
    let policy = Arc::new(config.policy()?);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(config.store.clone()));
    let events: Arc<dyn EventLog> = Arc::new(MemoryEventLog::new(config.events.clone()));
    Ok(Pipeline::new(store, events, policy, config.region()?))
}

/// The pipeline on the configured backend, and the NATS connection when there is one
/// (its state drives health). NATS must be reachable at start; after that the client
/// reconnects by itself.
pub async fn backends(config: &Config) -> Result<(Pipeline, Option<NatsConnection>), ServerError> {
    match config.backend {
        Backend::Memory => Ok((pipeline(config)?, None)),
        Backend::Nats => {
            let policy = Arc::new(config.policy()?);
            let connection = NatsConnection::connect(&config.nats).await?;
            let store: Arc<dyn Store> =
                Arc::new(NatsStore::open(connection.clone(), config.store.clone()).await?);
            let events: Arc<dyn EventLog> = Arc::new(NatsEventLog::open(connection.clone()).await?);
            tracing::info!(url = %config.nats.url, stream = %config.nats.stream, "backend: nats jetstream");
            Ok((
                Pipeline::new(store, events, policy, config.region()?),
                Some(connection),
            ))
        }
    }
}

/// Follows the NATS connection: gRPC health is SERVING only while it is up.
fn follow_nats(
    health: tonic_health::server::HealthReporter,
    connection: &NatsConnection,
) -> JoinHandle<()> {
    let mut connected = connection.connected();
    tokio::spawn(async move {
        loop {
            let status = if *connected.borrow_and_update() {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            health.set_service_status(SERVICE_NAME, status).await;
            if connected.changed().await.is_err() {
                break;
            }
        }
    })
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
    let tls = tls_server(&config)?;
    let (pipeline, nats) = backends(&config).await?;
    serve_pipeline(config, listener, admin, pipeline, nats, tls, shutdown).await
}

/// The TLS side of the public port, when `[tls]` is configured.
fn tls_server(config: &Config) -> Result<Option<Arc<TlsServer>>, ConfigError> {
    Ok(config.tls.clone().map(TlsServer::new).transpose()?)
}

/// As [`serve`], with the admin listener already bound (or none) and the backends built.
async fn serve_pipeline(
    config: Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    pipeline: Pipeline,
    nats: Option<NatsConnection>,
    tls: Option<Arc<TlsServer>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let local = listener.local_addr().ok();
    let auth = config.authenticator()?.map(Arc::new);
    match &auth {
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
    let streams = CancellationToken::new();
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
        )?)
    };
    let meter = metrics.meter();
    let mut housekeeping = None;
    let rate_limits = config.rate_limits.enabled.then(|| {
        // Configured tenants are named in the metric; any other is `other`.
        let known = config
            .auth
            .api_keys
            .iter()
            .map(|k| k.tenant.clone())
            .chain([config.default_tenant.clone()]);
        let limits = Arc::new(RateLimits::new(&config.rate_limits, known, Some(&meter)));
        housekeeping = Some(limits.spawn_housekeeping(Duration::from_secs(10), streams.clone()));
        tracing::info!(limits = ?config.rate_limits, "per-tenant rate limits on");
        limits
    });
    let api = CallOutcomeApi::new(
        pipeline.clone(),
        ApiSettings {
            limits: config.limits.clone(),
            default_tenant: config.default_tenant.clone(),
            subscriptions: config.subscriptions.clone(),
            auth_required: config.auth.enabled,
        },
        permits,
        Arc::clone(&metrics),
        streams.clone(),
    );
    let api = match rate_limits {
        Some(limits) => api.with_rate_limits(limits),
        None => api,
    };
    let service = CallOutcomeServiceServer::new(api)
        .max_decoding_message_size(config.server.max_message_bytes)
        .max_encoding_message_size(config.server.max_message_bytes.max(4 * 1024 * 1024))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    // Only the public service is authenticated: health and reflection stay open.
    let service = tower::Layer::layer(&AuthLayer::new(auth), service);
    // Outermost: a shed request costs neither authentication nor decoding.
    let service = tower::Layer::layer(
        &InFlightLayer::new(config.server.max_in_flight, Some(&meter)),
        service,
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CallOutcomeServiceServer<CallOutcomeApi>>()
        .await;
    let nats_health = nats.as_ref().map(|c| follow_nats(health.clone(), c));

    let (reflection_v1, reflection_v1alpha) = if config.server.reflection {
        let v1 = reflection_builder()
            .build_v1()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;
        let v1alpha = reflection_builder()
            .build_v1alpha()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;
        (Some(v1), Some(v1alpha))
    } else {
        (None, None)
    };

    // The admin listener outlives the drain: liveness stays up and readiness reports
    // the shutdown while in-flight work finishes.
    let admin_stop = CancellationToken::new();
    let admin_task = match admin {
        Some(admin) => {
            let admin_local = admin.local_addr().ok();
            // Reflection here describes grpc.health.v1 only, so grpcurl can probe it.
            let health_reflection = |b: tonic_reflection::server::Builder<'static>| {
                b.register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .with_service_name("grpc.health.v1.Health")
            };
            let grpc = tonic::service::Routes::new(health_service.clone())
                .add_service(
                    health_reflection(tonic_reflection::server::Builder::configure())
                        .build_v1()
                        .map_err(|e| ServerError::Reflection(e.to_string()))?,
                )
                .add_service(
                    health_reflection(tonic_reflection::server::Builder::configure())
                        .build_v1alpha()
                        .map_err(|e| ServerError::Reflection(e.to_string()))?,
                );
            let router = admin::router(
                grpc,
                Arc::clone(&metrics),
                pipeline.clone(),
                streams.clone(),
            );
            let stop = admin_stop.clone();
            tracing::info!(
                admin = %admin_local.map_or_else(|| "?".to_owned(), |a| a.to_string()),
                "admin listener: /metrics /healthz /readyz and grpc.health.v1"
            );
            Some(tokio::spawn(async move {
                axum::serve(admin, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }))
        }
        None => None,
    };

    let (stop_accepting, stopped) = oneshot::channel::<()>();
    let tuning = &config.server;
    let router = tonic::transport::Server::builder()
        .timeout(tuning.request_timeout)
        .http2_keepalive_interval(Some(tuning.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(tuning.http2_keepalive_timeout))
        .max_concurrent_streams(tuning.max_concurrent_streams)
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(service);
    let stop_signal = async move {
        let _ = stopped.await;
    };
    let reloads = CancellationToken::new();
    let mut serving: JoinHandle<Result<(), tonic::transport::Error>> = match &tls {
        Some(tls) => {
            tls.spawn_reloader(reloads.clone());
            tokio::spawn(router.serve_with_incoming_shutdown(tls.incoming(listener), stop_signal))
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop_signal))
        }
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

    let outcome = tokio::select! {
        result = &mut serving => {
            // The server stopped on its own: a transport error or a panic.
            Some(match result {
                Ok(r) => r.map_err(ServerError::from),
                Err(e) => Err(ServerError::Task(e.to_string())),
            })
        }
        () = shutdown => None,
    };
    let result = match outcome {
        Some(result) => result,
        None => {
            tracing::info!(grace = ?config.shutdown_grace, "shutting down: draining");
            // Stop following NATS first, so that a reconnect cannot flip health back on.
            if let Some(task) = &nats_health {
                task.abort();
            }
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            health
                .set_not_serving::<CallOutcomeServiceServer<CallOutcomeApi>>()
                .await;
            streams.cancel();
            let _ = stop_accepting.send(());
            match tokio::time::timeout(config.shutdown_grace, &mut serving).await {
                Ok(Ok(result)) => result.map_err(ServerError::from),
                Ok(Err(e)) => Err(ServerError::Task(e.to_string())),
                Err(_) => {
                    tracing::warn!(grace = ?config.shutdown_grace, "drain deadline passed: closing remaining connections");
                    serving.abort();
                    Ok(())
                }
            }
        }
    };
    if let Some(task) = &nats_health {
        task.abort();
    }
    reloads.cancel();
    if let Some(task) = &housekeeping {
        task.abort();
    }
    admin_stop.cancel();
    if let Some(task) = admin_task {
        // Bounded: a scraper holding a connection open must not hold the process.
        match tokio::time::timeout(Duration::from_secs(2), task).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "admin listener failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "admin listener task failed"),
            Ok(Ok(Ok(()))) | Err(_) => {}
        }
    }
    metrics.shutdown();
    tracing::info!("stopped");
    result
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// The plaintext admin listener: Prometheus metrics, liveness and readiness over HTTP,
/// and the gRPC health service for Kubernetes' native gRPC probes (which cannot speak
/// TLS). HTTP/1.1 and HTTP/2 (prior knowledge) are both accepted.
mod admin {
    use crate::pipeline::Pipeline;
    use crate::telemetry::Metrics;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    /// `grpc` holds the gRPC services to serve beside the HTTP routes (health).
    pub fn router(
        grpc: tonic::service::Routes,
        metrics: Arc<Metrics>,
        pipeline: Pipeline,
        shutting_down: CancellationToken,
    ) -> axum::Router {
        grpc.into_axum_router()
            .route(
                "/metrics",
                get(move || {
                    let metrics = Arc::clone(&metrics);
                    async move {
                        match metrics.render() {
                            Ok(text) => (
                                StatusCode::OK,
                                [(
                                    header::CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                )],
                                text,
                            )
                                .into_response(),
                            Err(e) => {
                                (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                            }
                        }
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(move || {
                    let pipeline = pipeline.clone();
                    let shutting_down = shutting_down.clone();
                    async move {
                        if shutting_down.is_cancelled() {
                            (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                        } else if pipeline.ready().await {
                            (StatusCode::OK, "ready\n")
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "backend unavailable\n")
                        }
                    }
                }),
            )
            // Unknown paths are 404 for HTTP clients; gRPC clients read a 404 as
            // UNIMPLEMENTED, which is what an unknown method is.
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
    }
}

/// Waits for SIGINT or SIGTERM (what Kubernetes sends).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// A server running in the background (tests, benchmarks, embedding).
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The admin listener's address, when one is configured.
    pub admin_addr: Option<SocketAddr>,
    /// The TLS side, when `[tls]` is configured (its reload status, for tests).
    pub tls: Option<Arc<TlsServer>>,
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
        // Fail fast on configuration and backend errors instead of inside the task.
        let (pipeline, nats) = backends(&config).await?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_pipeline(
            config,
            listener,
            admin,
            pipeline,
            nats,
            tls.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        Ok(RunningServer {
            addr,
            admin_addr,
            tls,
            shutdown: Some(tx),
            task: Some(task),
        })
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
