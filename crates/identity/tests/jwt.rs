//! OIDC JWT validation with committed test keys (see tests/fixtures/README.md).
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden_core::AuthMethod;
use warden_identity::{JwtError, JwtValidator, OidcSettings};

const ISS: &str = "https://idp.example.com";
const AUD: &str = "warden";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn settings() -> OidcSettings {
    OidcSettings {
        issuer: ISS.into(),
        audience: AUD.into(),
        jwks_url: None,
        jwks_file: Some(fixture("jwks.json")),
        groups_claim: "groups".into(),
        algorithms: vec!["RS256".into(), "ES256".into()],
        refresh_floor_secs: 300,
        leeway_secs: 30,
    }
}

fn validator() -> JwtValidator {
    JwtValidator::new(settings()).expect("validator")
}

fn now() -> i64 {
    get_current_timestamp() as i64
}

fn claims(sub: &str) -> Value {
    json!({ "iss": ISS, "aud": AUD, "sub": sub, "exp": now() + 600, "iat": now() })
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap()
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, key).unwrap()
}

fn rs256(claims: &Value) -> String {
    sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), claims)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn rs256_agent_with_act_and_groups() {
    let mut c = claims("bot-7");
    c["groups"] = json!(["agents", "readers", 5]);
    c["act"] = json!({ "sub": "alice" });
    let p = validator().validate(&rs256(&c)).await.unwrap();
    assert_eq!(p.id, "agent:bot-7");
    assert_eq!(p.groups, vec!["agents".to_string(), "readers".to_string()]);
    assert_eq!(p.on_behalf_of.as_deref(), Some("user:alice"));
    assert_eq!(p.auth.method, AuthMethod::Jwt);
    assert_eq!(p.auth.issuer.as_deref(), Some(ISS));
    assert_eq!(p.auth.subject.as_deref(), Some("bot-7"));
}

#[tokio::test]
async fn es256_user_with_space_separated_groups() {
    let mut c = claims("alice");
    c["groups"] = json!("dba  analysts");
    let token = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &c);
    let p = validator().validate(&token).await.unwrap();
    assert_eq!(p.id, "user:alice");
    assert_eq!(p.groups, vec!["dba".to_string(), "analysts".to_string()]);
    assert_eq!(p.on_behalf_of, None);
}

#[tokio::test]
async fn prefixed_subjects_and_custom_groups_claim() {
    let mut s = settings();
    s.groups_claim = "roles".into();
    let v = JwtValidator::new(s).unwrap();
    let mut c = claims("agent:etl");
    c["roles"] = json!(["etl"]);
    c["groups"] = json!(["ignored"]);
    c["act"] = json!({ "sub": "agent:orchestrator" });
    let p = v.validate(&rs256(&c)).await.unwrap();
    assert_eq!(p.id, "agent:etl");
    assert_eq!(p.groups, vec!["etl".to_string()]);
    assert_eq!(p.on_behalf_of.as_deref(), Some("agent:orchestrator"));

    let p = v.validate(&rs256(&claims("user:bob"))).await.unwrap();
    assert_eq!(p.id, "user:bob");
    assert!(p.groups.is_empty());
}

