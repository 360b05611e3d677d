//! The web console: embedded assets, sign-in, server-side sessions and CSRF.
//!
//! - **Assets** (`assets/`: one HTML page, one stylesheet, one vanilla JS file) are
//!   compiled into the binary with `include_str!`; nothing is fetched from elsewhere, and
//!   the Content-Security-Policy allows only this origin.
//! - **Sign-in**: `POST /api/v1/login` with `{"credential": "<Warden key or JWT>"}` —
//!   the same check as a bearer credential (a failure is recorded as `auth.failed`). The
//!   answer sets `warden_console=<token>; HttpOnly; SameSite=Strict; Path=/` (plus
//!   `Secure` when the console is served over TLS: [`ConsoleSettings::secure_cookies`])
//!   and returns the session's CSRF token. The token is 256 random bits; the server keeps
//!   only its SHA-256, so a memory dump of sessions holds no usable cookie. A JSON body
//!   is required, so an HTML form on another site cannot sign a victim in.
//! - **Sessions** end after [`ConsoleSettings::idle`] without a request made by the
//!   person (the page's background polling and its event stream do not count), after
//!   [`ConsoleSettings::lifetime`] in any case, or on `POST /api/v1/logout`. The
//!   principal is the one authenticated at sign-in (a revoked key keeps its open console
//!   session until one of those).
//! - **CSRF**: every cookie-authenticated request other than GET/HEAD must send the
//!   session's token in `X-CSRF-Token` (compared in constant time) and, when the browser
//!   sends `Origin`, come from this listener's own origin. GET handlers change nothing.
//! - **OIDC sign-in** (authorization code + PKCE, when `[identity.oidc]` names a
//!   `client_id`) is designed in docs/console.md and not built yet: today a person signs
//!   in by pasting a JWT from the identity provider or a Warden key.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use warden_core::Principal;

use crate::{AppState, Authenticator, Caller, error};

/// Name of the session cookie.
pub const COOKIE: &str = "warden_console";
/// Most console sessions kept at once (the oldest is dropped beyond it).
pub const MAX_SESSIONS: usize = 10_000;

/// How the console behaves.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Mark the cookie `Secure` (the console is reached over HTTPS: TLS on the listener
    /// or a TLS-terminating proxy). Also set per request when `X-Forwarded-Proto: https`.
    pub secure_cookies: bool,
    /// A session ends after this long without a request (default 30 min).
    pub idle: Duration,
    /// ... and after this long in any case (default 8 h).
    pub lifetime: Duration,
    /// Who may read evidence (sessions, records, export, overview, chain):
    /// `group:NAME` / `user:NAME` / `agent:NAME` / `*`. Empty (the default): every
    /// `user:` principal, and no agent.
    pub auditors: Vec<String>,
    /// How often the chain is verified in the background (default 10 min).
    pub verify_every: Duration,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            secure_cookies: false,
            idle: Duration::from_secs(30 * 60),
            lifetime: Duration::from_secs(8 * 3600),
            auditors: Vec::new(),
            verify_every: Duration::from_secs(600),
        }
    }
}

/// May `p` read evidence under `auditors` (see [`ConsoleSettings::auditors`])?
pub fn is_auditor(p: &Principal, auditors: &[String]) -> bool {
    if auditors.is_empty() {
        return p.id.starts_with("user:");
    }
    auditors.iter().any(|a| a == "*") || warden_approvals::is_eligible(p, auditors)
}

struct Entry {
    principal: Principal,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// Server-side console sessions, keyed by the SHA-256 of the cookie token.
pub(crate) struct Sessions {
    pub settings: ConsoleSettings,
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

pub(crate) enum Refused {
    NoSession,
    Csrf(String),
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn cookie_token(headers: &axum::http::HeaderMap) -> Option<String> {
    for v in headers.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, val)) = part.trim().split_once('=')
                && k == COOKIE
                && !val.is_empty()
            {
                return Some(val.to_string());
            }
        }
    }
    None
}

