//! Detectors: one multi-pattern regex (finite automata, linear time) proposes candidates,
//! a validator per kind accepts or rejects them (Luhn, mod-97, area rules, std::net, ...).

use memchr::memmem;
use regex_automata::{Anchored, Input, MatchKind, meta};
use regex_syntax::ParserBuilder;
use regex_syntax::hir::Hir;

use crate::config::{ConfigError, CustomDetector, DetectorName, MAX_CUSTOM_MATCH_LEN, Operator};

/// Bytes kept back by the streaming masker for the built-in detectors: every built-in
/// pattern except JWTs and PEM blocks matches at most ~350 bytes, plus look-around.
pub const STREAM_TAIL: usize = 512;
/// Bytes of already-emitted text kept as look-behind context while streaming.
pub(crate) const CONTEXT: usize = 64;
/// Longest JWT / PEM block (or any held value) the streaming masker waits for before it
/// masks what it holds as if the stream ended there.
pub const STREAM_MAX_HOLD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pem,
    Jwt,
    UrlPassword,
    KvPassword,
    Aws,
    GitHub,
    Slack,
    OpenAi,
    Email,
    Iban,
    Card,
    Ssn,
    PhoneIntl,
    PhoneNanp,
    Ipv6,
    Ipv4,
    Custom,
}

const HEX: &str = "[0-9A-Fa-f]{1,4}";

fn builtin_patterns(d: &DetectorName) -> Vec<(Kind, String)> {
    match d {
        DetectorName::Secret => vec![
            (
                Kind::Pem,
                r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY-----(?:[A-Za-z0-9+/=\s:,.-]*?-----END[ A-Z0-9]{0,40}PRIVATE KEY-----|[A-Za-z0-9+/=\s:,.-]*)".into(),
            ),
            (
                Kind::Jwt,
                r"\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*".into(),
            ),
            (
                Kind::UrlPassword,
                r"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s:/@]{1,128}:[^\s/@]{1,256}@".into(),
            ),
            (
                Kind::KvPassword,
                r#"(?i:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token)["']?[ \t]*[=:][ \t]*["']?[^\s"'&;,<>]{1,256}"#.into(),
            ),
            (Kind::Aws, r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b".into()),
            (
                Kind::GitHub,
                r"\b(?:gh[pousr]_[A-Za-z0-9]{36,76}|github_pat_[A-Za-z0-9_]{22,120})\b".into(),
            ),
            (Kind::Slack, r"\bxox[baprs]-[A-Za-z0-9-]{10,200}".into()),
            (
                Kind::OpenAi,
                r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}".into(),
            ),
        ],
        DetectorName::Email => vec![(
            Kind::Email,
            r"\b[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,4}[A-Za-z]{2,24}\b".into(),
        )],
        DetectorName::Iban => vec![(
            Kind::Iban,
            r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b".into(),
        )],
        DetectorName::CreditCard => vec![(Kind::Card, r"\b(?:[0-9][ -]?){11,18}[0-9]\b".into())],
        DetectorName::UsSsn => vec![(
            Kind::Ssn,
            r"\b(?:[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4}|[0-9]{9})\b".into(),
        )],
        DetectorName::Phone => vec![
            (Kind::PhoneIntl, r"\+[1-9](?:[ .-]?\(?[0-9]\)?){7,16}".into()),
            (
                Kind::PhoneNanp,
                r"(?:\([0-9]{3}\) ?|\b[0-9]{3}[.-])[0-9]{3}[ .-][0-9]{4}\b".into(),
            ),
        ],
        DetectorName::Ip => vec![
            (
                Kind::Ipv6,
                format!(
                    r"\b{HEX}(?::{HEX}){{7}}\b|(?:\b{HEX}(?::{HEX}){{0,6}})?::(?:{HEX}(?::{HEX}){{0,6}})?"
                ),
            ),
            (
                Kind::Ipv4,
                r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b".into(),
            ),
        ],
        DetectorName::Custom(_) => vec![],
    }
}

/// Priority at equal start positions (leftmost-first): secrets, then the rest.
const ORDER: [DetectorName; 7] = [
    DetectorName::Secret,
    DetectorName::Email,
    DetectorName::Iban,
    DetectorName::CreditCard,
    DetectorName::UsSsn,
    DetectorName::Phone,
    DetectorName::Ip,
];

