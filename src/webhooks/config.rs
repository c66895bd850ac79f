//! `[webhooks]`: the listener, and per tenant and provider the secrets that verify its
//! callbacks (`[webhooks.tenants.<tenant>.<provider>]`).
//!
//! Each provider section takes a list (two entries during a rotation) and/or a
//! `*_file` holding one secret per line (a mounted Kubernetes Secret; blank lines and
//! `#` comments ignored). What can be checked while the file is parsed is checked
//! there, so that the error names its line: a tenant name, a Telnyx key that is not 32
//! bytes of base64, a section with no secret at all. Secrets are never printed.

use crate::auth::webhook::{Ed25519Key, Secret};
use crate::domain::Tenant;
use crate::providers::callback::WebhookProvider;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[webhooks]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Address of the webhook listener (HTTP/1.1 and HTTP/2); "" (the default) turns
    /// it off. Flag `--webhooks-listen`, env `CALL_OUTCOME_WEBHOOKS__LISTEN`.
    pub listen: String,
    /// The URL the providers post to, up to the listener's root (e.g.
    /// `https://hooks.example.com`, or `https://example.com/outcome` behind a proxy that
    /// strips `/outcome`). Twilio, SignalWire and Plivo sign the full URL, which the
    /// service cannot see behind a proxy: the request's raw path and query are appended
    /// to this. Unset: the scheme and `Host` of the request itself (or the
    /// `X-Forwarded-Proto`/`-Host` of a trusted proxy).
    pub public_base_url: Option<String>,
    /// Proxies whose `X-Forwarded-Proto` and `X-Forwarded-Host` are believed (IP
    /// addresses or CIDR blocks). Anyone else's are ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest callback body accepted (413 over it); checked before it is read.
    pub max_body_bytes: usize,
    /// How far a Telnyx `telnyx-timestamp` or a Vonage `iat` may be from now, either
    /// way (Telnyx's SDKs use 5 minutes).
    #[serde(with = "humantime_serde")]
    pub timestamp_tolerance: Duration,
    /// How long Plivo nonces and Vonage JWT ids are remembered to refuse replays.
    #[serde(with = "humantime_serde")]
    pub replay_memory: Duration,
    /// Serve the listener with the `[tls]` certificate. Providers present no client
    /// certificate, so `[tls]` must not require one.
    pub tls: bool,
    /// How often the `*_file` secrets are re-read, so that a rotated Kubernetes Secret
    /// takes effect without a restart. "0s": never.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Per tenant, per provider: the secrets.
    pub tenants: BTreeMap<TenantName, TenantWebhooks>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            listen: String::new(),
            public_base_url: None,
            trusted_proxies: Vec::new(),
            max_body_bytes: 64 * 1024,
            timestamp_tolerance: Duration::from_secs(300),
            replay_memory: Duration::from_secs(24 * 3600),
            tls: false,
            reload_interval: Duration::from_secs(30),
            tenants: BTreeMap::new(),
        }
    }
}

/// A tenant name as a table key, checked when the file is read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantName(pub String);

impl<'de> Deserialize<'de> for TenantName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Tenant::parse(&name, 256)
            .map_err(|e| serde::de::Error::custom(format!("tenant `{name}`: {e}")))?;
        Ok(TenantName(name))
    }
}

/// `[webhooks.tenants.<tenant>]`: one optional section per provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantWebhooks {
    pub telnyx: Option<TelnyxSection>,
    pub twilio: Option<TokenSection>,
    pub signalwire: Option<SigningKeySection>,
    pub vonage: Option<SignatureSecretSection>,
    pub plivo: Option<TokenSection>,
}

/// A secret as configured: never printed, serialised as given (the layered config
/// passes through serde).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A Telnyx public key, checked (base64 of 32 bytes) when the file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyText(String);

impl<'de> Deserialize<'de> for PublicKeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ed25519Key::from_base64(&text)
            .map_err(|e| serde::de::Error::custom(format!("Telnyx public key {e}")))?;
        Ok(PublicKeyText(text))
    }
}

impl Serialize for PublicKeyText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// `[webhooks.tenants.<t>.telnyx]`: `public_keys` (base64 Ed25519, one per account).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawTelnyx")]
pub struct TelnyxSection {
    pub public_keys: Vec<PublicKeyText>,
    pub public_keys_file: Option<PathBuf>,
    pub public_base_url: Option<String>,
}

/// `[webhooks.tenants.<t>.twilio]` and `.plivo`: `auth_tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawToken")]
pub struct TokenSection {
    pub auth_tokens: Vec<SecretText>,
    pub auth_tokens_file: Option<PathBuf>,
    pub public_base_url: Option<String>,
}

