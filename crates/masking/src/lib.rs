//! Warden's protocol-neutral masking engine.
//!
//! Build a [`Masker`] once per configuration, ask it for a [`ConnectionMasker`] per session
//! (`None` when no `[[masking]]` rule covers the connection — the zero-cost path), then
//! mask SQL result columns ([`ConnectionMasker::plan_columns`] → [`ColumnPlan::mask_value`]),
//! free text ([`ConnectionMasker::mask_text`], [`ConnectionMasker::mask_bytes`]), JSON
//! ([`ConnectionMasker::mask_json`]) or a chunked text stream ([`StreamMasker`]).
//! Every masked value is counted in [`MaskStats`] under its detector name or `field:<glob>`
//! (this is `masked_values` in evidence).
//!
//! ```
//! use warden_masking::*;
//! let config = MaskingConfig {
//!     rules: vec![MaskRule {
//!         connections: vec!["*".into()],
//!         detectors: vec![DetectorName::CreditCard, DetectorName::Email],
//!         operator: Operator::Partial,
//!         fields: vec![("ssn".into(), Operator::Redact)],
//!     }],
//!     ..Default::default()
//! };
//! config.validate().unwrap();
//! let masker = Masker::new(&config).unwrap();
//! let conn = masker.for_connection("orders").unwrap();
//! let mut stats = MaskStats::default();
//! let out = conn.mask_text("card 4111 1111 1111 1111, mail jane@example.com", &mut stats);
//! assert_eq!(out, "card **** **** **** 1111, mail j***@example.com");
//! assert_eq!(stats.per_detector["credit_card"], 1);
//! ```
//!
//! # Guarantees
//! - Matching is linear time in the input: all patterns, including custom ones, run on
//!   `regex-automata` finite automata (the `regex` crate's engine; no backtracking), so a
//!   hostile pattern or input cannot cause catastrophic backtracking.
//! - Detectors validate candidates (Luhn + issuer ranges, IBAN length + mod-97, SSN
//!   area/group/serial, `std::net` parsing for IPs, JWT headers decoded as JSON with `alg`).
//! - Nothing here logs, and errors never quote input values.
//! - Placeholders: [`FIELD_PLACEHOLDER`] (`****`) replaces whole field values under
//!   `redact`; [`text_placeholder`] (`[REDACTED:<detector>]`) replaces a detected value
//!   inside text. `hash` writes [`HASH_PREFIX`] + 16 hex chars of HMAC-SHA-256.
//! - Streaming: [`StreamMasker`] output equals one-shot masking for any chunking, holding
//!   back at most [`STREAM_TAIL`] bytes (more for long custom patterns) plus, while a
//!   JWT or PEM private key is still arriving, up to [`STREAM_MAX_HOLD`] bytes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod column;
mod config;
mod detect;
mod glob;
mod json;
mod ops;
mod stream;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use column::{ColumnAction, ColumnInfo, ColumnPlan, MaskResult};
pub use config::{
    ConfigError, CustomDetector, DetectorName, MAX_CUSTOM_MATCH_LEN, MaskRule, MaskingConfig,
    Operator,
};
pub use detect::{STREAM_MAX_HOLD, STREAM_TAIL};
pub use ops::{FIELD_PLACEHOLDER, HASH_PREFIX, text_placeholder};
pub use stream::StreamMasker;

use detect::Engine;

/// Counts of masked values, keyed by detector name (`credit_card`, `email`, custom names…)
/// or `field:<glob>` for field rules. Becomes `masked_values` in evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskStats {
    /// Masked values per detector / field rule.
    pub per_detector: BTreeMap<String, u64>,
}

impl MaskStats {
    /// Adds one masked value under `name`.
    pub fn add(&mut self, name: &str) {
        match self.per_detector.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.per_detector.insert(name.to_string(), 1);
            }
        }
    }
    /// Total masked values.
    pub fn total(&self) -> u64 {
        self.per_detector.values().sum()
    }
    /// Adds another set of counts into this one.
    pub fn merge(&mut self, other: &MaskStats) {
        for (k, v) in &other.per_detector {
            *self.per_detector.entry(k.clone()).or_insert(0) += v;
        }
    }
}