fn parse_builtin(p: &str) -> Hir {
    ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(p)
        .expect("built-in pattern compiles")
}

fn parse_custom(p: &str) -> Result<Hir, String> {
    ParserBuilder::new().build().parse(p).map_err(|e| {
        e.to_string()
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string()
    })
}

/// Validation of one custom pattern (used by `MaskingConfig::validate`).
pub(crate) fn check_custom_pattern(name: &str, pattern: &str) -> Result<(), ConfigError> {
    let hir = parse_custom(pattern).map_err(|message| ConfigError::BadPattern {
        name: name.into(),
        pattern: pattern.into(),
        message,
    })?;
    let props = hir.properties();
    if props.minimum_len().unwrap_or(0) == 0 {
        return Err(ConfigError::EmptyMatch {
            name: name.into(),
            pattern: pattern.into(),
        });
    }
    match props.maximum_len() {
        Some(n) if n <= MAX_CUSTOM_MATCH_LEN => {}
        _ => {
            return Err(ConfigError::UnboundedPattern {
                name: name.into(),
                pattern: pattern.into(),
                max: MAX_CUSTOM_MATCH_LEN,
            });
        }
    }
    meta::Builder::new()
        .build_from_hir(&hir)
        .map_err(|e| ConfigError::BadPattern {
            name: name.into(),
            pattern: pattern.into(),
            message: e.to_string(),
        })?;
    Ok(())
}

/// One enabled detector of an engine.
#[derive(Debug, Clone)]
pub(crate) struct DetInfo {
    pub name: String,
    pub op: Operator,
}

#[derive(Debug)]
struct Pat {
    kind: Kind,
    det: usize,
    anchored: meta::Regex,
}

/// A validated detection: `mask_start..mask_end` is the sensitive value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub kind: Kind,
    pub det: usize,
    pub mask_start: usize,
    pub mask_end: usize,
}

/// Compiled detectors for one connection policy.
#[derive(Debug)]
pub(crate) struct Engine {
    multi: meta::Regex,
    pats: Vec<Pat>,
    pub dets: Vec<DetInfo>,
    jwt: Option<usize>,
    pem: Option<usize>,
    pub tail: usize,
}

impl Engine {
    /// `enabled`: detector → operator (already merged across rules).
    pub(crate) fn new(
        enabled: &[(DetectorName, Operator)],
        customs: &[CustomDetector],
    ) -> Result<Engine, String> {
        let mut dets = Vec::new();
        let mut hirs = Vec::new();
        let mut pats: Vec<(Kind, usize)> = Vec::new();
        let mut tail = STREAM_TAIL;
        for d in ORDER.iter() {
            if let Some((_, op)) = enabled.iter().find(|(n, _)| n == d) {
                let idx = dets.len();
                dets.push(DetInfo {
                    name: d.as_str().to_string(),
                    op: *op,
                });
                for (kind, p) in builtin_patterns(d) {
                    hirs.push(parse_builtin(&p));
                    pats.push((kind, idx));
                }
            }
        }
        for (d, op) in enabled {
            if let DetectorName::Custom(name) = d {
                let c = customs
                    .iter()
                    .find(|c| &c.name == name)
                    .ok_or_else(|| format!("unknown detector {name:?}"))?;
                check_custom_pattern(&c.name, &c.pattern).map_err(|e| e.to_string())?;
                let hir = parse_custom(&c.pattern)?;
                tail = tail.max(hir.properties().maximum_len().unwrap_or(0) + 16);
                let idx = dets.len();
                dets.push(DetInfo {
                    name: name.clone(),
                    op: *op,
                });
                hirs.push(hir);
                pats.push((Kind::Custom, idx));
            }
        }
        let config = meta::Config::new()
            .match_kind(MatchKind::LeftmostFirst)
            .utf8_empty(false)
            .hybrid_cache_capacity(16 * 1024 * 1024);
        let multi = meta::Builder::new()
            .configure(config.clone())
            .build_many_from_hir(&hirs)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for ((kind, det), hir) in pats.into_iter().zip(hirs.iter()) {
            let anchored = meta::Builder::new()
                .configure(config.clone())
                .build_from_hir(hir)
                .map_err(|e| e.to_string())?;
            out.push(Pat {
                kind,
                det,
                anchored,
            });
        }
        let jwt = out.iter().position(|p| p.kind == Kind::Jwt);
        let pem = out.iter().position(|p| p.kind == Kind::Pem);
        Ok(Engine {
            multi,
            pats: out,
            dets,
            jwt,
            pem,
            tail,
        })
    }

