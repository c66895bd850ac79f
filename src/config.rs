//! Service configuration: defaults < TOML file < `CALL_OUTCOME_*` environment < flags.
//!
//! Owns loading and validating the configuration before anything binds a port, and
//! reporting a bad file with its path, line and column. It does not start anything.
//!
//! Environment variables name a key with the `CALL_OUTCOME_` prefix and `__` between
//! table and key: `CALL_OUTCOME_LISTEN=0.0.0.0:50051`,
//! `CALL_OUTCOME_STORE__HISTORY_WINDOW=12h`.

use crate::api::subscribe::SubscriptionConfig;
use crate::api::validate::RequestLimits;
use crate::auth::{AuthConfig, Authenticator};
use crate::domain::Tenant;
use crate::events::memory::EventRetention;
use crate::nats::NatsConfig;
use crate::policy::{Policy, PolicyError};
use crate::quota::RateLimitConfig;
use crate::store::StoreLimits;
use crate::telemetry::MetricsConfig;
use crate::tls::{TlsConfig, TlsError};
use crate::webhooks::config::WebhooksConfig;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole service configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Plaintext admin listener (`/metrics`, `/healthz`, `/readyz`, gRPC health);
    /// "" disables it.
    pub admin_listen: String,
    /// Tenant of requests that name none.
    pub default_tenant: String,
    /// ISO 3166 region used to read national numbers (e.g. "US"); "" reads only
    /// international (+) numbers.
    pub default_region: String,
    /// Policy file (TOML). Relative paths are read from the config file's folder.
    /// Unset: the built-in default policy.
    pub policy_file: Option<PathBuf>,
    /// Reload the policy when `policy_file` changes (its folder is watched, so an editor's
    /// rename and a Kubernetes ConfigMap's symlink swap are both seen). SIGHUP reloads
    /// either way.
    pub policy_watch: bool,
    /// How long a shutdown waits for in-flight requests and streams.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub server: ServerTuning,
    pub limits: RequestLimits,
    pub store: StoreLimits,
    pub events: EventRetention,
    pub subscriptions: SubscriptionConfig,
    /// Per-tenant rate limits (`[rate_limits]`).
    pub rate_limits: RateLimitConfig,
    pub log: LogConfig,
    /// Where history, idempotency and events live: `memory` (one replica, the default)
    /// or `nats` (JetStream, any number of replicas; see `[nats]`).
    pub backend: Backend,
    pub nats: NatsConfig,
    /// Authentication of the public service (`[auth]`).
    pub auth: AuthConfig,
    /// A TOML file holding the `[auth]` table, which then replaces this file's: keeps
    /// API key hashes in a secret store (a Kubernetes Secret) rather than in the main
    /// config. Relative paths are read from the config file's folder.
    pub auth_file: Option<PathBuf>,
    /// Escape hatch: serve without authentication on a non-loopback address. Anyone who
    /// can reach the port can then report into and read every tenant.
    pub allow_insecure_public_listen: bool,
    /// TLS on the public port (`[tls]`); unset: plaintext.
    pub tls: Option<TlsConfig>,
    /// The provider webhook listener and its per-tenant secrets (`[webhooks]`).
    pub webhooks: WebhooksConfig,
    /// Per-carrier outcome series (`[metrics]`).
    pub metrics: MetricsConfig,
}

