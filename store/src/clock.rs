//! Timestamps: RFC 3339 in UTC everywhere, and the `--since` forms users type.

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};

/// Fixed-width RFC 3339 (UTC, milliseconds), so stored times sort as text.
const STAMP: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// Now, as fixed-width RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// A time in the store's fixed-width RFC 3339 form.
pub fn format(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(STAMP)
        .expect("fixed format covers any UTC time")
}

/// Parse `--since`: an RFC 3339 time (`2026-11-01T00:00:00Z`), a date
/// (`2026-11-01`), or an age (`90s`, `15m`, `24h`, `7d`).
pub fn parse_since(value: &str) -> Result<OffsetDateTime> {
    let bad = |reason: &str| Error::BadTime {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(t);
    }
    if let Ok(t) = OffsetDateTime::parse(&format!("{value}T00:00:00Z"), &Rfc3339) {
        return Ok(t);
    }
    let (num, unit) = value.split_at(value.char_indices().last().map_or(0, |(i, _)| i));
    let n: i64 = num.parse().map_err(|_| {
        bad("expected an RFC 3339 time, a date (YYYY-MM-DD) or an age like 24h or 7d")
    })?;
    let age = match unit {
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => return Err(bad("age unit must be s, m, h or d")),
    };
    Ok(OffsetDateTime::now_utc() - age)
}

/// Parse a stored timestamp.
pub fn parse(value: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        assert!(parse_since("2026-11-01").is_ok());
        assert!(parse_since("2026-11-01T10:00:00Z").is_ok());
        let day = parse_since("1d").unwrap();
        assert!(OffsetDateTime::now_utc() - day >= Duration::hours(23));
        assert!(parse_since("yesterday")
            .unwrap_err()
            .to_string()
            .contains("yesterday"));
        assert!(parse(&now()).is_some());
    }
}
