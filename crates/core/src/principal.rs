//! Who is calling.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    Agent,
    User,
}

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A Warden-issued key (`warden keys create`).
    WardenKey,
    /// An OIDC JWT validated against the configured issuer's JWKS.
    Jwt,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthInfo {
    pub method: AuthMethod,
    /// JWT `iss`; for Warden keys, `"warden"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// JWT `sub`; for Warden keys, the key id (never the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// An authenticated caller: `agent:<name>` or `user:<name>` with its groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// `agent:NAME` or `user:NAME`.
    pub id: String,
    pub groups: Vec<String>,
    pub auth: AuthInfo,
    /// The human an agent acts for (JWT `act` claim), e.g. `user:alice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

impl Principal {
    pub fn kind(&self) -> PrincipalKind {
        if self.id.starts_with("user:") {
            PrincipalKind::User
        } else {
            PrincipalKind::Agent
        }
    }
    /// The part after `agent:` / `user:`.
    pub fn name(&self) -> &str {
        self.id.split_once(':').map(|(_, n)| n).unwrap_or(&self.id)
    }
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Validate a principal id: `agent:NAME` or `user:NAME`, NAME of `[A-Za-z0-9._@-]`, 1..=128.
pub fn validate_principal_id(id: &str) -> Result<(), String> {
    let Some((kind, name)) = id.split_once(':') else {
        return Err(format!(
            "principal `{id}` must look like agent:NAME or user:NAME"
        ));
    };
    if kind != "agent" && kind != "user" {
        return Err(format!(
            "principal `{id}`: kind must be `agent` or `user`, not `{kind}`"
        ));
    }
    validate_name(name).map_err(|e| format!("principal `{id}`: {e}"))
}

/// Names of principals and groups: 1..=128 of `[A-Za-z0-9._@-]`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err("name must be 1 to 128 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(format!(
            "character {c:?} is not allowed (use letters, digits, . _ - @)"
        ));
    }
    Ok(())
}
