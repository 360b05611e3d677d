//! OIDC JWT validation against the issuer's JWKS (a file, or an `http://` URL fetched on
//! first use), cached by `kid`, refreshed on an unknown `kid` at most once per
//! `refresh_floor_secs` (single-flight).
//!
//! Hardening: the algorithm list is pinned (never `none`, never HS* — JWKS keys are
//! public, and HMAC keyed with a public key is the classic confusion attack); the JWK's
//! own `alg`, key type and curve must fit the token's `alg`; `iss`, `aud` and `exp` are
//! required. Error messages never echo token contents beyond a sanitized `alg`/`kid`.
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use warden_core::{AuthInfo, AuthMethod, Principal};

/// `[identity.oidc]` after config validation.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<PathBuf>,
    /// Claim holding groups (array of strings, or a space-separated string). Default `groups`.
    pub groups_claim: String,
    /// Allowed algorithms, e.g. ["RS256", "ES256", "EdDSA"]. Never `none`, never HS* with a JWKS.
    pub algorithms: Vec<String>,
    /// Minimum seconds between JWKS refreshes triggered by an unknown `kid`.
    pub refresh_floor_secs: u64,
    /// Allowed clock skew for exp/nbf, seconds.
    pub leeway_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("not a JWT")]
    Malformed,
    #[error("token algorithm `{0}` is not allowed")]
    Algorithm(String),
    #[error("no key with kid `{0}` in the issuer's JWKS")]
    UnknownKid(String),
    #[error("token signature is invalid")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token issuer or audience does not match")]
    Claims,
    #[error("token has no usable subject")]
    Subject,
    #[error("JWKS unavailable: {0}")]
    Jwks(String),
}

/// Cap on a fetched JWKS body.
const MAX_JWKS_BODY: usize = 1024 * 1024;
/// Cap on the status line plus headers of a JWKS response.
const MAX_HTTP_HEAD: usize = 64 * 1024;
/// Whole-request timeout of a JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum JwksSource {
    File(PathBuf),
    Url(String),
}

/// A loaded JWKS: the usable signature keys, and a generation number that increases on
/// every successful (re)load (so waiters can tell a refresh happened while they waited).
#[derive(Debug)]
struct Jwks {
    keys: Vec<Jwk>,
    generation: u64,
}

#[derive(Debug, Default)]
struct RefreshState {
    /// When the last load attempt (successful or not) started.
    last_attempt: Option<Instant>,
}

pub struct JwtValidator {
    settings: OidcSettings,
    algorithms: Vec<Algorithm>,
    source: JwksSource,
    cache: RwLock<Option<Arc<Jwks>>>,
    /// Single-flight guard of every JWKS load after construction.
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Number of JWKS loads attempted (file reads or URL fetches), including the one in
    /// `new`. A test and metrics hook.
    loads: AtomicU64,
}