#[tokio::test]
async fn time_and_claim_checks() {
    let v = validator();
    let mut c = claims("alice");
    c["exp"] = json!(now() - 3600);
    assert!(matches!(
        v.validate(&rs256(&c)).await,
        Err(JwtError::Expired)
    ));

    let mut c = claims("alice");
    c["exp"] = json!(now() - 10); // within leeway
    assert!(v.validate(&rs256(&c)).await.is_ok());

    let mut c = claims("alice");
    c["nbf"] = json!(now() + 3600);
    assert!(matches!(
        v.validate(&rs256(&c)).await,
        Err(JwtError::NotYetValid)
    ));

    let mut c = claims("alice");
    c["iss"] = json!("https://evil.example.com");
    assert!(matches!(
        v.validate(&rs256(&c)).await,
        Err(JwtError::Claims)
    ));

    let mut c = claims("alice");
    c["aud"] = json!("someone-else");
    assert!(matches!(
        v.validate(&rs256(&c)).await,
        Err(JwtError::Claims)
    ));

    for missing in ["iss", "aud", "exp"] {
        let mut c = claims("alice");
        c.as_object_mut().unwrap().remove(missing);
        assert!(
            matches!(v.validate(&rs256(&c)).await, Err(JwtError::Claims)),
            "missing {missing}"
        );
    }

    let mut c = claims("alice");
    c.as_object_mut().unwrap().remove("sub");
    assert!(matches!(
        v.validate(&rs256(&c)).await,
        Err(JwtError::Subject)
    ));
    assert!(matches!(
        v.validate(&rs256(&claims(""))).await,
        Err(JwtError::Subject)
    ));
    let mut c = claims("alice");
    c["sub"] = json!(42);
    assert!(matches!(
        v.validate(&rs256(&c)).await,
        Err(JwtError::Subject)
    ));
}

#[tokio::test]
async fn tampered_tokens_refused() {
    let v = validator();
    let token = rs256(&claims("alice"));
    let parts: Vec<&str> = token.split('.').collect();

    // Payload swapped, signature kept.
    let forged = format!("{}.{}.{}", parts[0], b64(&claims("admin")), parts[2]);
    assert!(matches!(
        v.validate(&forged).await,
        Err(JwtError::Signature)
    ));

    // Signature bit flipped.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert!(matches!(
        v.validate(&flipped).await,
        Err(JwtError::Signature)
    ));

    assert!(matches!(
        v.validate("garbage").await,
        Err(JwtError::Malformed)
    ));
    assert!(matches!(
        v.validate("a.b.c").await,
        Err(JwtError::Malformed)
    ));
    assert!(matches!(v.validate("").await, Err(JwtError::Malformed)));
}

