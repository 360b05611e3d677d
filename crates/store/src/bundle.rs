//! Offline evidence bundles: export and verification (format: `docs/evidence-format.md`).
//!
//! A bundle is ONE canonical JSON document (keys sorted by byte order, no insignificant
//! whitespace, serde_json string escaping; the file is that text plus `\n`) holding the
//! selected records (full bodies), a signed checkpoint covering them, one RFC 6962
//! inclusion proof per record against that checkpoint's root, optionally an earlier
//! checkpoint with a consistency proof, the public key, a manifest, and an Ed25519
//! signature over everything else. Verification needs only the file and the public key.
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::chain::{canonical_json_value, value_hash};
use crate::checkpoint::{Checkpoint, PublicKey, Signer};
use crate::merkle::{self, Hash};
use crate::{RecordFilter, Store, StoreError};

pub const BUNDLE_FORMAT: &str = "warden-evidence-bundle/v1";
pub const BUNDLE_SIGNATURE_HEADER: &str = "warden-bundle/v1";

const README: &str = "This is a Warden evidence bundle. `records` holds evidence records exactly as the \
ledger stored them; each record's `hash` is the SHA-256 of its canonical JSON without `hash`. \
`proofs` ties every record (Merkle leaf index seq-1, leaf = SHA-256(0x00 || hash bytes)) to the \
Merkle root of `checkpoint`, which the Warden signing key signed over \
\"warden-checkpoint/v1\\n<tree_size>\\n<root>\\n<head_hash>\\n<ts>\\n\". `bundle_signature` signs \
\"warden-bundle/v1\\n<SHA-256 hex of this document's canonical JSON without bundle_signature>\\n\", \
so no byte of the file can change unnoticed. Verify with `warden evidence verify FILE --public-key KEY` \
or tools/verify_bundle.py; the format is specified in docs/evidence-format.md.";

/// What an export selected.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub since: Option<String>,
    pub until: Option<String>,
    pub principal: Option<String>,
    pub connection: Option<String>,
    pub kind: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub checkpoint: Checkpoint,
    /// Whether the checkpoint was signed for this export.
    pub fresh_checkpoint: bool,
}

/// Result of a successful bundle verification.
#[derive(Debug, Clone)]
pub struct BundleReport {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub checkpoint: Checkpoint,
    /// Records form one run of consecutive seqs whose prev_hash links all check.
    pub contiguous: bool,
    pub prior_checkpoint: Option<u64>,
    pub manifest: Value,
}

fn err(s: impl Into<String>) -> StoreError {
    StoreError::Sqlite(s.into())
}

fn hexes(h: &[Hash]) -> Value {
    Value::Array(h.iter().map(|x| Value::String(hex::encode(x))).collect())
}

/// Bytes of the bundle file for `bundle`: canonical JSON + `\n`.
pub fn bundle_bytes(bundle: &Value) -> Vec<u8> {
    let mut s = canonical_json_value(bundle);
    s.push('\n');
    s.into_bytes()
}

/// The message `bundle_signature` signs.
pub fn bundle_signed_text(bundle: &Value) -> String {
    let mut v = bundle.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("bundle_signature");
    }
    let digest = hex::encode(Sha256::digest(canonical_json_value(&v).as_bytes()));
    format!("{BUNDLE_SIGNATURE_HEADER}\n{digest}\n")
}

fn filters_value(f: &ExportFilter) -> Value {
    let mut m = Map::new();
    for (k, v) in [
        ("since", &f.since),
        ("until", &f.until),
        ("principal", &f.principal),
        ("connection", &f.connection),
        ("kind", &f.kind),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), Value::String(v.clone()));
        }
    }
    Value::Object(m)
}

fn cp_value(cp: &Checkpoint) -> Value {
    serde_json::to_value(cp).expect("a checkpoint serializes")
}

impl Store {
    /// Build a signed bundle of the records matching `filter` (time bounds already
    /// normalized to the stored `ts` form by the caller or here).
    pub fn export_bundle(
        &self,
        filter: &ExportFilter,
        signer: &Signer,
        created_by: &str,
    ) -> Result<(Value, ExportSummary), StoreError> {
        self.export_bundle_up_to(filter, signer, created_by, None)
    }

