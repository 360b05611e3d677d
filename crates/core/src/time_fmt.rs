//! Timestamps as evidence shows them: RFC 3339, UTC, nanoseconds.
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, as `2026-11-27T10:11:12.123456789Z`.
pub fn now_rfc3339() -> String {
    format_ts(OffsetDateTime::now_utc())
}

pub fn format_ts(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
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
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap(), time::Duration::minutes(10));
        assert_eq!(parse_duration("30d").unwrap(), time::Duration::days(30));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
    }
}