impl Sessions {
    pub fn new(settings: ConsoleSettings) -> Self {
        Sessions {
            settings,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn alive(&self, e: &Entry, now: Instant) -> bool {
        now.duration_since(e.last_seen) < self.settings.idle
            && now.duration_since(e.created) < self.settings.lifetime
    }

    /// A new session for `p`: (cookie token, CSRF token).
    fn create(&self, p: Principal) -> (String, String) {
        let (token, csrf) = (random_token(), random_token());
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, e| self.alive(e, now));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.created).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            digest(&token),
            Entry {
                principal: p,
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        (token, csrf)
    }

    fn remove(&self, token: &str) {
        self.lock().remove(&digest(token));
    }

    /// Whether the session with this cookie digest is still open (not signed out, not
    /// expired); live streams end when it is not.
    pub fn is_open(&self, key: &[u8; 32]) -> bool {
        let now = Instant::now();
        self.lock().get(key).is_some_and(|e| self.alive(e, now))
    }

    /// The caller of a cookie-authenticated request, its session's CSRF token and the
    /// session's key, after the CSRF checks for state-changing methods.
    pub fn check(&self, req: &Request) -> Result<(Principal, String, [u8; 32]), Refused> {
        let token = cookie_token(req.headers()).ok_or(Refused::NoSession)?;
        let now = Instant::now();
        let key = digest(&token);
        let (principal, csrf) = {
            let mut map = self.lock();
            let Some(e) = map.get_mut(&key) else {
                return Err(Refused::NoSession);
            };
            if !self.alive(e, now) {
                map.remove(&key);
                return Err(Refused::NoSession);
            }
            // Background requests of an open page (polling) do not keep it alive: an
            // unattended console still ends after the idle time.
            let background = req.headers().contains_key("x-warden-background")
                || req.uri().path().ends_with("/approvals/events");
            if !background {
                e.last_seen = now;
            }
            (e.principal.clone(), e.csrf.clone())
        };
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let sent = req
                .headers()
                .get("x-csrf-token")
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !bool::from(sent.ct_eq(csrf.as_bytes())) {
                return Err(Refused::Csrf(
                    "missing or wrong X-CSRF-Token: a console request that changes anything must carry the session's CSRF token".into(),
                ));
            }
            if let Some(origin) = req.headers().get(header::ORIGIN)
                && !same_origin(origin, req.headers().get(header::HOST))
            {
                return Err(Refused::Csrf(
                    "cross-origin request refused (Origin is not this console)".into(),
                ));
            }
        }
        Ok((principal, csrf, key))
    }
}

fn same_origin(origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
    let (Ok(o), Some(Ok(h))) = (origin.to_str(), host.map(|h| h.to_str())) else {
        return false;
    };
    let rest = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"));
    rest == Some(h)
}

fn secure(st: &Sessions, headers: &axum::http::HeaderMap) -> bool {
    st.settings.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn set_cookie(value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let mut c = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/");
    match max_age {
        Some(s) => c.push_str(&format!("; Max-Age={s}")),
        None => c.push_str("; Max-Age=0"),
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie is ASCII")
}

fn me_json(st: &Sessions, p: &Principal, csrf: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "principal": p.id,
        "groups": p.groups,
        "on_behalf_of": p.on_behalf_of,
        "auditor": is_auditor(p, &st.settings.auditors),
        "csrf_token": csrf,
    })
}

/// `POST /api/v1/login`.
pub(crate) async fn login<A: Authenticator>(
    State(st): State<AppState<A>>,
    req: Request,
) -> Response {
    let client = crate::client_of(&req);
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let secure = secure(&st.console, req.headers());
    if !json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_request",
            "send JSON: {\"credential\": \"...\"}",
        );
    }
    let body: Bytes = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad_request",
                "body too large",
            );
        }
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Login {
        credential: String,
    }
    let Ok(l) = serde_json::from_slice::<Login>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "send JSON: {\"credential\": \"...\"}",
        );
    };
    let cred = l.credential.trim();
    if cred.is_empty() {
        return crate::unauthenticated("paste a Warden key or a JWT".into());
    }
    match st.auth.authenticate(cred, &client).await {
        Ok(p) => {
            let (token, csrf) = st.console.create(p.clone());
            tracing::info!(principal = %p.id, %client, "console sign-in");
            let mut r = axum::Json(me_json(&st.console, &p, Some(&csrf))).into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                set_cookie(&token, Some(st.console.settings.lifetime.as_secs()), secure),
            );
            r
        }
        Err(reason) => {
            tracing::warn!(%client, %reason, "console sign-in refused");
            crate::unauthenticated(format!("credential rejected: {reason}"))
        }
    }
}

/// `POST /api/v1/logout` (behind the auth layer: CSRF checked).
pub(crate) async fn logout<A: Authenticator>(
    State(st): State<AppState<A>>,
    req: Request,
) -> Response {
    if let Some(t) = cookie_token(req.headers()) {
        st.console.remove(&t);
    }
    let secure = secure(&st.console, req.headers());
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", None, secure));
    r
}

