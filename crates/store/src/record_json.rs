//! The canonical JSON of an [`EvidenceRecord`], written field by field.
//!
//! The same bytes as [`crate::chain::canonical_json`] (serialize to a `serde_json::Value`,
//! then write it sorted), without building the `Value` tree: that cost a map node and a
//! string allocation per field on every append (~10 % of the gateway's CPU per statement).
//! Fields are written in byte order of their names. `seq` and `prev_hash` are only known
//! under the ledger's lock, and `hash` only after hashing, so [`prepare`] leaves their
//! places empty and [`Prepared::seal`] splices them in.
//!
//! Every field of every evidence type is written here by hand: the test
//! `matches_the_value_path_for_every_field` builds a record with all of them set (a struct
//! literal, so a new field does not compile until it is listed) and proptests compare
//! arbitrary records with the generic path.
use sha2::{Digest, Sha256};
use warden_core::evidence::{ActionInfo, ApprovalInfo, DecisionInfo, ResponseInfo};
use warden_core::{AuthMethod, Effect, EvidenceRecord, Principal};

use crate::chain::{write_hash_member, write_str, write_value};

/// Stands in for a SHA-256 in hex while the body around it is hashed.
const HASH_PLACEHOLDER: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A record's canonical JSON without `hash`, `prev_hash` and `seq`, and where they go.
#[derive(Debug, Clone)]
pub struct Prepared {
    text: String,
    /// Byte offsets in `text` where `"hash"`, `"prev_hash"` and `"seq"` belong.
    at_hash: usize,
    at_prev: usize,
    at_seq: usize,
}

impl Prepared {
    /// The record's hash and its stored body (canonical, with `"hash"` in its place),
    /// once the chain gave it `seq` and `prev_hash`.
    pub fn seal(&self, seq: u64, prev_hash: &str) -> (String, String) {
        use std::fmt::Write;
        let t = &self.text;
        // Always something before "prev_hash" (`id`, `kind`) and "seq" (`prev_hash`).
        let (a, b, c, d) = (
            &t[..self.at_hash],
            &t[self.at_hash..self.at_prev],
            &t[self.at_prev..self.at_seq],
            &t[self.at_seq..],
        );
        // The body is laid out once, with a placeholder `"hash"` member (its length is the
        // real one's: 64 hex digits, the same commas); the hash covers everything but that
        // member, which is then overwritten in place — no temporary strings.
        let mut body = String::with_capacity(t.len() + prev_hash.len() + 128);
        body.push_str(a);
        let gap_at = body.len();
        write_hash_member(&mut body, a, HASH_PLACEHOLDER, b);
        let gap = body.len() - gap_at;
        body.push_str(b);
        body.push_str(",\"prev_hash\":");
        write_str(&mut body, prev_hash);
        body.push_str(c);
        let _ = write!(body, ",\"seq\":{seq}");
        body.push_str(d);
        let mut h = Sha256::new();
        h.update(&body.as_bytes()[..gap_at]);
        h.update(&body.as_bytes()[gap_at + gap..]);
        let hash = crate::chain::hex_lower(&h.finalize());
        // `b` (never empty: `id`, `kind`) starts with `,"id"` unless `a` is just `{`.
        let mut member = String::with_capacity(gap);
        write_hash_member(&mut member, a, &hash, b);
        // Same length as the gap, so nothing moves (and were it not, still correct).
        body.replace_range(gap_at..gap_at + gap, &member);
        (hash, body)
    }
}

/// Writes the members of one JSON object, commas included.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }

    /// Start member `name` (a plain ASCII key) and return the buffer for its value.
    fn key(&mut self, name: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
        self.out
    }

    fn str(&mut self, name: &str, v: &str) {
        write_str(self.key(name), v);
    }

    fn opt_str(&mut self, name: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.str(name, v);
        }
    }

    fn u64(&mut self, name: &str, v: u64) {
        use std::fmt::Write;
        let _ = write!(self.key(name), "{v}");
    }

    fn strs(&mut self, name: &str, v: &[String]) {
        let out = self.key(name);
        out.push('[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(out, s);
        }
        out.push(']');
    }

    fn close(self) {
        self.out.push('}');
    }
}

/// Lay out `rec` (its `seq`, `prev_hash` and `hash` are ignored).
pub fn prepare(rec: &EvidenceRecord) -> Prepared {
    let mut text = String::with_capacity(1024);
    let mut o = Obj::open(&mut text);
    if let Some(a) = &rec.action {
        action(o.key("action"), a);
    }
    if let Some(a) = &rec.approval {
        approval(o.key("approval"), a);
    }
    o.opt_str("client", &rec.client);
    o.opt_str("connection", &rec.connection);
    if let Some(d) = &rec.decision {
        decision(o.key("decision"), d);
    }
    o.opt_str("detail", &rec.detail);
    let at_hash = o.out.len();
    o.str("id", &rec.id);
    o.str("kind", rec.kind.as_str());
    let at_prev = o.out.len();
    if let Some(p) = &rec.principal {
        principal(o.key("principal"), p);
    }
    o.opt_str("protocol", &rec.protocol);
    o.opt_str("purpose", &rec.purpose);
    o.opt_str("request_id", &rec.request_id);
    if let Some(r) = &rec.response {
        response(o.key("response"), r);
    }
    let at_seq = o.out.len();
    o.opt_str("session_id", &rec.session_id);
    o.str("ts", &rec.ts);
    o.close();
    Prepared {
        text,
        at_hash,
        at_prev,
        at_seq,
    }
}