/// `[webhooks.tenants.<t>.signalwire]`: `signing_keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawSigningKey")]
pub struct SigningKeySection {
    pub signing_keys: Vec<SecretText>,
    pub signing_keys_file: Option<PathBuf>,
    pub public_base_url: Option<String>,
}

/// `[webhooks.tenants.<t>.vonage]`: `signature_secrets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawSignatureSecret")]
pub struct SignatureSecretSection {
    pub signature_secrets: Vec<SecretText>,
    pub signature_secrets_file: Option<PathBuf>,
    pub public_base_url: Option<String>,
}

// The raw forms, checked into the sections above (the check runs while the file is
// parsed, so its error carries the section's line).
macro_rules! raw {
    ($raw:ident => $section:ident { $list:ident: $item:ty, $file:ident }, $what:literal) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $raw {
            #[serde(default)]
            $list: Vec<$item>,
            #[serde(default)]
            $file: Option<PathBuf>,
            #[serde(default)]
            public_base_url: Option<String>,
        }

        impl TryFrom<$raw> for $section {
            type Error = String;

            fn try_from(raw: $raw) -> Result<Self, String> {
                if raw.$list.is_empty() && raw.$file.is_none() {
                    return Err(format!(
                        "no {} and no {}: every callback would be refused ({})",
                        stringify!($list),
                        stringify!($file),
                        $what
                    ));
                }
                if let Some(url) = &raw.public_base_url {
                    check_base_url(url)?;
                }
                Ok($section {
                    $list: raw.$list,
                    $file: raw.$file,
                    public_base_url: raw.public_base_url,
                })
            }
        }
    };
}

raw!(RawTelnyx => TelnyxSection { public_keys: PublicKeyText, public_keys_file },
    "the account's public key, Mission Control > Keys & Credentials > Public Key");
raw!(RawToken => TokenSection { auth_tokens: SecretText, auth_tokens_file },
    "the account's Auth Token");
raw!(RawSigningKey => SigningKeySection { signing_keys: SecretText, signing_keys_file },
    "the project's Signing Key");
raw!(RawSignatureSecret => SignatureSecretSection { signature_secrets: SecretText, signature_secrets_file },
    "the account's signature secret");

/// A public base URL: `http(s)://host[:port][/prefix]`, no query, no trailing `/`.
pub fn check_base_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("public_base_url `{url}` must start with https:// or http://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("public_base_url `{url}` has no host"));
    }
    if url.contains(['?', '#']) || url.ends_with('/') || url.chars().any(char::is_whitespace) {
        return Err(format!(
            "public_base_url `{url}` must be scheme://host[:port][/prefix], without a query, \
             fragment or trailing /"
        ));
    }
    Ok(())
}

/// An IP address or CIDR block (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an IP address or CIDR block like 10.0.0.0/8");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}/{}", self.addr, self.prefix))
    }
}

/// The verified secrets of one tenant and provider, loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteSecrets {
    Telnyx(Vec<Ed25519Key>),
    /// Twilio and Plivo auth tokens, SignalWire signing keys, Vonage signature secrets.
    Shared(Vec<Secret>),
}

/// One route's configuration, loaded: secrets and the base URL to reconstruct.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub secrets: RouteSecrets,
    pub public_base_url: Option<String>,
}

/// Reads one secret per line of `path` (blank lines and `#` comments skipped).
fn read_lines(path: &Path, what: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{what}: {}: cannot read: {e}", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        return Err(format!("{what}: {}: holds no secret", path.display()));
    }
    Ok(lines)
}