impl std::fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtValidator")
            .field("issuer", &self.settings.issuer)
            .field("audience", &self.settings.audience)
            .field("source", &self.source)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtValidator {
    pub fn new(settings: OidcSettings) -> Result<JwtValidator, JwtError> {
        let algorithms = parse_algorithms(&settings.algorithms)?;
        let source = match (&settings.jwks_file, &settings.jwks_url) {
            (Some(_), Some(_)) => {
                return Err(JwtError::Jwks(
                    "set only one of jwks_url and jwks_file".into(),
                ));
            }
            (Some(p), None) => JwksSource::File(p.clone()),
            (None, Some(u)) => {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(JwtError::Jwks(
                        "jwks_url must be an http:// or https:// URL".into(),
                    ));
                }
                if u.starts_with("https://") {
                    tracing::warn!(
                        "jwks_url is https, which this build cannot fetch yet: use jwks_file, or http on loopback"
                    );
                }
                JwksSource::Url(u.clone())
            }
            (None, None) => {
                return Err(JwtError::Jwks(
                    "one of jwks_url or jwks_file is required".into(),
                ));
            }
        };
        let validator = JwtValidator {
            settings,
            algorithms,
            source,
            cache: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            loads: AtomicU64::new(0),
        };
        if let JwksSource::File(path) = &validator.source {
            validator.loads.fetch_add(1, Ordering::Relaxed);
            let bytes = std::fs::read(path)
                .map_err(|e| JwtError::Jwks(format!("cannot read {}: {e}", path.display())))?;
            let keys = parse_jwks(&bytes)?;
            *validator.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Jwks {
                keys,
                generation: 1,
            }));
        }
        Ok(validator)
    }

    /// Does `s` look like a JWT at all (three base64url parts)? Cheap, no validation.
    pub fn looks_like_jwt(s: &str) -> bool {
        s.split('.').count() == 3 && s.len() > 20
    }

    /// How many times the JWKS was loaded (file read or URL fetch attempted), counting the
    /// initial load. For tests and metrics.
    pub fn jwks_loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Validate and map to a principal.
    pub async fn validate(&self, token: &str) -> Result<Principal, JwtError> {
        let (alg, kid) = self.read_header(token)?;
        let jwk = self.find_key(kid.as_deref()).await?;
        check_key_fits(&jwk, alg)?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| JwtError::Jwks("the issuer's key for this token is unusable".into()))?;

        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = self.settings.leeway_secs;

        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| map_error(e, alg))?;
        self.principal_from_claims(&data.claims)
    }

    /// Decode the header; pin the algorithm. Returns (alg, kid).
    fn read_header(&self, token: &str) -> Result<(Algorithm, Option<String>), JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        // Read `alg` ourselves first so `none` and unknown algorithms get a precise error
        // (jsonwebtoken's Header cannot even represent them).
        let raw = URL_SAFE_NO_PAD
            .decode(h.trim_end_matches('='))
            .map_err(|_| JwtError::Malformed)?;
        let raw: Value = serde_json::from_slice(&raw).map_err(|_| JwtError::Malformed)?;
        let alg_name = raw
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(JwtError::Malformed)?;
        let alg =
            Algorithm::from_str(alg_name).map_err(|_| JwtError::Algorithm(sanitize(alg_name)))?;
        if !self.algorithms.contains(&alg) {
            return Err(JwtError::Algorithm(sanitize(alg_name)));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        // We understand no critical header extensions (RFC 7515 §4.1.11): refuse them.
        if header.alg != alg || header.crit.is_some() {
            return Err(JwtError::Malformed);
        }
        Ok((alg, header.kid))
    }

    /// The key for `kid`, refreshing the JWKS once (rate-limited) if it is unknown.
    async fn find_key(&self, kid: Option<&str>) -> Result<Jwk, JwtError> {
        let jwks = match self.cached() {
            Some(j) => j,
            None => {
                self.reload(0).await?;
                self.cached()
                    .ok_or_else(|| JwtError::Jwks("JWKS not loaded".into()))?
            }
        };
        match lookup(&jwks, kid) {
            Lookup::Found(k) => return Ok(k.clone()),
            Lookup::KidRequired => {
                return Err(JwtError::UnknownKid(
                    "(none: the JWKS has several keys)".into(),
                ));
            }
            Lookup::Missing => {}
        }
        // Unknown kid: maybe the issuer rotated keys.
        self.reload(jwks.generation).await?;
        let jwks = self
            .cached()
            .ok_or_else(|| JwtError::Jwks("JWKS not loaded".into()))?;
        match lookup(&jwks, kid) {
            Lookup::Found(k) => Ok(k.clone()),
            Lookup::KidRequired => Err(JwtError::UnknownKid(
                "(none: the JWKS has several keys)".into(),
            )),
            Lookup::Missing => Err(JwtError::UnknownKid(sanitize(kid.unwrap_or("(none)")))),
        }
    }

    fn cached(&self) -> Option<Arc<Jwks>> {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reload the JWKS unless someone else already did since we saw generation `seen`
    /// (0 = nothing loaded), or the last attempt was less than the floor ago. Callers
    /// arriving together wait on the mutex and reuse the winner's result.
    async fn reload(&self, seen: u64) -> Result<(), JwtError> {
        let mut state = self.refresh.lock().await;
        let current = self.cached().map(|j| j.generation).unwrap_or(0);
        if current != seen {
            return Ok(()); // refreshed while we waited
        }
        let floor = Duration::from_secs(self.settings.refresh_floor_secs);
        if let Some(last) = state.last_attempt
            && last.elapsed() < floor
        {
            if current == 0 {
                return Err(JwtError::Jwks(
                    "the last fetch failed; retrying later".into(),
                ));
            }
            return Ok(()); // rate-limited: keep the cached set
        }
        state.last_attempt = Some(Instant::now());
        self.loads.fetch_add(1, Ordering::Relaxed);
        let loaded = match &self.source {
            JwksSource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| JwtError::Jwks(format!("cannot read {}: {e}", path.display())))
                .and_then(|b| parse_jwks(&b)),
            JwksSource::Url(url) => fetch_jwks_url(url).await.and_then(|b| parse_jwks(&b)),
        };
        match loaded {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "JWKS loaded");
                *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Jwks {
                    keys,
                    generation: current + 1,
                }));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed");
                if current == 0 { Err(e) } else { Ok(()) } // keep serving the old set
            }
        }
    }

    fn principal_from_claims(&self, claims: &Value) -> Result<Principal, JwtError> {
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or(JwtError::Subject)?;
        if !usable_subject(sub) {
            return Err(JwtError::Subject);
        }
        let act = claims.get("act").filter(|v| !v.is_null());
        let id = if has_kind_prefix(sub) {
            sub.to_string()
        } else if act.is_some() {
            format!("agent:{sub}")
        } else {
            format!("user:{sub}")
        };
        let on_behalf_of = act
            .and_then(|a| a.get("sub"))
            .and_then(Value::as_str)
            .filter(|s| usable_subject(s))
            .map(|s| {
                if has_kind_prefix(s) {
                    s.to_string()
                } else {
                    format!("user:{s}")
                }
            });
        let groups = match claims.get(&self.settings.groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or(&self.settings.issuer);
        Ok(Principal {
            id,
            groups,
            auth: AuthInfo {
                method: AuthMethod::Jwt,
                issuer: Some(iss.to_string()),
                subject: Some(sub.to_string()),
            },
            on_behalf_of,
        })
    }
}

