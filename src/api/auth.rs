//! Authentication: resolves each request on the public service to an [`Identity`] (name,
//! tenant, roles) from a bearer token (`authorization: Bearer <API key or JWT>`) or a
//! verified TLS client certificate, in a tower layer in front of the service.
//!
//! Owns the `[auth]` configuration, its validation, key hashing and the layer. API keys
//! are stored only as SHA-256 hashes; a presented key is hashed and compared against
//! every configured hash in constant time, without early exit, so timing reveals neither
//! whether nor which entry matched. JWTs are verified by [`super::jwt`]. Authorisation
//! (roles, tenant scoping) is done by the handlers in [`crate::api`], which read the
//! identity from the request extensions.
//!
//! Precedence: a bearer token, when sent, decides the identity (an invalid one is
//! `UNAUTHENTICATED` even with a good certificate). When the connection also carries a
//! client certificate mapped to an identity, both must name the same tenant, else
//! `PERMISSION_DENIED`: a token leaked from one tenant cannot be used from another
//! tenant's machines. Without a token, the certificate's identity is used.

use super::jwt::{JwtConfig, JwtVerifier, looks_like_jwt};
use crate::tls::CertNames;
use crate::tls::serve::TlsPeer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::codegen::http;

/// What an identity may do. `admin` implies the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `ReportOutcome` and `Classify`.
    Report,
    /// `SubscribeOutcomes`.
    Subscribe,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Report => "report",
            Role::Subscribe => "subscribe",
            Role::Admin => "admin",
        }
    }
}

/// The `[auth]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require credentials on the public service (health and reflection stay open).
    pub enabled: bool,
    /// API keys, stored as SHA-256 hashes (`call-outcome hash-key <KEY>`).
    pub api_keys: Vec<ApiKeyConfig>,
    /// JWT bearer tokens (`[auth.jwt]`).
    pub jwt: Option<JwtConfig>,
    /// TLS client certificates mapped to identities (needs `tls.client_ca_file`).
    pub client_certs: Vec<ClientCertConfig>,
}

/// One `[[auth.client_certs]]` entry: a verified client certificate whose subject
/// common name, DNS SAN or URI SAN (exactly one of the three) equals the given value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertConfig {
    /// Who holds the certificate (logs and PERMISSION_DENIED messages).
    pub name: String,
    #[serde(default)]
    pub subject_cn: Option<String>,
    #[serde(default)]
    pub san_dns: Option<String>,
    #[serde(default)]
    pub san_uri: Option<String>,
    /// The one tenant this certificate acts for.
    pub tenant: String,
    /// What the certificate may do.
    pub roles: Vec<Role>,
}

/// One `[[auth.api_keys]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who holds the key (logs and traces; never the key itself).
    pub name: String,
    /// Lower- or upper-case hex of the SHA-256 of the key.
    pub sha256: String,
    /// The one tenant this key acts for.
    pub tenant: String,
    /// What the key may do.
    pub roles: Vec<Role>,
}

/// Who made a request, as resolved by [`AuthLayer`]; in the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub tenant: String,
    pub roles: Vec<Role>,
}

impl Identity {
    /// Whether the identity holds `role` (or `admin`).
    pub fn allows(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r == role || *r == Role::Admin)
    }
}

/// The hex SHA-256 of a key, as written in the config.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0_u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// The configured keys, ready to check presented tokens.
#[derive(Debug)]
pub struct KeyRing {
    entries: Vec<([u8; 32], Identity)>,
}