#[tokio::test]
async fn alg_none_refused() {
    let v = validator();
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"})),
            b64(&claims("alice"))
        );
        match v.validate(&token).await {
            Err(JwtError::Algorithm(a)) => assert_eq!(a, alg),
            other => panic!("alg {alg}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn hs256_key_confusion_refused() {
    // HS256 "signed" with the RSA public key PEM as the HMAC secret.
    let public_pem = std::fs::read(fixture("rsa_public.pem")).unwrap();
    let token = sign(
        Algorithm::HS256,
        Some("rsa-1"),
        &EncodingKey::from_secret(&public_pem),
        &claims("admin"),
    );
    assert!(
        matches!(validator().validate(&token).await, Err(JwtError::Algorithm(a)) if a == "HS256")
    );

    // And a config that would allow it is refused outright.
    for bad in ["HS256", "HS384", "HS512", "none"] {
        let mut s = settings();
        s.algorithms = vec!["RS256".into(), bad.into()];
        assert!(
            matches!(JwtValidator::new(s), Err(JwtError::Algorithm(_))),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn algorithm_pinning_and_key_fit() {
    // ES256 token while only RS256 is allowed.
    let mut s = settings();
    s.algorithms = vec!["RS256".into()];
    let v = JwtValidator::new(s).unwrap();
    let token = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &claims("alice"));
    assert!(matches!(
        v.validate(&token).await,
        Err(JwtError::Algorithm(_))
    ));

    // RS256 token pointing at the EC key: the JWK's alg/kty does not fit.
    let token = sign(Algorithm::RS256, Some("ec-1"), &rsa_key(), &claims("alice"));
    assert!(matches!(
        validator().validate(&token).await,
        Err(JwtError::Algorithm(_))
    ));

    // A JWKS whose RSA key claims another alg.
    let dir = tempfile::tempdir().unwrap();
    let mut jwks: Value =
        serde_json::from_slice(&std::fs::read(fixture("jwks.json")).unwrap()).unwrap();
    jwks["keys"][0]["alg"] = json!("PS256");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, serde_json::to_vec(&jwks).unwrap()).unwrap();
    let mut s = settings();
    s.jwks_file = Some(path);
    let v = JwtValidator::new(s).unwrap();
    assert!(matches!(
        v.validate(&rs256(&claims("alice"))).await,
        Err(JwtError::Algorithm(_))
    ));
}

#[tokio::test]
async fn kid_handling() {
    // Two keys: kid required.
    let token = sign(Algorithm::RS256, None, &rsa_key(), &claims("alice"));
    assert!(matches!(
        validator().validate(&token).await,
        Err(JwtError::UnknownKid(_))
    ));

    // One key: kid optional.
    let dir = tempfile::tempdir().unwrap();
    let mut jwks: Value =
        serde_json::from_slice(&std::fs::read(fixture("jwks.json")).unwrap()).unwrap();
    jwks["keys"].as_array_mut().unwrap().truncate(1);
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, serde_json::to_vec(&jwks).unwrap()).unwrap();
    let mut s = settings();
    s.jwks_file = Some(path);
    let v = JwtValidator::new(s).unwrap();
    assert_eq!(v.validate(&token).await.unwrap().id, "user:alice");
}

#[tokio::test]
async fn unknown_kid_refreshes_once_within_floor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let full: Value =
        serde_json::from_slice(&std::fs::read(fixture("jwks.json")).unwrap()).unwrap();
    let ec_only = json!({ "keys": [full["keys"][1].clone()] });
    std::fs::write(&path, serde_json::to_vec(&ec_only).unwrap()).unwrap();

    let mut s = settings();
    s.jwks_file = Some(path.clone());
    let v = Arc::new(JwtValidator::new(s.clone()).unwrap());
    assert_eq!(v.jwks_loads(), 1);
    let token = rs256(&claims("alice"));

    // Unknown kid: one refresh (file still lacks it).
    assert!(matches!(v.validate(&token).await, Err(JwtError::UnknownKid(k)) if k == "rsa-1"));
    assert_eq!(v.jwks_loads(), 2);

    // Key rotated in, but we are inside the floor: no refresh, still unknown.
    std::fs::write(&path, serde_json::to_vec(&full).unwrap()).unwrap();
    let other = sign(
        Algorithm::RS256,
        Some("rsa-2"),
        &rsa_key(),
        &claims("alice"),
    );
    assert!(matches!(
        v.validate(&other).await,
        Err(JwtError::UnknownKid(_))
    ));
    assert!(matches!(
        v.validate(&token).await,
        Err(JwtError::UnknownKid(_))
    ));
    assert_eq!(v.jwks_loads(), 2);

    // Known kids keep working without any load.
    let ec = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &claims("alice"));
    assert!(v.validate(&ec).await.is_ok());
    assert_eq!(v.jwks_loads(), 2);

    // With floor 0 the rotation is picked up; concurrent callers share one refresh.
    std::fs::write(&path, serde_json::to_vec(&ec_only).unwrap()).unwrap();
    s.refresh_floor_secs = 0;
    let v = Arc::new(JwtValidator::new(s).unwrap());
    std::fs::write(&path, serde_json::to_vec(&full).unwrap()).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let v = v.clone();
        let t = token.clone();
        tasks.push(tokio::spawn(async move { v.validate(&t).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().id, "user:alice");
    }
    assert_eq!(v.jwks_loads(), 2, "one initial load + one shared refresh");
}

#[test]
fn construction_errors() {
    let mut s = settings();
    s.jwks_file = None;
    assert!(matches!(JwtValidator::new(s), Err(JwtError::Jwks(_))));

    let mut s = settings();
    s.jwks_file = Some(fixture("does-not-exist.json"));
    assert!(matches!(JwtValidator::new(s), Err(JwtError::Jwks(_))));

    let mut s = settings();
    s.jwks_file = Some(fixture("rsa_public.pem"));
    assert!(matches!(JwtValidator::new(s), Err(JwtError::Jwks(_))));

    let mut s = settings();
    s.jwks_url = Some("http://127.0.0.1:1/jwks".into());
    assert!(
        matches!(JwtValidator::new(s), Err(JwtError::Jwks(_))),
        "both sources set"
    );

    let mut s = settings();
    s.jwks_file = None;
    s.jwks_url = Some("ftp://idp/jwks".into());
    assert!(matches!(JwtValidator::new(s), Err(JwtError::Jwks(_))));

    let mut s = settings();
    s.algorithms = vec![];
    assert!(JwtValidator::new(s).is_err());
}