/// Parse and vet the configured algorithm list.
fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, JwtError> {
    if names.is_empty() {
        return Err(JwtError::Jwks("no JWT algorithms configured".into()));
    }
    names
        .iter()
        .map(|n| {
            let alg = Algorithm::from_str(n).map_err(|_| JwtError::Algorithm(sanitize(n)))?;
            if alg.family() == AlgorithmFamily::Hmac {
                // A JWKS holds public keys; HMAC "verified" with a public key is forgeable.
                return Err(JwtError::Algorithm(sanitize(n)));
            }
            Ok(alg)
        })
        .collect()
}

/// Parse a JWKS document, keeping the keys usable for signature verification: public
/// RSA / EC / OKP keys not marked `use: enc`. Symmetric (`oct`) keys are dropped.
fn parse_jwks(bytes: &[u8]) -> Result<Vec<Jwk>, JwtError> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|_| JwtError::Jwks("not a JWKS (invalid JSON)".into()))?;
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err(JwtError::Jwks("not a JWKS (no `keys` array)".into()));
    };
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
            tracing::debug!("skipping unreadable JWK");
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        match jwk.algorithm {
            AlgorithmParameters::RSA(_)
            | AlgorithmParameters::EllipticCurve(_)
            | AlgorithmParameters::OctetKeyPair(_) => out.push(jwk),
            _ => continue,
        }
    }
    Ok(out)
}

enum Lookup<'a> {
    Found(&'a Jwk),
    Missing,
    KidRequired,
}

fn lookup<'a>(jwks: &'a Jwks, kid: Option<&str>) -> Lookup<'a> {
    match kid {
        Some(kid) => match jwks
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
        {
            Some(k) => Lookup::Found(k),
            None => Lookup::Missing,
        },
        None => match jwks.keys.len() {
            0 => Lookup::Missing,
            1 => Lookup::Found(&jwks.keys[0]),
            _ => Lookup::KidRequired,
        },
    }
}

