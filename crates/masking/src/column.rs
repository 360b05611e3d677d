//! Column-oriented masking for SQL result sets (PostgreSQL RowDescription / DataRow).

use std::sync::Arc;

use crate::ops::render_field;
use crate::{MaskStats, Operator, Policy};

/// One result column as described by the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name (alias) as sent to the client.
    pub name: String,
    /// Source table name when known (resolved from the table OID by the adapter).
    pub table: Option<String>,
    /// PostgreSQL type OID.
    pub type_oid: u32,
    /// `true` when the value is in binary format.
    pub binary: bool,
}

/// The decision for one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnAction {
    /// No rule can hit this column: the value passes untouched (numbers, booleans, dates,
    /// timestamps, uuids, bytea, ... unless a field rule names the column).
    Skip,
    /// A field rule matched the column name or `table.column`: the whole value is replaced.
    /// Non-text types (and binary values other than text) become NULL whatever the operator,
    /// so the client never gets a value its type decoder cannot parse.
    Field(Operator),
    /// Text-like value: the detectors run over it.
    Scan,
}

/// Result of masking one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskResult {
    /// Send the value as it is.
    Unchanged,
    /// Send these bytes instead (same format as the input).
    Replaced(Vec<u8>),
    /// Send SQL NULL instead.
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Text in either format (binary text is the same UTF-8 bytes).
    Text,
    /// `json` text, or `jsonb` in text format.
    Json,
    /// `jsonb` binary: a version byte (1) then JSON text.
    JsonbBinary,
    /// Numbers, dates, ... never scanned.
    Inert,
    /// `inet` / `cidr`.
    Inet,
    /// Unknown type (extension types, enums, arrays, composites, ...).
    Opaque,
}

fn classify(oid: u32, binary: bool) -> Class {
    match oid {
        25 | 1043 | 1042 | 19 | 18 | 705 => Class::Text,
        142 if !binary => Class::Text,
        114 => Class::Json,
        3802 if binary => Class::JsonbBinary,
        3802 => Class::Json,
        16
        | 17
        | 20
        | 21
        | 23
        | 26
        | 700
        | 701
        | 1700
        | 790
        | 1082
        | 1083
        | 1114
        | 1184
        | 1186
        | 1266
        | 2950
        | 829
        | 774
        | 1560
        | 1562
        | 3220
        | 600..=604
        | 628
        | 718
        | 1000
        | 1001
        | 1005
        | 1007
        | 1016
        | 1021
        | 1022
        | 1231
        | 1182
        | 1183
        | 1115
        | 1185
        | 2951
        | 1187
        | 3904
        | 3906
        | 3908
        | 3910
        | 3912
        | 3926 => Class::Inert,
        869 | 650 => Class::Inet,
        _ => Class::Opaque,
    }
}

#[derive(Debug, Clone)]
enum ColOp {
    Skip,
    Field {
        op: Operator,
        stat: String,
        class: Class,
        binary: bool,
    },
    Scan {
        class: Class,
        binary: bool,
    },
    Null {
        stat: String,
    },
}

/// Per-column decisions for one result description. Build once, use for every row.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    policy: Arc<Policy>,
    cols: Vec<ColOp>,
}

pub(crate) fn plan(policy: Arc<Policy>, columns: &[ColumnInfo]) -> ColumnPlan {
    let detectors = policy.engine.is_some();
    let ip = policy.has_detector("ip");
    let cols = columns
        .iter()
        .map(|c| {
            let class = classify(c.type_oid, c.binary);
            let qualified = c.table.as_ref().map(|t| format!("{t}.{}", c.name));
            if let Some(f) = policy.field_for(&c.name, qualified.as_deref(), c.table.is_none()) {
                return ColOp::Field {
                    op: f.op,
                    stat: f.stat.clone(),
                    class,
                    binary: c.binary,
                };
            }
            match class {
                _ if !detectors => ColOp::Skip,
                Class::Inert => ColOp::Skip,
                Class::Inet if !ip => ColOp::Skip,
                Class::Inet if c.binary => ColOp::Null { stat: "ip".into() },
                _ => ColOp::Scan {
                    class,
                    binary: c.binary,
                },
            }
        })
        .collect();
    ColumnPlan { policy, cols }
}

