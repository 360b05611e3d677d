//! Server side of SCRAM-SHA-256. STUB: to be implemented.

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

/// Drives one SCRAM-SHA-256 exchange (mechanism `SCRAM-SHA-256`, no channel binding).
pub struct ScramServer {
    _private: (),
}

impl ScramServer {
    /// `salt`/`iterations` are sent to the client; `candidates` may be empty (unknown
    /// principal: the exchange then fails at the proof, like a wrong password).
    pub fn new(_salt: &[u8], _iterations: u32, _candidates: Vec<Candidate>) -> ScramServer {
        todo!()
    }
    /// Handle client-first-message (the SASLInitialResponse data); returns server-first-message.
    pub fn client_first(&mut self, _msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        todo!()
    }
    /// Handle client-final-message (SASLResponse data); on success returns the matching
    /// key id and the server-final-message (`v=...`) to send in AuthenticationSASLFinal.
    pub fn client_final(&mut self, _msg: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        todo!()
    }
}