    /// [`Store::export_bundle`] of the matching records with `seq <= max_seq` (retention
    /// seals a prefix of the chain this way).
    pub fn export_bundle_up_to(
        &self,
        filter: &ExportFilter,
        signer: &Signer,
        created_by: &str,
        max_seq: Option<u64>,
    ) -> Result<(Value, ExportSummary), StoreError> {
        let mut filter = filter.clone();
        filter.since = filter
            .since
            .as_deref()
            .map(crate::sqlite::normalize_ts)
            .transpose()?;
        filter.until = filter
            .until
            .as_deref()
            .map(crate::sqlite::normalize_ts)
            .transpose()?;
        let rf = RecordFilter {
            since: filter.since.clone(),
            until: filter.until.clone(),
            principal: filter.principal.clone(),
            connection: filter.connection.clone(),
            kind: filter.kind.clone(),
            session_id: None,
            limit: None,
        };
        let mut records: Vec<(u64, Value)> = Vec::new();
        let mut bad: Option<StoreError> = None;
        self.query_bodies(&rf, &mut |seq, body| {
            if max_seq.is_some_and(|m| seq > m) {
                return false;
            }
            let v: Value = match serde_json::from_str(&body) {
                Ok(v) => v,
                Err(e) => {
                    bad = Some(err(format!("record {seq} is not valid JSON: {e}")));
                    return false;
                }
            };
            if v.get("hash").and_then(Value::as_str) != Some(value_hash(&v).as_str()) {
                bad = Some(err(format!(
                    "record {seq} does not match its hash; run `warden audit verify`"
                )));
                return false;
            }
            records.push((seq, v));
            true
        })?;
        if let Some(e) = bad {
            return Err(e);
        }
        let first_seq = records.first().map(|r| r.0);
        let last_seq = records.last().map(|r| r.0);
        let fp = signer.public().fingerprint();
        // Records up to the latest retention seal are gone: the tree starts from its frontier.
        let seal = self.latest_seal()?;
        let sealed = seal.as_ref().map_or(0, |s| s.up_to_seq);
        let needed = last_seq.unwrap_or(1).max(sealed);
        let latest = self
            .checkpoints()?
            .into_iter()
            .rev()
            .find(|c| c.key_fingerprint == fp);
        let (cp, fresh) = match latest {
            Some(c) if c.tree_size >= needed => (c, false),
            _ => match self.checkpoint(signer)? {
                Some(c) => (c, true),
                None => {
                    // Nothing new to checkpoint but no usable one (e.g. another key):
                    // sign one over the current head for this bundle.
                    let (head, head_hash) = self.head()?;
                    if head == 0 {
                        return Err(err("the store holds no records: nothing to export"));
                    }
                    let c = signer.checkpoint(
                        head,
                        &self.tree(head)?.root(),
                        &head_hash,
                        &warden_core::time_fmt::now_rfc3339(),
                    );
                    (c, true)
                }
            },
        };
        let tree = self.tree(cp.tree_size)?;
        let head_hash = match &seal {
            Some(s) if s.up_to_seq == cp.tree_size => s.last_hash.clone(),
            _ => {
                let conn = self.reader()?;
                conn.query_row(
                    "SELECT hash FROM records WHERE seq = ?1",
                    [cp.tree_size as i64],
                    |r| r.get::<_, String>(0),
                )?
            }
        };
        if hex::encode(tree.root()) != cp.root || head_hash != cp.head_hash {
            return Err(err(format!(
                "the store no longer matches checkpoint {} ({}); run `warden audit verify`",
                cp.tree_size, cp.ts
            )));
        }
        let mut proofs = Vec::with_capacity(records.len());
        for (seq, _) in &records {
            let path = tree
                .inclusion_proof(seq - 1)
                .ok_or_else(|| err(format!("no inclusion proof for record {seq}")))?;
            proofs.push(json!({"seq": seq, "path": hexes(&path)}));
        }
        // A consistency proof needs every leaf of the older tree: not available once
        // retention sealed a prefix (the prior checkpoint is optional).
        let prior = match first_seq {
            Some(first) if sealed == 0 => self
                .checkpoints()?
                .into_iter()
                .rev()
                .find(|c| c.key_fingerprint == fp && c.tree_size < first && c.tree_size > 0),
            _ => None,
        };
        let mut bundle = json!({
            "format": BUNDLE_FORMAT,
            "manifest": {
                "created_at": warden_core::time_fmt::now_rfc3339(),
                "created_by": created_by,
                "filters": filters_value(&filter),
                "record_count": records.len(),
                "tree_size": cp.tree_size,
                "public_key_fingerprint": fp,
                "readme": README,
            },
            "public_key": {
                "algorithm": "ed25519",
                "key": signer.public().to_hex(),
                "fingerprint": fp,
            },
            "checkpoint": cp_value(&cp),
            "proofs": proofs,
            "records": records.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
        });
        if let (Some(f), Some(l)) = (first_seq, last_seq) {
            bundle["manifest"]["first_seq"] = json!(f);
            bundle["manifest"]["last_seq"] = json!(l);
        }
        if let Some(p) = prior {
            // The consistency proof needs the leaves of the bigger tree only.
            let all: Vec<Hash> = self.leaves(cp.tree_size)?;
            let proof = merkle::consistency_proof(&all, p.tree_size)
                .ok_or_else(|| err("cannot build a consistency proof"))?;
            bundle["prior_checkpoint"] = json!({
                "checkpoint": cp_value(&p),
                "consistency": hexes(&proof),
            });
        }
        let text = bundle_signed_text(&bundle);
        bundle["bundle_signature"] = json!({
            "algorithm": "ed25519",
            "key_fingerprint": fp,
            "signature": signer.sign(text.as_bytes()),
        });
        let summary = ExportSummary {
            records: records.len() as u64,
            first_seq,
            last_seq,
            checkpoint: cp,
            fresh_checkpoint: fresh,
        };
        Ok((bundle, summary))
    }
}

