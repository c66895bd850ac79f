//! The command line: `serve`, `classify` (offline), `report` (against a server),
//! `subscribe`, `check-config`, `hash-key` and `policy diff`. Owns argument parsing and
//! output; the work is done by the library.

mod connect;
mod output;
mod policy_diff;
mod subscribe;

pub use connect::ConnectArgs;

use crate::config::{self, Backend, Config, ConfigError, LogFormat};
use crate::domain::{Outcome, Tenant};
use crate::policy::Policy;
use crate::proto as pb;
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Classifies SIP call outcomes and decides how to handle them.
#[derive(Debug, Parser)]
#[command(name = "call-outcome", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service (embedded backend by default).
    Serve(ServeArgs),
    /// Classify an outcome offline and show the decision the policy would take.
    Classify(ClassifyArgs),
    /// Report an outcome to a running service.
    Report(ReportArgs),
    /// Stream decline events (or other categories) as JSON lines, resuming on reconnect.
    Subscribe(subscribe::SubscribeArgs),
    /// Validate a policy file or a service config file (and the policy it names).
    CheckConfig(CheckConfigArgs),
    /// Print the SHA-256 (hex) of an API key, for `[[auth.api_keys]]` `sha256`.
    HashKey(HashKeyArgs),
    /// Work with policy files: `policy diff` replays recorded outcomes through two policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// What would this policy change have done? Replays JSON lines (`subscribe` events or
    /// plain outcomes) in time order through both policies and tabulates the decisions
    /// that differ.
    Diff(policy_diff::PolicyDiffArgs),
}

#[derive(Debug, Args)]
pub struct HashKeyArgs {
    /// The API key ("-" reads it from the first line of standard input, which keeps it
    /// out of the shell history).
    pub key: String,
}

