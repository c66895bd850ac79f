//! JWT bearer tokens: the `[auth.jwt]` table, its keys, and turning a verified token
//! into an [`Identity`] (tenant and roles from claims).
//!
//! Owns loading the verification keys (HMAC secrets from a file or an environment
//! variable, never inline; RSA / ECDSA / Ed25519 public keys from PEM files) and checking
//! signature, `exp`/`nbf` (with a small leeway) and, when configured, `iss` and `aud`.
//! It does not authorise: a token without the needed role yields an identity without it,
//! and the handlers refuse it with `PERMISSION_DENIED`.

use super::identity::{Identity, Role, check_tenant};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `[auth.jwt]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss` claim (unset: not checked).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` claim (unset: not checked, and a token's own `aud` is ignored).
    #[serde(default)]
    pub audience: Option<String>,
    /// Claim naming the one tenant the token acts for.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Claim listing the roles: an array of strings, or one space-separated string (an
    /// OAuth `scope`). Values other than report / subscribe / admin are ignored.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Verification keys; a token is checked with those of its `alg` (and `kid`, when
    /// the key names one).
    pub keys: Vec<JwtKeyConfig>,
}

fn default_tenant_claim() -> String {
    "tenant".to_owned()
}

fn default_roles_claim() -> String {
    "roles".to_owned()
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

/// One `[[auth.jwt.keys]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Only tokens whose header carries this `kid` use the key (unset: any).
    #[serde(default)]
    pub kid: Option<String>,
    /// HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or
    /// EdDSA.
    pub algorithm: Algorithm,
    /// HS*: file holding the shared secret (one trailing newline is ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// HS*: environment variable holding the shared secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// RS*, PS*, ES*, EdDSA: PEM public key file.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
}

impl JwtConfig {
    /// Makes relative key paths relative to `dir` (the folder of the file holding them).
    pub fn resolve_paths(&mut self, dir: &Path) {
        for key in &mut self.keys {
            for path in [&mut key.secret_file, &mut key.public_key_file]
                .into_iter()
                .flatten()
            {
                if path.is_relative() {
                    *path = dir.join(&*path);
                }
            }
        }
    }
}

struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

/// The configured keys and claim mapping, ready to verify tokens.
pub struct JwtVerifier {
    keys: Vec<Key>,
    tenant_claim: String,
    roles_claim: String,
    max_tenant_bytes: usize,
}

impl std::fmt::Debug for JwtVerifier {
    // Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("tenant_claim", &self.tenant_claim)
            .field("roles_claim", &self.roles_claim)
            .finish()
    }
}

fn hmac(algorithm: Algorithm) -> Option<usize> {
    match algorithm {
        Algorithm::HS256 => Some(32),
        Algorithm::HS384 => Some(48),
        Algorithm::HS512 => Some(64),
        _ => None,
    }
}

impl JwtVerifier {
    /// Loads every key, or says which entry (and file) is wrong.
    pub fn new(config: &JwtConfig, max_tenant_bytes: usize) -> Result<JwtVerifier, String> {
        if config.keys.is_empty() {
            return Err("auth.jwt: no [[auth.jwt.keys]]: no token could verify".into());
        }
        for (what, claim) in [
            ("tenant_claim", &config.tenant_claim),
            ("roles_claim", &config.roles_claim),
        ] {
            if claim.trim().is_empty() {
                return Err(format!("auth.jwt.{what}: must not be empty"));
            }
        }
        let mut keys = Vec::with_capacity(config.keys.len());
        for (i, entry) in config.keys.iter().enumerate() {
            let at = format!("auth.jwt.keys[{i}]");
            let key = load_key(entry, &at)?;
            let mut validation = Validation::new(entry.algorithm);
            validation.leeway = config.leeway.as_secs();
            validation.validate_exp = true;
            validation.validate_nbf = true;
            let mut required = vec!["exp"];
            if let Some(issuer) = &config.issuer {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            match &config.audience {
                Some(audience) => {
                    validation.set_audience(&[audience]);
                    required.push("aud");
                }
                None => validation.validate_aud = false,
            }
            validation.set_required_spec_claims(&required);
            keys.push(Key {
                kid: entry.kid.clone(),
                algorithm: entry.algorithm,
                key,
                validation,
            });
        }
        Ok(JwtVerifier {
            keys,
            tenant_claim: config.tenant_claim.clone(),
            roles_claim: config.roles_claim.clone(),
            max_tenant_bytes,
        })
    }

    /// The identity a token stands for, or why it is refused (safe to send back: no key
    /// material, no claim values).
    pub fn verify(&self, token: &str) -> Result<Identity, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed JWT".to_owned())?;
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| {
                k.algorithm == header.alg
                    && (k.kid.is_none() || k.kid.as_deref() == header.kid.as_deref())
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err("JWT signed with an algorithm or key id that is not configured".into());
        }
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation) {
                Ok(data) => return self.identity(&data.claims),
                // Another key of the same algorithm may match (rotation).
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(reason(e.kind())),
            }
        }
        Err("JWT signature does not verify".into())
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, String> {
        let tenant = claims
            .get(&self.tenant_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("JWT has no `{}` string claim", self.tenant_claim))?;
        let tenant = check_tenant("JWT", tenant, self.max_tenant_bytes)
            .map_err(|_| format!("JWT `{}` claim is not a valid tenant", self.tenant_claim))?;
        let names: Vec<&str> = match claims.get(&self.roles_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(text)) => text.split_whitespace().collect(),
            _ => Vec::new(),
        };
        let mut roles = Vec::new();
        for role in names.into_iter().filter_map(role) {
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        let subject = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        // The name shows in logs and PERMISSION_DENIED messages: bounded and printable.
        let subject: String = subject
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        Ok(Identity {
            name: if subject.is_empty() {
                "jwt".to_owned()
            } else {
                format!("jwt:{subject}")
            },
            tenant,
            roles,
        })
    }
}

