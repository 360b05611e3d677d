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
    /// Built-in detectors only: scan through [`collect_candidates`].
    prefilter: bool,
    /// Per first byte: the patterns (bit = index in `pats`) that can start with it.
    by_byte: Box<[u64; 256]>,
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
        let prefilter = out.len() <= 64 && out.iter().all(|p| p.kind != Kind::Custom);
        let mut by_byte = Box::new([0u64; 256]);
        for (b, mask) in by_byte.iter_mut().enumerate() {
            for (i, p) in out.iter().enumerate().take(64) {
                if can_start(p.kind, b as u8) {
                    *mask |= 1 << i;
                }
            }
        }
        Ok(Engine {
            multi,
            pats: out,
            dets,
            jwt,
            pem,
            prefilter,
            by_byte,
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
        pos: usize,
        is_final: bool,
        on_hit: impl FnMut(Hit),
    ) -> usize {
        let limit = if is_final {
            hay.len()
        } else {
            let soft = hay.len().saturating_sub(self.tail);
            self.first_unresolved_marker(hay, pos, soft).min(soft)
        };
        if self.prefilter {
            self.scan_candidates(hay, pos, is_final, limit, on_hit)
        } else {
            self.scan_dfa(hay, pos, is_final, limit, on_hit)
        }
    }

    /// The decision at a position `s` where pattern `first` (the multi-pattern automaton's
    /// leftmost-first choice) matched up to `end`: validate it; if rejected, let the other
    /// patterns try the same position (anchored), in priority order.
    fn decide(
        &self,
        hay: &[u8],
        s: usize,
        first: usize,
        end: usize,
        is_final: bool,
    ) -> Option<(usize, Span)> {
        if let Some(h) = validate(self.pats[first].kind, hay, s, end) {
            return Some((first, h));
        }
        let b = hay[s];
        for (i, p) in self.pats.iter().enumerate() {
            if i == first || !can_start(p.kind, b) {
                continue;
            }
            if let Some(e) = self.anchored_end(i, hay, s)
                && (is_final || e + self.tail <= hay.len())
                && let Some(h) = validate(p.kind, hay, s, e)
            {
                return Some((i, h));
            }
        }
        None
    }

    fn report(&self, pid: usize, (ms, me, _): Span, on_hit: &mut impl FnMut(Hit)) {
        on_hit(Hit {
            kind: self.pats[pid].kind,
            det: self.pats[pid].det,
            mask_start: ms,
            mask_end: me,
        });
    }

    /// Reference path (and the one used with custom detectors, whose start bytes are
    /// unknown): the unanchored multi-pattern automaton walks every byte.
    fn scan_dfa(
        &self,
        hay: &[u8],
        mut pos: usize,
        is_final: bool,
        limit: usize,
        mut on_hit: impl FnMut(Hit),
    ) -> usize {
        let len = hay.len();
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
            match self.decide(hay, s, m.pattern().as_usize(), m.end(), is_final) {
                Some((pid, span)) => {
                    self.report(pid, span, &mut on_hit);
                    pos = span.2.max(s + 1);
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

    /// Built-in detectors only: a byte-level pass ([`collect_candidates`]) lists every
    /// position where some built-in pattern could start (a superset, never fewer); at each
    /// one the patterns whose cheap shape check ([`may_start`]) passes run anchored, in
    /// priority order. Same decisions as [`Self::scan_dfa`]: that one stops exactly at the
    /// positions where a pattern matches (all candidates here, visited in the same order),
    /// takes the first pattern in priority order that matches there (leftmost-first), and
    /// on rejection tries the others at the same position.
    fn scan_candidates(
        &self,
        hay: &[u8],
        mut pos: usize,
        is_final: bool,
        limit: usize,
        mut on_hit: impl FnMut(Hit),
    ) -> usize {
        let len = hay.len();
        let mut cands = SCRATCH.take();
        cands.clear();
        let from = pos;
        let mut cur = Cursor { i: pos, v6_done: 0 };
        let mut stopped = false;
        'segments: loop {
            let stop = cur.i.saturating_add(SEGMENT);
            collect_candidates(hay, from, &mut cur, stop, &mut cands);
            let done = cur.i >= len;
            let horizon = if done {
                usize::MAX
            } else {
                horizon(hay, cur.i)
            };
            cands.sort_unstable();
            cands.dedup();
            let ready = cands.partition_point(|&s| s < horizon);
            for &s in &cands[..ready] {
                if s < pos {
                    continue;
                }
                if s >= limit {
                    break 'segments;
                }
                let mut first = true;
                let mut pats = self.by_byte[hay[s] as usize];
                while pats != 0 {
                    let i = pats.trailing_zeros() as usize;
                    pats &= pats - 1;
                    let p = &self.pats[i];
                    if !may_start(p.kind, hay, s) {
                        continue;
                    }
                    let Some(e) = self.anchored_end(i, hay, s) else {
                        continue;
                    };
                    if !is_final && e + self.tail > len {
                        if first {
                            // What matches here could still change with more input.
                            pos = pos.max(s);
                            stopped = true;
                            break 'segments;
                        }
                        continue;
                    }
                    first = false;
                    if let Some(span) = validate(p.kind, hay, s, e) {
                        self.report(i, span, &mut on_hit);
                        pos = span.2.max(s + 1);
                        break;
                    }
                }
            }
            cands.drain(..ready);
            if done || pos >= limit {
                break;
            }
        }
        if !stopped {
            pos = pos.max(limit);
        }
        if cands.capacity() <= 1 << 16 {
            SCRATCH.set(cands);
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

thread_local! {
    /// Candidate positions, reused across scans on a thread (no allocation per call).
    static SCRATCH: std::cell::Cell<Vec<usize>> = const { std::cell::Cell::new(Vec::new()) };
}

/// ASCII word byte, as `\b` sees it in the built-in patterns (`unicode(false)`).
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `\b` at `s` (between `s - 1` and `s`).
fn boundary(hay: &[u8], s: usize) -> bool {
    let before = s > 0 && is_word(hay[s - 1]);
    let after = s < hay.len() && is_word(hay[s]);
    before != after
}

const T_START: u8 = 1;
const T_UNDERSCORE: u8 = 2;
const T_OTHER: u8 = 3;

/// Byte classes for [`collect_candidates`]: digits and upper-case letters (they start
/// word-initial patterns), `_` (`ghp_`, `github_pat_`), and the non-word bytes that start
/// or anchor a match (`@ = : + ( -`). Everything else (lower-case letters, blanks, most
/// punctuation, non-ASCII) is skipped by a tight loop.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_digit() || c.is_ascii_uppercase() {
            t[b] = T_START;
        }
        b += 1;
    }
    t[b'_' as usize] = T_UNDERSCORE;
    t[b'@' as usize] = T_OTHER;
    t[b'=' as usize] = T_OTHER;
    t[b':' as usize] = T_OTHER;
    t[b'+' as usize] = T_OTHER;
    t[b'(' as usize] = T_OTHER;
    t[b'-' as usize] = T_OTHER;
    t
};

/// Pushes onto `out` every position `>= from` where a built-in pattern could start (not
/// sorted, may repeat). Each rule below is a necessary condition of one pattern family,
/// so a position missing here is one where no built-in pattern matches:
/// - digit / upper-case starts need a `\b` (a word's first byte): ≥ 9 digits in a run with
///   single ` .-` separators or the `d.d.d.d` shape (card, SSN, NANP phone, IPv4),
///   `[A-Z]{2}[0-9]{2}` (IBAN), `AKIA`/`ASIA`;
/// - lower-case token prefixes are found by a later byte: `eyJ` by `J`, `gh?_` and
///   `github_pat_` by `_`, `xox?-` and `sk-` by `-`, each needing a `\b` at its start;
/// - e-mail local parts end at an `@`, `password=`-style keys end before `=`/`:`, URL
///   schemes before `://`, IPv6 addresses lie in a hex/colon run with `::` or 7 colons;
/// - `+` (international phone), `(` (NANP phone), `-----BEGIN` (PEM) start the match.
fn collect_candidates(
    hay: &[u8],
    from: usize,
    cur: &mut Cursor,
    stop: usize,
    out: &mut Vec<usize>,
) {
    let len = hay.len();
    let mut i = cur.i;
    let mut v6_done = cur.v6_done;
    // A token prefix found by a later byte: its start needs a `\b`.
    let back = |s: usize, out: &mut Vec<usize>| {
        if s >= from && boundary(hay, s) {
            out.push(s);
        }
    };
    loop {
        // Eight bytes at a time while none is in `(..=_` (a superset of the trigger bytes).
        while i + 8 <= len {
            let m = bytes_in_28_5f(u64::from_le_bytes(hay[i..i + 8].try_into().unwrap()));
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        if i + 8 > len {
            while i < len && CLASS[hay[i] as usize] == 0 {
                i += 1;
            }
        }
        if i >= len || i >= stop {
            break;
        }
        if CLASS[hay[i] as usize] == 0 {
            i += 1;
            continue;
        }
        let b = hay[i];
        match CLASS[b as usize] {
            T_START => {
                if i == 0 || !is_word(hay[i - 1]) {
                    word_start(hay, i, out);
                } else if b == b'J' && i >= 2 && &hay[i - 2..i] == b"ey" {
                    back(i - 2, out);
                }
                i += 1;
                while i < len && CLASS[hay[i] as usize] == T_START {
                    i += 1;
                }
                continue;
            }
            T_UNDERSCORE => {
                if i >= 3
                    && hay[i - 3] == b'g'
                    && hay[i - 2] == b'h'
                    && b"pousr".contains(&hay[i - 1])
                {
                    back(i - 3, out);
                }
                if i >= 6 && &hay[i - 6..i] == b"github" && hay[i..].starts_with(b"_pat_") {
                    back(i - 6, out);
                }
            }
            _ => match b {
                b'@' => email_starts(hay, i, from, out),
                b'=' => key_starts(hay, i, from, out),
                b':' => {
                    key_starts(hay, i, from, out);
                    if hay[i + 1..].starts_with(b"//") {
                        scheme_starts(hay, i, from, out);
                    }
                    if i >= v6_done {
                        v6_done = ipv6_starts(hay, i, from, out);
                    }
                }
                b'+' if matches!(hay.get(i + 1), Some(b'1'..=b'9')) => out.push(i),
                b'(' if hay.len() > i + 4
                    && hay[i + 1..i + 4].iter().all(u8::is_ascii_digit)
                    && hay[i + 4] == b')' =>
                {
                    out.push(i)
                }
                b'-' => {
                    if hay[i..].starts_with(b"-----BEGIN") {
                        out.push(i);
                    }
                    if i >= 2 && &hay[i - 2..i] == b"sk" {
                        back(i - 2, out);
                    }
                    if i >= 4 && &hay[i - 4..i - 1] == b"xox" && b"baprs".contains(&hay[i - 1]) {
                        back(i - 4, out);
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    *cur = Cursor { i, v6_done };
}

/// Where [`collect_candidates`] stopped: the next byte to look at, and the end of the last
/// hex/colon run already examined for IPv6.
struct Cursor {
    i: usize,
    v6_done: usize,
}

/// Triggers are collected a segment at a time so the candidate list stays small.
const SEGMENT: usize = 16 * 1024;

/// Lowest start a trigger at or after `b` can produce: e-mail local parts reach 64 bytes
/// back, `password` keys 13 bytes before the blank run ending at `b`, IPv6 addresses back
/// to the start of the hex/colon run around `b`. Runs longer than 4 KiB give 0 (decide
/// nothing yet; the candidates wait for the next segment).
fn horizon(hay: &[u8], b: usize) -> usize {
    let lim = b.saturating_sub(4096);
    let mut w = b;
    while w > lim && matches!(hay[w - 1], b' ' | b'\t') {
        w -= 1;
    }
    let mut r = b;
    while r > lim && (hay[r - 1].is_ascii_hexdigit() || hay[r - 1] == b':') {
        r -= 1;
    }
    if (w == lim || r == lim) && lim > 0 {
        return 0;
    }
    b.saturating_sub(64).min(w.saturating_sub(14)).min(r)
}

/// High bit set in each byte of `x` whose value is in `0x28..=0x5F` (`(` to `_`: digits,
/// upper case, `@ = : + ( - _` and a few other punctuation bytes); exact per byte (no
/// carries between bytes), bytes ≥ 0x80 never flagged.
#[inline]
fn bytes_in_28_5f(x: u64) -> u64 {
    const L: u64 = 0x0101_0101_0101_0101;
    const H: u64 = 0x8080_8080_8080_8080;
    let low7 = x & (L * 127);
    // (127 + n - low7) keeps the high bit iff low7 < n; (low7 + 127 - m) sets it iff low7 > m.
    (L * (127 + 0x60) - low7) & !x & (low7 + L * (127 - 0x27)) & H
}

/// Word-initial patterns starting with a digit or an upper-case letter at `r`.
fn word_start(hay: &[u8], r: usize, out: &mut Vec<usize>) {
    let w = &hay[r..];
    let hit = if w[0].is_ascii_digit() {
        // Fast reject: fewer than 9 leading digits and no ` .-` right after them.
        let d = w.iter().take(9).take_while(|b| b.is_ascii_digit()).count();
        (d >= 9 || matches!(w.get(d), Some(b' ' | b'-' | b'.')))
            && (card_shape(w) || ssn_shape(w) || nanp_shape(w) || ipv4_shape(w))
    } else {
        (w.len() >= 4
            && w[1].is_ascii_uppercase()
            && w[2].is_ascii_digit()
            && w[3].is_ascii_digit())
            || w.starts_with(b"AKIA")
            || w.starts_with(b"ASIA")
    };
    if hit {
        out.push(r);
    }
}

/// Card: ≥ 12 digits in the run starting at `w[0]`, single ` ` or `-` between digits.
fn card_shape(w: &[u8]) -> bool {
    let (mut n, mut i) = (0, 0);
    while n < 12 {
        if i < w.len() && w[i].is_ascii_digit() {
            n += 1;
            i += 1;
        } else if i > 0
            && i + 1 < w.len()
            && matches!(w[i], b' ' | b'-')
            && w[i + 1].is_ascii_digit()
        {
            i += 1;
        } else {
            break;
        }
    }
    n >= 12
}

fn digits(w: &[u8], r: std::ops::Range<usize>) -> bool {
    w.len() >= r.end && w[r].iter().all(u8::is_ascii_digit)
}

/// SSN: `ddd-dd-dddd`, `ddd dd dddd` or nine digits.
fn ssn_shape(w: &[u8]) -> bool {
    digits(w, 0..9)
        || (digits(w, 0..3)
            && digits(w, 4..6)
            && digits(w, 7..11)
            && ((w[3] == b'-' && w[6] == b'-') || (w[3] == b' ' && w[6] == b' ')))
}

/// NANP phone without parentheses: `ddd[.-]ddd[ .-]dddd`.
fn nanp_shape(w: &[u8]) -> bool {
    digits(w, 0..3)
        && digits(w, 4..7)
        && digits(w, 8..12)
        && matches!(w[3], b'.' | b'-')
        && matches!(w[7], b' ' | b'.' | b'-')
}

/// `[0-9]{1,3}` `.` three times then a digit.
fn ipv4_shape(w: &[u8]) -> bool {
    let mut i = 0;
    for group in 0..4 {
        let st = i;
        while i < w.len() && i - st < 3 && w[i].is_ascii_digit() {
            i += 1;
        }
        if i == st {
            return false;
        }
        if group < 3 {
            if w.get(i) != Some(&b'.') {
                return false;
            }
            i += 1;
        }
    }
    true
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// E-mail starts for the `@` at `at`: `\b` positions in the ≤ 64 local-part bytes before it.
fn email_starts(hay: &[u8], at: usize, from: usize, out: &mut Vec<usize>) {
    if !hay
        .get(at + 1)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-')
    {
        return;
    }
    let lo = at.saturating_sub(64).max(from);
    let mut k = at;
    while k > lo && is_local(hay[k - 1]) {
        k -= 1;
    }
    out.extend((k..at).filter(|&s| boundary(hay, s)));
}

/// Keys of `password=`-style pairs: `(?i:password|passwd|pwd|secret|api[_-]?key|
/// access[_-]?token|auth[_-]?token)` spelled out.
const KEYS: [&[u8]; 13] = [
    b"password",
    b"passwd",
    b"pwd",
    b"secret",
    b"apikey",
    b"api_key",
    b"api-key",
    b"accesstoken",
    b"access_token",
    b"access-token",
    b"authtoken",
    b"auth_token",
    b"auth-token",
];

/// Key-value secret keys (case-insensitive, no `\b`) ending before the `=`/`:` at `sep`
/// (after optional blanks and one quote).
fn key_starts(hay: &[u8], sep: usize, from: usize, out: &mut Vec<usize>) {
    let mut j = sep;
    while j > 0 && matches!(hay[j - 1], b' ' | b'\t') {
        j -= 1;
    }
    if j > 0 && matches!(hay[j - 1], b'"' | b'\'') {
        j -= 1;
    }
    if j < 3 || !matches!(hay[j - 1] | 0x20, b'd' | b't' | b'y' | b'n') {
        return;
    }
    for k in KEYS {
        if j >= k.len() + from && hay[j - k.len()..j].eq_ignore_ascii_case(k) {
            out.push(j - k.len());
        }
    }
}

/// URL scheme starts (`[A-Za-z][A-Za-z0-9+.-]{1,30}` at a `\b`) before the `://` at `c`.
fn scheme_starts(hay: &[u8], c: usize, from: usize, out: &mut Vec<usize>) {
    let lo = c.saturating_sub(31).max(from);
    let mut k = c;
    while k > lo && (hay[k - 1].is_ascii_alphanumeric() || b"+.-".contains(&hay[k - 1])) {
        k -= 1;
    }
    out.extend(
        (k..c.saturating_sub(1))
            .filter(|&s| hay[s].is_ascii_alphabetic() && (s == 0 || !is_word(hay[s - 1]))),
    );
}

/// IPv6 starts in the hex/colon run around the `:` at `c`, when that run holds `::` or
/// at least 7 colons. Returns the run's end (later colons of the run are done).
fn ipv6_starts(hay: &[u8], c: usize, from: usize, out: &mut Vec<usize>) -> usize {
    let hexcolon = |b: u8| b.is_ascii_hexdigit() || b == b':';
    let mut r = c;
    while r > 0 && hexcolon(hay[r - 1]) {
        r -= 1;
    }
    let mut t = c + 1;
    while t < hay.len() && hexcolon(hay[t]) {
        t += 1;
    }
    let run = &hay[r..t];
    let colons = run.iter().filter(|b| **b == b':').count();
    if colons >= 7 || run.windows(2).any(|w| w == b"::") {
        out.extend((r.max(from)..t).filter(|&s| hay[s] == b':' || boundary(hay, s)));
    }
    t
}

/// Cheap necessary condition for `kind`'s pattern to match anchored at `s` (false means
/// it cannot; true means the automaton has to decide).
fn may_start(kind: Kind, hay: &[u8], s: usize) -> bool {
    let w = &hay[s..];
    match kind {
        Kind::Pem => w.starts_with(b"-----BEGIN"),
        Kind::Jwt => w.starts_with(b"eyJ") && boundary(hay, s),
        Kind::UrlPassword => {
            if !w[0].is_ascii_alphabetic() || !boundary(hay, s) {
                return false;
            }
            let n = w
                .iter()
                .take(32)
                .take_while(|b| b.is_ascii_alphanumeric() || b"+.-".contains(b))
                .count();
            (2..=31).contains(&n) && w[n..].starts_with(b"://")
        }
        Kind::KvPassword => key_at(w),
        Kind::Aws => (w.starts_with(b"AKIA") || w.starts_with(b"ASIA")) && boundary(hay, s),
        Kind::GitHub => {
            ((w.len() >= 4
                && w[0] == b'g'
                && w[1] == b'h'
                && b"pousr".contains(&w[2])
                && w[3] == b'_')
                || w.starts_with(b"github_pat_"))
                && boundary(hay, s)
        }
        Kind::Slack => {
            w.len() >= 5
                && w.starts_with(b"xox")
                && b"baprs".contains(&w[3])
                && w[4] == b'-'
                && boundary(hay, s)
        }
        Kind::OpenAi => w.starts_with(b"sk-") && boundary(hay, s),
        Kind::Email => {
            let n = w.iter().take(65).take_while(|b| is_local(**b)).count();
            (1..=64).contains(&n) && w.get(n) == Some(&b'@') && boundary(hay, s)
        }
        Kind::Iban => {
            w.len() >= 4
                && w[0].is_ascii_uppercase()
                && w[1].is_ascii_uppercase()
                && w[2].is_ascii_digit()
                && w[3].is_ascii_digit()
                && boundary(hay, s)
        }
        Kind::Card => card_shape(w) && boundary(hay, s),
        Kind::Ssn => ssn_shape(w) && boundary(hay, s),
        Kind::PhoneIntl => w.len() >= 2 && w[0] == b'+' && matches!(w[1], b'1'..=b'9'),
        Kind::PhoneNanp => {
            (w.len() >= 5 && w[0] == b'(' && digits(w, 1..4) && w[4] == b')')
                || (nanp_shape(w) && boundary(hay, s))
        }
        Kind::Ipv6 => {
            if !(w[0] == b':' || (w[0].is_ascii_hexdigit() && boundary(hay, s))) {
                return false;
            }
            let run = w
                .iter()
                .take_while(|b| b.is_ascii_hexdigit() || **b == b':')
                .count();
            let run = &w[..run];
            run.iter().filter(|b| **b == b':').count() >= 7 || run.windows(2).any(|p| p == b"::")
        }
        Kind::Ipv4 => ipv4_shape(w) && boundary(hay, s),
        Kind::Custom => true,
    }
}

/// A `password`-style key at the start of `w`, then an optional quote, blanks and `=`/`:`
/// (ASCII case-insensitive).
fn key_at(w: &[u8]) -> bool {
    if !matches!(w.first().map(|b| b | 0x20), Some(b'p' | b's' | b'a')) {
        return false;
    }
    KEYS.iter().any(|k| {
        if w.len() <= k.len() || !w[..k.len()].eq_ignore_ascii_case(k) {
            return false;
        }
        let mut i = k.len();
        if matches!(w.get(i), Some(b'"' | b'\'')) {
            i += 1;
        }
        while matches!(w.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        matches!(w.get(i), Some(b'=' | b':'))
    })
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
            let mut chars = [0u8; 34];
            for (i, b) in m.iter().enumerate() {
                if *b == b' ' {
                    continue;
                }
                if n == chars.len() {
                    return None;
                }
                chars[n] = *b;
                n += 1;
                if n == want {
                    end = Some(i + 1);
                    break;
                }
            }
            let end = end?;
            if end < m.len() && m[end] != b' ' {
                return None;
            }
            iban_mod97(&chars[..n]).then_some((s, s + end, s + end))
        }
        Kind::Card => {
            for end in group_ends(hay, s, e) {
                let (mut digits, mut n) = ([0u8; 19], 0);
                for b in hay[s..end].iter().filter(|b| b.is_ascii_digit()) {
                    if n == digits.len() {
                        n += 1;
                        break;
                    }
                    digits[n] = *b;
                    n += 1;
                }
                if (12..=19).contains(&n) && card_issuer_ok(&digits[..n]) && luhn(&digits[..n]) {
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
            let (mut digits, mut n) = ([0u8; 9], 0);
            for b in m.iter().filter(|b| b.is_ascii_digit()) {
                if n == digits.len() {
                    return None;
                }
                digits[n] = *b;
                n += 1;
            }
            if n < 9 {
                return None;
            }
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
            for end in group_ends(hay, s, e).filter(|&end| !ipv6_continues(hay, end)) {
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
                || ipv6_continues(hay, e)
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
    [
        "password", "passwd", "pwd", "secret", "api", "access", "auth",
    ]
    .iter()
    .any(|k| {
        v.len() >= k.len()
            && v[..k.len()].eq_ignore_ascii_case(k.as_bytes())
            && v[k.len()..].iter().any(|b| *b == b'=' || *b == b':')
    })
}

fn is_placeholder(v: &[u8]) -> bool {
    v.starts_with(b"[REDACTED") || v.starts_with(b"****") || v.starts_with(b"h:")
}

/// Candidate ends inside `s..e`, longest first: after a digit not followed by a digit.
fn group_ends(hay: &[u8], s: usize, e: usize) -> impl Iterator<Item = usize> + '_ {
    (s + 1..=e)
        .rev()
        .filter(|&p| hay[p - 1].is_ascii_digit() && (p == hay.len() || !hay[p].is_ascii_digit()))
}

/// The digit group ending at `p` is the first group of an IPv6 address (`…2001:db8::1`,
/// or one `partial` already masked: `…2001:***::*`): a phone number ending there would
/// swallow it, and masking would not be idempotent (a second pass would find the rest).
fn ipv6_continues(hay: &[u8], p: usize) -> bool {
    hay.get(p) == Some(&b':')
        && hay
            .get(p + 1)
            .is_some_and(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'*'))
}

/// `X-123-45-6789` / `123-45-6789-X`: part of a longer dash-separated identifier.
fn dash_chain(hay: &[u8], s: usize, e: usize) -> bool {
    (s >= 2 && hay[s - 1] == b'-' && hay[s - 2].is_ascii_alphanumeric())
        || (e + 1 < hay.len() && hay[e] == b'-' && hay[e + 1].is_ascii_alphanumeric())
}

fn ssn_context(hay: &[u8], s: usize) -> bool {
    let before = &hay[s.saturating_sub(32)..s];
    [
        &b"ssn"[..],
        b"social security",
        b"ss#",
        b"soc sec",
        b"soc. sec",
    ]
    .iter()
    .any(|k| before.windows(k.len()).any(|w| w.eq_ignore_ascii_case(k)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DetectorName, Operator};
    use proptest::prelude::*;

    fn engine() -> Engine {
        let dets: Vec<_> = DetectorName::BUILTIN
            .iter()
            .map(|d| (d.clone(), Operator::Partial))
            .collect();
        Engine::new(&dets, &[]).unwrap()
    }

    type Found = (Vec<(usize, usize, usize)>, usize);

    fn both(e: &Engine, hay: &[u8], pos: usize, is_final: bool) -> (Found, Found) {
        let limit = if is_final {
            hay.len()
        } else {
            let soft = hay.len().saturating_sub(e.tail);
            e.first_unresolved_marker(hay, pos, soft).min(soft)
        };
        let mut a = Vec::new();
        let ra = e.scan_dfa(hay, pos, is_final, limit, |h| {
            a.push((h.det, h.mask_start, h.mask_end))
        });
        let mut b = Vec::new();
        let rb = e.scan_candidates(hay, pos, is_final, limit, |h| {
            b.push((h.det, h.mask_start, h.mask_end))
        });
        ((a, ra), (b, rb))
    }

    /// Fragments that start, end, or almost make up a match of every built-in pattern.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "4111 1111 1111 1111",
                "4111-1111-1111-1111",
                "378282246310005",
                "123-45-6789",
                "123 45 6789",
                "ssn 123456789",
                "DE89 3704 0044 0532 0130 00",
                "DE89370400440532013000",
                "GB82WEST12345698765432",
                "+44 20 7946 0958",
                "+1 (555) 123-4567",
                "(555) 123-4567",
                "555.123.4567",
                "212-555-0199",
                "10.0.0.1",
                "192.168.1.254",
                "2001:db8::1:2",
                "fe80::1",
                "::1",
                "1:2:3:4:5:6:7:8",
                "std::vector",
                "AKIAIOSFODNN7EXAMPLE",
                "ASIA",
                "ghp_0123456789abcdefghijABCDEFGHIJ012345",
                "github_pat_11ABCDEFG0123456789_abcdefgh",
                "xoxb-1234567890-abcdef",
                "sk-proj-abcdefghij0123456789XYZ",
                "sk-learn",
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
                "eyJ",
                "password=hunter2",
                "db_PASSWORD: \"x\"",
                "api-key = k3y",
                "Auth_Token:'t0k'",
                "pwd=",
                "secret",
                "postgres://u:p4ss@h/db",
                "git+ssh://user:pw@host",
                "https://example.com/x",
                "jane.doe@example.com",
                "a+b@c.de",
                ".x@y.org",
                "@handle",
                "user@localhost",
                "-----BEGIN RSA PRIVATE KEY-----\nQUJD\n-----END RSA PRIVATE KEY-----",
                "-----BEGIN PRIVATE KEY-----",
                "2026-11-27T10:15:30.123Z",
                "v1.2.3.4",
                "550e8400-e29b-41d4-a716-446655440000",
                "ORD-2026-000123",
                "INV-123-45-6789",
                "00:1A:2B:3C:4D:5E",
                "é",
                "ü@x.de",
                "\t",
                "\n",
                " ",
                "_",
                "-",
                ".",
                ":",
                "=",
                "@",
                "+",
                "(",
                ")",
                "'",
                "\"",
                "/",
            ])
            .prop_map(String::from),
            "[0-9 .:@+()=_-]{1,16}",
            "[a-fA-F0-9:]{1,12}",
            "[A-Za-z0-9]{1,8}",
            "\\PC{0,3}",
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..16).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn candidates_scan_equals_full_automaton(s in text(), cut in 0usize..400) {
            let e = engine();
            let hay = s.as_bytes();
            let pos = cut.min(hay.len());
            for (p, fin) in [(0, true), (pos, true), (0, false), (pos, false)] {
                let (a, b) = both(&e, hay, p, fin);
                prop_assert_eq!(a, b, "pos {} final {} in {:?}", p, fin, s);
            }
        }

        #[test]
        fn candidates_scan_equals_on_arbitrary_bytes(hay in prop::collection::vec(any::<u8>(), 0..300)) {
            let e = engine();
            let (a, b) = both(&e, &hay, 0, true);
            prop_assert_eq!(a, b);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn candidates_scan_equals_across_segments(
            parts in prop::collection::vec((text(), 0usize..6000, prop::sample::select(vec![" ", "\t", "a", "0", ":", "f:", "é"])), 1..12),
        ) {
            // Long runs of blanks / hex / colons straddle the segment boundaries.
            let mut s = String::new();
            while s.len() < 3 * SEGMENT {
                for (t, n, fill) in &parts {
                    s.push_str(t);
                    s.push_str(&fill.repeat(*n / fill.len()));
                    s.push_str("password");
                }
            }
            let e = engine();
            let hay = s.as_bytes();
            let (a, b) = both(&e, hay, 0, true);
            prop_assert_eq!(a, b);
            let (a, b) = both(&e, hay, SEGMENT - 7, false);
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn swar_range_is_exact() {
        for b in 0..=255u8 {
            for lane in 0..8 {
                for fill in [0u8, b'a', b' ', 0xFF, b'(', b'_', b'Z', 0x27, 0x60] {
                    let mut w = [fill; 8];
                    w[lane] = b;
                    let m = bytes_in_28_5f(u64::from_le_bytes(w));
                    for (k, x) in w.iter().enumerate() {
                        let flagged = m & (0x80 << (8 * k)) != 0;
                        assert_eq!(flagged, (0x28..=0x5F).contains(x), "{w:?} lane {k}");
                    }
                }
            }
        }
        for b in 0..=255u8 {
            assert!(CLASS[b as usize] == 0 || (0x28..=0x5F).contains(&b), "{b}");
        }
    }

    #[test]
    fn candidates_scan_equals_on_corpus() {
        let e = engine();
        let corpus = include_str!("../corpus/corpus.jsonl");
        for line in corpus.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = v["text"].as_str().unwrap().as_bytes();
            let (a, b) = both(&e, text, 0, true);
            assert_eq!(a, b, "{:?}", String::from_utf8_lossy(text));
        }
        let all = corpus.as_bytes();
        let (a, b) = both(&e, all, 0, true);
        assert_eq!(a, b);
        assert!(a.0.len() > 700);
    }
}
