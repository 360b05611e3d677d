//! Result rows: RowDescription and DataRow bodies, masking of values in place, and the
//! capped excerpt of (masked) rows that goes into the `action.response` record.
use std::collections::BTreeMap;

use bytes::{BufMut, BytesMut};
use warden_masking::{ColumnInfo, ColumnPlan, MaskResult, MaskStats};

use crate::codec::{CodecError, Reader};

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub binary: bool,
}

pub fn parse_row_description(body: &[u8]) -> Result<Vec<Column>, CodecError> {
    let mut r = Reader::new(body);
    let n = r.count("RowDescription field count", 19)?;
    let mut cols = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.cstr("column name")?.to_string();
        let _table = r.i32("table oid")?;
        let _attnum = r.i16("column number")?;
        let type_oid = r.i32("type oid")? as u32;
        let _typlen = r.i16("type length")?;
        let _typmod = r.i32("type modifier")?;
        let format = r.i16("format code")?;
        cols.push(Column {
            name,
            type_oid,
            binary: format == 1,
        });
    }
    Ok(cols)
}

pub fn plan_for(masker: &warden_masking::ConnectionMasker, cols: &[Column]) -> ColumnPlan {
    let infos: Vec<ColumnInfo> = cols
        .iter()
        .map(|c| ColumnInfo {
            name: c.name.clone(),
            table: None,
            type_oid: c.type_oid,
            binary: c.binary,
        })
        .collect();
    masker.plan_columns(&infos)
}

/// The values of a DataRow (`None` = NULL), borrowed.
pub fn row_values(body: &[u8]) -> Result<Vec<Option<&[u8]>>, CodecError> {
    let mut r = Reader::new(body);
    let n = r.count("DataRow column count", 4)?;
    let mut vals = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.i32("DataRow value length")?;
        if len == -1 {
            vals.push(None);
        } else if len < 0 {
            return Err(CodecError::Invalid("DataRow value length"));
        } else {
            vals.push(Some(r.bytes(len as usize, "DataRow value")?));
        }
    }
    Ok(vals)
}