    fn anchored_end(&self, pid: usize, hay: &[u8], at: usize) -> Option<usize> {
        let input = Input::new(hay).range(at..).anchored(Anchored::Yes);
        self.pats[pid].anchored.find(input).map(|m| m.end())
    }

    /// Scans `hay[pos..]`, calling `on_hit` for each validated detection in order.
    /// Returns the position up to which the scan is final. With `is_final == false`
    /// (streaming) nothing whose outcome could change with more input is decided.
    pub(crate) fn scan(
        &self,
        hay: &[u8],
        mut pos: usize,
        is_final: bool,
        mut on_hit: impl FnMut(Hit),
    ) -> usize {
        let len = hay.len();
        let limit = if is_final {
            len
        } else {
            let soft = len.saturating_sub(self.tail);
            self.first_unresolved_marker(hay, pos, soft).min(soft)
        };
        while pos < len {
            let Some(m) = self.multi.find(Input::new(hay).range(pos..)) else {
                pos = pos.max(limit);
                break;
            };
            let s = m.start();
            if s >= limit || (!is_final && m.end() + self.tail > len) {
                pos = pos.max(s.min(limit));
                break;
            }
            let first = m.pattern().as_usize();
            let mut hit = validate(self.pats[first].kind, hay, s, m.end());
            let mut pid = first;
            if hit.is_none() {
                let b = hay[s];
                for (i, p) in self.pats.iter().enumerate() {
                    if i == first || !can_start(p.kind, b) {
                        continue;
                    }
                    if let Some(e) = self.anchored_end(i, hay, s)
                        && (is_final || e + self.tail <= len)
                        && let Some(h) = validate(p.kind, hay, s, e)
                    {
                        hit = Some(h);
                        pid = i;
                        break;
                    }
                }
            }
            match hit {
                Some((ms, me, resume)) => {
                    on_hit(Hit {
                        kind: self.pats[pid].kind,
                        det: self.pats[pid].det,
                        mask_start: ms,
                        mask_end: me,
                    });
                    pos = resume.max(s + 1);
                }
                None => {
                    pos = s + 1;
                    while pos < len && (hay[pos] & 0xC0) == 0x80 {
                        pos += 1;
                    }
                }
            }
        }
        pos.min(len)
    }

    /// First JWT/PEM start at or after `from` (and before `soft`) whose match could still
    /// change with more input; `usize::MAX` when there is none.
    fn first_unresolved_marker(&self, hay: &[u8], from: usize, soft: usize) -> usize {
        let len = hay.len();
        let mut best = usize::MAX;
        let region = &hay[from.min(len)..soft.max(from).min(len)];
        if let Some(pid) = self.jwt {
            for off in memmem::find_iter(region, b"eyJ") {
                let x = from + off;
                let run = x + hay[x..].iter().take_while(|b| is_jwt_byte(**b)).count();
                if run + self.tail <= len {
                    continue;
                }
                let _ = pid;
                best = best.min(x);
                break;
            }
        }
        if let Some(pid) = self.pem {
            for off in memmem::find_iter(region, b"-----BEGIN") {
                let x = from + off;
                if x >= best {
                    break;
                }
                let resolved = match self.anchored_end(pid, hay, x) {
                    Some(e) => e + self.tail <= len,
                    None => x + 128 <= len,
                };
                if !resolved {
                    best = best.min(x);
                    break;
                }
            }
        }
        best
    }
}

fn is_jwt_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}

fn can_start(kind: Kind, b: u8) -> bool {
    match kind {
        Kind::Pem => b == b'-',
        Kind::Jwt => b == b'e',
        Kind::UrlPassword | Kind::KvPassword => b.is_ascii_alphabetic(),
        Kind::Aws => b == b'A',
        Kind::GitHub => b == b'g',
        Kind::Slack => b == b'x',
        Kind::OpenAi => b == b's',
        Kind::Email => b.is_ascii_alphanumeric() || b"._%+-".contains(&b),
        Kind::Iban => b.is_ascii_uppercase(),
        Kind::Card | Kind::Ssn | Kind::Ipv4 => b.is_ascii_digit(),
        Kind::PhoneIntl => b == b'+',
        Kind::PhoneNanp => b.is_ascii_digit() || b == b'(',
        Kind::Ipv6 => b.is_ascii_hexdigit() || b == b':',
        Kind::Custom => true,
    }
}