/// The JWK must be meant for `alg`: its own `alg` (if any) equal, its key type (and curve)
/// fitting the algorithm family.
fn check_key_fits(jwk: &Jwk, alg: Algorithm) -> Result<(), JwtError> {
    let refuse = || JwtError::Algorithm(format!("{alg:?} (does not fit the issuer's key)"));
    if let Some(key_alg) = jwk.common.key_algorithm
        && key_alg != KeyAlgorithm::from(alg)
    {
        return Err(refuse());
    }
    let fits = match (&jwk.algorithm, alg.family()) {
        (AlgorithmParameters::RSA(_), AlgorithmFamily::Rsa) => true,
        (AlgorithmParameters::EllipticCurve(p), AlgorithmFamily::Ec) => matches!(
            (&p.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        (AlgorithmParameters::OctetKeyPair(p), AlgorithmFamily::Ed) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    if fits { Ok(()) } else { Err(refuse()) }
}

fn map_error(e: jsonwebtoken::errors::Error, alg: Algorithm) -> JwtError {
    match e.kind() {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer
        | ErrorKind::InvalidAudience
        | ErrorKind::InvalidSubject
        | ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_) => JwtError::Claims,
        ErrorKind::InvalidSignature => JwtError::Signature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => JwtError::Algorithm(format!("{alg:?}")),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => JwtError::Malformed,
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => {
            JwtError::Jwks("the issuer's key for this token is unusable".into())
        }
        // Anything else: fail closed.
        _ => JwtError::Signature,
    }
}

fn has_kind_prefix(s: &str) -> bool {
    s.starts_with("agent:") || s.starts_with("user:")
}

/// Non-empty, bounded, no control characters, and not a bare `agent:` / `user:`.
fn usable_subject(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && !s.chars().any(char::is_control)
        && s != "agent:"
        && s != "user:"
}

/// A token-supplied string made safe for an error message: printable ASCII, short.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Fetch a JWKS URL; returns the body. Only `http://` for now (meant for an IdP on
/// loopback or a sidecar). TLS support belongs here and only here.
async fn fetch_jwks_url(url: &str) -> Result<Vec<u8>, JwtError> {
    if url.starts_with("https://") {
        return Err(JwtError::Jwks(
            "https JWKS URLs need TLS support: use jwks_file, or http on loopback".into(),
        ));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(JwtError::Jwks("unsupported JWKS URL scheme".into()));
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(JwtError::Jwks("invalid JWKS URL host".into()));
    }
    let (host, port) =
        split_host_port(authority).ok_or_else(|| JwtError::Jwks("invalid JWKS URL host".into()))?;
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(JwtError::Jwks("invalid JWKS URL path".into()));
    }
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json, application/jwk-set+json\r\nUser-Agent: warden\r\nConnection: close\r\n\r\n"
    );
    match tokio::time::timeout(FETCH_TIMEOUT, http_get(host, port, request.as_bytes())).await {
        Ok(r) => r,
        Err(_) => Err(JwtError::Jwks("JWKS fetch timed out".into())),
    }
}

/// `host[:port]` or `[v6][:port]`; default port 80.
fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h, p.parse().ok()?)),
        Some(_) => None,
        None => Some((authority, 80)),
    }
}