impl KeyRing {
    /// Builds the key ring, or says which entry is wrong.
    pub fn new(config: &AuthConfig, max_tenant_bytes: usize) -> Result<KeyRing, String> {
        let mut seen = HashSet::new();
        let mut names = HashSet::new();
        let mut entries = Vec::with_capacity(config.api_keys.len());
        for (i, key) in config.api_keys.iter().enumerate() {
            let at = format!("auth.api_keys[{i}]");
            if key.name.trim().is_empty() {
                return Err(format!("{at}.name: must not be empty"));
            }
            if !names.insert(key.name.as_str()) {
                return Err(format!("{at}.name: `{}` is used twice", key.name));
            }
            let hash = parse_hex32(key.sha256.trim()).ok_or_else(|| {
                format!(
                    "{at}.sha256: not 64 hex digits (make one with `call-outcome hash-key <KEY>`)"
                )
            })?;
            if !seen.insert(hash) {
                return Err(format!(
                    "{at}.sha256: the same key is configured twice (`{}`)",
                    key.name
                ));
            }
            check_identity(&at, &key.tenant, &key.roles, max_tenant_bytes)?;
            entries.push((
                hash,
                Identity {
                    name: key.name.clone(),
                    tenant: key.tenant.clone(),
                    roles: key.roles.clone(),
                },
            ));
        }
        Ok(KeyRing { entries })
    }

    /// The identity holding `key`. Every entry is compared, in constant time.
    pub fn resolve(&self, key: &str) -> Option<&Identity> {
        let presented = Sha256::digest(key.as_bytes());
        let mut found = None;
        for (hash, identity) in &self.entries {
            if bool::from(hash.ct_eq(presented.as_slice())) {
                found = Some(identity);
            }
        }
        found
    }
}

/// Checks an identity's tenant (the rules of request tenants, and not empty).
pub(crate) fn check_tenant(at: &str, tenant: &str, max_tenant_bytes: usize) -> Result<(), String> {
    let limits = super::validate::RequestLimits {
        max_tenant_bytes,
        ..super::validate::RequestLimits::default()
    };
    if tenant.is_empty() {
        return Err(format!("{at}.tenant: must not be empty"));
    }
    let mut violations = Vec::new();
    super::validate::tenant(tenant, &format!("{at}.tenant"), &limits, &mut violations);
    match violations.first() {
        Some(v) => Err(format!("{}: {}", v.field, v.description)),
        None => Ok(()),
    }
}

/// Checks a configured identity's tenant and roles.
fn check_identity(
    at: &str,
    tenant: &str,
    roles: &[Role],
    max_tenant_bytes: usize,
) -> Result<(), String> {
    check_tenant(at, tenant, max_tenant_bytes)?;
    if roles.is_empty() {
        return Err(format!(
            "{at}.roles: must name at least one of report, subscribe, admin"
        ));
    }
    Ok(())
}

/// Which certificate name a `[[auth.client_certs]]` entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CertMatch {
    CommonName(String),
    Dns(String),
    Uri(String),
}

impl CertMatch {
    fn matches(&self, names: &CertNames) -> bool {
        let (list, value) = match self {
            CertMatch::CommonName(v) => (&names.common_names, v),
            CertMatch::Dns(v) => (&names.dns, v),
            CertMatch::Uri(v) => (&names.uris, v),
        };
        list.iter().any(|n| n == value)
    }
}

/// Every configured source of identities, ready to authenticate requests.
#[derive(Debug)]
pub struct Authenticator {
    keys: KeyRing,
    jwt: Option<JwtVerifier>,
    certs: Vec<(CertMatch, Identity)>,
}

