//! Authentication: API keys presented as `authorization: Bearer <key>`, resolved to an
//! [`Identity`] (name, tenant, roles) by a tower layer in front of the public service.
//!
//! Owns the `[auth]` configuration, its validation, key hashing and the layer. Keys are
//! stored only as SHA-256 hashes; a presented key is hashed and compared against every
//! configured hash in constant time, without early exit, so timing reveals neither
//! whether nor which entry matched. Authorisation (roles, tenant scoping) is done by the
//! handlers in [`crate::api`], which read the identity from the request extensions.

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
        let limits = super::validate::RequestLimits {
            max_tenant_bytes,
            ..super::validate::RequestLimits::default()
        };
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
            let mut violations = Vec::new();
            super::validate::tenant(
                &key.tenant,
                &format!("{at}.tenant"),
                &limits,
                &mut violations,
            );
            if key.tenant.is_empty() {
                return Err(format!("{at}.tenant: must not be empty"));
            }
            if let Some(v) = violations.first() {
                return Err(format!("{}: {}", v.field, v.description));
            }
            if key.roles.is_empty() {
                return Err(format!(
                    "{at}.roles: must name at least one of report, subscribe, admin"
                ));
            }
            entries.push((
                hash,
                Identity {
                    name: key.name.clone(),
                    tenant: key.tenant.clone(),
                    roles: key.roles.clone(),
                },
            ));
        }
        if config.enabled && entries.is_empty() {
            return Err(
                "auth.enabled = true but no [[auth.api_keys]] is configured: nobody could call"
                    .to_owned(),
            );
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

/// Tower layer resolving `authorization: Bearer <key>` to an [`Identity`]. With no key
/// ring (auth disabled) it passes every request through untouched.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    keys: Option<Arc<KeyRing>>,
}

impl AuthLayer {
    pub fn new(keys: Option<Arc<KeyRing>>) -> Self {
        AuthLayer { keys }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    keys: Option<Arc<KeyRing>>,
}

/// The bearer token of a request, or why there is none usable.
fn bearer(headers: &http::HeaderMap) -> Result<&str, &'static str> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or("missing authorization metadata (expected `authorization: Bearer <key>`)")?;
    let text = value
        .to_str()
        .map_err(|_| "authorization metadata is not text")?;
    let (scheme, token) = text
        .trim()
        .split_once(' ')
        .ok_or("authorization metadata is not `Bearer <key>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("authorization metadata is not `Bearer <key>`");
    }
    Ok(token.trim())
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
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        if let Some(keys) = &self.keys {
            let identity = match bearer(request.headers()) {
                Err(why) => Err(why),
                Ok(token) => keys.resolve(token).cloned().ok_or("unknown API key"),
            };
            match identity {
                Ok(identity) => {
                    request.extensions_mut().insert(identity);
                }
                Err(why) => {
                    tracing::debug!(reason = why, "request refused: not authenticated");
                    let response = Status::unauthenticated(why).into_http::<ResBody>();
                    return Box::pin(async move { Ok(response) });
                }
            }
        }
        Box::pin(self.inner.call(request))
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
            api_keys: vec![],
        };
        assert!(KeyRing::new(&c, 64).is_err());
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
        assert!(bearer(&h).is_err());
        h.insert(
            http::header::AUTHORIZATION,
            "Basic abc".parse().expect("hv"),
        );
        assert!(bearer(&h).is_err());
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer abc".parse().expect("hv"),
        );
        assert_eq!(bearer(&h), Ok("abc"));
    }
}