/// The store and event log backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded, in-process: zero setup, one replica, nothing survives a restart.
    #[default]
    Memory,
    /// NATS JetStream: shared by every replica, survives restarts.
    Nats,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_listen: "127.0.0.1:9090".to_owned(),
            default_tenant: "default".to_owned(),
            default_region: "US".to_owned(),
            policy_file: None,
            policy_watch: true,
            shutdown_grace: Duration::from_secs(20),
            server: ServerTuning::default(),
            limits: RequestLimits::default(),
            store: StoreLimits::default(),
            events: EventRetention::default(),
            subscriptions: SubscriptionConfig::default(),
            rate_limits: RateLimitConfig::default(),
            log: LogConfig::default(),
            backend: Backend::default(),
            nats: NatsConfig::default(),
            auth: AuthConfig::default(),
            auth_file: None,
            allow_insecure_public_listen: false,
            tls: None,
            webhooks: WebhooksConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// gRPC server tuning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTuning {
    /// Largest request message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Server-side ceiling on a unary request's time (the shorter of this and the
    /// client's deadline applies).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// HTTP/2 keepalive ping interval (detects dead peers; keeps idle streams alive).
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// How long to wait for a keepalive ping's answer.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Serve gRPC server reflection (v1 and v1alpha).
    pub reflection: bool,
    /// Most public-service requests handled at once across all connections; beyond it
    /// a request is answered UNAVAILABLE at once, unprocessed. 0: no limit. A request
    /// counts from the arrival of its message; a stream only while it opens.
    pub max_in_flight: usize,
    /// Most requests of one tenant handled at once (its share of `max_in_flight`). 0: no
    /// limit of its own.
    pub max_in_flight_per_tenant: usize,
    /// Most requests of one connection handled at once. 0: no limit of its own.
    pub max_in_flight_per_connection: usize,
    /// Time for a request's message to arrive after its headers; then DEADLINE_EXCEEDED.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most connections open at once on the public port; new ones over it are closed.
    pub max_connections: usize,
    /// Time for a new connection (public and admin) to send its HTTP/2 preface or its
    /// HTTP/1.1 request headers.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A connection (public and admin) with no request open this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Compression of responses and streamed events for clients that accept it: `off`
    /// (the default: messages are a few hundred bytes, and gzip costs ~6× the CPU of the
    /// whole report) or `gzip`. Compressed requests are always accepted.
    pub compression: Compression,
}

/// `server.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Off,
    Gzip,
}

