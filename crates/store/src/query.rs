//! Reading evidence back. STUB.

#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    /// RFC 3339 bounds (inclusive since, exclusive until).
    pub since: Option<String>,
    pub until: Option<String>,
    pub principal: Option<String>,
    pub connection: Option<String>,
    pub kind: Option<String>,
    pub session_id: Option<String>,
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyProblem {
    pub seq: u64,
    pub what: String,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub records: u64,
    pub head_seq: u64,
    pub head_hash: String,
    /// First problem found, if any.
    pub problem: Option<VerifyProblem>,
}