#[derive(Clone, Copy)]
enum Framing {
    ContentLength,
    Chunked,
    Close,
}

/// A one-route HTTP server answering every request with `body`; counts requests.
async fn serve_jwks(body: Vec<u8>, framing: Framing) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            h.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                assert!(req.starts_with(b"GET /.well-known/jwks.json HTTP/1.1\r\n"));
                let mut resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_vec();
                match framing {
                    Framing::ContentLength => {
                        resp.extend_from_slice(
                            format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                        );
                        resp.extend_from_slice(&body);
                    }
                    Framing::Chunked => {
                        resp.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                        for chunk in body.chunks(100) {
                            resp.extend_from_slice(
                                format!("{:x};ext=1\r\n", chunk.len()).as_bytes(),
                            );
                            resp.extend_from_slice(chunk);
                            resp.extend_from_slice(b"\r\n");
                        }
                        resp.extend_from_slice(b"0\r\n\r\n");
                    }
                    Framing::Close => {
                        resp.extend_from_slice(b"Connection: close\r\n\r\n");
                        resp.extend_from_slice(&body);
                    }
                }
                let _ = sock.write_all(&resp).await;
                // Keep the connection open for Content-Length/chunked: the client must
                // not wait for EOF.
                if !matches!(framing, Framing::Close) {
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                }
            });
        }
    });
    (format!("http://{addr}/.well-known/jwks.json"), hits)
}

#[tokio::test]
async fn jwks_url_over_http() {
    let body = std::fs::read(fixture("jwks.json")).unwrap();
    for framing in [Framing::ContentLength, Framing::Chunked, Framing::Close] {
        let (url, hits) = serve_jwks(body.clone(), framing).await;
        let mut s = settings();
        s.jwks_file = None;
        s.jwks_url = Some(url);
        let v = JwtValidator::new(s).unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 0, "fetched lazily");
        let started = std::time::Instant::now();
        let p = v.validate(&rs256(&claims("alice"))).await.unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(4));
        assert_eq!(p.id, "user:alice");
        let ec = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &claims("bob"));
        assert_eq!(v.validate(&ec).await.unwrap().id, "user:bob");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(v.jwks_loads(), 1);
    }
}

#[tokio::test]
async fn jwks_url_failures() {
    // https is not supported yet, with a clear message.
    let mut s = settings();
    s.jwks_file = None;
    s.jwks_url = Some("https://idp.example.com/jwks".into());
    let v = JwtValidator::new(s).unwrap();
    match v.validate(&rs256(&claims("alice"))).await {
        Err(JwtError::Jwks(m)) => assert!(m.contains("TLS"), "{m}"),
        other => panic!("{other:?}"),
    }

    // Oversized body.
    let (url, _) = serve_jwks(vec![b' '; 2 * 1024 * 1024], Framing::ContentLength).await;
    let mut s = settings();
    s.jwks_file = None;
    s.jwks_url = Some(url);
    let v = JwtValidator::new(s).unwrap();
    assert!(matches!(
        v.validate(&rs256(&claims("alice"))).await,
        Err(JwtError::Jwks(_))
    ));

    // Not a JWKS.
    let (url, _) = serve_jwks(b"<html>hi</html>".to_vec(), Framing::Chunked).await;
    let mut s = settings();
    s.jwks_file = None;
    s.jwks_url = Some(url);
    let v = JwtValidator::new(s).unwrap();
    let token = rs256(&claims("alice"));
    match v.validate(&token).await {
        Err(e @ JwtError::Jwks(_)) => assert!(!e.to_string().contains(&token[..20])),
        other => panic!("{other:?}"),
    }
}