impl Authenticator {
    /// Builds every source, or says which entry is wrong. With `enabled`, at least one
    /// source must be configured.
    pub fn new(config: &AuthConfig, max_tenant_bytes: usize) -> Result<Authenticator, String> {
        let keys = KeyRing::new(config, max_tenant_bytes)?;
        let jwt = config
            .jwt
            .as_ref()
            .map(|jwt| JwtVerifier::new(jwt, max_tenant_bytes))
            .transpose()?;
        let mut names = HashSet::new();
        let mut matchers = HashSet::new();
        let mut certs = Vec::with_capacity(config.client_certs.len());
        for (i, entry) in config.client_certs.iter().enumerate() {
            let at = format!("auth.client_certs[{i}]");
            if entry.name.trim().is_empty() {
                return Err(format!("{at}.name: must not be empty"));
            }
            if !names.insert(entry.name.as_str()) {
                return Err(format!("{at}.name: `{}` is used twice", entry.name));
            }
            let matcher = match (&entry.subject_cn, &entry.san_dns, &entry.san_uri) {
                (Some(v), None, None) => CertMatch::CommonName(v.clone()),
                (None, Some(v), None) => CertMatch::Dns(v.clone()),
                (None, None, Some(v)) => CertMatch::Uri(v.clone()),
                _ => {
                    return Err(format!(
                        "{at}: set exactly one of subject_cn, san_dns and san_uri"
                    ));
                }
            };
            if matches!(&matcher, CertMatch::CommonName(v) | CertMatch::Dns(v) | CertMatch::Uri(v) if v.is_empty())
            {
                return Err(format!("{at}: the name to match must not be empty"));
            }
            if !matchers.insert(matcher.clone()) {
                return Err(format!(
                    "{at}: another entry matches the same certificate name"
                ));
            }
            check_identity(&at, &entry.tenant, &entry.roles, max_tenant_bytes)?;
            certs.push((
                matcher,
                Identity {
                    name: entry.name.clone(),
                    tenant: entry.tenant.clone(),
                    roles: entry.roles.clone(),
                },
            ));
        }
        if config.enabled && keys.entries.is_empty() && jwt.is_none() && certs.is_empty() {
            return Err(
                "auth.enabled = true but none of [[auth.api_keys]], [auth.jwt] and \
                 [[auth.client_certs]] is configured: nobody could call"
                    .to_owned(),
            );
        }
        Ok(Authenticator { keys, jwt, certs })
    }

    /// What is configured, for the startup log.
    pub fn summary(&self) -> String {
        format!(
            "{} API keys, JWT {}, {} client certificate mappings",
            self.keys.entries.len(),
            if self.jwt.is_some() { "on" } else { "off" },
            self.certs.len()
        )
    }

    /// The identity of a bearer token: a JWT when it has a JWT's shape and JWTs are
    /// configured, else an API key.
    pub fn token(&self, token: &str) -> Result<Identity, String> {
        match &self.jwt {
            Some(jwt) if looks_like_jwt(token) => jwt.verify(token),
            _ => self
                .keys
                .resolve(token)
                .cloned()
                .ok_or_else(|| "unknown API key".to_owned()),
        }
    }

    /// The identity a verified client certificate maps to; `None` when it maps to none.
    pub fn certificate(&self, names: &CertNames) -> Result<Option<Identity>, String> {
        let mut found: Option<&Identity> = None;
        for (matcher, identity) in &self.certs {
            if matcher.matches(names) {
                if found.is_some_and(|f| f.name != identity.name) {
                    return Err(
                        "the client certificate matches several [[auth.client_certs]] entries"
                            .into(),
                    );
                }
                found = Some(identity);
            }
        }
        Ok(found.cloned())
    }

    /// Resolves a request's identity from its headers and its connection (see the
    /// module documentation for the precedence).
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&TlsPeer>,
    ) -> Result<Identity, Status> {
        let from_cert = match peer.and_then(|p| p.client_cert.as_deref()) {
            Some(names) => self.certificate(names).map_err(Status::unauthenticated)?,
            None => None,
        };
        match bearer(headers).map_err(Status::unauthenticated)? {
            Some(token) => {
                let identity = self.token(token).map_err(Status::unauthenticated)?;
                if let Some(cert) = &from_cert
                    && cert.tenant != identity.tenant
                {
                    return Err(Status::permission_denied(format!(
                        "the client certificate (`{}`) acts for tenant `{}`, the token for another",
                        cert.name, cert.tenant
                    )));
                }
                Ok(identity)
            }
            None => from_cert.ok_or_else(|| {
                Status::unauthenticated(if peer.is_some_and(|p| p.client_cert.is_some()) {
                    "the client certificate maps to no identity and no `authorization: Bearer` \
                     token was sent"
                } else {
                    "missing authorization metadata (expected `authorization: Bearer <key>`)"
                })
            }),
        }
    }
}

