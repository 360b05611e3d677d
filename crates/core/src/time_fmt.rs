//! Timestamps as evidence shows them: RFC 3339, UTC, nanoseconds.
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, as `2026-11-27T10:11:12.123456789Z`.
pub fn now_rfc3339() -> String {
    format_ts(OffsetDateTime::now_utc())
}

/// `t` in UTC as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (every record's `ts` goes through
/// here: digits are written directly, `format!` cost a third of building a record).
pub fn format_ts(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let Ok(year) = u32::try_from(t.year()) else {
        return format_ts_slow(t);
    };
    if year > 9999 {
        return format_ts_slow(t);
    }
    let mut s = String::with_capacity(30);
    push_digits(&mut s, year, 4);
    s.push('-');
    push_digits(&mut s, u8::from(t.month()).into(), 2);
    s.push('-');
    push_digits(&mut s, t.day().into(), 2);
    s.push('T');
    push_digits(&mut s, t.hour().into(), 2);
    s.push(':');
    push_digits(&mut s, t.minute().into(), 2);
    s.push(':');
    push_digits(&mut s, t.second().into(), 2);
    s.push('.');
    push_digits(&mut s, t.nanosecond(), 9);
    s.push('Z');
    s
}

/// The last `width` decimal digits of `n`, zero-padded.
fn push_digits(s: &mut String, n: u32, width: u32) {
    for i in (0..width).rev() {
        let d = (n / 10u32.pow(i)) % 10;
        s.push(char::from(b'0' + d as u8));
    }
}

/// Years outside 0..=9999 (only reachable with an explicit timestamp).
fn format_ts_slow(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// Parse an RFC 3339 timestamp, or a relative one like `15m`, `2h`, `7d` (that long ago).
pub fn parse_time_arg(s: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    if let Ok(d) = parse_duration(s) {
        return Ok(OffsetDateTime::now_utc() - d);
    }
    if let Ok(date) =
        time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
    {
        return Ok(date.midnight().assume_utc());
    }
    Err(format!(
        "`{s}` is not a time: use RFC 3339 (2026-11-27T10:00:00Z), a date (2026-11-27) or a span ago (30m, 2h, 7d)"
    ))
}

/// `30s`, `10m`, `2h`, `7d`, `4w`.
pub fn parse_duration(s: &str) -> Result<time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 10m, 2h, 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "w" => n * 604_800,
        _ => return Err(format!("`{s}` is not a duration like 30s, 10m, 2h, 7d")),
    };
    Ok(time::Duration::seconds(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn formats_with_nanoseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(format_ts(t), "2023-11-14T22:13:20.123456789Z");
    }
    #[test]
    fn fast_format_matches_the_format_macro() {
        // A spread of instants (leap days, year ends, zero and full nanoseconds), in UTC
        // and with an offset.
        let mut n: i128 = -62_135_596_800_000_000_000; // 0001-01-01
        let step: i128 = 7_919_000_123_456_789; // ~92 days, odd nanoseconds
        while n < 253_402_300_799_999_999_999 {
            let t = OffsetDateTime::from_unix_timestamp_nanos(n).unwrap();
            assert_eq!(format_ts(t), format_ts_slow(t), "{n}");
            let east = t.to_offset(time::UtcOffset::from_hms(5, 30, 0).unwrap());
            assert_eq!(format_ts(east), format_ts_slow(t), "{n} +05:30");
            n += step;
        }
        for n in [
            0,
            999_999_999,
            951_782_400_000_000_000,
            1_709_164_800_000_000_001,
        ] {
            let t = OffsetDateTime::from_unix_timestamp_nanos(n).unwrap();
            assert_eq!(format_ts(t), format_ts_slow(t), "{n}");
        }
        let y0 = OffsetDateTime::from_unix_timestamp_nanos(-62_167_219_200_000_000_000).unwrap();
        assert_eq!(format_ts(y0), "0000-01-01T00:00:00.000000000Z");
    }
    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap(), time::Duration::minutes(10));
        assert_eq!(parse_duration("30d").unwrap(), time::Duration::days(30));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
    }
}
