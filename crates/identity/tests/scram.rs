//! SCRAM-SHA-256 server against the client of the `postgres-protocol` crate.
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use proptest::prelude::*;
use warden_identity::keys::SCRAM_ITERATIONS;
use warden_identity::scram::{Candidate, ScramError, ScramServer};
use warden_identity::{GeneratedKey, generate_key, scram_salt_for};

fn candidate(k: &GeneratedKey) -> Candidate {
    Candidate {
        key_id: k.record.id.clone(),
        stored_key: k.record.scram_stored_key,
        server_key: k.record.scram_server_key,
    }
}

fn server_for(principal: &str, candidates: Vec<Candidate>) -> ScramServer {
    ScramServer::new(&scram_salt_for(principal), SCRAM_ITERATIONS, candidates)
}

/// Run a whole exchange; returns the server's result and whether the client accepted the
/// server-final message.
fn exchange(
    server: &mut ScramServer,
    password: &str,
    cb: ChannelBinding,
) -> Result<String, ScramError> {
    let mut client = ScramSha256::new(password.as_bytes(), cb);
    let server_first = server.client_first(client.message())?;
    client
        .update(&server_first)
        .expect("client accepts server-first");
    let (key_id, server_final) = server.client_final(client.message())?;
    client
        .finish(&server_final)
        .expect("client accepts server-final");
    Ok(key_id)
}

#[test]
fn round_trip_with_postgres_client() {
    let key = generate_key("agent:bot", &[], None);
    let mut server = server_for("agent:bot", vec![candidate(&key)]);
    assert_eq!(
        exchange(&mut server, &key.presented, ChannelBinding::unsupported()),
        Ok(key.record.id.clone())
    );
}

#[test]
fn round_trip_with_y_flag() {
    // Client supports channel binding but thinks the server does not: `y,,` / `eSws`.
    let key = generate_key("agent:bot", &[], None);
    let mut server = server_for("agent:bot", vec![candidate(&key)]);
    assert_eq!(
        exchange(&mut server, &key.presented, ChannelBinding::unrequested()),
        Ok(key.record.id.clone())
    );
}

#[test]
fn wrong_password_is_bad_proof() {
    let key = generate_key("agent:bot", &[], None);
    let other = generate_key("agent:bot", &[], None);
    let mut server = server_for("agent:bot", vec![candidate(&key)]);
    assert_eq!(
        exchange(&mut server, &other.presented, ChannelBinding::unsupported()),
        Err(ScramError::BadProof)
    );
    let mut server = server_for("agent:bot", vec![candidate(&key)]);
    assert_eq!(
        exchange(&mut server, "not-a-key", ChannelBinding::unsupported()),
        Err(ScramError::BadProof)
    );
}

#[test]
fn unknown_principal_fails_at_proof() {
    let key = generate_key("agent:bot", &[], None);
    let mut server = server_for("agent:nobody", vec![]);
    assert_eq!(
        exchange(&mut server, &key.presented, ChannelBinding::unsupported()),
        Err(ScramError::BadProof)
    );
}

#[test]
fn either_of_two_keys_works() {
    let a = generate_key("user:alice", &[], None);
    let b = generate_key("user:alice", &[], None);
    let cands = vec![candidate(&a), candidate(&b)];
    let mut server = server_for("user:alice", cands.clone());
    assert_eq!(
        exchange(&mut server, &a.presented, ChannelBinding::unsupported()),
        Ok(a.record.id.clone())
    );
    let mut server = server_for("user:alice", cands.clone());
    assert_eq!(
        exchange(&mut server, &b.presented, ChannelBinding::unsupported()),
        Ok(b.record.id.clone())
    );
    let c = generate_key("user:alice", &[], None);
    let mut server = server_for("user:alice", cands);
    assert_eq!(
        exchange(&mut server, &c.presented, ChannelBinding::unsupported()),
        Err(ScramError::BadProof)
    );
}

#[test]
fn server_first_shape() {
    let mut server = server_for("agent:bot", vec![]);
    let sf = String::from_utf8(server.client_first(b"n,,n=,r=abcDEF123").unwrap()).unwrap();
    let parts: Vec<&str> = sf.split(',').collect();
    assert_eq!(parts.len(), 3);
    let nonce = parts[0].strip_prefix("r=abcDEF123").unwrap();
    assert_eq!(STANDARD.decode(nonce).unwrap().len(), 18);
    assert_eq!(
        parts[1],
        format!("s={}", STANDARD.encode(scram_salt_for("agent:bot")))
    );
    assert_eq!(parts[2], "i=4096");
}

#[test]
fn client_first_rejections() {
    let cases: &[(&[u8], ScramError)] = &[
        (
            b"p=tls-server-end-point,,n=,r=abc",
            ScramError::ChannelBindingUnsupported,
        ),
        (
            b"n,,m=ext,n=,r=abc",
            ScramError::Malformed("mandatory extensions are not supported"),
        ),
        (
            b"n,a=someone,n=,r=abc",
            ScramError::Malformed("authorization identity is not supported"),
        ),
        (
            b"x,,n=,r=abc",
            ScramError::Malformed("unexpected channel binding flag"),
        ),
        (
            b"n,,r=abc",
            ScramError::Malformed("expected user name attribute"),
        ),
        (b"n,,n=", ScramError::Malformed("expected nonce attribute")),
        (b"n,,n=,r=", ScramError::Malformed("invalid nonce")),
        (b"n,,n=,r=a\x01b", ScramError::Malformed("invalid nonce")),
        (b"n,,n=,r=\xff", ScramError::Malformed("not UTF-8")),
        (
            b"",
            ScramError::Malformed("unexpected channel binding flag"),
        ),
    ];
    for (msg, want) in cases {
        let mut server = server_for("agent:bot", vec![]);
        assert_eq!(
            server.client_first(msg).unwrap_err(),
            *want,
            "{}",
            String::from_utf8_lossy(msg)
        );
    }
}

