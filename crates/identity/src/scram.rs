//! Server side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it: mechanism
//! `SCRAM-SHA-256` only (never `-PLUS`), the user name in the client-first-message is
//! ignored (libpq sends `n=`; the principal comes from the startup packet).
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::keys::{hmac_sha256, sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported on this connection")]
    ChannelBindingUnsupported,
    #[error("password authentication failed")]
    BadProof,
    #[error("SCRAM messages out of order")]
    OutOfOrder,
}

/// One candidate verifier the client may hold (one per active key of the principal).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub key_id: String,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

/// Where the exchange stands.
enum State {
    /// Waiting for client-first-message.
    Initial,
    /// server-first-message sent; waiting for client-final-message.
    SentServerFirst {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    /// Finished (successfully or not); any further message is out of order.
    Done,
}

/// Drives one SCRAM-SHA-256 exchange (mechanism `SCRAM-SHA-256`, no channel binding).
pub struct ScramServer {
    salt: Vec<u8>,
    iterations: u32,
    candidates: Vec<Candidate>,
    state: State,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer")
            .field("iterations", &self.iterations)
            .field("candidates", &self.candidates.len())
            .finish_non_exhaustive()
    }
}

/// Bytes of randomness the server adds to the client's nonce.
const SERVER_NONCE_BYTES: usize = 18;

impl ScramServer {
    /// `salt`/`iterations` are sent to the client; `candidates` may be empty (unknown
    /// principal: the exchange then fails at the proof, like a wrong password).
    pub fn new(salt: &[u8], iterations: u32, candidates: Vec<Candidate>) -> ScramServer {
        ScramServer {
            salt: salt.to_vec(),
            iterations,
            candidates,
            state: State::Initial,
        }
    }

    /// Handle client-first-message (the SASLInitialResponse data); returns server-first-message.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::Initial) {
            self.state = State::Done;
            return Err(ScramError::OutOfOrder);
        }
        // Whatever happens next, a second client-first is out of order.
        self.state = State::Done;
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;

        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let (gs2_header, bare) = if let Some(rest) = msg.strip_prefix("n,") {
            ("n,,", rest)
        } else if let Some(rest) = msg.strip_prefix("y,") {
            ("y,,", rest)
        } else if msg.starts_with("p=") {
            return Err(ScramError::ChannelBindingUnsupported);
        } else {
            return Err(ScramError::Malformed("unexpected channel binding flag"));
        };
        let bare = match bare.strip_prefix(',') {
            Some(b) => b,
            None if bare.starts_with("a=") => {
                return Err(ScramError::Malformed(
                    "authorization identity is not supported",
                ));
            }
            None => return Err(ScramError::Malformed("bad GS2 header")),
        };

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut attrs = bare.split(',');
        let user = attrs.next().unwrap_or("");
        if user.starts_with("m=") {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        if !user.starts_with("n=") {
            return Err(ScramError::Malformed("expected user name attribute"));
        }
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("expected nonce attribute"))?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(is_printable) {
            return Err(ScramError::Malformed("invalid nonce"));
        }
        // Optional extensions after the nonce are ignored (as PostgreSQL does), but they
        // must at least look like attributes.
        for ext in attrs {
            if !is_attr(ext) {
                return Err(ScramError::Malformed("invalid attribute"));
            }
        }

        let mut rnd = [0u8; SERVER_NONCE_BYTES];
        rand::rng().fill_bytes(&mut rnd);
        let nonce = format!("{client_nonce}{}", STANDARD.encode(rnd));
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&self.salt),
            self.iterations
        );
        self.state = State::SentServerFirst {
            gs2_header: gs2_header.to_string(),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first.into_bytes())
    }

    /// Handle client-final-message (SASLResponse data); on success returns the matching
    /// key id and the server-final-message (`v=...`) to send in AuthenticationSASLFinal.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let State::SentServerFirst {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;

        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let (without_proof, proof_b64) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("expected proof attribute"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("expected channel binding attribute"))?;
        let cbind = STANDARD
            .decode(cbind)
            .map_err(|_| ScramError::Malformed("invalid channel binding"))?;
        if cbind != gs2_header.as_bytes() {
            if cbind.starts_with(b"p=") {
                return Err(ScramError::ChannelBindingUnsupported);
            }
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        let got_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("expected nonce attribute"))?;
        if got_nonce != nonce {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        for ext in attrs {
            if !is_attr(ext) {
                return Err(ScramError::Malformed("invalid attribute"));
            }
        }
        let proof = STANDARD
            .decode(proof_b64)
            .map_err(|_| ScramError::Malformed("invalid proof"))?;
        let proof: [u8; 32] = proof
            .try_into()
            .map_err(|_| ScramError::Malformed("invalid proof length"))?;

        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");

        // Try every candidate, whichever matches, so timing reveals nothing about which
        // (or whether one) matched.
        let mut found = subtle::Choice::from(0);
        let mut index: u64 = 0;
        for (i, c) in self.candidates.iter().enumerate() {
            let signature = hmac_sha256(&c.stored_key, auth_message.as_bytes());
            let mut client_key = [0u8; 32];
            for (k, (p, s)) in client_key
                .iter_mut()
                .zip(proof.iter().zip(signature.iter()))
            {
                *k = p ^ s;
            }
            let hit = sha256(&client_key).ct_eq(&c.stored_key) & !found;
            index.conditional_assign(&(i as u64), hit);
            found |= hit;
        }
        if !bool::from(found) {
            return Err(ScramError::BadProof);
        }
        let c = &self.candidates[index as usize];
        let server_signature = hmac_sha256(&c.server_key, auth_message.as_bytes());
        Ok((
            c.key_id.clone(),
            format!("v={}", STANDARD.encode(server_signature)).into_bytes(),
        ))
    }
}

/// Printable per RFC 5802: %x21-2B / %x2D-7E (no comma).
fn is_printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

/// `x=value` with an ASCII letter for x.
fn is_attr(a: &str) -> bool {
    let b = a.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b'='
}
