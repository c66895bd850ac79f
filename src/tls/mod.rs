//! Server TLS: the `[tls]` table, loading certificate, key and client CA into a rustls
//! `ServerConfig` (ring provider only), and what a verified client certificate names.
//!
//! Owns reading and checking the TLS files (every error names the file) and building the
//! configuration that [`serve`] hands to each new connection. It does not decide who may
//! do what: a client certificate is turned into an identity by `crate::auth`.

pub mod serve;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;

/// The `[tls]` table: serve the public gRPC port over TLS (the admin port stays
/// plaintext, for Kubernetes probes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Relative paths are read from the config
    /// file's folder.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `required` (the default: no certificate, no connection)
    /// or `optional` (a certificate, when sent, must verify; bearer tokens cover the rest).
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// How often the files are re-read; changed files are loaded for new connections
    /// without a restart. "0s" never re-reads.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Longest a TLS handshake may take before the connection is dropped.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Whether a client certificate is required when a client CA is configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Required,
    Optional,
}

impl TlsConfig {
    /// A config with the given files and the defaults for everything else.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            client_ca_file: None,
            client_auth: None,
            reload_interval: default_reload_interval(),
            handshake_timeout: default_handshake_timeout(),
        }
    }

    /// Makes relative paths relative to `dir` (the config file's folder).
    pub fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        fix(&mut self.cert_file);
        fix(&mut self.key_file);
        if let Some(ca) = &mut self.client_ca_file {
            fix(ca);
        }
    }

    /// Whether clients may connect without a certificate.
    pub fn client_cert_required(&self) -> bool {
        self.client_ca_file.is_some()
            && self.client_auth.unwrap_or_default() == ClientAuth::Required
    }
}

/// Why the TLS files cannot be used. Each names the file (or files) at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("tls: {0}")]
    Invalid(String),
}

/// The raw bytes of the configured files, as read in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl TlsFiles {
    pub(crate) fn read(config: &TlsConfig) -> Result<TlsFiles, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Ok(TlsFiles {
            cert: read(&config.cert_file)?,
            key: read(&config.key_file)?,
            client_ca: config.client_ca_file.as_deref().map(read).transpose()?,
        })
    }

    /// SHA-256 over all files: tells a changed set from an unchanged one.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            hash.update([u8::from(part.is_some())]);
            let part = part.map_or(&[][..], Vec::as_slice);
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        hash.finalize().into()
    }
}

/// The only crypto provider the service uses: ring (aws-lc-rs is not in the build).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks the files and builds the server configuration.
pub fn load(config: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    build(config, &TlsFiles::read(config)?)
}

