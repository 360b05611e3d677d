//! Authentication decisions shared by every adapter.
use warden_core::{AuthInfo, AuthMethod, KeyRecord, Principal};
use warden_identity::scram::Candidate;
use warden_identity::{JwtValidator, ScramServer, key_id_of, scram_salt_for, verify_bearer};

use crate::Pipeline;

/// Why authentication failed, in words safe for evidence and logs (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    pub reason: String,
}

impl AuthFailure {
    fn new(reason: impl Into<String>) -> Self {
        AuthFailure {
            reason: reason.into(),
        }
    }
}

/// How a wire protocol should ask for the caller's credential.
pub enum AuthPlan {
    /// SCRAM-SHA-256 against the principal's Warden keys (the key never crosses the wire).
    /// (The principal is known after the exchange, from the key that matched.)
    Scram { server: ScramServer },
    /// Cleartext password (a Warden key or a JWT); only offered on TLS or loopback.
    Cleartext,
}

impl Pipeline {
    fn active_keys(&self, principal: &str) -> Vec<KeyRecord> {
        let now = time::OffsetDateTime::now_utc();
        match self.store.keys_for_principal(principal) {
            Ok(keys) => keys.into_iter().filter(|k| k.is_active(now)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "key lookup failed");
                Vec::new()
            }
        }
    }

    /// `agent:x` / `user:x` as given; a bare `x` means `agent:x` if that principal has keys,
    /// else `user:x`.
    fn resolve_user(&self, user: &str) -> (String, Vec<KeyRecord>) {
        if user.starts_with("agent:") || user.starts_with("user:") {
            let keys = self.active_keys(user);
            return (user.to_string(), keys);
        }
        let agent = format!("agent:{user}");
        let keys = self.active_keys(&agent);
        if !keys.is_empty() {
            return (agent, keys);
        }
        let human = format!("user:{user}");
        let keys = self.active_keys(&human);
        if !keys.is_empty() {
            return (human, keys);
        }
        (agent, Vec::new())
    }

    pub fn jwt_enabled(&self) -> bool {
        self.jwt.is_some()
    }

    /// Choose the method for `user`. `secure` = the channel is TLS or loopback;
    /// `prefer_password` = the client asked for password auth (e.g. to present a JWT).
    pub fn auth_plan(&self, user: &str, secure: bool, prefer_password: bool) -> AuthPlan {
        if secure && prefer_password {
            return AuthPlan::Cleartext;
        }
        let (principal, keys) = self.resolve_user(user);
        if keys.is_empty() && self.jwt.is_some() && secure {
            return AuthPlan::Cleartext;
        }
        let salt = scram_salt_for(&principal);
        let iterations = keys
            .first()
            .map(|k| k.scram_iterations)
            .unwrap_or(warden_identity::keys::SCRAM_ITERATIONS);
        let candidates = keys
            .iter()
            .filter(|k| k.scram_salt == salt && k.scram_iterations == iterations)
            .map(|k| Candidate {
                key_id: k.id.clone(),
                stored_key: k.scram_stored_key,
                server_key: k.scram_server_key,
            })
            .collect();
        AuthPlan::Scram {
            server: ScramServer::new(&salt, iterations, candidates),
        }
    }

    /// After a successful SCRAM exchange: the principal the key belongs to (re-checked).
    pub fn principal_for_key(&self, key_id: &str) -> Result<Principal, AuthFailure> {
        let rec = self
            .store
            .key_by_id(key_id)
            .map_err(|e| AuthFailure::new(format!("key store unavailable: {e}")))?
            .ok_or_else(|| AuthFailure::new(format!("key {key_id} not found")))?;
        if !rec.is_active(time::OffsetDateTime::now_utc()) {
            return Err(AuthFailure::new(format!(
                "key {key_id} is revoked or expired"
            )));
        }
        Ok(key_principal(&rec))
    }

    /// Check a secret presented in clear (bearer token or PostgreSQL cleartext password):
    /// a Warden key or a JWT. `user`, when given, must name the same principal.
    pub async fn authenticate_secret(
        &self,
        user: Option<&str>,
        secret: &str,
    ) -> Result<Principal, AuthFailure> {
        let principal = if let Some(id) = key_id_of(secret) {
            let rec = self
                .store
                .key_by_id(id)
                .map_err(|e| AuthFailure::new(format!("key store unavailable: {e}")))?
                .ok_or_else(|| AuthFailure::new(format!("unknown key id {id}")))?;
            if !verify_bearer(secret, &rec) {
                return Err(AuthFailure::new(format!("wrong secret for key {id}")));
            }
            if !rec.is_active(time::OffsetDateTime::now_utc()) {
                return Err(AuthFailure::new(format!("key {id} is revoked or expired")));
            }
            key_principal(&rec)
        } else if JwtValidator::looks_like_jwt(secret) {
            let Some(jwt) = &self.jwt else {
                return Err(AuthFailure::new(
                    "a JWT was presented but [identity.oidc] is not configured",
                ));
            };
            jwt.validate(secret)
                .await
                .map_err(|e| AuthFailure::new(format!("JWT rejected: {e}")))?
        } else {
            return Err(AuthFailure::new(
                "credential is neither a Warden key nor a JWT",
            ));
        };
        if let Some(user) = user
            && user != principal.id
            && user != principal.name()
        {
            return Err(AuthFailure::new(format!(
                "credential belongs to {} but the client connected as `{}`",
                principal.id,
                crate::sanitize_claim(user)
            )));
        }
        Ok(principal)
    }
}

fn key_principal(rec: &KeyRecord) -> Principal {
    Principal {
        id: rec.principal.clone(),
        groups: rec.groups.clone(),
        auth: AuthInfo {
            method: AuthMethod::WardenKey,
            issuer: Some("warden".into()),
            subject: Some(rec.id.clone()),
        },
        on_behalf_of: None,
    }
}