fn action(out: &mut String, a: &ActionInfo) {
    let mut o = Obj::open(out);
    o.str("kind", &a.kind);
    if !a.params.is_empty() {
        let out = o.key("params");
        out.push('[');
        for (i, p) in a.params.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match p {
                Some(s) => write_str(out, s),
                None => out.push_str("null"),
            }
        }
        out.push(']');
    }
    if !a.sql_kinds.is_empty() {
        o.strs("sql_kinds", &a.sql_kinds);
    }
    if !a.tables.is_empty() {
        o.strs("tables", &a.tables);
    }
    o.str("text", &a.text);
    o.close();
}

fn approval(out: &mut String, a: &ApprovalInfo) {
    let mut o = Obj::open(out);
    o.opt_str("approver", &a.approver);
    o.opt_str("comment", &a.comment);
    o.opt_str("decided_at", &a.decided_at);
    o.opt_str("decision", &a.decision);
    o.str("id", &a.id);
    o.close();
}

fn decision(out: &mut String, d: &DecisionInfo) {
    let mut o = Obj::open(out);
    o.str("effect", effect(d.effect));
    o.opt_str("reason", &d.reason);
    o.strs("rules", &d.rules);
    o.close();
}

fn effect(e: Effect) -> &'static str {
    match e {
        Effect::Allow => "allow",
        Effect::Approve => "approve",
        Effect::Deny => "deny",
    }
}

fn principal(out: &mut String, p: &Principal) {
    let mut o = Obj::open(out);
    {
        let mut a = Obj::open(o.key("auth"));
        a.opt_str("issuer", &p.auth.issuer);
        a.str(
            "method",
            match p.auth.method {
                AuthMethod::WardenKey => "warden_key",
                AuthMethod::Jwt => "jwt",
            },
        );
        a.opt_str("subject", &p.auth.subject);
        a.close();
    }
    o.strs("groups", &p.groups);
    o.str("id", &p.id);
    o.opt_str("on_behalf_of", &p.on_behalf_of);
    o.close();
}

fn response(out: &mut String, r: &ResponseInfo) {
    let mut o = Obj::open(out);
    o.u64("bytes", r.bytes);
    if let Some(d) = r.duration_us {
        o.u64("duration_us", d);
    }
    o.opt_str("error_code", &r.error_code);
    o.opt_str("error_message", &r.error_message);
    if let Some(m) = &r.masked {
        write_value(o.key("masked"), m);
    }
    if !r.masked_values.is_empty() {
        // A BTreeMap<String, _> iterates in byte order of its keys.
        let mut m = Obj::open(o.key("masked_values"));
        for (k, v) in &r.masked_values {
            let out = m.key_escaped(k);
            use std::fmt::Write;
            let _ = write!(out, "{v}");
        }
        m.close();
    }
    o.u64("rows", r.rows);
    o.str("status", &r.status);
    o.opt_str("tag", &r.tag);
    o.close();
}