/// Tower layer resolving each request to an [`Identity`] (see [`Authenticator`]). With
/// none (auth disabled) it passes every request through untouched.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    auth: Option<Arc<Authenticator>>,
}

impl AuthLayer {
    pub fn new(auth: Option<Arc<Authenticator>>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
}

/// The bearer token of a request (`None`: no `authorization` header), or why the header
/// is unusable.
fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, &'static str> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "authorization metadata is not text")?;
    let (scheme, token) = text
        .trim()
        .split_once(' ')
        .ok_or("authorization metadata is not `Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("authorization metadata is not `Bearer <token>`");
    }
    Ok(Some(token.trim()))
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AuthService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    /// The inner future itself, or the refusal: no box per request.
    type Future = AuthFuture<S::Future, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        if let Some(auth) = &self.auth {
            let peer = request.extensions().get::<TlsPeer>();
            match auth.authenticate(request.headers(), peer) {
                Ok(identity) => {
                    request.extensions_mut().insert(identity);
                }
                Err(status) => {
                    tracing::debug!(
                        code = ?status.code(),
                        reason = status.message(),
                        "request refused by authentication"
                    );
                    return AuthFuture::Refused {
                        response: Some(Ok(status.into_http::<ResBody>())),
                    };
                }
            }
        }
        AuthFuture::Admitted {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`AuthService`]: the inner service's, or the refusal.
    #[project = AuthProj]
    pub enum AuthFuture<F, T> {
        Admitted { #[pin] inner: F },
        Refused { response: Option<T> },
    }
}

impl<F: Future<Output = T>, T> Future for AuthFuture<F, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.project() {
            AuthProj::Admitted { inner } => inner.poll(cx),
            // Polled again after it answered: it stays pending, as a fused future would.
            AuthProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(response),
                None => Poll::Pending,
            },
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for AuthService<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            enabled: true,
            api_keys: vec![ApiKeyConfig {
                name: "acme".into(),
                sha256: hash_key("acme-demo-key"),
                tenant: "acme".into(),
                roles: vec![Role::Report],
            }],
            ..AuthConfig::default()
        }
    }

    #[test]
    fn keys_resolve_by_hash_only() {
        let ring = KeyRing::new(&config(), 64).expect("valid");
        assert_eq!(
            ring.resolve("acme-demo-key").map(|i| i.tenant.as_str()),
            Some("acme")
        );
        assert!(ring.resolve("acme-demo-kez").is_none());
        assert!(ring.resolve("").is_none());
    }

    #[test]
    fn bad_entries_are_refused() {
        let mut c = config();
        c.api_keys[0].sha256 = "xyz".into();
        assert!(KeyRing::new(&c, 64).is_err());
        let mut c = config();
        c.api_keys.push(ApiKeyConfig {
            name: "again".into(),
            ..c.api_keys[0].clone()
        });
        let err = KeyRing::new(&c, 64).expect_err("duplicate");
        assert!(err.contains("twice"), "{err}");
        let mut c = config();
        c.api_keys[0].tenant = "a/b".into();
        assert!(KeyRing::new(&c, 64).is_err());
        let c = AuthConfig {
            enabled: true,
            ..AuthConfig::default()
        };
        let err = Authenticator::new(&c, 64).expect_err("nobody could call");
        assert!(err.contains("nobody could call"), "{err}");
    }

    fn cert_entry(name: &str, tenant: &str) -> ClientCertConfig {
        ClientCertConfig {
            name: name.into(),
            subject_cn: None,
            san_dns: None,
            san_uri: None,
            tenant: tenant.into(),
            roles: vec![Role::Report],
        }
    }

    fn peer(names: CertNames) -> TlsPeer {
        TlsPeer {
            remote_addr: ([127, 0, 0, 1], 1).into(),
            client_cert: Some(Arc::new(names)),
        }
    }

    #[test]
    fn client_certificates_map_to_identities() {
        let mut c = config();
        c.client_certs = vec![
            ClientCertConfig {
                san_uri: Some("spiffe://acme/dialer".into()),
                ..cert_entry("acme-dialer", "acme")
            },
            ClientCertConfig {
                subject_cn: Some("globex-dialer".into()),
                ..cert_entry("globex-dialer", "globex")
            },
        ];
        let auth = Authenticator::new(&c, 64).expect("valid");
        let acme = CertNames {
            uris: vec!["spiffe://acme/dialer".into()],
            ..CertNames::default()
        };
        let none = http::HeaderMap::new();
        let id = auth
            .authenticate(&none, Some(&peer(acme.clone())))
            .expect("by cert");
        assert_eq!(id.tenant, "acme");
        // Nothing at all, or a certificate that maps to nothing: UNAUTHENTICATED.
        let err = auth.authenticate(&none, None).expect_err("nothing");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err = auth
            .authenticate(&none, Some(&peer(CertNames::default())))
            .expect_err("unmapped");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        // A token for the certificate's tenant wins; one for another tenant is refused.
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer acme-demo-key".parse().expect("hv"),
        );
        let id = auth.authenticate(&h, Some(&peer(acme))).expect("agree");
        assert_eq!(id.name, "acme");
        let globex = CertNames {
            common_names: vec!["globex-dialer".into()],
            ..CertNames::default()
        };
        let err = auth
            .authenticate(&h, Some(&peer(globex.clone())))
            .expect_err("disagree");
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        // A bad token is never rescued by a good certificate.
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer wrong".parse().expect("hv"),
        );
        let err = auth
            .authenticate(&h, Some(&peer(globex)))
            .expect_err("bad token");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn client_certificate_entries_are_checked() {
        let mut c = config();
        c.client_certs = vec![cert_entry("x", "acme")];
        let err = Authenticator::new(&c, 64).expect_err("no matcher");
        assert!(err.contains("exactly one"), "{err}");
        c.client_certs = vec![ClientCertConfig {
            subject_cn: Some("a".into()),
            san_dns: Some("a".into()),
            ..cert_entry("x", "acme")
        }];
        assert!(Authenticator::new(&c, 64).is_err());
        c.client_certs = vec![
            ClientCertConfig {
                san_dns: Some("a".into()),
                ..cert_entry("x", "acme")
            },
            ClientCertConfig {
                san_dns: Some("a".into()),
                ..cert_entry("y", "globex")
            },
        ];
        let err = Authenticator::new(&c, 64).expect_err("same name twice");
        assert!(err.contains("same certificate name"), "{err}");
        c.client_certs = vec![ClientCertConfig {
            san_dns: Some("a".into()),
            roles: vec![],
            ..cert_entry("x", "acme")
        }];
        assert!(Authenticator::new(&c, 64).is_err());
    }

    #[test]
    fn admin_implies_every_role() {
        let id = Identity {
            name: "x".into(),
            tenant: "t".into(),
            roles: vec![Role::Admin],
        };
        assert!(id.allows(Role::Report) && id.allows(Role::Subscribe));
        let id = Identity {
            roles: vec![Role::Report],
            ..id
        };
        assert!(!id.allows(Role::Subscribe));
    }

    #[test]
    fn bearer_needs_the_scheme() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            "Basic abc".parse().expect("hv"),
        );
        assert!(bearer(&h).is_err());
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer abc".parse().expect("hv"),
        );
        assert_eq!(bearer(&h), Ok(Some("abc")));
        assert_eq!(bearer(&http::HeaderMap::new()), Ok(None));
    }
}