/// Start an exchange by hand; returns (server, full nonce).
fn started(key: &GeneratedKey) -> (ScramServer, String) {
    let mut server = server_for("agent:bot", vec![candidate(key)]);
    let sf = String::from_utf8(server.client_first(b"n,,n=,r=clientnonce").unwrap()).unwrap();
    let nonce = sf
        .split(',')
        .next()
        .unwrap()
        .strip_prefix("r=")
        .unwrap()
        .to_string();
    (server, nonce)
}

#[test]
fn client_final_rejections() {
    let key = generate_key("agent:bot", &[], None);
    let proof = STANDARD.encode([0u8; 32]);

    let (mut s, nonce) = started(&key);
    assert_eq!(
        s.client_final(format!("c=eSws,r={nonce},p={proof}").as_bytes())
            .unwrap_err(),
        ScramError::Malformed("channel binding does not match")
    );
    let (mut s, nonce) = started(&key);
    assert_eq!(
        s.client_final(format!("c=biws,r={nonce}x,p={proof}").as_bytes())
            .unwrap_err(),
        ScramError::Malformed("nonce does not match")
    );
    let (mut s, nonce) = started(&key);
    assert_eq!(
        s.client_final(format!("c=biws,r={nonce},p=AAAA").as_bytes())
            .unwrap_err(),
        ScramError::Malformed("invalid proof length")
    );
    let (mut s, nonce) = started(&key);
    assert_eq!(
        s.client_final(format!("c=biws,r={nonce},p=!!").as_bytes())
            .unwrap_err(),
        ScramError::Malformed("invalid proof")
    );
    let (mut s, nonce) = started(&key);
    assert_eq!(
        s.client_final(format!("c=biws,r={nonce}").as_bytes())
            .unwrap_err(),
        ScramError::Malformed("expected proof attribute")
    );
    let (mut s, nonce) = started(&key);
    assert_eq!(
        s.client_final(format!("c=biws,r={nonce},p={proof}").as_bytes())
            .unwrap_err(),
        ScramError::BadProof
    );
    let (mut s, nonce) = started(&key);
    let cb = STANDARD.encode("p=tls-server-end-point,,");
    assert_eq!(
        s.client_final(format!("c={cb},r={nonce},p={proof}").as_bytes())
            .unwrap_err(),
        ScramError::ChannelBindingUnsupported
    );
}

#[test]
fn out_of_order() {
    let key = generate_key("agent:bot", &[], None);
    let mut server = server_for("agent:bot", vec![candidate(&key)]);
    assert_eq!(
        server.client_final(b"c=biws,r=x,p=AAAA").unwrap_err(),
        ScramError::OutOfOrder
    );

    let (mut server, _) = started(&key);
    assert_eq!(
        server.client_first(b"n,,n=,r=again").unwrap_err(),
        ScramError::OutOfOrder
    );

    // After a finished exchange, nothing more is accepted.
    let mut server = server_for("agent:bot", vec![candidate(&key)]);
    let mut client = ScramSha256::new(key.presented.as_bytes(), ChannelBinding::unsupported());
    let sf = server.client_first(client.message()).unwrap();
    client.update(&sf).unwrap();
    let final_msg = client.message().to_vec();
    assert!(server.client_final(&final_msg).is_ok());
    assert_eq!(
        server.client_final(&final_msg).unwrap_err(),
        ScramError::OutOfOrder
    );

    // A failed final does not allow a second try.
    let (mut server, nonce) = started(&key);
    let proof = STANDARD.encode([0u8; 32]);
    assert_eq!(
        server
            .client_final(format!("c=biws,r={nonce},p={proof}").as_bytes())
            .unwrap_err(),
        ScramError::BadProof
    );
    assert_eq!(
        server.client_final(b"c=biws").unwrap_err(),
        ScramError::OutOfOrder
    );
}

static KEY: std::sync::LazyLock<GeneratedKey> =
    std::sync::LazyLock::new(|| generate_key("agent:bot", &[], None));

proptest! {
    #[test]
    fn client_first_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut server = server_for("agent:bot", vec![]);
        let _ = server.client_first(&msg);
        let _ = server.client_final(&msg);
    }

    #[test]
    fn client_final_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (mut server, _) = started(&KEY);
        let _ = server.client_final(&msg);
    }

    #[test]
    fn client_final_structured_never_panics(
        cb in "[A-Za-z0-9+/=]{0,12}",
        extra in "[ -~]{0,40}",
        proof in "[A-Za-z0-9+/=,]{0,60}",
    ) {
        let (mut server, nonce) = started(&KEY);
        let msg = format!("c={cb},r={nonce}{extra},p={proof}");
        prop_assert!(server.client_final(msg.as_bytes()).is_err());
    }
}
