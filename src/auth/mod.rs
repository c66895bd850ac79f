//! Authentication: resolves a caller to an [`Identity`] (name, tenant, roles) from a
//! bearer token (`authorization: Bearer <API key or JWT>`) or a verified TLS client
//! certificate. The gRPC edge calls it from its tower layer (`api::layers::auth`); this
//! module knows no tonic and no HTTP types, only header bytes and certificate names.
//!
//! Owns the `[auth]` configuration, its validation, key hashing and the [`AuthError`]s;
//! the edges turn those into a status. API keys
//! are stored only as SHA-256 hashes; a presented key is hashed and compared against
//! every configured hash in constant time, without early exit, so timing reveals neither
//! whether nor which entry matched. JWTs are verified by [`jwt`]. Authorisation
//! (roles, tenant scoping) is done by the edges' handlers, which read the identity from
//! the request.
//!
//! Precedence: a bearer token, when sent, decides the identity (an invalid one is
//! `UNAUTHENTICATED` even with a good certificate). When the connection also carries a
//! client certificate mapped to an identity, both must name the same tenant, else
//! `PERMISSION_DENIED`: a token leaked from one tenant cannot be used from another
//! tenant's machines. Without a token, the certificate's identity is used.

mod identity;
pub mod jwt;
pub mod webhook;

pub use identity::{Identity, Role};

use crate::tls::CertNames;
use identity::check_identity;
use jwt::{JwtConfig, JwtVerifier, looks_like_jwt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use subtle::ConstantTimeEq;

/// Why a caller has no identity, or a configuration cannot authenticate anyone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable credential: missing, malformed, unknown, expired or badly signed.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials that name different tenants (token and client certificate).
    #[error(
        "the client certificate (`{cert_name}`) acts for tenant `{cert_tenant}`, the token for another"
    )]
    TenantMismatch {
        cert_name: String,
        cert_tenant: String,
    },
    /// An `[auth]` entry is wrong; the text names it (`auth.api_keys[0].tenant: ...`).
    #[error("{0}")]
    InvalidConfig(String),
}

/// The bearer token of a request's `authorization` value (`None`: no such header), or
/// why the value is unusable.
pub fn bearer(authorization: Option<&[u8]>) -> Result<Option<&str>, AuthError> {
    let Some(value) = authorization else {
        return Ok(None);
    };
    let unusable = |why: &str| AuthError::Unauthenticated(why.to_owned());
    let text = std::str::from_utf8(value)
        .ok()
        .filter(|t| t.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
        .ok_or_else(|| unusable("authorization metadata is not text"))?;
    let (scheme, token) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| unusable("authorization metadata is not `Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(unusable("authorization metadata is not `Bearer <token>`"));
    }
    Ok(Some(token.trim()))
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
            let identity =
                check_identity(&at, &key.name, &key.tenant, &key.roles, max_tenant_bytes)?;
            entries.push((hash, identity));
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
            let identity = check_identity(
                &at,
                &entry.name,
                &entry.tenant,
                &entry.roles,
                max_tenant_bytes,
            )?;
            certs.push((matcher, identity));
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
    ///
    /// `authorization` is the raw `authorization` header value; `client_cert` the names
    /// of the connection's verified client certificate, when it sent one.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        client_cert: Option<&CertNames>,
    ) -> Result<Identity, AuthError> {
        let from_cert = match client_cert {
            Some(names) => self
                .certificate(names)
                .map_err(AuthError::Unauthenticated)?,
            None => None,
        };
        match bearer(authorization)? {
            Some(token) => {
                let identity = self.token(token).map_err(AuthError::Unauthenticated)?;
                if let Some(cert) = &from_cert
                    && cert.tenant != identity.tenant
                {
                    return Err(AuthError::TenantMismatch {
                        cert_name: cert.name.clone(),
                        cert_tenant: cert.tenant.to_string(),
                    });
                }
                Ok(identity)
            }
            None => {
                from_cert.ok_or_else(|| {
                    AuthError::Unauthenticated(if client_cert.is_some() {
                    "the client certificate maps to no identity and no `authorization: Bearer` \
                     token was sent"
                } else {
                    "missing authorization metadata (expected `authorization: Bearer <key>`)"
                }
                .to_owned())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Tenant;

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
        let none = None;
        let id = auth.authenticate(none, Some(&acme)).expect("by cert");
        assert_eq!(id.tenant, "acme");
        // Nothing at all, or a certificate that maps to nothing: UNAUTHENTICATED.
        let err = auth.authenticate(none, None).expect_err("nothing");
        assert!(matches!(err, AuthError::Unauthenticated(_)), "{err:?}");
        let err = auth
            .authenticate(none, Some(&CertNames::default()))
            .expect_err("unmapped");
        assert!(matches!(err, AuthError::Unauthenticated(_)), "{err:?}");
        // A token for the certificate's tenant wins; one for another tenant is refused.
        let h = Some(&b"Bearer acme-demo-key"[..]);
        let id = auth.authenticate(h, Some(&acme)).expect("agree");
        assert_eq!(id.name, "acme");
        let globex = CertNames {
            common_names: vec!["globex-dialer".into()],
            ..CertNames::default()
        };
        let err = auth.authenticate(h, Some(&globex)).expect_err("disagree");
        assert!(matches!(err, AuthError::TenantMismatch { .. }), "{err:?}");
        // A bad token is never rescued by a good certificate.
        let h = Some(&b"Bearer wrong"[..]);
        let err = auth.authenticate(h, Some(&globex)).expect_err("bad token");
        assert!(matches!(err, AuthError::Unauthenticated(_)), "{err:?}");
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
            tenant: Tenant::parse("t", 64).expect("tenant"),
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
        assert!(bearer(Some(b"Basic abc")).is_err());
        assert_eq!(bearer(Some(b"Bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer(None), Ok(None));
        assert!(bearer(Some(b"Bearer \xff")).is_err(), "not text");
    }
}