impl Default for ServerTuning {
    fn default() -> Self {
        ServerTuning {
            max_message_bytes: 256 * 1024,
            request_timeout: Duration::from_secs(10),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 1024,
            reflection: true,
            max_in_flight: 2048,
            max_in_flight_per_tenant: 1024,
            max_in_flight_per_connection: 512,
            body_read_timeout: Duration::from_secs(5),
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            compression: Compression::Off,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (for terminals) or `json`.
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

pub use crate::telemetry::LogFormat;

/// Why a configuration cannot be used. Each names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The I/O error is part of the message, not a `source`: shown once, never twice.
    #[error("{path}: cannot read: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("configuration: {0}")]
    Invalid(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl Config {
    /// Loads defaults, then `file` (when given), then the `CALL_OUTCOME_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let text = file.map(read).transpose()?;
        Config::assemble(file.zip(text.as_deref()), true)
    }

    /// What `load` makes of a config file whose text is `text`, without the environment
    /// layer: the same parsing, `path:line:column` errors, path resolution against
    /// `path`'s folder (an `auth_file` is read) and validation. For tests and fuzzing.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::assemble(Some((path, text)), false)
    }

    /// Defaults < the file's text < the environment (when `environment`), validated.
    fn assemble(file: Option<(&Path, &str)>, environment: bool) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some((path, text)) = file {
            // Parse the file on its own first: figment reports type errors by key only,
            // while toml's spans give the line and column a person needs.
            parse_file(text, path)?;
            figment = figment.merge(Toml::string(text));
        }
        if environment {
            figment = figment.merge(
                Env::prefixed("CALL_OUTCOME_")
                    .split("__")
                    // The CLI's own variables share the prefix but are not service settings.
                    .ignore(&[
                        "config",
                        "token",
                        "server_url",
                        "nats_url",
                        "ca_cert",
                        "client_cert",
                        "client_key",
                    ]),
            );
        }
        let file = file.map(|(path, _)| path);
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let (Some(policy), Some(path)) = (&config.policy_file, file)
            && policy.is_relative()
            && let Some(dir) = path.parent()
        {
            config.policy_file = Some(dir.join(policy));
        }
        let config_dir = file.and_then(Path::parent);
        if let (Some(tls), Some(dir)) = (&mut config.tls, config_dir) {
            tls.resolve_paths(dir);
        }
        if let Some(dir) = config_dir {
            config.webhooks.resolve_paths(dir);
        }
        // Key files named by [auth] are relative to the file that holds it.
        let mut auth_dir = config_dir.map(Path::to_owned);
        if let Some(auth_file) = config.auth_file.clone() {
            let auth_file = match config_dir {
                Some(dir) if auth_file.is_relative() => dir.join(auth_file),
                _ => auth_file,
            };
            config.auth = load_auth_file(&auth_file)?;
            auth_dir = auth_file.parent().map(Path::to_owned);
            config.auth_file = Some(auth_file);
        }
        if let (Some(jwt), Some(dir)) = (&mut config.auth.jwt, &auth_dir) {
            jwt.resolve_paths(dir);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.default_tenant()?;
        self.region()?;
        self.admin_addr()?;
        if self.server.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "server.max_message_bytes: must be at least 1024".into(),
            ));
        }
        if self.store.in_flight_wait >= self.server.request_timeout {
            // Else the request deadline answers a waiting duplicate first, and the
            // documented ABORTED (which retry policies retry) is never seen.
            return Err(ConfigError::Invalid(format!(
                "store.in_flight_wait ({:?}) must be below server.request_timeout ({:?})",
                self.store.in_flight_wait, self.server.request_timeout
            )));
        }
        if self.backend == Backend::Nats {
            self.nats.validate().map_err(ConfigError::Invalid)?;
        }
        self.rate_limits
            .validate(self.limits.max_tenant_bytes)
            .map_err(ConfigError::Invalid)?;
        self.authenticator()?;
        self.check_tls()?;
        self.check_listen_security()?;
        self.check_webhooks()?;
        self.metrics.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The webhook listener's address (`None`: off), its secrets readable, and TLS
    /// only where a provider can connect (no client certificate required).
    pub fn check_webhooks(&self) -> Result<(), ConfigError> {
        let webhooks = &self.webhooks;
        let routes = webhooks
            .routes(self.limits.max_tenant_bytes)
            .map_err(ConfigError::Invalid)?;
        let Some(_) = self.webhooks_addr()? else {
            return Ok(());
        };
        if routes.is_empty() {
            return Err(ConfigError::Invalid(
                "webhooks.listen is set but no [webhooks.tenants.<tenant>.<provider>] section                  is: every callback would be refused (see examples/webhooks.toml)"
                    .into(),
            ));
        }
        if webhooks.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "webhooks.max_body_bytes: must be at least 1024".into(),
            ));
        }
        if webhooks.tls {
            match &self.tls {
                None => {
                    return Err(ConfigError::Invalid(
                        "webhooks.tls = true needs [tls] (cert_file and key_file)".into(),
                    ));
                }
                Some(tls) if tls.client_cert_required() => {
                    return Err(ConfigError::Invalid(
                        "webhooks.tls = true with [tls] client_auth = \"required\": providers                          present no client certificate; serve the webhooks without TLS behind                          your TLS-terminating ingress, or make client_auth optional"
                            .into(),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The webhook listener's address, `None` when off.
    pub fn webhooks_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let text = self.webhooks.listen.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "webhooks.listen: `{text}` is not an address like 0.0.0.0:8080"
            ))
        })
    }

    /// The tenant of requests that name none.
    pub fn default_tenant(&self) -> Result<Tenant, ConfigError> {
        Tenant::parse(&self.default_tenant, self.limits.max_tenant_bytes)
            .map_err(|e| ConfigError::Invalid(format!("default_tenant: {e}")))
    }

    /// The TLS files load, and client certificates can only be mapped to identities
    /// when a client CA verifies them.
    pub fn check_tls(&self) -> Result<(), ConfigError> {
        if let Some(tls) = &self.tls {
            crate::tls::load(tls)?;
        }
        if self.auth.enabled
            && !self.auth.client_certs.is_empty()
            && self.tls.as_ref().is_none_or(|t| t.client_ca_file.is_none())
        {
            return Err(ConfigError::Invalid(
                "[[auth.client_certs]] needs [tls] with client_ca_file: without it no client \
                 certificate is verified"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Secure by default: without auth, only a loopback address may be served unless
    /// `allow_insecure_public_listen` says otherwise.
    pub fn check_listen_security(&self) -> Result<(), ConfigError> {
        if !self.auth.enabled
            && !self.listen.ip().is_loopback()
            && !self.allow_insecure_public_listen
        {
            return Err(ConfigError::Invalid(format!(
                "listen = \"{}\" is not a loopback address and auth is off: set auth.enabled = true \
                 with [[auth.api_keys]], [auth.jwt] or [[auth.client_certs]] (see \
                 examples/secure.toml), or, to serve every tenant to \
                 anyone who can reach the port, set allow_insecure_public_listen = true \
                 (env CALL_OUTCOME_ALLOW_INSECURE_PUBLIC_LISTEN=true)",
                self.listen
            )));
        }
        Ok(())
    }

    /// The configured identity sources (API keys, JWT, client certificates); `None`
    /// when auth is disabled.
    pub fn authenticator(&self) -> Result<Option<Authenticator>, ConfigError> {
        let auth = Authenticator::new(&self.auth, self.limits.max_tenant_bytes)
            .map_err(ConfigError::Invalid)?;
        Ok(self.auth.enabled.then_some(auth))
    }

    /// The admin listener's address, `None` when disabled.
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let text = self.admin_listen.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "admin_listen: `{text}` is not an address like 127.0.0.1:9090"
            ))
        })
    }

    /// The default region for national numbers.
    pub fn region(&self) -> Result<Option<phonenumber::country::Id>, ConfigError> {
        if self.default_region.is_empty() {
            return Ok(None);
        }
        self.default_region
            .to_ascii_uppercase()
            .parse()
            .map(Some)
            .map_err(|_| {
                ConfigError::Invalid(format!(
                    "default_region: `{}` is not an ISO 3166 region code (e.g. US, GB, DE)",
                    self.default_region
                ))
            })
    }

    /// The policy: the configured file, or the built-in default.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        match &self.policy_file {
            None => Ok(Policy::builtin()),
            Some(path) => load_policy(path),
        }
    }
}

