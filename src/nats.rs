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
        if self.url.trim().is_empty() {
            return Err("nats.url: must not be empty".into());
        }
        if !(1..=5).contains(&self.replicas) {
            return Err("nats.replicas: must be 1 to 5".into());
        }
        if self.max_age.is_zero() || self.duplicate_window.is_zero() {
            return Err("nats.max_age and nats.duplicate_window: must be more than zero".into());
        }
        if self.duplicate_window > self.max_age {
            return Err("nats.duplicate_window: must not exceed nats.max_age".into());
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(
                "nats.request_timeout and nats.connect_timeout: must be more than zero".into(),
            );
        }
        Ok(())
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
}

/// A connected client, its JetStream context and whether the server is reachable now.
#[derive(Debug, Clone)]
pub struct NatsConnection {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub config: NatsConfig,
    connected: watch::Receiver<bool>,
}

impl NatsConnection {
    /// Starts connecting and returns at once: a replica started before NATS (a Helm
    /// rollout that starts both together) serves, reports not-ready and keeps
    /// connecting with backoff, instead of exiting. The client keeps reconnecting
    /// forever; [`NatsConnection::connected`] follows it. Only a bad URL or credentials
    /// file fails here.
    pub async fn connect(config: &NatsConfig) -> Result<NatsConnection, NatsError> {
        let (tx, rx) = watch::channel(false);
        let tx = std::sync::Arc::new(tx);
        let events_tx = std::sync::Arc::clone(&tx);
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
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("nats: connected");
                            tx.send_replace(true);
                        }
                        async_nats::Event::Disconnected | async_nats::Event::Closed => {
                            tracing::warn!(%event, "nats: connection lost");
                            tx.send_replace(false);
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
        let client = options
            .connect(&config.url)
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
            tx.send_replace(true);
        }
        Ok(NatsConnection {
            client,
            jetstream,
            config: config.clone(),
            connected: rx,
        })
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
                    return Err(NatsError::Setup {
                        what: format!("stream {}", c.stream),
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

    /// Creates a KV bucket (or updates its TTL) and returns it.
    pub async fn ensure_bucket(
        &self,
        bucket: &str,
        ttl: Duration,
    ) -> Result<jetstream::kv::Store, NatsError> {
        self.jetstream
            .create_or_update_key_value(jetstream::kv::Config {
                bucket: bucket.to_owned(),
                history: 1,
                max_age: ttl,
                storage: jetstream::stream::StorageType::File,
                num_replicas: self.config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::Setup {
                what: format!("KV bucket {bucket}"),
                message: e.to_string(),
            })
    }
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