impl ColumnPlan {
    /// The decision per column, in column order.
    pub fn actions(&self) -> Vec<ColumnAction> {
        self.cols
            .iter()
            .map(|c| match c {
                ColOp::Skip => ColumnAction::Skip,
                ColOp::Field { op, .. } => ColumnAction::Field(*op),
                ColOp::Null { .. } => ColumnAction::Field(Operator::Null),
                ColOp::Scan { .. } => ColumnAction::Scan,
            })
            .collect()
    }

    /// `true` when every column is `Skip`: the adapter can pass rows through untouched.
    pub fn is_noop(&self) -> bool {
        self.cols.iter().all(|c| matches!(c, ColOp::Skip))
    }

    /// Masks the (non-NULL) value of column `col`. A column index outside the plan yields
    /// `Null` (fail closed).
    pub fn mask_value(&self, col: usize, value: &[u8], stats: &mut MaskStats) -> MaskResult {
        let Some(c) = self.cols.get(col) else {
            return MaskResult::Null;
        };
        let key = &self.policy.key;
        match c {
            ColOp::Skip => MaskResult::Unchanged,
            ColOp::Null { stat } => {
                stats.add(stat);
                MaskResult::Null
            }
            ColOp::Field {
                op,
                stat,
                class,
                binary,
            } => {
                stats.add(stat);
                match class {
                    Class::Text => to_result(render_field(*op, value, key)),
                    Class::Opaque if !binary => to_result(render_field(*op, value, key)),
                    Class::Json => match render_field(*op, value, key) {
                        Some(v) => MaskResult::Replaced(json_string(&v)),
                        None => MaskResult::Null,
                    },
                    Class::JsonbBinary => {
                        match render_field(*op, value.get(1..).unwrap_or(b""), key) {
                            Some(v) => {
                                let mut out = vec![1u8];
                                out.extend(json_string(&v));
                                MaskResult::Replaced(out)
                            }
                            None => MaskResult::Null,
                        }
                    }
                    _ => MaskResult::Null,
                }
            }
            ColOp::Scan { class, binary } => match class {
                Class::Json => self.scan_json(value, stats, false),
                Class::JsonbBinary => self.scan_json(value, stats, true),
                Class::Opaque if *binary => {
                    // Unknown binary layout: we cannot rewrite it safely, so a value with a
                    // detection is withheld entirely.
                    let mut local = MaskStats::default();
                    match self.policy.mask_bytes(value, &mut local) {
                        std::borrow::Cow::Borrowed(_) => MaskResult::Unchanged,
                        std::borrow::Cow::Owned(_) => {
                            stats.merge(&local);
                            MaskResult::Null
                        }
                    }
                }
                _ => match self.policy.mask_bytes(value, stats) {
                    std::borrow::Cow::Borrowed(_) => MaskResult::Unchanged,
                    std::borrow::Cow::Owned(v) => MaskResult::Replaced(v),
                },
            },
        }
    }

    fn scan_json(&self, value: &[u8], stats: &mut MaskStats, jsonb_binary: bool) -> MaskResult {
        let body = if jsonb_binary {
            value.get(1..).unwrap_or(b"")
        } else {
            value
        };
        let mut local = MaskStats::default();
        if let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(body) {
            crate::json::mask_json(&self.policy, &mut doc, &mut local);
            if local.total() == 0 {
                return MaskResult::Unchanged;
            }
            stats.merge(&local);
            let mut out = if jsonb_binary { vec![1u8] } else { Vec::new() };
            out.extend(serde_json::to_vec(&doc).unwrap_or_else(|_| b"null".to_vec()));
            return MaskResult::Replaced(out);
        }
        // Not parseable as JSON: scan it as text (keeps the version byte untouched).
        match self.policy.mask_bytes(value, stats) {
            std::borrow::Cow::Borrowed(_) => MaskResult::Unchanged,
            std::borrow::Cow::Owned(v) => MaskResult::Replaced(v),
        }
    }
}

fn to_result(v: Option<Vec<u8>>) -> MaskResult {
    match v {
        Some(v) => MaskResult::Replaced(v),
        None => MaskResult::Null,
    }
}

fn json_string(v: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&String::from_utf8_lossy(v)).unwrap_or_else(|_| b"\"****\"".to_vec())
}