impl Obj<'_> {
    /// Start a member whose name is arbitrary text (escaped).
    fn key_escaped(&mut self, name: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        write_str(self.out, name);
        self.out.push(':');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;
    use warden_core::{AuthInfo, RecordKind};

    use super::*;
    use crate::chain::{self, GENESIS_HASH};

    /// What the ledger stored before: the generic `Value` path.
    fn via_value(rec: &EvidenceRecord, seq: u64, prev: &str) -> (String, String) {
        let mut r = rec.clone();
        r.seq = seq;
        r.prev_hash = prev.to_string();
        let mut v = serde_json::to_value(&r).unwrap();
        v.as_object_mut().unwrap().remove("hash");
        let (hash, body) = chain::hash_and_body(&v);
        assert_eq!(hash, chain::record_hash(&r));
        (hash, body)
    }

    fn full() -> EvidenceRecord {
        EvidenceRecord {
            seq: 0,
            id: "0001".into(),
            ts: "2026-11-27T10:00:00.000000000Z".into(),
            kind: RecordKind::ApprovalDecided,
            session_id: Some("s1".into()),
            principal: Some(std::sync::Arc::new(Principal {
                id: "agent:bot".into(),
                groups: vec!["agents".into(), "g\"2".into()],
                auth: AuthInfo {
                    method: AuthMethod::Jwt,
                    issuer: Some("https://idp".into()),
                    subject: Some("sub\n1".into()),
                },
                on_behalf_of: Some("user:dana".into()),
            })),
            connection: Some("orders".into()),
            protocol: Some("postgres".into()),
            purpose: Some("INC-1 \u{1} é".into()),
            client: Some("127.0.0.1:5".into()),
            action: Some(ActionInfo {
                kind: "sql".into(),
                text: "select \"x\" from t where s = 'é\n'".into(),
                params: vec![Some("1".into()), None],
                sql_kinds: vec!["select".into()],
                tables: vec!["t".into()],
            }),
            request_id: Some("0000".into()),
            decision: Some(DecisionInfo {
                effect: Effect::Approve,
                rules: vec!["r1".into()],
                reason: Some("why".into()),
            }),
            approval: Some(ApprovalInfo {
                id: "ap1".into(),
                approver: Some("user:erin".into()),
                decision: Some("approved".into()),
                decided_at: Some("2026-11-27T10:00:01.000000000Z".into()),
                comment: Some("ok".into()),
            }),
            response: Some(ResponseInfo {
                status: "ok".into(),
                tag: Some("SELECT 1".into()),
                error_code: Some("42501".into()),
                error_message: Some("no".into()),
                rows: 1,
                bytes: 99,
                duration_us: Some(12),
                masked: Some(json!({"rows": [{"z": 1, "a": [1.5, null, "x"]}], "b": true})),
                masked_values: BTreeMap::from([("email".into(), 2), ("a\"b".into(), 1)]),
            }),
            detail: Some("detail".into()),
            prev_hash: "ignored".into(),
            hash: "ignored".into(),
        }
    }

    #[test]
    fn matches_the_value_path_for_every_field() {
        let rec = full();
        for (seq, prev) in [(1, GENESIS_HASH), (u64::MAX, "ab\"c")] {
            assert_eq!(prepare(&rec).seal(seq, prev), via_value(&rec, seq, prev));
        }
        for kind in RecordKind::ALL {
            let mut bare = EvidenceRecord::new(kind);
            bare.ts = "2026-11-27T10:00:00.000000000Z".into();
            assert_eq!(prepare(&bare).seal(3, "p"), via_value(&bare, 3, "p"));
        }
    }

    prop_compose! {
        fn record()(
            kind in 0..RecordKind::ALL.len(),
            id in ".{0,12}",
            ts in ".{0,32}",
            strs in proptest::collection::vec(proptest::option::of(".{0,8}"), 8),
            params in proptest::collection::vec(proptest::option::of(".{0,6}"), 0..3),
            groups in proptest::collection::vec(".{0,6}", 0..3),
            rows in any::<u64>(),
            with in proptest::collection::vec(any::<bool>(), 5),
            masked_values in proptest::collection::btree_map(".{0,6}", any::<u64>(), 0..3),
        ) -> EvidenceRecord {
            let mut r = EvidenceRecord::new(RecordKind::ALL[kind]);
            r.id = id;
            r.ts = ts;
            r.session_id = strs[0].clone();
            r.connection = strs[1].clone();
            r.protocol = strs[2].clone();
            r.purpose = strs[3].clone();
            r.client = strs[4].clone();
            r.request_id = strs[5].clone();
            r.detail = strs[6].clone();
            if with[0] {
                r.principal = Some(std::sync::Arc::new(Principal {
                    id: strs[7].clone().unwrap_or_default(),
                    groups: groups.clone(),
                    auth: AuthInfo {
                        method: if rows % 2 == 0 { AuthMethod::Jwt } else { AuthMethod::WardenKey },
                        issuer: strs[0].clone(),
                        subject: strs[1].clone(),
                    },
                    on_behalf_of: strs[2].clone(),
                }));
            }
            if with[1] {
                r.action = Some(ActionInfo {
                    kind: "sql".into(),
                    text: strs[3].clone().unwrap_or_default(),
                    params,
                    sql_kinds: groups.clone(),
                    tables: groups,
                });
            }
            if with[2] {
                r.decision = Some(DecisionInfo {
                    effect: [Effect::Allow, Effect::Approve, Effect::Deny][(rows % 3) as usize],
                    rules: vec![strs[4].clone().unwrap_or_default()],
                    reason: strs[5].clone(),
                });
            }
            if with[3] {
                r.approval = Some(ApprovalInfo {
                    id: strs[6].clone().unwrap_or_default(),
                    approver: strs[7].clone(),
                    decision: strs[0].clone(),
                    decided_at: strs[1].clone(),
                    comment: strs[2].clone(),
                });
            }
            if with[4] {
                r.response = Some(ResponseInfo {
                    status: strs[3].clone().unwrap_or_default(),
                    tag: strs[4].clone(),
                    error_code: strs[5].clone(),
                    error_message: strs[6].clone(),
                    rows,
                    bytes: rows / 3,
                    duration_us: strs[7].as_ref().map(|s| s.len() as u64),
                    masked: strs[0].clone().map(|s| json!({"k": s, "n": rows, "a": [s, 1]})),
                    masked_values,
                });
            }
            r
        }
    }

    proptest! {
        #[test]
        fn arbitrary_records_match_the_value_path(
            rec in record(),
            seq in any::<u64>(),
            prev in ".{0,70}",
        ) {
            prop_assert_eq!(prepare(&rec).seal(seq, &prev), via_value(&rec, seq, &prev));
        }
    }
}