/// `GET /api/v1/me`.
pub(crate) async fn me<A: Authenticator>(
    State(st): State<AppState<A>>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(c): axum::Extension<Caller>,
) -> Response {
    axum::Json(me_json(&st.console, &p, c.csrf.as_deref())).into_response()
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const CONSOLE_JS: &str = include_str!("../assets/console.js");
const CONSOLE_CSS: &str = include_str!("../assets/console.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The console's static routes.
pub(crate) fn assets() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/console.js",
            get(|| async { asset(CONSOLE_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console.css",
            get(|| async { asset(CONSOLE_CSS, "text/css; charset=utf-8") }),
        )
}

/// Headers on every answer of the admin listener: no framing, no sniffing, no referrer,
/// a strict same-origin CSP for the console, and no caching of API answers.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    if api && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, groups: &[&str]) -> Principal {
        Principal {
            id: id.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            auth: warden_core::AuthInfo {
                method: warden_core::AuthMethod::WardenKey,
                issuer: None,
                subject: None,
            },
            on_behalf_of: None,
        }
    }

    fn req(
        method: &str,
        cookie: Option<&str>,
        csrf: Option<&str>,
        origin: Option<&str>,
    ) -> Request {
        let mut b = axum::http::Request::builder()
            .method(method)
            .uri("/api/v1/x")
            .header("host", "127.0.0.1:8081");
        if let Some(c) = cookie {
            b = b.header("cookie", format!("other=1; {COOKIE}={c}"));
        }
        if let Some(t) = csrf {
            b = b.header("x-csrf-token", t);
        }
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn sessions_csrf_origin_and_expiry() {
        let s = Sessions::new(ConsoleSettings::default());
        let (token, csrf) = s.create(p("user:dana", &["dba"]));
        assert!(matches!(
            s.check(&req("GET", None, None, None)),
            Err(Refused::NoSession)
        ));
        assert!(matches!(
            s.check(&req("GET", Some("forged"), None, None)),
            Err(Refused::NoSession)
        ));
        let (who, c, key) = s.check(&req("GET", Some(&token), None, None)).ok().unwrap();
        assert_eq!((who.id.as_str(), c.as_str()), ("user:dana", csrf.as_str()));
        assert!(s.is_open(&key));
        assert!(matches!(
            s.check(&req("POST", Some(&token), None, None)),
            Err(Refused::Csrf(_))
        ));
        assert!(matches!(
            s.check(&req("POST", Some(&token), Some("wrong"), None)),
            Err(Refused::Csrf(_))
        ));
        assert!(matches!(
            s.check(&req(
                "POST",
                Some(&token),
                Some(&csrf),
                Some("http://evil.example")
            )),
            Err(Refused::Csrf(_))
        ));
        assert!(
            s.check(&req(
                "POST",
                Some(&token),
                Some(&csrf),
                Some("http://127.0.0.1:8081")
            ))
            .is_ok()
        );
        s.remove(&token);
        assert!(!s.is_open(&key));
        assert!(matches!(
            s.check(&req("GET", Some(&token), None, None)),
            Err(Refused::NoSession)
        ));

        let (token, _) = s.create(p("user:dana", &[]));
        let key = digest(&token);
        let seen = |s: &Sessions| s.lock()[&key].last_seen;
        let before = seen(&s);
        std::thread::sleep(Duration::from_millis(5));
        let mut bg = req("GET", Some(&token), None, None);
        bg.headers_mut()
            .insert("x-warden-background", HeaderValue::from_static("1"));
        assert!(s.check(&bg).is_ok());
        assert_eq!(seen(&s), before, "polling does not count as activity");
        assert!(s.check(&req("GET", Some(&token), None, None)).is_ok());
        assert!(seen(&s) > before);

        let short = Sessions::new(ConsoleSettings {
            idle: Duration::ZERO,
            ..Default::default()
        });
        let (t, _) = short.create(p("user:dana", &[]));
        assert!(matches!(
            short.check(&req("GET", Some(&t), None, None)),
            Err(Refused::NoSession)
        ));
    }

    #[test]
    fn auditors() {
        assert!(is_auditor(&p("user:dana", &[]), &[]));
        assert!(!is_auditor(&p("agent:reporter", &["agents"]), &[]));
        let only = vec!["group:audit".to_string()];
        assert!(!is_auditor(&p("user:dana", &["dba"]), &only));
        assert!(is_auditor(&p("user:ann", &["audit"]), &only));
        assert!(is_auditor(&p("agent:x", &[]), &["*".to_string()]));
    }

    #[test]
    fn cookie_flags() {
        let c = set_cookie("abc", Some(60), true);
        let c = c.to_str().unwrap();
        for flag in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Max-Age=60",
            "Path=/",
        ] {
            assert!(c.contains(flag), "{c}");
        }
        assert!(
            !set_cookie("abc", Some(60), false)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }
}
