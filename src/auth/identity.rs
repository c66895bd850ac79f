//! Who a caller is: an [`Identity`] (name, tenant, roles) and the [`Role`]s it may hold,
//! and the checks every configured identity passes, whichever credential names it.

use crate::domain::Tenant;
use serde::{Deserialize, Serialize};

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

/// Who made a request, as resolved by [`super::Authenticator`]; the edges keep it with the
/// request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub tenant: Tenant,
    pub roles: Vec<Role>,
}

impl Identity {
    /// Whether the identity holds `role` (or `admin`).
    pub fn allows(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r == role || *r == Role::Admin)
    }
}

/// Parses an identity's tenant; the error names the entry (`auth.api_keys[0].tenant: ...`).
pub(super) fn check_tenant(
    at: &str,
    tenant: &str,
    max_tenant_bytes: usize,
) -> Result<Tenant, String> {
    Tenant::parse(tenant, max_tenant_bytes).map_err(|e| format!("{at}.tenant: {e}"))
}

/// Checks a configured identity's tenant and roles, and returns the identity.
pub(super) fn check_identity(
    at: &str,
    name: &str,
    tenant: &str,
    roles: &[Role],
    max_tenant_bytes: usize,
) -> Result<Identity, String> {
    let tenant = check_tenant(at, tenant, max_tenant_bytes)?;
    if roles.is_empty() {
        return Err(format!(
            "{at}.roles: must name at least one of report, subscribe, admin"
        ));
    }
    Ok(Identity {
        name: name.to_owned(),
        tenant,
        roles: roles.to_vec(),
    })
}