/// Mask a DataRow body. Returns the replacement frame (tag and length included) when any
/// value changed; `None` when the row passes unchanged.
pub fn mask_data_row(
    body: &[u8],
    plan: &ColumnPlan,
    stats: &mut MaskStats,
) -> Result<Option<BytesMut>, CodecError> {
    let vals = row_values(body)?;
    let mut results: Vec<MaskResult> = Vec::with_capacity(vals.len());
    let mut changed = false;
    for (i, v) in vals.iter().enumerate() {
        let r = match v {
            None => MaskResult::Unchanged,
            Some(bytes) => plan.mask_value(i, bytes, stats),
        };
        changed |= r != MaskResult::Unchanged;
        results.push(r);
    }
    if !changed {
        return Ok(None);
    }
    let mut out = BytesMut::with_capacity(body.len() + 16);
    out.put_u8(b'D');
    out.put_i32(0);
    out.put_i16(vals.len() as i16);
    for (v, r) in vals.iter().zip(results) {
        match (v, r) {
            (None, _) | (_, MaskResult::Null) => out.put_i32(-1),
            (Some(b), MaskResult::Unchanged) => {
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
            (Some(_), MaskResult::Replaced(nb)) => {
                out.put_i32(nb.len() as i32);
                out.put_slice(&nb);
            }
        }
    }
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Ok(Some(out))
}

/// The capped excerpt of what the client received (after masking).
#[derive(Debug, Default)]
pub struct Capture {
    pub columns: Vec<String>,
    rows: Vec<serde_json::Value>,
    bytes: usize,
    pub truncated: bool,
    pub stats: MaskStats,
}

fn render(v: &[u8], binary: bool) -> serde_json::Value {
    match (binary, std::str::from_utf8(v)) {
        (false, Ok(s)) => serde_json::Value::String(s.to_string()),
        _ => {
            let mut s = String::with_capacity(2 + v.len() * 2);
            s.push_str("\\x");
            for b in v {
                s.push_str(&format!("{b:02x}"));
            }
            serde_json::Value::String(s)
        }
    }
}

impl Capture {
    /// Whether another row could still be kept: lets the relay skip parsing rows for
    /// evidence once the excerpt is full (the hot path of a large result).
    pub fn wants_more(&self, max_rows: usize) -> bool {
        !self.truncated && self.rows.len() < max_rows
    }

    /// Mark the excerpt as cut (rows arrived that it did not keep).
    pub fn mark_truncated(&mut self) {
        self.truncated = true;
    }

    /// Keep this row if the caps allow (`values` are what the client got).
    pub fn add_row(
        &mut self,
        values: &[Option<&[u8]>],
        binary: &[bool],
        max_rows: usize,
        max_bytes: usize,
    ) {
        if self.truncated {
            return;
        }
        let size: usize = values.iter().map(|v| v.map_or(4, |b| b.len() + 2)).sum();
        if self.rows.len() >= max_rows || self.bytes + size > max_bytes {
            self.truncated = true;
            return;
        }
        self.bytes += size;
        let row = values
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                None => serde_json::Value::Null,
                Some(b) => render(b, binary.get(i).copied().unwrap_or(false)),
            })
            .collect();
        self.rows.push(serde_json::Value::Array(row));
    }

    /// Keep one COPY data line (text).
    pub fn add_line(&mut self, line: &[u8], max_rows: usize, max_bytes: usize) {
        if self.truncated {
            return;
        }
        if self.rows.len() >= max_rows || self.bytes + line.len() > max_bytes {
            self.truncated = true;
            return;
        }
        self.bytes += line.len();
        self.rows
            .push(render(line.strip_suffix(b"\n").unwrap_or(line), false));
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.stats.per_detector.is_empty()
    }

    /// `response.masked` and `response.masked_values` for evidence.
    pub fn into_evidence(
        self,
        total_rows: u64,
    ) -> (Option<serde_json::Value>, BTreeMap<String, u64>) {
        if self.rows.is_empty() && self.columns.is_empty() {
            return (None, self.stats.per_detector);
        }
        let v = serde_json::json!({
            "columns": self.columns,
            "rows": self.rows,
            "rows_kept": self.rows.len(),
            "rows_total": total_rows,
            "truncated": self.truncated || (total_rows as usize) > self.rows.len(),
        });
        (Some(v), self.stats.per_detector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use warden_masking::{DetectorName, MaskRule, Masker, MaskingConfig, Operator};

    fn data_row(vals: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(vals.len() as i16);
        for v in vals {
            match v {
                None => b.put_i32(-1),
                Some(x) => {
                    b.put_i32(x.len() as i32);
                    b.put_slice(x);
                }
            }
        }
        b.to_vec()
    }

    #[test]
    fn masks_text_values_in_place_and_keeps_shape() {
        let cfg = MaskingConfig {
            rules: vec![MaskRule {
                connections: vec!["*".into()],
                detectors: vec![DetectorName::Email],
                operator: Operator::Partial,
                fields: vec![("ssn".into(), Operator::Redact)],
            }],
            ..Default::default()
        };
        let m = Masker::new(&cfg).unwrap();
        let cm = m.for_connection("x").unwrap();
        let cols = vec![
            Column {
                name: "id".into(),
                type_oid: 23,
                binary: false,
            },
            Column {
                name: "email".into(),
                type_oid: 25,
                binary: false,
            },
            Column {
                name: "ssn".into(),
                type_oid: 25,
                binary: false,
            },
        ];
        let plan = plan_for(&cm, &cols);
        let body = data_row(&[Some(b"7"), Some(b"jane@example.com"), Some(b"123-45-6789")]);
        let mut stats = MaskStats::default();
        let out = mask_data_row(&body, &plan, &mut stats)
            .unwrap()
            .expect("changed");
        assert_eq!(out[0], b'D');
        let vals = row_values(&out[5..]).unwrap();
        assert_eq!(vals.len(), 3);
        assert_eq!(vals[0], Some(&b"7"[..]));
        assert_eq!(vals[1], Some(&b"j***@example.com"[..]));
        assert_ne!(vals[2], Some(&b"123-45-6789"[..]));
        assert_eq!(stats.total(), 2);
        // unchanged rows are not rebuilt
        let body = data_row(&[Some(b"8"), Some(b"no email here"), None]);
        assert!(mask_data_row(&body, &plan, &mut stats).unwrap().is_none());
    }

    #[test]
    fn capture_caps_rows_and_bytes() {
        let mut c = Capture::default();
        for _ in 0..5 {
            c.add_row(&[Some(b"abc")], &[false], 3, 1000);
        }
        let (v, _) = c.into_evidence(5);
        let v = v.unwrap();
        assert_eq!(v["rows_kept"], 3);
        assert_eq!(v["truncated"], true);
    }

    proptest! {
        #[test]
        fn row_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse_row_description(&body);
            let _ = row_values(&body);
        }
    }
}