/// Reads and parses a policy file; errors name the file, line and column.
pub fn load_policy(path: &Path) -> Result<Policy, ConfigError> {
    let text = read(path)?;
    Ok(Policy::parse(&text, &path.display().to_string())?)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Reads a file whose only table is `[auth]`; errors name its line and column.
pub fn load_auth_file(path: &Path) -> Result<AuthConfig, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AuthFile {
        auth: AuthConfig,
    }
    let text = read(path)?;
    toml::from_str::<AuthFile>(&text)
        .map(|f| f.auth)
        .map_err(|e| syntax_error(&text, path, &e))
}

/// A TOML error as a config error naming the file, line and column.
fn syntax_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e
        .span()
        .map(|span| line_column(text, span.start))
        .unwrap_or((1, 1));
    ConfigError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message: e.message().trim().to_owned(),
    }
}

/// Parses a config file on its own, reporting errors with line and column.
pub fn parse_file(text: &str, path: &Path) -> Result<Config, ConfigError> {
    toml::from_str::<Config>(text).map_err(|e| syntax_error(text, path, &e))
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Whether a TOML document looks like a service config rather than a policy: its top
/// level has a key only a service config has.
pub fn looks_like_service_config(text: &str) -> bool {
    const KEYS: &[&str] = &[
        "listen",
        "admin_listen",
        "default_tenant",
        "default_region",
        "policy_file",
        "policy_watch",
        "shutdown_grace",
        "server",
        "limits",
        "store",
        "events",
        "subscriptions",
        "rate_limits",
        "log",
        "backend",
        "nats",
        "auth",
        "auth_file",
        "allow_insecure_public_listen",
        "webhooks",
        "metrics",
        "tls",
    ];
    toml::from_str::<toml::Table>(text)
        .map(|t| t.keys().any(|k| KEYS.contains(&k.as_str())))
        .unwrap_or(false)
}

#[cfg(test)]
// figment's Jail API fixes the closure's error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("valid defaults");
        assert_eq!(Config::default().listen.to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let text = "listen = \"127.0.0.1:1\"\n\n[store]\nhistory_window = 12\n";
        let err = parse_file(text, Path::new("svc.toml")).expect_err("bad type");
        let msg = err.to_string();
        assert!(msg.starts_with("svc.toml:4:"), "{msg}");

        let err = parse_file("listen = \"x\"\nunknown_key = 1\n", Path::new("svc.toml"))
            .expect_err("bad");
        assert!(err.to_string().starts_with("svc.toml:1:"), "{err}");
        let err = parse_file(
            "[log]\nformat = \"text\"\nlevle = \"debug\"\n",
            Path::new("a.toml"),
        )
        .expect_err("unknown key");
        assert!(err.to_string().starts_with("a.toml:3:1:"), "{err}");
    }

    #[test]
    fn file_values_load_and_policy_path_is_relative_to_the_file() {
        // In a Jail: figment's jail serialises tests that touch the environment.
        figment::Jail::expect_with(|_jail| {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let path = dir.path().join("svc.toml");
            let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
            writeln!(
                f,
                "listen = \"127.0.0.1:6000\"\npolicy_file = \"p.toml\"\n[store]\nhistory_window = \"12h\""
            )
            .map_err(|e| e.to_string())?;
            let config = Config::load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.port(), 6000);
            assert_eq!(config.store.history_window, Duration::from_secs(12 * 3600));
            assert_eq!(config.policy_file, Some(dir.path().join("p.toml")));
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file_and_cli_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "svc.toml",
                "listen = \"127.0.0.1:6000\"\n[store]\nmax_entries_per_destination = 8\n",
            )?;
            jail.set_env("CALL_OUTCOME_LISTEN", "127.0.0.1:7000");
            jail.set_env("CALL_OUTCOME_STORE__HISTORY_WINDOW", "2h");
            jail.set_env("CALL_OUTCOME_SERVER_URL", "http://elsewhere:1");
            jail.set_env("CALL_OUTCOME_TOKEN", "secret");
            let config = Config::load(Some(Path::new("svc.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.port(), 7000);
            assert_eq!(config.store.history_window, Duration::from_secs(7200));
            assert_eq!(config.store.max_entries_per_destination, 8);
            jail.set_env("CALL_OUTCOME_STORE__HISTORY_WINDOW", "soon");
            let err = Config::load(Some(Path::new("svc.toml"))).expect_err("bad duration");
            assert!(
                err.to_string().to_lowercase().contains("history_window"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_nats_backend_is_chosen_by_file_or_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "svc.toml",
                "backend = \"nats\"\n[nats]\nurl = \"nats://10.0.0.1:4222\"\nmax_age = \"2h\"\n",
            )?;
            let config = Config::load(Some(Path::new("svc.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.backend, Backend::Nats);
            assert_eq!(config.nats.url, "nats://10.0.0.1:4222");
            assert_eq!(config.nats.max_age, Duration::from_secs(7200));
            jail.set_env("CALL_OUTCOME_NATS__URL", "nats://10.0.0.2:4222");
            // The CLI's own flag variable is not a config key (and is not rejected).
            jail.set_env("CALL_OUTCOME_NATS_URL", "nats://ignored:1");
            let config = Config::load(Some(Path::new("svc.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.nats.url, "nats://10.0.0.2:4222");
            jail.set_env("CALL_OUTCOME_BACKEND", "memory");
            let config = Config::load(Some(Path::new("svc.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.backend, Backend::Memory);
            jail.set_env("CALL_OUTCOME_BACKEND", "nats");
            jail.set_env("CALL_OUTCOME_NATS__STREAM", "bad.name");
            let err = Config::load(Some(Path::new("svc.toml"))).expect_err("bad stream name");
            assert!(err.to_string().contains("nats.stream"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn in_flight_wait_must_stay_below_the_request_timeout() {
        // The defaults keep the documented ABORTED reachable.
        let defaults = Config::default();
        assert!(defaults.store.in_flight_wait < defaults.server.request_timeout);
        figment::Jail::expect_with(|jail| {
            jail.create_file("svc.toml", "[store]\nin_flight_wait = \"10s\"\n")?;
            let err = Config::load(Some(Path::new("svc.toml"))).expect_err("not below");
            assert!(
                err.to_string().contains(
                    "store.in_flight_wait (10s) must be below server.request_timeout (10s)"
                ),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn an_auth_file_replaces_the_auth_table() {
        figment::Jail::expect_with(|jail| {
            let key = crate::auth::hash_key("k-1");
            jail.create_file(
                "secrets.toml",
                &format!(
                    "[auth]\nenabled = true\n[[auth.api_keys]]\nname = \"ops\"\nsha256 = \"{key}\"\ntenant = \"acme\"\nroles = [\"admin\"]\n"
                ),
            )?;
            jail.create_file(
                "svc.toml",
                "listen = \"0.0.0.0:50051\"\nauth_file = \"secrets.toml\"\n",
            )?;
            let config = Config::load(Some(Path::new("svc.toml"))).map_err(|e| e.to_string())?;
            assert!(config.auth.enabled);
            assert_eq!(config.auth.api_keys.len(), 1);
            jail.create_file("secrets.toml", "[auth]\nenabled = true\nbogus = 1\n")?;
            let err = Config::load(Some(Path::new("svc.toml"))).expect_err("unknown key");
            assert!(
                err.to_string().starts_with("./secrets.toml:3:")
                    || err.to_string().contains("secrets.toml:3:"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn rate_limit_errors_name_the_line_and_overrides_load() {
        let text = "[rate_limits]\nenabled = true\nreport_per_second = 0\n";
        let err = parse_file(text, Path::new("svc.toml")).expect_err("zero rate");
        assert!(err.to_string().starts_with("svc.toml:3:"), "{err}");
        let text = "[server]\nmax_in_flight = -1\n";
        let err = parse_file(text, Path::new("svc.toml")).expect_err("negative");
        assert!(err.to_string().starts_with("svc.toml:2:"), "{err}");
        let text = "[rate_limits.tenants.acme]\nreport_burst = 9\nbogus = 1\n";
        let err = parse_file(text, Path::new("svc.toml")).expect_err("unknown key");
        assert!(err.to_string().starts_with("svc.toml:3:"), "{err}");

        let text = "[rate_limits]\nenabled = true\n[rate_limits.tenants.acme]\nreport_burst = 9\n";
        let config = parse_file(text, Path::new("svc.toml")).expect("valid");
        config.validate().expect("valid");
        let acme = config.rate_limits.tenants.get("acme").expect("override");
        assert_eq!(acme.report_burst.map(|n| n.get()), Some(9));
        let text = "[rate_limits.tenants.\"a/b\"]\nreport_burst = 9\n";
        let config = parse_file(text, Path::new("svc.toml")).expect("parses");
        let err = config.validate().expect_err("bad tenant name");
        assert!(err.to_string().contains("rate_limits.tenants.a/b"), "{err}");
    }

    /// examples/config.toml is the reference of every key: it must hold each one, with
    /// its default.
    #[test]
    fn the_example_config_lists_every_key_with_its_default() {
        fn paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
            for (k, v) in table {
                let path = format!("{prefix}{k}");
                match v {
                    toml::Value::Table(t) if !t.is_empty() => {
                        paths(t, &format!("{path}."), out);
                    }
                    _ => out.push(path),
                }
            }
        }
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.toml"))
                .expect("example");
        let example: toml::Table = toml::from_str(&text).expect("toml");
        let defaults = toml::Table::try_from(Config::default()).expect("serialise");
        let (mut have, mut want) = (Vec::new(), Vec::new());
        paths(&example, "", &mut have);
        paths(&defaults, "", &mut want);
        // Shown commented out: empty lists and maps of examples.
        let commented = [
            "auth.api_keys",
            "auth.client_certs",
            "rate_limits.tenants",
            "webhooks.tenants",
        ];
        for key in want {
            assert!(
                have.contains(&key) || commented.contains(&key.as_str()),
                "examples/config.toml lacks `{key}`"
            );
        }
        let mut config = parse_file(&text, Path::new("examples/config.toml")).expect("valid");
        config.policy_file = None;
        assert_eq!(
            config,
            Config::default(),
            "examples/config.toml differs from the defaults"
        );
    }

    #[test]
    fn text_is_read_as_load_reads_the_file() {
        figment::Jail::expect_with(|jail| {
            let text = "listen = \"127.0.0.1:6000\"\npolicy_file = \"p.toml\"\n";
            jail.create_file("svc.toml", text)?;
            let path = Path::new("svc.toml");
            let loaded = Config::load(Some(path)).map_err(|e| e.to_string())?;
            assert_eq!(Config::from_toml_str(text, path).ok(), Some(loaded));
            // The environment is not a layer of the text alone.
            jail.set_env("CALL_OUTCOME_LISTEN", "127.0.0.1:7000");
            let config = Config::from_toml_str(text, path).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.port(), 6000);
            let err = Config::from_toml_str("[log]\nlevle = 1\n", Path::new("a/b.toml"))
                .expect_err("unknown key");
            assert!(err.to_string().starts_with("a/b.toml:2:1:"), "{err}");
            let err = Config::from_toml_str("default_tenant = \"\"\n", path).expect_err("empty");
            assert!(err.to_string().contains("default_tenant"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn regions_are_checked() {
        let mut c = Config {
            default_region: "gb".into(),
            ..Config::default()
        };
        assert!(c.region().expect("gb").is_some());
        c.default_region = "XX1".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn service_configs_are_told_from_policies() {
        assert!(looks_like_service_config("listen = \"127.0.0.1:1\""));
        assert!(!looks_like_service_config("[[rule]]\nname = \"x\""));
    }
}