/// The `authorization` credential of client commands.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// API key or JWT, sent as `authorization: Bearer <token>`.
    #[arg(long, env = "CALL_OUTCOME_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl TokenArgs {
    /// Adds the bearer credential to a request, when there is one.
    pub(crate) fn authorize<T>(&self, request: T) -> Result<tonic::Request<T>, CliError> {
        let mut request = tonic::Request::new(request);
        if let Some(token) = self.token.as_deref().filter(|t| !t.is_empty()) {
            let value = format!("Bearer {token}")
                .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                .map_err(|_| CliError::Invalid("--token: not a valid header value".into()))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long, env = "CALL_OUTCOME_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Service config file (TOML).
    #[arg(long, env = "CALL_OUTCOME_CONFIG")]
    pub config: Option<PathBuf>,
    /// Policy file (TOML); overrides the config's `policy_file`.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Plaintext admin listener (/metrics, /healthz, /readyz, gRPC health)
    /// [default: 127.0.0.1:9090; "" disables it].
    #[arg(long, env = "CALL_OUTCOME_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Provider webhook listener (POST /v1/webhooks/{provider}/{tenant}) [default: off;
    /// env CALL_OUTCOME_WEBHOOKS__LISTEN]; needs [webhooks.tenants.*] in the config.
    #[arg(long)]
    pub webhooks_listen: Option<String>,
    /// Where history, idempotency and events live [default: memory].
    #[arg(long, value_enum, env = "CALL_OUTCOME_BACKEND")]
    pub backend: Option<Backend>,
    /// NATS server URL for `--backend nats`; overrides the config's `nats.url`.
    #[arg(long, env = "CALL_OUTCOME_NATS_URL")]
    pub nats_url: Option<String>,
}

/// What happened on the call: the flags shared by `classify` and `report`.
#[derive(Debug, Args)]
pub struct OutcomeArgs {
    /// SIP final response code (200–699).
    #[arg(long, allow_negative_numbers = true)]
    pub sip_code: Option<i64>,
    /// Reason phrase of the status line (e.g. "Network Blocked").
    #[arg(long)]
    pub reason_phrase: Option<String>,
    /// Reason header value, e.g. 'Q.850;cause=21;location=U'.
    #[arg(long)]
    pub reason_header: Option<String>,
    /// Retry-After header value, e.g. '120 (in a meeting)'.
    #[arg(long)]
    pub retry_after: Option<String>,
    /// Provider whose cause is given: telnyx, twilio, signalwire, vonage, plivo,
    /// freeswitch, asterisk.
    #[arg(long, requires = "provider_cause")]
    pub provider: Option<String>,
    /// The provider's cause, e.g. call_rejected, no-answer, USER_BUSY, 21.
    #[arg(long, requires = "provider")]
    pub provider_cause: Option<String>,
    /// File holding a raw SIP response to parse ("-" reads standard input).
    #[arg(long)]
    pub raw_file: Option<PathBuf>,
    /// Print one JSON object instead of the readable explanation.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub outcome: OutcomeArgs,
    /// Policy file for the decision [default: the built-in policy].
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Tenant whose policy rules apply.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Label as key=value (repeatable), for rules that match labels.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub outcome: OutcomeArgs,
    /// The call's id (idempotency key with --attempt).
    #[arg(long)]
    pub call_id: String,
    /// Attempt number (1-based; omit to let the service derive it).
    #[arg(long)]
    pub attempt: Option<u32>,
    /// Calling party.
    #[arg(long, default_value = "")]
    pub from: String,
    /// Called party.
    #[arg(long)]
    pub to: String,
    /// Label as key=value (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Tenant to report into [default: the server's default tenant, or the token's].
    #[arg(long, default_value = "")]
    pub tenant: String,
    #[command(flatten)]
    pub token: TokenArgs,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Policy file or service config file (TOML).
    pub file: PathBuf,
    /// Print one JSON object (what was checked and what it holds) instead of a line.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

/// Why a command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The outcome cannot be classified or the server rejected the request (exit 2).
    #[error("{0}")]
    Invalid(String),
    /// Bad configuration or policy (exit 78, EX_CONFIG).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file could not be read (exit 66, EX_NOINPUT).
    // The I/O error is part of the message, not a `source`: shown once, never twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The server could not be reached or failed (exit 69, EX_UNAVAILABLE).
    #[error("{0}")]
    Rpc(String),
    /// The server failed while running (exit 1).
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    /// Already logged through the service's log (its format: JSON under
    /// `--log-format json`); `main` prints nothing more.
    #[error(transparent)]
    Logged(Box<CliError>),
    /// `policy diff --exit-code` found decisions that changed (exit 1, as `diff`); its
    /// report said so, `main` prints nothing more.
    #[error("decisions changed")]
    Differs,
}

/// An error and its causes, each once: many messages already quote their cause.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

impl CliError {
    /// Whether the error was logged already (see [`CliError::Logged`]).
    pub fn logged(&self) -> bool {
        matches!(self, CliError::Logged(_) | CliError::Differs)
    }

    pub fn exit_code(&self) -> ExitCode {
        if let CliError::Logged(inner) = self {
            return inner.exit_code();
        }
        ExitCode::from(match self {
            CliError::Invalid(_) => 2,
            CliError::Config(_) => 78,
            CliError::Io { .. } => 66,
            CliError::Rpc(_) => 69,
            CliError::Server(crate::server::ServerError::Config(_)) => 78,
            CliError::Server(crate::server::ServerError::Nats(_)) => 69,
            CliError::Server(_) | CliError::Logged(_) | CliError::Differs => 1,
        })
    }
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Classify(args) => classify(args).await,
        Command::Report(args) => report(args).await,
        Command::Subscribe(args) => subscribe::run(args).await,
        Command::CheckConfig(args) => check_config(args),
        Command::HashKey(args) => hash_key(args),
        Command::Policy(PolicyCommand::Diff(args)) => {
            let exit_code = args.exit_code;
            let changed = tokio::task::spawn_blocking(move || policy_diff::run(args))
                .await
                .map_err(|e| CliError::Invalid(format!("policy diff failed: {e}")))??;
            if exit_code && changed {
                return Err(CliError::Differs);
            }
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(policy) = args.policy {
        config.policy_file = Some(policy);
    }
    if let Some(format) = args.log_format {
        config.log.format = format;
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = admin;
    }
    if let Some(webhooks) = args.webhooks_listen {
        config.webhooks.listen = webhooks;
    }
    if let Some(backend) = args.backend {
        config.backend = backend;
    }
    if let Some(url) = args.nats_url {
        config.nats.url = url;
    }
    // Flags may have changed what the file said: check again.
    config.validate()?;
    // Held until the server stops: flushes pending spans on the way out.
    let mut telemetry = crate::telemetry::init(
        config.log.format,
        &config.log.level,
        &crate::telemetry::OtlpSettings::from_env(),
    )
    .map_err(crate::server::ServerError::from)?;
    let result = serve_logged(config).await;
    if let Err(error) = &result {
        // Through the log, once: a collector reading JSON gets the reason too.
        tracing::error!(error = %error_text(error), "stopped");
    }
    telemetry.shutdown();
    result.map_err(|e| CliError::Logged(Box::new(e)))
}

/// What `serve` runs once logging is set up.
async fn serve_logged(config: Config) -> Result<(), CliError> {
    // Validate everything before binding, so a bad policy never takes traffic.
    config.policy()?;
    let listener = crate::server::bind(config.listen).await?;
    Ok(crate::server::serve(config, listener, crate::server::shutdown_signal()).await?)
}

impl OutcomeArgs {
    fn outcome(&self) -> Result<Outcome, CliError> {
        let raw_sip_response = match &self.raw_file {
            None => None,
            Some(path) if path.as_os_str() == "-" => {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map_err(|source| {
                    CliError::Io {
                        path: path.clone(),
                        error: source,
                    }
                })?;
                Some(buf)
            }
            Some(path) => Some(std::fs::read(path).map_err(|source| CliError::Io {
                path: path.clone(),
                error: source,
            })?),
        };
        Ok(Outcome {
            sip_code: self.sip_code,
            reason_phrase: self.reason_phrase.clone().unwrap_or_default(),
            reason_header: self.reason_header.clone().unwrap_or_default(),
            retry_after_header: self.retry_after.clone().unwrap_or_default(),
            raw_sip_response,
            provider: match (&self.provider, &self.provider_cause) {
                (Some(p), Some(c)) => Some((p.clone(), c.clone())),
                _ => None,
            },
            ..Outcome::default()
        })
    }
}

async fn classify(args: ClassifyArgs) -> Result<(), CliError> {
    let policy = match &args.policy {
        Some(path) => config::load_policy(path)?,
        None => Policy::builtin(),
    };
    let mut outcome = args.outcome.outcome()?;
    outcome.labels = args.labels.iter().cloned().collect::<BTreeMap<_, _>>();
    let config = Config::default();
    // The server's own backends on the embedded default: the same pipeline `serve` runs.
    let pipeline = crate::server::backends::build(&config)
        .await?
        .pipeline
        .with_policy(Arc::new(policy));
    let tenant = Tenant::parse(&args.tenant, config.limits.max_tenant_bytes)
        .map_err(|e| CliError::Invalid(format!("--tenant: {e}")))?;
    let result = pipeline
        .classify(&tenant, &outcome)
        .await
        .map_err(|e| match e {
            crate::pipeline::PipelineError::Invalid(e) => {
                CliError::Invalid(format!("invalid outcome: {}: {e}", e.field()))
            }
            other => CliError::Rpc(other.to_string()),
        })?;
    if args.outcome.json {
        output::print_json(&output::result_json(
            &result.classification,
            &result.decision,
            None,
        ));
    } else {
        print!(
            "{}",
            output::explain(&result.classification, &result.decision)
        );
    }
    Ok(())
}

async fn report(args: ReportArgs) -> Result<(), CliError> {
    let mut outcome = args.outcome.outcome()?;
    outcome.call_id = args.call_id.clone();
    outcome.attempt = args.attempt;
    outcome.from = args.from.clone();
    outcome.to = args.to.clone();
    outcome.labels = args.labels.iter().cloned().collect::<BTreeMap<_, _>>();
    let request = pb::ReportOutcomeRequest {
        outcome: Some(pb::CallOutcome::from(&outcome)),
        tenant: args.tenant.clone(),
    };
    let mut client = args.connect.connect().await?;
    let response = client
        .report_outcome(args.token.authorize(request)?)
        .await
        .map_err(status_error)?
        .into_inner();
    let classification = response
        .classification
        .as_ref()
        .map(crate::domain::Classification::from)
        .ok_or_else(|| CliError::Rpc("the server sent no classification".into()))?;
    let decision = response
        .decision
        .as_ref()
        .map(crate::domain::Decision::from)
        .ok_or_else(|| CliError::Rpc("the server sent no decision".into()))?;
    let report = output::ReportInfo {
        event_id: response.event_id.clone(),
        duplicate: response.duplicate,
        destination: response.destination.clone(),
    };
    if args.outcome.json {
        output::print_json(&output::result_json(
            &classification,
            &decision,
            Some(&report),
        ));
    } else {
        print!("{}", output::explain(&classification, &decision));
        println!(
            "Recorded as event {} for {}{}",
            report.event_id,
            report.destination,
            if report.duplicate {
                " (duplicate: the first report's result)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// A refusal from the server as a CLI error: `INVALID_ARGUMENT` exits 2 like a local
/// validation error, whichever command got it; every other status exits 69.
pub(crate) fn status_error(status: tonic::Status) -> CliError {
    use tonic_types::StatusExt;
    let mut message = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            let line = format!("{}: {}", v.field, v.description);
            // The status message usually names them already; list only what it does not.
            if !status.message().contains(&line) {
                message.push_str(&format!("\n  {line}"));
            }
        }
    }
    match status.code() {
        tonic::Code::InvalidArgument => CliError::Invalid(message),
        _ => CliError::Rpc(message),
    }
}

fn hash_key(args: HashKeyArgs) -> Result<(), CliError> {
    let key = if args.key == "-" {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|source| CliError::Io {
                path: PathBuf::from("-"),
                error: source,
            })?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        args.key
    };
    if key.is_empty() {
        return Err(CliError::Invalid("the key is empty".into()));
    }
    println!("{}", crate::auth::hash_key(&key));
    Ok(())
}

fn check_config(args: CheckConfigArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.file).map_err(|source| CliError::Io {
        path: args.file.clone(),
        error: source,
    })?;
    if config::looks_like_service_config(&text) {
        let config = Config::load(Some(&args.file))?;
        let policy = config.policy()?;
        let tls = match &config.tls {
            None => "off".to_owned(),
            Some(t) if t.client_cert_required() => "on, client certificate required".to_owned(),
            Some(t) if t.client_ca_file.is_some() => "on, client certificate optional".to_owned(),
            Some(_) => "on".to_owned(),
        };
        let auth = match config.authenticator()? {
            Some(auth) => auth.summary(),
            None => "off".to_owned(),
        };
        let webhooks = match config.webhooks_addr()? {
            None => "off".to_owned(),
            Some(addr) => {
                let routes = config
                    .webhooks
                    .routes(config.limits.max_tenant_bytes)
                    .map_err(ConfigError::Invalid)?;
                format!("{} routes on {addr}", routes.len())
            }
        };
        let policy_file = config
            .policy_file
            .as_ref()
            .map_or("built-in".to_owned(), |p| p.display().to_string());
        if args.json {
            output::print_json(&serde_json::json!({
                "file": args.file.display().to_string(),
                "kind": "service_config",
                "policy": {
                    "file": policy_file,
                    "rules": policy.rule_count(),
                    "overrides": policy.override_count(),
                    "version": policy.version(),
                },
                "tls": tls,
                "auth": auth,
                "webhooks": webhooks,
            }));
        } else {
            println!(
                "{}: valid service config; policy {policy_file}: {} rules, {} overrides; TLS {tls}; auth {auth}; webhooks {webhooks}",
                args.file.display(),
                policy.rule_count(),
                policy.override_count()
            );
        }
    } else {
        let policy =
            Policy::parse(&text, &args.file.display().to_string()).map_err(ConfigError::from)?;
        if args.json {
            output::print_json(&serde_json::json!({
                "file": args.file.display().to_string(),
                "kind": "policy",
                "rules": policy.rule_count(),
                "overrides": policy.override_count(),
                "version": policy.version(),
            }));
        } else {
            println!(
                "{}: valid policy: {} rules, {} overrides; version {}",
                args.file.display(),
                policy.rule_count(),
                policy.override_count(),
                policy.version()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::Parser;

    /// #19 item 4: every command that prints results takes the same `--json` flag.
    #[test]
    fn every_printing_command_takes_json() {
        for args in [
            &["classify", "--sip-code", "603", "--json"][..],
            &[
                "report",
                "--call-id",
                "c",
                "--to",
                "+15550100123",
                "--sip-code",
                "603",
                "--json",
            ],
            &["subscribe", "--json"],
            &["check-config", "examples/policy.toml", "--json"],
            &["policy", "diff", "--from", "a", "--to", "b", "f", "--json"],
        ] {
            let argv = std::iter::once("call-outcome").chain(args.iter().copied());
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{args:?}: {e}");
            }
        }
    }
}
