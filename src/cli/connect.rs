//! How client commands reach a server: its URL and, for `https://`, the TLS settings
//! (CA to trust, client certificate for mutual TLS). Owns reading those files and
//! building the channel; it sends no request.

use super::CliError;
use crate::proto::call_outcome_service_client::CallOutcomeServiceClient;
use clap::Args;
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The server to call and how to trust it.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Server URL; `https://` connects over TLS.
    #[arg(
        long,
        env = "CALL_OUTCOME_SERVER_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// PEM CA certificate(s) the server's certificate must chain to [default: the
    /// system's trusted roots]. Needs an https:// URL.
    #[arg(long, env = "CALL_OUTCOME_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require one (mutual TLS).
    #[arg(long, env = "CALL_OUTCOME_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "CALL_OUTCOME_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Name the server's certificate must carry [default: the URL's host].
    #[arg(long)]
    pub tls_server_name: Option<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::Io {
        path: path.to_owned(),
        error: source,
    })
}

/// An error with its causes: tonic's transport errors say little at the top level
/// ("transport error"), the TLS reason is further down.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

impl ConnectArgs {
    /// The endpoint, with its TLS settings; files are read here, so a bad flag fails
    /// before any connection attempt.
    pub fn endpoint(&self) -> Result<Endpoint, CliError> {
        let endpoint = Endpoint::from_shared(self.server.clone())
            .map_err(|e| CliError::Invalid(format!("--server {}: {e}", self.server)))?;
        let https = self
            .server
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        let tls_flags =
            self.ca_cert.is_some() || self.client_cert.is_some() || self.tls_server_name.is_some();
        if !https {
            if tls_flags {
                return Err(CliError::Invalid(format!(
                    "--ca-cert, --client-cert and --tls-server-name need an https:// server URL, not {}",
                    self.server
                )));
            }
            return Ok(endpoint);
        }
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca_cert {
            Some(path) => tls.ca_certificate(Certificate::from_pem(read(path)?)),
            None => tls.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint
            .tls_config(tls)
            .map_err(|e| CliError::Invalid(format!("TLS settings: {}", with_causes(&e))))
    }

    /// Connects once.
    pub async fn connect(&self) -> Result<CallOutcomeServiceClient<Channel>, CliError> {
        let endpoint = self.endpoint()?;
        self.connect_to(&endpoint).await
    }

    /// Connects once to an endpoint built by [`ConnectArgs::endpoint`].
    pub async fn connect_to(
        &self,
        endpoint: &Endpoint,
    ) -> Result<CallOutcomeServiceClient<Channel>, CliError> {
        endpoint
            .connect()
            .await
            .map(CallOutcomeServiceClient::new)
            .map_err(|e| {
                CliError::Rpc(format!(
                    "cannot connect to {}: {}",
                    self.server,
                    with_causes(&e)
                ))
            })
    }
}