fn role(name: &str) -> Option<Role> {
    match name {
        "report" => Some(Role::Report),
        "subscribe" => Some(Role::Subscribe),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "JWT has expired".into(),
        ErrorKind::ImmatureSignature => "JWT is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "JWT issuer is not accepted".into(),
        ErrorKind::InvalidAudience => "JWT audience is not accepted".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("JWT lacks the `{claim}` claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("JWT claim `{claim}` has a bad format"),
        ErrorKind::InvalidAlgorithm => "JWT algorithm does not match the key".into(),
        _ => "invalid JWT".into(),
    }
}

/// Whether a bearer token has the shape of a JWS compact serialisation: three
/// non-empty base64url segments.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = 0;
    for part in token.split('.') {
        parts += 1;
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

fn load_key(entry: &JwtKeyConfig, at: &str) -> Result<DecodingKey, String> {
    if let Some(min) = hmac(entry.algorithm) {
        if entry.public_key_file.is_some() {
            return Err(format!(
                "{at}.public_key_file: {:?} uses a shared secret (secret_file or secret_env)",
                entry.algorithm
            ));
        }
        let secret = match (&entry.secret_file, &entry.secret_env) {
            (Some(path), None) => {
                let mut bytes = std::fs::read(path).map_err(|e| {
                    format!("{at}.secret_file: {}: cannot read: {e}", path.display())
                })?;
                // `echo secret > file` adds a newline that is not part of the secret.
                if bytes.ends_with(b"\n") {
                    bytes.pop();
                    if bytes.ends_with(b"\r") {
                        bytes.pop();
                    }
                }
                bytes
            }
            (None, Some(name)) => {
                if name.starts_with("CALL_OUTCOME_") {
                    return Err(format!(
                        "{at}.secret_env: `{name}`: variables starting with CALL_OUTCOME_ are read as \
                         configuration keys; use another name (e.g. CO_JWT_SECRET)"
                    ));
                }
                std::env::var(name)
                    .map_err(|_| format!("{at}.secret_env: `{name}` is not set (or not UTF-8)"))?
                    .into_bytes()
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: set one of secret_file and secret_env, not both"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "{at}: {:?} needs secret_file or secret_env (secrets are never inline)",
                    entry.algorithm
                ));
            }
        };
        if secret.len() < min {
            return Err(format!(
                "{at}: the {:?} secret has {} bytes; at least {min} are needed",
                entry.algorithm,
                secret.len()
            ));
        }
        return Ok(DecodingKey::from_secret(&secret));
    }
    if entry.secret_file.is_some() || entry.secret_env.is_some() {
        return Err(format!(
            "{at}: {:?} verifies with a public key (public_key_file), not a secret",
            entry.algorithm
        ));
    }
    let path = entry
        .public_key_file
        .as_ref()
        .ok_or_else(|| format!("{at}: {:?} needs public_key_file (PEM)", entry.algorithm))?;
    let pem = std::fs::read(path)
        .map_err(|e| format!("{at}.public_key_file: {}: cannot read: {e}", path.display()))?;
    let (kind, key) = match entry.algorithm {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => ("RSA", DecodingKey::from_rsa_pem(&pem)),
        Algorithm::ES256 | Algorithm::ES384 => ("EC", DecodingKey::from_ec_pem(&pem)),
        Algorithm::EdDSA => ("Ed25519", DecodingKey::from_ed_pem(&pem)),
        other => return Err(format!("{at}.algorithm: {other:?} is not supported")),
    };
    key.map_err(|e| {
        format!(
            "{at}.public_key_file: {}: not a PEM {kind} public key: {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn config(dir: &Path) -> JwtConfig {
        let path = dir.join("hs.key");
        std::fs::write(&path, [SECRET, b"\n"].concat()).expect("write");
        JwtConfig {
            issuer: Some("https://idp.example".into()),
            audience: Some("call-outcome".into()),
            tenant_claim: default_tenant_claim(),
            roles_claim: default_roles_claim(),
            leeway: Duration::from_secs(5),
            keys: vec![JwtKeyConfig {
                kid: None,
                algorithm: Algorithm::HS256,
                secret_file: Some(path),
                secret_env: None,
                public_key_file: None,
            }],
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn sign(claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("sign")
    }

    #[test]
    fn claims_map_to_tenant_and_roles() {
        let dir = tempfile::tempdir().expect("dir");
        let verifier = JwtVerifier::new(&config(dir.path()), 64).expect("loads");
        let good = json!({"iss": "https://idp.example", "aud": "call-outcome", "exp": now() + 60,
            "sub": "dialer-7", "tenant": "acme", "roles": ["report", "openid", "report"]});
        let id = verifier.verify(&sign(&good)).expect("valid");
        assert_eq!(id.tenant, "acme");
        assert_eq!(id.roles, vec![Role::Report]);
        assert_eq!(id.name, "jwt:dialer-7");

        let mut scope = good.clone();
        scope["roles"] = json!("subscribe admin");
        let id = verifier.verify(&sign(&scope)).expect("valid");
        assert_eq!(id.roles, vec![Role::Subscribe, Role::Admin]);

        let mut expired = good.clone();
        expired["exp"] = json!(now() - 60);
        assert_eq!(
            verifier.verify(&sign(&expired)).expect_err("expired"),
            "JWT has expired"
        );
        let mut early = good.clone();
        early["nbf"] = json!(now() + 600);
        assert!(verifier.verify(&sign(&early)).is_err());
        let mut aud = good.clone();
        aud["aud"] = json!("someone-else");
        assert!(
            verifier
                .verify(&sign(&aud))
                .expect_err("aud")
                .contains("audience")
        );
        let mut iss = good.clone();
        iss["iss"] = json!("https://evil.example");
        assert!(
            verifier
                .verify(&sign(&iss))
                .expect_err("iss")
                .contains("issuer")
        );
        let mut no_tenant = good.clone();
        no_tenant.as_object_mut().expect("obj").remove("tenant");
        assert!(verifier.verify(&sign(&no_tenant)).is_err());
        let mut bad_tenant = good.clone();
        bad_tenant["tenant"] = json!("a/b");
        assert!(verifier.verify(&sign(&bad_tenant)).is_err());

        let forged = encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .expect("sign");
        assert!(verifier.verify(&forged).is_err());
        let other_alg = encode(
            &Header::new(Algorithm::HS384),
            &good,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("sign");
        assert!(
            verifier
                .verify(&other_alg)
                .expect_err("alg")
                .contains("not configured")
        );
    }

    #[test]
    fn keys_are_checked_at_load() {
        let dir = tempfile::tempdir().expect("dir");
        let mut c = config(dir.path());
        std::fs::write(dir.path().join("short.key"), b"short").expect("write");
        c.keys[0].secret_file = Some(dir.path().join("short.key"));
        assert!(
            JwtVerifier::new(&c, 64)
                .expect_err("short")
                .contains("at least 32")
        );
        c.keys[0].secret_file = None;
        assert!(
            JwtVerifier::new(&c, 64)
                .expect_err("none")
                .contains("never inline")
        );
        c.keys[0].secret_env = Some("CALL_OUTCOME_JWT".into());
        assert!(
            JwtVerifier::new(&c, 64)
                .expect_err("prefix")
                .contains("CALL_OUTCOME_")
        );
        let mut c = config(dir.path());
        c.keys[0].algorithm = Algorithm::ES256;
        assert!(
            JwtVerifier::new(&c, 64)
                .expect_err("secret")
                .contains("public key")
        );
        c.keys[0].secret_file = None;
        c.keys[0].public_key_file = Some(dir.path().join("hs.key"));
        let err = JwtVerifier::new(&c, 64).expect_err("not pem");
        assert!(err.contains("hs.key") && err.contains("PEM"), "{err}");
        c.keys.clear();
        assert!(JwtVerifier::new(&c, 64).is_err());
    }

    #[test]
    fn jwt_shapes_are_told_from_api_keys() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt("acme-demo-key"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a.b+.c"));
    }
}