/// Builds the server configuration from files already read.
pub(crate) fn build(
    config: &TlsConfig,
    files: &TlsFiles,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certificates(&files.cert, &config.cert_file)?;
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| TlsError::File {
        path: config.key_file.clone(),
        message: format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    if config.client_ca_file.is_none() && config.client_auth.is_some() {
        return Err(TlsError::Invalid(
            "tls.client_auth is set but tls.client_ca_file is not: client certificates \
             need a CA to be verified against"
                .into(),
        ));
    }
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let builder = match (&config.client_ca_file, &files.client_ca) {
        (Some(path), Some(pem)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(pem, path)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    path: path.clone(),
                    message: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if config.client_cert_required() {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| TlsError::File {
                path: path.clone(),
                message: format!("cannot verify clients with these CAs: {e}"),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::Invalid(format!(
            "{} and {}: certificate and key cannot be used together: {e}",
            config.cert_file.display(),
            config.key_file.display()
        ))
    })?;
    // gRPC is HTTP/2 only.
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(server))
}

/// Every `CERTIFICATE` block of a PEM file; none is an error naming the file.
fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            message: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.to_owned(),
            message: "no PEM CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// What a (verified) client certificate names: the subject's common names and the DNS
/// and URI subject alternative names. Read once per connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    pub common_names: Vec<String>,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
}

impl CertNames {
    /// The names of a DER certificate; `None` when it cannot be parsed.
    pub fn from_der(der: &[u8]) -> Option<CertNames> {
        use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
        use x509_cert::der::{Decode, Tag, Tagged};
        use x509_cert::ext::pkix::SubjectAltName;
        use x509_cert::ext::pkix::name::GeneralName;
        // id-at-commonName (RFC 4519).
        const CN: x509_cert::der::oid::ObjectIdentifier =
            x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.4.3");
        let cert = x509_cert::Certificate::from_der(der).ok()?;
        let mut names = CertNames::default();
        for rdn in &cert.tbs_certificate.subject.0 {
            for attr in rdn.0.iter().filter(|a| a.oid == CN) {
                let text = match attr.value.tag() {
                    Tag::Utf8String => Utf8StringRef::try_from(&attr.value)
                        .ok()
                        .map(|s| s.as_str().to_owned()),
                    Tag::PrintableString => PrintableStringRef::try_from(&attr.value)
                        .ok()
                        .map(|s| s.as_str().to_owned()),
                    _ => None,
                };
                names.common_names.extend(text);
            }
        }
        if let Ok(Some((_, san))) = cert.tbs_certificate.get::<SubjectAltName>() {
            for name in san.0 {
                match name {
                    GeneralName::DnsName(s) => names.dns.push(s.to_string()),
                    GeneralName::UniformResourceIdentifier(s) => names.uris.push(s.to_string()),
                    _ => {}
                }
            }
        }
        Some(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn self_signed(names: &[&str]) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(
            names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
        .expect("cert");
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_good_pair_loads_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = self_signed(&["localhost"]);
        let config = TlsConfig::new(
            write(dir.path(), "tls.crt", &cert),
            write(dir.path(), "tls.key", &key),
        );
        let server = load(&config).expect("loads");
        assert_eq!(server.alpn_protocols, vec![b"h2".to_vec()]);

        let missing = TlsConfig::new(dir.path().join("nope.crt"), &config.key_file);
        let err = load(&missing).expect_err("missing").to_string();
        assert!(
            err.contains("nope.crt") && err.contains("cannot read"),
            "{err}"
        );

        let garbage = TlsConfig::new(write(dir.path(), "bad.crt", "hello"), &config.key_file);
        let err = load(&garbage).expect_err("garbage").to_string();
        assert!(
            err.contains("bad.crt") && err.contains("CERTIFICATE"),
            "{err}"
        );

        let no_key = TlsConfig::new(&config.cert_file, &config.cert_file);
        let err = load(&no_key).expect_err("no key").to_string();
        assert!(
            err.contains("tls.crt") && err.contains("private key"),
            "{err}"
        );

        let (_, other_key) = self_signed(&["other"]);
        let mismatch = TlsConfig::new(&config.cert_file, write(dir.path(), "o.key", &other_key));
        let err = load(&mismatch).expect_err("mismatch").to_string();
        assert!(err.contains("o.key") && err.contains("together"), "{err}");

        let mut client_auth_without_ca = config.clone();
        client_auth_without_ca.client_auth = Some(ClientAuth::Optional);
        let err = load(&client_auth_without_ca)
            .expect_err("no ca")
            .to_string();
        assert!(err.contains("client_ca_file"), "{err}");

        let mut ca = config.clone();
        ca.client_ca_file = Some(write(dir.path(), "ca.crt", "not pem"));
        let err = load(&ca).expect_err("bad ca").to_string();
        assert!(err.contains("ca.crt"), "{err}");
        ca.client_ca_file = Some(config.cert_file.clone());
        load(&ca).expect("a CA file loads");
        assert!(ca.client_cert_required());
    }

    #[test]
    fn certificate_names_are_read() {
        let mut params =
            rcgen::CertificateParams::new(vec!["dialer.acme.example".to_owned()]).expect("params");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://acme/dialer".try_into().expect("ia5"),
        ));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "acme-dialer");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let names = CertNames::from_der(cert.der()).expect("parses");
        assert_eq!(names.common_names, vec!["acme-dialer"]);
        assert_eq!(names.dns, vec!["dialer.acme.example"]);
        assert_eq!(names.uris, vec!["spiffe://acme/dialer"]);
        assert!(CertNames::from_der(b"junk").is_none());
    }

    #[test]
    fn the_fingerprint_follows_every_file() {
        let a = TlsFiles {
            cert: b"c".to_vec(),
            key: b"k".to_vec(),
            client_ca: None,
        };
        let mut b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.client_ca = Some(Vec::new());
        assert_ne!(a.fingerprint(), b.fingerprint());
        let c = TlsFiles {
            cert: b"ck".to_vec(),
            key: Vec::new(),
            client_ca: None,
        };
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