async fn http_get(host: &str, port: u16, request: &[u8]) -> Result<Vec<u8>, JwtError> {
    let io = |what: &str, e: std::io::Error| JwtError::Jwks(format!("{what}: {e}"));
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| io("connect", e))?;
    stream.write_all(request).await.map_err(|e| io("send", e))?;
    // Bound everything read from the peer: head + body + chunk framing.
    let limit = (MAX_HTTP_HEAD + MAX_JWKS_BODY + 64 * 1024) as u64;
    let mut r = BufReader::new(stream.take(limit));

    // Status line.
    let mut head_len = 0usize;
    let status_line = read_line(&mut r, &mut head_len).await?;
    let mut it = status_line.split_whitespace();
    let (Some(version), Some(code)) = (it.next(), it.next()) else {
        return Err(JwtError::Jwks("invalid HTTP response".into()));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(JwtError::Jwks("invalid HTTP response".into()));
    }
    if code != "200" {
        return Err(JwtError::Jwks(format!(
            "JWKS URL answered HTTP {}",
            sanitize(code)
        )));
    }
    // Headers.
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    loop {
        let line = read_line(&mut r, &mut head_len).await?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(JwtError::Jwks("invalid HTTP header".into()));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| JwtError::Jwks("invalid Content-Length".into()))?;
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                return Err(JwtError::Jwks("unsupported Transfer-Encoding".into()));
            }
        }
    }
    let too_big = || JwtError::Jwks("JWKS larger than 1 MiB".into());
    let truncated = |e: std::io::Error| JwtError::Jwks(format!("reading JWKS body: {e}"));
    let mut body = Vec::new();
    if chunked {
        let mut framing = 0usize;
        loop {
            let line = read_line(&mut r, &mut framing).await?;
            let size_hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| JwtError::Jwks("invalid chunk size".into()))?;
            if size == 0 {
                // Trailers until the empty line (or EOF).
                loop {
                    match read_line(&mut r, &mut framing).await {
                        Ok(l) if l.is_empty() => break,
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
                break;
            }
            if body.len().saturating_add(size) > MAX_JWKS_BODY {
                return Err(too_big());
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).await.map_err(truncated)?;
            let crlf = read_line(&mut r, &mut framing).await?;
            if !crlf.is_empty() {
                return Err(JwtError::Jwks("invalid chunk framing".into()));
            }
        }
    } else if let Some(n) = content_length {
        if n > MAX_JWKS_BODY {
            return Err(too_big());
        }
        body.resize(n, 0);
        r.read_exact(&mut body).await.map_err(truncated)?;
    } else {
        // Read to EOF (Connection: close).
        (&mut r)
            .take(MAX_JWKS_BODY as u64 + 1)
            .read_to_end(&mut body)
            .await
            .map_err(truncated)?;
        if body.len() > MAX_JWKS_BODY {
            return Err(too_big());
        }
    }
    Ok(body)
}

/// One CRLF- (or LF-) terminated line, without the terminator; `used` accumulates bytes
/// read so the head stays under MAX_HTTP_HEAD.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    used: &mut usize,
) -> Result<String, JwtError> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take((MAX_HTTP_HEAD - (*used).min(MAX_HTTP_HEAD)) as u64)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| JwtError::Jwks(format!("reading JWKS response: {e}")))?;
    *used += n;
    if !buf.ends_with(b"\n") {
        return Err(JwtError::Jwks(if n == 0 {
            "JWKS response ended early".into()
        } else {
            "JWKS response head too large".into()
        }));
    }
    buf.pop();
    if buf.ends_with(b"\r") {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| JwtError::Jwks("invalid HTTP response".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("127.0.0.1:8080"), Some(("127.0.0.1", 8080)));
        assert_eq!(split_host_port("idp"), Some(("idp", 80)));
        assert_eq!(split_host_port("[::1]:9"), Some(("::1", 9)));
        assert_eq!(split_host_port("[::1]"), Some(("::1", 80)));
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("h:x"), None);
    }

    #[test]
    fn algorithm_lists() {
        assert!(parse_algorithms(&["RS256".into(), "ES256".into(), "EdDSA".into()]).is_ok());
        assert!(matches!(
            parse_algorithms(&["none".into()]),
            Err(JwtError::Algorithm(_))
        ));
        assert!(matches!(
            parse_algorithms(&["RS256".into(), "HS256".into()]),
            Err(JwtError::Algorithm(_))
        ));
        assert!(matches!(
            parse_algorithms(&["HS512".into()]),
            Err(JwtError::Algorithm(_))
        ));
        assert!(parse_algorithms(&[]).is_err());
    }

    #[test]
    fn sanitizes() {
        assert_eq!(sanitize("RS256"), "RS256");
        assert_eq!(sanitize("a b\nc"), "abc…");
        assert_eq!(sanitize(&"x".repeat(100)).chars().count(), 65);
    }

    #[test]
    fn jwks_parsing_skips_unusable_keys() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","kid":"sig","n":"AQAB","e":"AQAB"},
            {"kty":"weird"}
        ]}"#;
        let keys = parse_jwks(doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].common.key_id.as_deref(), Some("sig"));
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(b"nope").is_err());
    }
}
