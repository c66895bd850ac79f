//! The tenant a request acts for: parsed once, at the edge or from the configuration,
//! and carried as [`Tenant`] from then on, so no layer below re-checks a name.

use std::fmt;

/// The longest tenant name the configuration allows by default (`limits.max_tenant_bytes`).
pub const DEFAULT_MAX_TENANT_BYTES: usize = 64;

/// A valid tenant name: 1 to `max` bytes of ASCII letters, digits, `.`, `_` and `-`
/// (so it is safe in metric labels, NATS subjects and KV keys once escaped).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(String);

/// Why a name is not a tenant. The texts are the field-violation descriptions the
/// edges send, so a client reads the same words whichever door it came in by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {max} bytes")]
    TooLong { max: usize },
    #[error("may contain only letters, digits, '.', '_' and '-'")]
    BadCharacter,
}

impl Tenant {
    /// Parses `name`, at most `max_bytes` long.
    pub fn parse(name: &str, max_bytes: usize) -> Result<Tenant, TenantError> {
        Self::check(name, max_bytes)?;
        Ok(Tenant(name.to_owned()))
    }

    /// As [`Tenant::parse`], keeping the caller's allocation.
    pub fn parse_owned(name: String, max_bytes: usize) -> Result<Tenant, TenantError> {
        Self::check(&name, max_bytes)?;
        Ok(Tenant(name))
    }

    fn check(name: &str, max_bytes: usize) -> Result<(), TenantError> {
        if name.is_empty() {
            Err(TenantError::Empty)
        } else if name.len() > max_bytes {
            Err(TenantError::TooLong { max: max_bytes })
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Err(TenantError::BadCharacter)
        } else {
            Ok(())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as the `String` it is kept in (for maps keyed by `String`).
    pub fn as_string(&self) -> &String {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for Tenant {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Tenant {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for Tenant {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_once_with_their_reason() {
        assert_eq!(
            Tenant::parse("acme-eu.1_x", 64).unwrap().as_str(),
            "acme-eu.1_x"
        );
        assert_eq!(Tenant::parse("", 64), Err(TenantError::Empty));
        assert_eq!(
            Tenant::parse("abcd", 3),
            Err(TenantError::TooLong { max: 3 })
        );
        assert_eq!(Tenant::parse("a b", 64), Err(TenantError::BadCharacter));
        assert_eq!(Tenant::parse("acmé", 64), Err(TenantError::BadCharacter));
        assert_eq!(
            TenantError::TooLong { max: 3 }.to_string(),
            "longer than 3 bytes"
        );
    }
}