/// A detector match reported by [`ConnectionMasker::find`]: byte span of the sensitive value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// Start byte offset of the value.
    pub start: usize,
    /// End byte offset (exclusive).
    pub end: usize,
    /// Detector name.
    pub detector: String,
}

#[derive(Debug)]
pub(crate) struct FieldRule {
    pub glob: String,
    pub op: Operator,
    pub stat: String,
}

/// Everything that applies to one connection, compiled.
#[derive(Debug)]
pub(crate) struct Policy {
    pub engine: Option<Engine>,
    pub fields: Vec<FieldRule>,
    pub key: Arc<[u8]>,
}

impl Policy {
    /// Most restrictive field rule matching `name` (and its qualified form).
    pub(crate) fn field_for(
        &self,
        name: &str,
        qualified: Option<&str>,
        table_unknown: bool,
    ) -> Option<&FieldRule> {
        self.fields
            .iter()
            .filter(|f| glob::field_matches(&f.glob, name, qualified, table_unknown))
            .max_by_key(|f| f.op)
    }

    pub(crate) fn has_detector(&self, name: &str) -> bool {
        self.engine
            .as_ref()
            .is_some_and(|e| e.dets.iter().any(|d| d.name == name))
    }

    /// Masks `hay[pos..]`, appending to `out`; returns the position scanned up to.
    pub(crate) fn mask_region(
        &self,
        hay: &[u8],
        pos: usize,
        is_final: bool,
        out: &mut Vec<u8>,
        stats: &mut MaskStats,
    ) -> usize {
        let Some(engine) = &self.engine else {
            out.extend_from_slice(&hay[pos..]);
            return hay.len();
        };
        let mut emitted = pos;
        let end = engine.scan(hay, pos, is_final, |h| {
            out.extend_from_slice(&hay[emitted..h.mask_start]);
            let d = &engine.dets[h.det];
            ops::render_match(
                h.kind,
                &d.name,
                d.op,
                &hay[h.mask_start..h.mask_end],
                &self.key,
                out,
            );
            stats.add(&d.name);
            emitted = h.mask_end;
        });
        out.extend_from_slice(&hay[emitted..end.max(emitted)]);
        end.max(emitted)
    }

    pub(crate) fn mask_bytes<'a>(&self, b: &'a [u8], stats: &mut MaskStats) -> Cow<'a, [u8]> {
        let Some(engine) = &self.engine else {
            return Cow::Borrowed(b);
        };
        // The output is only allocated at the first detection: text without one costs no
        // allocation at all.
        let mut out: Option<Vec<u8>> = None;
        let mut emitted = 0;
        engine.scan(b, 0, true, |h| {
            let out = out.get_or_insert_with(|| Vec::with_capacity(b.len() + 16));
            out.extend_from_slice(&b[emitted..h.mask_start]);
            let d = &engine.dets[h.det];
            ops::render_match(
                h.kind,
                &d.name,
                d.op,
                &b[h.mask_start..h.mask_end],
                &self.key,
                out,
            );
            stats.add(&d.name);
            emitted = h.mask_end;
        });
        match out {
            None => Cow::Borrowed(b),
            Some(mut out) => {
                out.extend_from_slice(&b[emitted..]);
                Cow::Owned(out)
            }
        }
    }
}

/// The compiled masking configuration. Cheap to share (`Arc` inside); build once per config.
#[derive(Debug, Clone)]
pub struct Masker {
    named: Arc<BTreeMap<String, Option<Arc<Policy>>>>,
    wildcard: Option<Arc<Policy>>,
}

