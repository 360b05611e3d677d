//! `[[masking]]`, `[[detectors]]` and `[evidence]` in the config file → the masking engine.
use serde::Deserialize;
use toml::Spanned;
use warden_masking::{CustomDetector, DetectorName, MaskRule, MaskingConfig, Operator};

type S = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMasking {
    #[serde(default)]
    connections: Vec<S>,
    #[serde(default)]
    detectors: Vec<S>,
    operator: Option<S>,
    #[serde(default)]
    fields: std::collections::BTreeMap<String, S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDetector {
    name: S,
    pattern: S,
    operator: Option<S>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEvidence {
    response_rows: Option<Spanned<u64>>,
    response_bytes: Option<Spanned<u64>>,
    index_backlog: Option<Spanned<u64>>,
    indexer_nice: Option<Spanned<i64>>,
}

/// How much of each (masked) response the evidence keeps, and how far its index may
/// fall behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceLimits {
    pub response_rows: usize,
    pub response_bytes: usize,
    /// Records written but not yet indexed before new evidence is refused (sessions are
    /// slowed from half of it on).
    pub index_backlog: usize,
    /// Nice value of the evidence indexer thread (0: the process's own).
    pub indexer_nice: i32,
}

/// Bounds of `[evidence] index_backlog`: below 2 there is no room to slow down before
/// refusing; every waiting record is held in memory (its line, ~1 KiB for a statement), so
/// the maximum keeps that under about a GiB.
pub const INDEX_BACKLOG_RANGE: std::ops::RangeInclusive<u64> = 2..=1 << 20;

/// Bounds of `[evidence] indexer_nice`: the indexer may only be made to yield (a negative
/// value would need privileges and take the CPU from the statements it records).
pub const INDEXER_NICE_RANGE: std::ops::RangeInclusive<i64> = 0..=19;

impl Default for EvidenceLimits {
    fn default() -> Self {
        EvidenceLimits {
            response_rows: 20,
            response_bytes: 16 * 1024,
            index_backlog: warden_store::DEFAULT_INDEX_BACKLOG,
            indexer_nice: 0,
        }
    }
}

/// The value of an optional bounded setting: `None` when absent, or when outside `range`
/// (a problem at its span: the value, then what `hint` says to give).
fn bounded<T: PartialOrd + Copy + std::fmt::Display>(
    value: &Option<Spanned<T>>,
    range: &std::ops::RangeInclusive<T>,
    key: &str,
    problems: &mut Vec<Problem>,
    hint: impl FnOnce(&std::ops::RangeInclusive<T>) -> String,
) -> Option<T> {
    let v = value.as_ref()?;
    if range.contains(v.get_ref()) {
        return Some(*v.get_ref());
    }
    problems.push((
        key.into(),
        Some(v.span()),
        format!("{}: {}", v.get_ref(), hint(range)),
    ));
    None
}

/// A problem: key path, byte span, message.
pub(crate) type Problem = (String, Option<std::ops::Range<usize>>, String);

fn operator(key: &str, s: &S, problems: &mut Vec<Problem>) -> Operator {
    Operator::parse(s.get_ref()).unwrap_or_else(|| {
        problems.push((
            key.to_string(),
            Some(s.span()),
            format!("`{}`: use redact, partial, hash or null", s.get_ref()),
        ));
        Operator::Redact
    })
}

pub(crate) fn build(
    raw: &[RawMasking],
    detectors: &[RawDetector],
    evidence: &RawEvidence,
    hmac_key: Option<String>,
    connection_names: &std::collections::HashSet<String>,
) -> (MaskingConfig, EvidenceLimits, Vec<Problem>) {
    let mut problems = Vec::new();
    let custom: Vec<CustomDetector> = detectors
        .iter()
        .enumerate()
        .map(|(i, d)| CustomDetector {
            name: d.name.get_ref().clone(),
            pattern: d.pattern.get_ref().clone(),
            operator: d
                .operator
                .as_ref()
                .map(|o| operator(&format!("detectors[{i}].operator"), o, &mut problems)),
        })
        .collect();
    let mut rules = Vec::new();
    for (i, m) in raw.iter().enumerate() {
        let key = |f: &str| format!("masking[{i}].{f}");
        if m.connections.is_empty() {
            problems.push((
                key("connections"),
                None,
                "list the connections this masking covers (or [\"*\"])".into(),
            ));
        }
        for (j, c) in m.connections.iter().enumerate() {
            if c.get_ref() != "*" && !connection_names.contains(c.get_ref()) {
                problems.push((
                    format!("masking[{i}].connections[{j}]"),
                    Some(c.span()),
                    format!("unknown connection `{}`", c.get_ref()),
                ));
            }
        }
        let mut dets = Vec::new();
        for (j, d) in m.detectors.iter().enumerate() {
            let name = DetectorName::parse(d.get_ref());
            let builtin = DetectorName::BUILTIN.iter().any(|b| b == &name);
            if !builtin && !custom.iter().any(|c| &c.name == d.get_ref()) {
                let known: Vec<&str> = DetectorName::BUILTIN.iter().map(|b| b.as_str()).collect();
                problems.push((
                    format!("masking[{i}].detectors[{j}]"),
                    Some(d.span()),
                    format!(
                        "unknown detector `{}`; built in: {}; or define it in [[detectors]]",
                        d.get_ref(),
                        known.join(", ")
                    ),
                ));
            }
            dets.push(name);
        }
        let op = m
            .operator
            .as_ref()
            .map(|o| operator(&key("operator"), o, &mut problems))
            .unwrap_or(Operator::Redact);
        let fields = m
            .fields
            .iter()
            .map(|(glob, o)| {
                (
                    glob.clone(),
                    operator(&key(&format!("fields.{glob}")), o, &mut problems),
                )
            })
            .collect();
        rules.push(MaskRule {
            connections: m.connections.iter().map(|c| c.get_ref().clone()).collect(),
            detectors: dets,
            operator: op,
            fields,
        });
    }
    // Check each custom pattern on its own first, so a bad one is reported at its line.
    let mut bad_pattern = false;
    for (i, d) in detectors.iter().enumerate() {
        let alone = MaskingConfig {
            rules: vec![MaskRule {
                connections: vec!["*".into()],
                detectors: vec![DetectorName::parse(d.name.get_ref())],
                operator: Operator::Redact,
                fields: Vec::new(),
            }],
            custom_detectors: vec![custom[i].clone()],
            hmac_key: None,
        };
        if let Err(errs) = alone.validate() {
            bad_pattern = true;
            for e in errs {
                problems.push((
                    format!("detectors[{i}].pattern"),
                    Some(d.pattern.span()),
                    e.to_string(),
                ));
            }
        }
    }
    let config = MaskingConfig {
        rules,
        custom_detectors: custom,
        hmac_key: hmac_key.map(String::into_bytes),
    };
    // Whole-config problems not already reported with a line (e.g. `hash` without a key).
    let reported_unknown = problems.iter().any(|(k, _, _)| k.contains(".detectors["));
    if let (false, false, Err(errs)) = (bad_pattern, reported_unknown, config.validate()) {
        for e in errs {
            problems.push(("masking".into(), None, e.to_string()));
        }
    }
    let mut limits = EvidenceLimits::default();
    if let Some(r) = &evidence.response_rows {
        limits.response_rows = *r.get_ref() as usize;
    }
    if let Some(b) = &evidence.response_bytes {
        limits.response_bytes = *b.get_ref() as usize;
    }
    let backlog = bounded(
        &evidence.index_backlog,
        &INDEX_BACKLOG_RANGE,
        "evidence.index_backlog",
        &mut problems,
        |r| {
            format!(
                "give a number of records from {} to {} (default {})",
                r.start(),
                r.end(),
                warden_store::DEFAULT_INDEX_BACKLOG
            )
        },
    );
    if let Some(n) = backlog {
        limits.index_backlog = n as usize;
    }
    let nice = bounded(
        &evidence.indexer_nice,
        &INDEXER_NICE_RANGE,
        "evidence.indexer_nice",
        &mut problems,
        |r| {
            format!(
                "give a nice value from {} (the default: the gateway's own priority) to {} \
             (the index yields to every statement)",
                r.start(),
                r.end()
            )
        },
    );
    if let Some(n) = nice {
        limits.indexer_nice = n as i32;
    }
    (config, limits, problems)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const BAD: &str = r#"[[connections]]
name = "orders"
protocol = "postgres"
upstream = "127.0.0.1:5432"

[[detectors]]
name = "emp"
pattern = "EMP-([0-9]+"

[[masking]]
connections = ["orders", "nope"]
detectors = ["email", "emp", "credit_cardz"]
operator = "smudge"
"#;

    #[test]
    fn masking_mistakes_are_named_with_lines() {
        let errs = crate::config::Config::parse(BAD, Path::new("w.toml"), Path::new("."))
            .err()
            .unwrap();
        let got: Vec<(&str, Option<usize>)> =
            errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert!(got.contains(&("detectors[0].pattern", Some(8))), "{errs:?}");
        assert!(
            got.contains(&("masking[0].connections[1]", Some(11))),
            "{errs:?}"
        );
        assert!(
            got.contains(&("masking[0].detectors[2]", Some(12))),
            "{errs:?}"
        );
        assert!(got.contains(&("masking[0].operator", Some(13))), "{errs:?}");
    }

    #[test]
    fn hash_needs_a_key() {
        let text = "[[connections]]\nname = \"o\"\nprotocol = \"postgres\"\nupstream = \"127.0.0.1:1\"\n\n[[masking]]\nconnections = [\"o\"]\ndetectors = [\"email\"]\noperator = \"hash\"\n";
        let errs = crate::config::Config::parse(text, Path::new("w.toml"), Path::new("."))
            .err()
            .unwrap();
        assert!(errs.iter().any(|e| e.message.contains("key")), "{errs:?}");
    }

    /// The limits of a config whose `[evidence]` table holds `line`, or its problems.
    fn evidence_with(line: &str) -> Result<super::EvidenceLimits, Vec<crate::config::ConfigError>> {
        let text = format!("[evidence]\n{line}\n");
        crate::config::Config::parse(&text, Path::new("w.toml"), Path::new("."))
            .map(|c| c.evidence_limits)
    }

    /// `key = bad` is refused on line 2 with a message holding each of `says`.
    fn refused(key: &str, bad: &str, says: &[&str]) {
        let errs = evidence_with(&format!("{key} = {bad}")).err().unwrap();
        assert!(
            errs.iter().any(|e| e.key == format!("evidence.{key}")
                && e.line == Some(2)
                && says.iter().all(|s| e.message.contains(s))),
            "{key} = {bad}: {errs:?}"
        );
    }

    #[test]
    fn index_backlog_is_read_and_bounded() {
        assert_eq!(
            super::EvidenceLimits::default().index_backlog,
            warden_store::DEFAULT_INDEX_BACKLOG
        );
        assert_eq!(
            evidence_with("").ok().unwrap(),
            super::EvidenceLimits::default()
        );
        assert_eq!(
            evidence_with("index_backlog = 8")
                .ok()
                .unwrap()
                .index_backlog,
            8
        );
        for bad in ["0", "1", "1048577"] {
            refused("index_backlog", bad, &["from 2 to 1048576"]);
        }
    }

    #[test]
    fn indexer_nice_is_read_and_bounded() {
        assert_eq!(evidence_with("").ok().unwrap().indexer_nice, 0);
        assert_eq!(
            evidence_with("indexer_nice = 19")
                .ok()
                .unwrap()
                .indexer_nice,
            19
        );
        assert_eq!(
            evidence_with("indexer_nice = 0").ok().unwrap().indexer_nice,
            0
        );
        for bad in ["-1", "-20", "20"] {
            refused("indexer_nice", bad, &["from 0", "to 19"]);
        }
    }
}