type Span = (usize, usize, usize);

fn validate(kind: Kind, hay: &[u8], s: usize, e: usize) -> Option<Span> {
    let whole = Some((s, e, e));
    match kind {
        Kind::Pem | Kind::Aws | Kind::GitHub | Kind::Custom => whole,
        Kind::Slack => hay[s..e]
            .iter()
            .any(u8::is_ascii_digit)
            .then_some((s, e, e)),
        Kind::OpenAi => {
            let body = &hay[s + 3..e];
            (body.iter().any(u8::is_ascii_digit) && body.iter().any(u8::is_ascii_alphabetic))
                .then_some((s, e, e))
        }
        Kind::Jwt => valid_jwt(&hay[s..e]).then_some((s, e, e)),
        Kind::KvPassword => {
            let m = &hay[s..e];
            let sep = m.iter().position(|b| *b == b'=' || *b == b':')?;
            let mut v = sep + 1;
            while v < m.len() && matches!(m[v], b' ' | b'\t' | b'"' | b'\'') {
                v += 1;
            }
            if v >= m.len() || is_placeholder(&m[v..]) || looks_like_key(&m[v..]) {
                return None;
            }
            Some((s + v, e, e))
        }
        Kind::UrlPassword => {
            let m = &hay[s..e];
            let scheme_end = memmem::find(m, b"://")? + 3;
            let colon = scheme_end + m[scheme_end..].iter().position(|b| *b == b':')?;
            let at = m.len() - 1;
            if colon + 1 >= at || is_placeholder(&m[colon + 1..at]) {
                return None;
            }
            Some((s + colon + 1, s + at, e))
        }
        Kind::Email => {
            let m = &hay[s..e];
            let at = m.iter().position(|b| *b == b'@')?;
            let local = &m[..at];
            if local.first() == Some(&b'.')
                || local.last() == Some(&b'.')
                || memmem::find(m, b"..").is_some()
                || m[at + 1..]
                    .split(|b| *b == b'.')
                    .any(|l| l.first() == Some(&b'-') || l.last() == Some(&b'-'))
            {
                return None;
            }
            whole
        }
        Kind::Iban => {
            let m = &hay[s..e];
            let want = iban_len(&m[..2])?;
            let mut n = 0;
            let mut end = None;
            let mut chars = Vec::with_capacity(want);
            for (i, b) in m.iter().enumerate() {
                if *b == b' ' {
                    continue;
                }
                n += 1;
                chars.push(*b);
                if n == want {
                    end = Some(i + 1);
                    break;
                }
            }
            let end = end?;
            if end < m.len() && m[end] != b' ' {
                return None;
            }
            iban_mod97(&chars).then_some((s, s + end, s + end))
        }
        Kind::Card => {
            for end in group_ends(hay, s, e) {
                let digits: Vec<u8> = hay[s..end]
                    .iter()
                    .copied()
                    .filter(u8::is_ascii_digit)
                    .collect();
                if (12..=19).contains(&digits.len()) && card_issuer_ok(&digits) && luhn(&digits) {
                    return Some((s, end, end));
                }
            }
            None
        }
        Kind::Ssn => {
            let m = &hay[s..e];
            if dash_chain(hay, s, e) {
                return None;
            }
            let digits: Vec<u8> = m.iter().copied().filter(u8::is_ascii_digit).collect();
            if m.len() == 9 && !ssn_context(hay, s) {
                return None;
            }
            if m.len() == 11 && m[3] == b' ' {
                // "123 45 6789": reject when it continues a longer run of digit groups.
                if (s >= 2 && hay[s - 1] == b' ' && hay[s - 2].is_ascii_digit())
                    || (e + 1 < hay.len() && hay[e] == b' ' && hay[e + 1].is_ascii_digit())
                {
                    return None;
                }
            }
            let area = &digits[..3];
            let ok = area != b"000"
                && area != b"666"
                && area[0] != b'9'
                && &digits[3..5] != b"00"
                && &digits[5..9] != b"0000";
            ok.then_some((s, e, e))
        }
        Kind::PhoneIntl => {
            // Separators stay in one family: spaces/dashes, or dots (so `+44 20 7946 0958
            // 10.0.0.1` stops before the IP address).
            let (mut dot, mut sp, mut last_sep) = (false, false, e);
            let mut e = e;
            for (i, b) in hay[s..e].iter().enumerate() {
                match b {
                    b'.' if sp => {
                        e = last_sep;
                        break;
                    }
                    b' ' | b'-' if dot => {
                        e = last_sep;
                        break;
                    }
                    b'.' => dot = true,
                    b' ' | b'-' => sp = true,
                    _ => {}
                }
                if matches!(b, b'.' | b' ' | b'-') {
                    last_sep = s + i;
                }
            }
            for end in group_ends(hay, s, e) {
                let n = hay[s..end].iter().filter(|b| b.is_ascii_digit()).count();
                if (8..=15).contains(&n) {
                    return Some((s, end, end));
                }
            }
            None
        }
        Kind::PhoneNanp => {
            if dash_chain(hay, s, e)
                || (s > 0 && hay[s - 1] == b'.')
                || (e + 1 < hay.len() && hay[e] == b'.' && hay[e + 1].is_ascii_digit())
            {
                return None;
            }
            let first = hay[s..e].iter().find(|b| b.is_ascii_digit())?;
            (*first >= b'2').then_some((s, e, e))
        }
        Kind::Ipv4 => {
            if (s >= 2 && hay[s - 1] == b'.' && hay[s - 2].is_ascii_digit())
                || (e + 1 < hay.len() && hay[e] == b'.' && hay[e + 1].is_ascii_digit())
            {
                return None;
            }
            let t = std::str::from_utf8(&hay[s..e]).ok()?;
            t.parse::<std::net::Ipv4Addr>().ok().map(|_| (s, e, e))
        }
        Kind::Ipv6 => {
            let t = std::str::from_utf8(&hay[s..e]).ok()?;
            let groups = t.split(':').filter(|g| !g.is_empty()).count();
            if groups < 2 || (e < hay.len() && (hay[e] == b':' || hay[e] == b'.')) {
                return None;
            }
            t.parse::<std::net::Ipv6Addr>().ok().map(|_| (s, e, e))
        }
    }
}

