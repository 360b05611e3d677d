//! The plain-Rust configuration the binary fills from `[[masking]]` TOML, and its validation.

use std::fmt;

/// What to do with a sensitive value.
///
/// Ordered from least to most restrictive (`Partial < Hash < Redact < Null`); when several
/// rules apply to the same detector or column, the most restrictive operator wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// Keep a useful part (last four card digits, the e-mail domain, ...).
    Partial,
    /// Keyed HMAC-SHA-256, hex truncated to 16 chars, prefixed `h:`. Deterministic per key.
    Hash,
    /// A fixed placeholder (see [`crate::FIELD_PLACEHOLDER`] and [`crate::text_placeholder`]).
    Redact,
    /// SQL NULL for column values, JSON `null`, the empty string in free text.
    Null,
}

impl Operator {
    /// Parses `redact | partial | hash | null`.
    pub fn parse(s: &str) -> Option<Operator> {
        match s {
            "redact" => Some(Operator::Redact),
            "partial" => Some(Operator::Partial),
            "hash" => Some(Operator::Hash),
            "null" => Some(Operator::Null),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Redact => "redact",
            Operator::Partial => "partial",
            Operator::Hash => "hash",
            Operator::Null => "null",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A detector named in a rule: one of the built-ins or a [`CustomDetector`] by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DetectorName {
    /// `credit_card`: Luhn + issuer prefix and length.
    CreditCard,
    /// `email`
    Email,
    /// `us_ssn`: area/group/serial rules.
    UsSsn,
    /// `iban`: country length + mod-97.
    Iban,
    /// `phone`: E.164 and common national formats.
    Phone,
    /// `ip`: IPv4 and IPv6 (also accepted as `ipv4`/`ipv6`, which both mean `ip`).
    Ip,
    /// `secret`: cloud/API tokens, JWTs, PEM private keys, passwords in connection strings.
    Secret,
    /// A custom regex detector defined in [`MaskingConfig::custom_detectors`].
    Custom(String),
}

impl DetectorName {
    /// Every built-in detector.
    pub const BUILTIN: [DetectorName; 7] = [
        DetectorName::CreditCard,
        DetectorName::Email,
        DetectorName::UsSsn,
        DetectorName::Iban,
        DetectorName::Phone,
        DetectorName::Ip,
        DetectorName::Secret,
    ];

    /// Maps a config name to a detector; names that are not built-in become `Custom`
    /// (validation then checks that such a custom detector is defined).
    pub fn parse(s: &str) -> DetectorName {
        match s {
            "credit_card" => DetectorName::CreditCard,
            "email" => DetectorName::Email,
            "us_ssn" => DetectorName::UsSsn,
            "iban" => DetectorName::Iban,
            "phone" => DetectorName::Phone,
            "ip" | "ipv4" | "ipv6" => DetectorName::Ip,
            "secret" => DetectorName::Secret,
            other => DetectorName::Custom(other.to_string()),
        }
    }

    /// The name used in config and as the key of [`crate::MaskStats`].
    pub fn as_str(&self) -> &str {
        match self {
            DetectorName::CreditCard => "credit_card",
            DetectorName::Email => "email",
            DetectorName::UsSsn => "us_ssn",
            DetectorName::Iban => "iban",
            DetectorName::Phone => "phone",
            DetectorName::Ip => "ip",
            DetectorName::Secret => "secret",
            DetectorName::Custom(n) => n,
        }
    }
}

impl fmt::Display for DetectorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[masking]]` entry.
#[derive(Debug, Clone)]
pub struct MaskRule {
    /// Connection names, or `"*"` for every connection.
    pub connections: Vec<String>,
    /// Detectors run over text-like values.
    pub detectors: Vec<DetectorName>,
    /// Default operator for this rule's detectors.
    pub operator: Operator,
    /// Field rules: a glob over column names (`ssn`, `users.email`, `*.card_number`,
    /// `*email*`) and JSON keys / dotted JSON paths, with the operator for that field.
    pub fields: Vec<(String, Operator)>,
}

/// A user-defined regex detector (`[[masking.custom_detectors]]` or wherever the binary puts it).
#[derive(Debug, Clone)]
pub struct CustomDetector {
    /// Name used in `detectors = [...]` and in `masked_values`.
    pub name: String,
    /// Rust `regex` syntax. Matching is guaranteed linear time (finite automata, no
    /// backtracking); the pattern must have a bounded match length (≤ 4096 bytes).
    pub pattern: String,
    /// Overrides the rule's operator for this detector.
    pub operator: Option<Operator>,
}

/// The whole masking configuration.
#[derive(Debug, Clone, Default)]
pub struct MaskingConfig {
    /// `[[masking]]` entries.
    pub rules: Vec<MaskRule>,
    /// Custom regex detectors, enabled by naming them in a rule's `detectors`.
    pub custom_detectors: Vec<CustomDetector>,
    /// Key for the `hash` operator. Required when any rule uses `hash`. Lives with Warden's
    /// config (e.g. `${WARDEN_MASKING_KEY}`), never in the store.
    pub hmac_key: Option<Vec<u8>>,
}

/// Longest match a custom pattern may have, in bytes (keeps streaming exact and bounded).
pub const MAX_CUSTOM_MATCH_LEN: usize = 4096;

/// A problem found by [`MaskingConfig::validate`]. `Display` names the rule, the field and
/// the offending pattern so `warden config check` can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum ConfigError {
    /// A custom detector's regex does not compile.
    #[error(
        "masking: custom detector {name:?}: pattern {pattern:?} is not a valid regex: {message}"
    )]
    BadPattern {
        name: String,
        pattern: String,
        message: String,
    },
    /// A custom detector's regex can match unboundedly long text.
    #[error(
        "masking: custom detector {name:?}: pattern {pattern:?} can match more than {max} bytes; bound repetitions (e.g. `{{1,64}}` instead of `+`)"
    )]
    UnboundedPattern {
        name: String,
        pattern: String,
        max: usize,
    },
    /// A custom detector's regex matches the empty string.
    #[error("masking: custom detector {name:?}: pattern {pattern:?} matches the empty string")]
    EmptyMatch { name: String, pattern: String },
    /// A custom detector has an empty or built-in name, or is defined twice.
    #[error("masking: custom detector name {name:?} is empty, reserved or defined twice")]
    BadDetectorName { name: String },
    /// A rule names a detector that is neither built-in nor defined.
    #[error(
        "masking rule #{rule}: unknown detector {name:?} (built-in: credit_card, email, us_ssn, iban, phone, ip, secret; or define a custom detector)"
    )]
    UnknownDetector { rule: usize, name: String },
    /// A rule has an empty field glob.
    #[error("masking rule #{rule}: empty field pattern")]
    EmptyGlob { rule: usize },
    /// A field glob has characters that cannot appear in column or JSON key globs.
    #[error("masking rule #{rule}: field pattern {glob:?} has an empty segment")]
    BadGlob { rule: usize, glob: String },
    /// A rule lists no connections.
    #[error("masking rule #{rule}: `connections` is empty (use [\"*\"] for all)")]
    NoConnections { rule: usize },
    /// A rule has neither detectors nor fields.
    #[error(
        "masking rule #{rule}: neither `detectors` nor `fields` given; the rule would mask nothing"
    )]
    EmptyRule { rule: usize },
    /// `hash` is used without a key.
    #[error("masking rule #{rule}: operator `hash` needs a masking HMAC key")]
    HashWithoutKey { rule: usize },
}

impl MaskingConfig {
    /// Checks everything [`crate::Masker::new`] relies on; returns every problem found.
    /// Rule numbers are 1-based, in config order.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.custom_detectors {
            let builtin = DetectorName::BUILTIN.iter().any(|b| b.as_str() == c.name)
                || c.name == "ipv4"
                || c.name == "ipv6";
            if c.name.trim().is_empty() || builtin || !seen.insert(c.name.clone()) {
                errs.push(ConfigError::BadDetectorName {
                    name: c.name.clone(),
                });
            }
            if let Err(e) = crate::detect::check_custom_pattern(&c.name, &c.pattern) {
                errs.push(e);
            }
        }
        let has_key = self.hmac_key.as_ref().is_some_and(|k| !k.is_empty());
        for (i, r) in self.rules.iter().enumerate() {
            let rule = i + 1;
            if r.connections.is_empty() {
                errs.push(ConfigError::NoConnections { rule });
            }
            if r.detectors.is_empty() && r.fields.is_empty() {
                errs.push(ConfigError::EmptyRule { rule });
            }
            for d in &r.detectors {
                if let DetectorName::Custom(n) = d
                    && !self.custom_detectors.iter().any(|c| &c.name == n)
                {
                    errs.push(ConfigError::UnknownDetector {
                        rule,
                        name: n.clone(),
                    });
                }
            }
            for (g, _) in &r.fields {
                if g.trim().is_empty() {
                    errs.push(ConfigError::EmptyGlob { rule });
                } else if g.split('.').any(|seg| seg.is_empty()) {
                    errs.push(ConfigError::BadGlob {
                        rule,
                        glob: g.clone(),
                    });
                }
            }
            let uses_hash = r.operator == Operator::Hash && !r.detectors.is_empty()
                || r.fields.iter().any(|(_, o)| *o == Operator::Hash)
                || r.detectors.iter().any(|d| {
                    matches!(d, DetectorName::Custom(n) if self.custom_detectors.iter().any(|c| &c.name == n && c.operator == Some(Operator::Hash)))
                });
            if uses_hash && !has_key {
                errs.push(ConfigError::HashWithoutKey { rule });
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}
