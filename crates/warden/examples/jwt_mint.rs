//! Mint a test JWT signed with a PEM private key (for end-to-end tests of OIDC login):
//! `jwt_mint KEY.pem KID ISS AUD SUB [GROUPS_CSV] [ACT_SUB] [EXP_SECS]` prints the token.
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 5 {
        eprintln!("usage: jwt_mint KEY.pem KID ISS AUD SUB [GROUPS_CSV] [ACT_SUB] [EXP_SECS]");
        std::process::exit(2);
    }
    let pem = std::fs::read(&a[0]).expect("read key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let exp_secs: i64 = a.get(7).and_then(|s| s.parse().ok()).unwrap_or(600);
    let groups: Vec<&str> = a
        .get(5)
        .map(|g| g.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let mut claims = json!({
        "iss": a[2], "aud": a[3], "sub": a[4], "groups": groups,
        "iat": now, "nbf": now - 5, "exp": now + exp_secs,
    });
    if let Some(act) = a.get(6).filter(|s| !s.is_empty()) {
        claims["act"] = json!({ "sub": act });
    }
    let (alg, key) =
        if String::from_utf8_lossy(&pem).contains("EC PRIVATE") || a[1].starts_with("ec") {
            (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(&pem).expect("EC key"),
            )
        } else {
            (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
            )
        };
    let mut header = Header::new(alg);
    header.kid = Some(a[1].clone());
    println!("{}", encode(&header, &claims, &key).expect("sign"));
}