impl Masker {
    /// Validates and compiles `config`.
    pub fn new(config: &MaskingConfig) -> Result<Masker, Vec<ConfigError>> {
        config.validate()?;
        let key: Arc<[u8]> = Arc::from(config.hmac_key.clone().unwrap_or_default());
        let mut names: Vec<&str> = config
            .rules
            .iter()
            .flat_map(|r| r.connections.iter().map(String::as_str))
            .filter(|c| *c != "*")
            .collect();
        names.sort_unstable();
        names.dedup();
        let build = |conn: Option<&str>| -> Result<Option<Arc<Policy>>, Vec<ConfigError>> {
            let rules: Vec<&MaskRule> = config
                .rules
                .iter()
                .filter(|r| {
                    r.connections
                        .iter()
                        .any(|c| c == "*" || Some(c.as_str()) == conn)
                })
                .collect();
            if rules.is_empty() {
                return Ok(None);
            }
            let mut dets: Vec<(DetectorName, Operator)> = Vec::new();
            let mut fields = Vec::new();
            for r in rules {
                for d in &r.detectors {
                    let op = match d {
                        DetectorName::Custom(n) => config
                            .custom_detectors
                            .iter()
                            .find(|c| &c.name == n)
                            .and_then(|c| c.operator)
                            .unwrap_or(r.operator),
                        _ => r.operator,
                    };
                    match dets.iter_mut().find(|(n, _)| n == d) {
                        Some((_, o)) => *o = (*o).max(op),
                        None => dets.push((d.clone(), op)),
                    }
                }
                for (g, op) in &r.fields {
                    fields.push(FieldRule {
                        glob: g.trim().to_ascii_lowercase(),
                        op: *op,
                        stat: format!("field:{}", g.trim()),
                    });
                }
            }
            let engine = if dets.is_empty() {
                None
            } else {
                Some(Engine::new(&dets, &config.custom_detectors).map_err(|m| {
                    vec![ConfigError::BadPattern {
                        name: "*".into(),
                        pattern: String::new(),
                        message: m,
                    }]
                })?)
            };
            Ok(Some(Arc::new(Policy {
                engine,
                fields,
                key: key.clone(),
            })))
        };
        let mut named = BTreeMap::new();
        for n in names {
            named.insert(n.to_string(), build(Some(n))?);
        }
        Ok(Masker {
            named: Arc::new(named),
            wildcard: build(None)?,
        })
    }

    /// The masker for connection `name`, or `None` when no rule applies to it.
    pub fn for_connection(&self, name: &str) -> Option<ConnectionMasker> {
        let policy = match self.named.get(name) {
            Some(p) => p.clone(),
            None => self.wildcard.clone(),
        }?;
        Some(ConnectionMasker { policy })
    }
}

/// Masking for one connection. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct ConnectionMasker {
    policy: Arc<Policy>,
}

impl ConnectionMasker {
    /// Runs the detectors over `text`; borrows when nothing was found.
    pub fn mask_text<'a>(&self, text: &'a str, stats: &mut MaskStats) -> Cow<'a, str> {
        match self.policy.mask_bytes(text.as_bytes(), stats) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(v) => Cow::Owned(match String::from_utf8(v) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
        }
    }

    /// Runs the detectors over raw bytes (e.g. COPY TO output, non-UTF-8 bodies).
    pub fn mask_bytes<'a>(&self, bytes: &'a [u8], stats: &mut MaskStats) -> Cow<'a, [u8]> {
        self.policy.mask_bytes(bytes, stats)
    }

    /// The detections in `bytes` (what `mask_bytes` would replace), in order.
    pub fn find(&self, bytes: &[u8]) -> Vec<Detection> {
        let mut out = Vec::new();
        if let Some(engine) = &self.policy.engine {
            engine.scan(bytes, 0, true, |h| {
                out.push(Detection {
                    start: h.mask_start,
                    end: h.mask_end,
                    detector: engine.dets[h.det].name.clone(),
                })
            });
        }
        out
    }

    /// Masks a JSON document in place: field rules by key (glob on the key and on the dotted
    /// path, array indices not included), detectors on string values, object keys and long
    /// integers. The document keeps its shape (same keys unless a key itself was sensitive,
    /// same array lengths) and stays valid JSON.
    pub fn mask_json(&self, value: &mut serde_json::Value, stats: &mut MaskStats) {
        json::mask_json(&self.policy, value, stats);
    }

    /// Decides per column what to do (see [`ColumnAction`]); build once per RowDescription.
    pub fn plan_columns(&self, columns: &[ColumnInfo]) -> ColumnPlan {
        column::plan(self.policy.clone(), columns)
    }

    /// A streaming masker for a chunked text body.
    pub fn stream(&self) -> StreamMasker {
        StreamMasker::new(self.policy.clone())
    }

    /// Whether any detector runs for this connection (field rules only otherwise).
    pub fn has_detectors(&self) -> bool {
        self.policy.engine.is_some()
    }
}