/// `password= pwd=x`: the "value" is the next pair (e.g. after the `null` operator emptied
/// the first one); leave it to its own match.
fn looks_like_key(v: &[u8]) -> bool {
    let l = v.to_ascii_lowercase();
    [
        "password", "passwd", "pwd", "secret", "api", "access", "auth",
    ]
    .iter()
    .any(|k| l.starts_with(k.as_bytes()) && l[k.len()..].iter().any(|b| *b == b'=' || *b == b':'))
}

fn is_placeholder(v: &[u8]) -> bool {
    v.starts_with(b"[REDACTED") || v.starts_with(b"****") || v.starts_with(b"h:")
}

/// Candidate ends inside `s..e`, longest first: after a digit not followed by a digit.
fn group_ends(hay: &[u8], s: usize, e: usize) -> Vec<usize> {
    let mut ends: Vec<usize> = (s + 1..=e)
        .filter(|&p| hay[p - 1].is_ascii_digit() && (p == hay.len() || !hay[p].is_ascii_digit()))
        .collect();
    ends.reverse();
    ends
}

/// `X-123-45-6789` / `123-45-6789-X`: part of a longer dash-separated identifier.
fn dash_chain(hay: &[u8], s: usize, e: usize) -> bool {
    (s >= 2 && hay[s - 1] == b'-' && hay[s - 2].is_ascii_alphanumeric())
        || (e + 1 < hay.len() && hay[e] == b'-' && hay[e + 1].is_ascii_alphanumeric())
}

fn ssn_context(hay: &[u8], s: usize) -> bool {
    let from = s.saturating_sub(32);
    let before = hay[from..s].to_ascii_lowercase();
    [
        &b"ssn"[..],
        b"social security",
        b"ss#",
        b"soc sec",
        b"soc. sec",
    ]
    .iter()
    .any(|k| memmem::find(&before, k).is_some())
}

pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn prefix(d: &[u8], k: usize) -> u32 {
    d.iter()
        .take(k)
        .fold(0, |a, b| a * 10 + u32::from(b - b'0'))
}

pub(crate) fn card_issuer_ok(d: &[u8]) -> bool {
    let n = d.len();
    let (p2, p3, p4, p6) = (prefix(d, 2), prefix(d, 3), prefix(d, 4), prefix(d, 6));
    let visa = d[0] == b'4' && matches!(n, 13 | 16 | 19);
    let mc = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && n == 16;
    let amex = (p2 == 34 || p2 == 37) && n == 15;
    let discover =
        (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6))
            && (16..=19).contains(&n);
    let jcb = (3528..=3589).contains(&p4) && (16..=19).contains(&n);
    let diners = ((300..=305).contains(&p3) || p4 == 3095 || matches!(p2, 36 | 38 | 39))
        && (14..=19).contains(&n);
    let unionpay = p2 == 62 && (16..=19).contains(&n);
    let maestro =
        (matches!(p2, 50 | 56..=58 | 67) || matches!(p4, 6304 | 6759)) && (12..=19).contains(&n);
    visa || mc || amex || discover || jcb || diners || unionpay || maestro
}

fn iban_len(cc: &[u8]) -> Option<usize> {
    const T: &[(&[u8; 2], usize)] = &[
        (b"AD", 24),
        (b"AE", 23),
        (b"AL", 28),
        (b"AT", 20),
        (b"AZ", 28),
        (b"BA", 20),
        (b"BE", 16),
        (b"BG", 22),
        (b"BH", 22),
        (b"BR", 29),
        (b"BY", 28),
        (b"CH", 21),
        (b"CR", 22),
        (b"CY", 28),
        (b"CZ", 24),
        (b"DE", 22),
        (b"DK", 18),
        (b"DO", 28),
        (b"EE", 20),
        (b"EG", 29),
        (b"ES", 24),
        (b"FI", 18),
        (b"FO", 18),
        (b"FR", 27),
        (b"GB", 22),
        (b"GE", 22),
        (b"GI", 23),
        (b"GL", 18),
        (b"GR", 27),
        (b"GT", 28),
        (b"HR", 21),
        (b"HU", 28),
        (b"IE", 22),
        (b"IL", 23),
        (b"IQ", 23),
        (b"IS", 26),
        (b"IT", 27),
        (b"JO", 30),
        (b"KW", 30),
        (b"KZ", 20),
        (b"LB", 28),
        (b"LC", 32),
        (b"LI", 21),
        (b"LT", 20),
        (b"LU", 20),
        (b"LV", 21),
        (b"MC", 27),
        (b"MD", 24),
        (b"ME", 22),
        (b"MK", 19),
        (b"MR", 27),
        (b"MT", 31),
        (b"MU", 30),
        (b"NL", 18),
        (b"NO", 15),
        (b"PK", 24),
        (b"PL", 28),
        (b"PS", 29),
        (b"PT", 25),
        (b"QA", 29),
        (b"RO", 24),
        (b"RS", 22),
        (b"SA", 24),
        (b"SC", 31),
        (b"SE", 24),
        (b"SI", 19),
        (b"SK", 24),
        (b"SM", 27),
        (b"ST", 25),
        (b"SV", 28),
        (b"TL", 23),
        (b"TN", 24),
        (b"TR", 26),
        (b"UA", 29),
        (b"VA", 22),
        (b"VG", 24),
        (b"XK", 20),
    ];
    T.iter().find(|(c, _)| &c[..] == cc).map(|(_, n)| *n)
}

pub(crate) fn iban_mod97(chars: &[u8]) -> bool {
    let mut rem = 0u32;
    for b in chars[4..].iter().chain(&chars[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn valid_jwt(tok: &[u8]) -> bool {
    use base64::Engine as _;
    let Some(dot) = tok.iter().position(|b| *b == b'.') else {
        return false;
    };
    let Ok(header) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&tok[..dot]) else {
        return false;
    };
    matches!(serde_json::from_slice::<serde_json::Value>(&header), Ok(serde_json::Value::Object(m)) if m.contains_key("alg"))
}
