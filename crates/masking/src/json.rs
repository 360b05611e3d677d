//! JSON walking: field rules by key / dotted path, detectors on strings, keys and long
//! integers.

use serde_json::{Map, Value};

use crate::ops::render_field;
use crate::{MaskStats, Operator, Policy};

pub(crate) fn mask_json(policy: &Policy, value: &mut Value, stats: &mut MaskStats) {
    let mut path = String::new();
    walk(policy, value, &mut path, stats);
}

fn walk(policy: &Policy, value: &mut Value, path: &mut String, stats: &mut MaskStats) {
    match value {
        Value::String(s) => {
            if let Some(m) = masked_text(policy, s, stats) {
                *s = m;
            }
        }
        Value::Number(n) => {
            if policy.engine.is_some() && (n.is_u64() || n.is_i64()) {
                let t = n.to_string();
                if t.len() >= 9 {
                    let before = stats.total();
                    if let Some(m) = masked_text(policy, &t, stats) {
                        *value = if m.is_empty() && stats.total() > before {
                            Value::Null
                        } else {
                            Value::String(m)
                        };
                    }
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                walk(policy, v, path, stats);
            }
        }
        Value::Object(map) => {
            let old = std::mem::take(map);
            let mut new = Map::new();
            for (k, mut v) in old {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&k);
                if let Some(f) = policy.field_for(&k, Some(path), false) {
                    let (op, stat) = (f.op, f.stat.clone());
                    apply_field(policy, &mut v, op, &stat, stats);
                } else {
                    walk(policy, &mut v, path, stats);
                }
                path.truncate(len);
                let mut key = masked_text(policy, &k, stats).unwrap_or(k);
                if new.contains_key(&key) {
                    let base = key.clone();
                    let mut i = 2;
                    while new.contains_key(&key) {
                        key = format!("{base}~{i}");
                        i += 1;
                    }
                }
                new.insert(key, v);
            }
            *map = new;
        }
        Value::Null | Value::Bool(_) => {}
    }
}

fn masked_text(policy: &Policy, s: &str, stats: &mut MaskStats) -> Option<String> {
    match policy.mask_bytes(s.as_bytes(), stats) {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(v) => Some(String::from_utf8_lossy(&v).into_owned()),
    }
}

/// Applies a field operator to every leaf under `value`, keeping containers' shape.
fn apply_field(
    policy: &Policy,
    value: &mut Value,
    op: Operator,
    stat: &str,
    stats: &mut MaskStats,
) {
    match value {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| apply_field(policy, v, op, stat, stats)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| apply_field(policy, v, op, stat, stats)),
        Value::Null => {}
        leaf => {
            let raw = match &mut *leaf {
                Value::String(s) => std::mem::take(s),
                other => other.to_string(),
            };
            stats.add(stat);
            *leaf = match render_field(op, raw.as_bytes(), &policy.key) {
                Some(v) => Value::String(String::from_utf8_lossy(&v).into_owned()),
                None => Value::Null,
            };
        }
    }
}