impl WebhooksConfig {
    /// Resolves relative `*_file` paths against the config file's folder.
    pub fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p
                && path.is_relative()
            {
                *path = dir.join(&*path);
            }
        };
        for tenant in self.tenants.values_mut() {
            if let Some(s) = &mut tenant.telnyx {
                fix(&mut s.public_keys_file);
            }
            if let Some(s) = &mut tenant.twilio {
                fix(&mut s.auth_tokens_file);
            }
            if let Some(s) = &mut tenant.signalwire {
                fix(&mut s.signing_keys_file);
            }
            if let Some(s) = &mut tenant.vonage {
                fix(&mut s.signature_secrets_file);
            }
            if let Some(s) = &mut tenant.plivo {
                fix(&mut s.auth_tokens_file);
            }
        }
    }

    /// Whether a route takes secrets from a `*_file` (which a reload re-reads).
    pub fn reads_secret_files(&self) -> bool {
        self.tenants.values().any(|t| {
            t.telnyx
                .as_ref()
                .is_some_and(|s| s.public_keys_file.is_some())
                || t.twilio
                    .as_ref()
                    .is_some_and(|s| s.auth_tokens_file.is_some())
                || t.signalwire
                    .as_ref()
                    .is_some_and(|s| s.signing_keys_file.is_some())
                || t.vonage
                    .as_ref()
                    .is_some_and(|s| s.signature_secrets_file.is_some())
                || t.plivo
                    .as_ref()
                    .is_some_and(|s| s.auth_tokens_file.is_some())
        })
    }

    /// Every route with its secrets read (files included), or the first problem, named
    /// by its key.
    pub fn routes(
        &self,
        max_tenant_bytes: usize,
    ) -> Result<BTreeMap<(String, WebhookProvider), RouteConfig>, String> {
        if let Some(url) = &self.public_base_url {
            check_base_url(url).map_err(|e| format!("webhooks.{e}"))?;
        }
        let mut routes = BTreeMap::new();
        for (tenant, sections) in &self.tenants {
            let at = |p: &str| format!("webhooks.tenants.{}.{p}", tenant.0);
            Tenant::parse(&tenant.0, max_tenant_bytes)
                .map_err(|e| format!("webhooks.tenants.{}: {e}", tenant.0))?;
            let shared = |list: &[SecretText], file: &Option<PathBuf>, key: &str| {
                let mut out: Vec<Secret> = list.iter().map(|s| Secret::new(s.0.clone())).collect();
                if let Some(path) = file {
                    out.extend(read_lines(path, &at(key))?.into_iter().map(Secret::new));
                }
                Ok::<_, String>(RouteSecrets::Shared(out))
            };
            let mut add = |provider: WebhookProvider, secrets, base: &Option<String>| {
                routes.insert(
                    (tenant.0.clone(), provider),
                    RouteConfig {
                        secrets,
                        public_base_url: base.clone().or_else(|| self.public_base_url.clone()),
                    },
                );
            };
            if let Some(s) = &sections.telnyx {
                let mut keys = Vec::new();
                for key in &s.public_keys {
                    keys.push(Ed25519Key::from_base64(&key.0).map_err(|e| {
                        format!("{}: Telnyx public key {e}", at("telnyx.public_keys"))
                    })?);
                }
                if let Some(path) = &s.public_keys_file {
                    for line in read_lines(path, &at("telnyx.public_keys_file"))? {
                        keys.push(Ed25519Key::from_base64(&line).map_err(|e| {
                            format!(
                                "{}: {}: a key {e}",
                                at("telnyx.public_keys_file"),
                                path.display()
                            )
                        })?);
                    }
                }
                add(
                    WebhookProvider::Telnyx,
                    RouteSecrets::Telnyx(keys),
                    &s.public_base_url,
                );
            }
            if let Some(s) = &sections.twilio {
                let secrets = shared(
                    &s.auth_tokens,
                    &s.auth_tokens_file,
                    "twilio.auth_tokens_file",
                )?;
                add(WebhookProvider::Twilio, secrets, &s.public_base_url);
            }
            if let Some(s) = &sections.signalwire {
                let secrets = shared(
                    &s.signing_keys,
                    &s.signing_keys_file,
                    "signalwire.signing_keys_file",
                )?;
                add(WebhookProvider::SignalWire, secrets, &s.public_base_url);
            }
            if let Some(s) = &sections.vonage {
                let secrets = shared(
                    &s.signature_secrets,
                    &s.signature_secrets_file,
                    "vonage.signature_secrets_file",
                )?;
                add(WebhookProvider::Vonage, secrets, &s.public_base_url);
            }
            if let Some(s) = &sections.plivo {
                let secrets = shared(
                    &s.auth_tokens,
                    &s.auth_tokens_file,
                    "plivo.auth_tokens_file",
                )?;
                add(WebhookProvider::Plivo, secrets, &s.public_base_url);
            }
        }
        Ok(routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: IpNet = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("example.com".parse::<IpNet>().is_err());
    }

    #[test]
    fn base_urls() {
        check_base_url("https://hooks.example.com").unwrap();
        check_base_url("http://127.0.0.1:8080/outcome").unwrap();
        assert!(check_base_url("hooks.example.com").is_err());
        assert!(check_base_url("https://hooks.example.com/").is_err());
        assert!(check_base_url("https://h?x=1").is_err());
        assert!(check_base_url("https:///x").is_err());
    }
}