/// Verify a bundle file against the trusted public key. `Err` names the first problem.
pub fn verify_bundle(bytes: &[u8], key: &PublicKey) -> Result<BundleReport, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("the bundle is not UTF-8: {e}"))?;
    let bundle: Value =
        serde_json::from_str(text).map_err(|e| format!("the bundle is not valid JSON: {e}"))?;
    let obj = bundle
        .as_object()
        .ok_or("the bundle is not a JSON object")?;
    let known = [
        "format",
        "manifest",
        "public_key",
        "checkpoint",
        "proofs",
        "records",
        "prior_checkpoint",
        "bundle_signature",
    ];
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("unknown top-level member `{k}`"));
    }
    if obj.get("format").and_then(Value::as_str) != Some(BUNDLE_FORMAT) {
        return Err(format!("`format` is not {BUNDLE_FORMAT}"));
    }
    let fp = key.fingerprint();
    // Public key
    let pk = obj.get("public_key").ok_or("missing `public_key`")?;
    if pk.get("algorithm").and_then(Value::as_str) != Some("ed25519")
        || pk.get("key").and_then(Value::as_str) != Some(key.to_hex().as_str())
        || pk.get("fingerprint").and_then(Value::as_str) != Some(fp.as_str())
    {
        return Err(format!(
            "`public_key` is not the trusted key (fingerprint {fp})"
        ));
    }
    // Checkpoint
    let cp: Checkpoint = serde_json::from_value(
        obj.get("checkpoint")
            .cloned()
            .ok_or("missing `checkpoint`")?,
    )
    .map_err(|e| format!("`checkpoint` is malformed: {e}"))?;
    if cp_value(&cp) != obj["checkpoint"] {
        return Err("`checkpoint` has unexpected members".into());
    }
    cp.check_signature(key)?;
    let root = merkle::decode32(&cp.root).ok_or("checkpoint root is not 64 hex digits")?;
    // Records and proofs
    let records = obj
        .get("records")
        .and_then(Value::as_array)
        .ok_or("missing `records`")?;
    let proofs = obj
        .get("proofs")
        .and_then(Value::as_array)
        .ok_or("missing `proofs`")?;
    if records.len() != proofs.len() {
        return Err(format!(
            "{} records but {} proofs",
            records.len(),
            proofs.len()
        ));
    }
    let manifest = obj.get("manifest").ok_or("missing `manifest`")?.clone();
    let filters = manifest.get("filters").cloned().unwrap_or(json!({}));
    let mut prev: Option<(u64, String)> = None;
    let mut contiguous = true;
    for (i, (rec, proof)) in records.iter().zip(proofs).enumerate() {
        let seq = rec
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("records[{i}] has no seq"))?;
        let hash = rec
            .get("hash")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("record {seq} has no hash"))?;
        if value_hash(rec) != hash {
            return Err(format!(
                "record {seq} was edited: its hash does not match its content"
            ));
        }
        if proof.get("seq").and_then(Value::as_u64) != Some(seq)
            || proof.as_object().map(|m| m.len()) != Some(2)
        {
            return Err(format!("proofs[{i}] is not the proof of record {seq}"));
        }
        if let Some((p, ref ph)) = prev {
            if seq <= p {
                return Err(format!("record {seq} is out of order (after {p})"));
            }
            if seq == p + 1 {
                if rec.get("prev_hash").and_then(Value::as_str) != Some(ph.as_str()) {
                    return Err(format!(
                        "record {seq}: prev_hash is not the hash of record {p}"
                    ));
                }
            } else {
                contiguous = false;
            }
        }
        if seq == 0 || seq > cp.tree_size {
            return Err(format!(
                "record {seq} is not covered by checkpoint {}",
                cp.tree_size
            ));
        }
        let path: Vec<Hash> = proof
            .get("path")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("proof of record {seq} has no path"))?
            .iter()
            .map(|h| h.as_str().and_then(merkle::decode32))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("proof of record {seq} has a malformed hash"))?;
        let leaf = merkle::record_leaf(hash)
            .ok_or_else(|| format!("record {seq} hash is not 64 hex digits"))?;
        if !merkle::verify_inclusion(&leaf, seq - 1, cp.tree_size, &path, &root) {
            return Err(format!(
                "record {seq} is not included in checkpoint {}: its inclusion proof fails",
                cp.tree_size
            ));
        }
        if seq == cp.tree_size && hash != cp.head_hash {
            return Err(format!(
                "record {seq} is not the head the checkpoint signed"
            ));
        }
        if let Some(why) = outside_filters(rec, &filters) {
            return Err(format!(
                "record {seq} does not match the export filters: {why}"
            ));
        }
        prev = Some((seq, hash.to_string()));
    }
    // Manifest
    let first_seq = records.first().and_then(|r| r["seq"].as_u64());
    let last_seq = records.last().and_then(|r| r["seq"].as_u64());
    let expect = |k: &str, v: Option<Value>| -> Result<(), String> {
        if manifest.get(k) != v.as_ref() {
            return Err(format!("manifest `{k}` does not match the bundle"));
        }
        Ok(())
    };
    expect("record_count", Some(json!(records.len())))?;
    expect("first_seq", first_seq.map(|s| json!(s)))?;
    expect("last_seq", last_seq.map(|s| json!(s)))?;
    expect("tree_size", Some(json!(cp.tree_size)))?;
    expect("public_key_fingerprint", Some(json!(fp)))?;
    // Prior checkpoint + consistency
    let mut prior_size = None;
    if let Some(p) = obj.get("prior_checkpoint") {
        let pc: Checkpoint =
            serde_json::from_value(p.get("checkpoint").cloned().unwrap_or(Value::Null))
                .map_err(|e| format!("`prior_checkpoint.checkpoint` is malformed: {e}"))?;
        pc.check_signature(key)
            .map_err(|e| format!("prior checkpoint: {e}"))?;
        let proof: Vec<Hash> = p
            .get("consistency")
            .and_then(Value::as_array)
            .ok_or("`prior_checkpoint.consistency` missing")?
            .iter()
            .map(|h| h.as_str().and_then(merkle::decode32))
            .collect::<Option<_>>()
            .ok_or("`prior_checkpoint.consistency` has a malformed hash")?;
        let old_root = merkle::decode32(&pc.root).ok_or("prior checkpoint root malformed")?;
        if !merkle::verify_consistency(pc.tree_size, cp.tree_size, &old_root, &root, &proof) {
            return Err(format!(
                "checkpoint {} does not extend prior checkpoint {}: the consistency proof fails",
                cp.tree_size, pc.tree_size
            ));
        }
        prior_size = Some(pc.tree_size);
    }
    // Envelope signature
    let sig = obj
        .get("bundle_signature")
        .ok_or("missing `bundle_signature`")?;
    if sig.get("algorithm").and_then(Value::as_str) != Some("ed25519")
        || sig.get("key_fingerprint").and_then(Value::as_str) != Some(fp.as_str())
    {
        return Err("`bundle_signature` is not by the trusted key".into());
    }
    let sig_hex = sig
        .get("signature")
        .and_then(Value::as_str)
        .ok_or("`bundle_signature.signature` missing")?;
    if sig.as_object().map(|m| m.len()) != Some(3) {
        return Err("`bundle_signature` has unexpected members".into());
    }
    if !key.verify(bundle_signed_text(&bundle).as_bytes(), sig_hex) {
        return Err(
            "bundle signature does not verify: the bundle was edited after it was signed".into(),
        );
    }
    // Byte-exact canonical form: no edit can hide in whitespace, key order or escapes.
    if bundle_bytes(&bundle) != bytes {
        return Err("the file is not in canonical form: it was edited (whitespace, key order, number or string spelling)".into());
    }
    Ok(BundleReport {
        records: records.len() as u64,
        first_seq,
        last_seq,
        checkpoint: cp,
        contiguous,
        prior_checkpoint: prior_size,
        manifest,
    })
}

fn outside_filters(rec: &Value, filters: &Value) -> Option<String> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let ts = s(rec, "ts").unwrap_or_default();
    if let Some(since) = s(filters, "since")
        && ts < since
    {
        return Some(format!("ts {ts} is before {since}"));
    }
    if let Some(until) = s(filters, "until")
        && ts >= until
    {
        return Some(format!("ts {ts} is not before {until}"));
    }
    if let Some(p) = s(filters, "principal") {
        let got = rec.get("principal").and_then(|p| s(p, "id"));
        if got.as_deref() != Some(p.as_str()) {
            return Some(format!("principal is not {p}"));
        }
    }
    if let Some(c) = s(filters, "connection")
        && s(rec, "connection").as_deref() != Some(c.as_str())
    {
        return Some(format!("connection is not {c}"));
    }
    if let Some(k) = s(filters, "kind")
        && s(rec, "kind").as_deref() != Some(k.as_str())
    {
        return Some(format!("kind is not {k}"));
    }
    None
}
