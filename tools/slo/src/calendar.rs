//! Calendar periods (UTC months and quarters): where one starts and ends.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use crate::spec::CalendarUnit;

/// Parse OpenSLO's `calendar.startTime` (`2026-01-01 00:00:00`, or RFC 3339
/// `2026-01-01T00:00:00Z`): it must be the start of a month (of a quarter,
/// January, April, July or October, for `1Q`). Unix seconds.
pub fn parse_start(text: &str, unit: CalendarUnit) -> Result<i64, String> {
    let t = text.trim().trim_end_matches('Z').replace('T', " ");
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let dt = PrimitiveDateTime::parse(&t, fmt)
        .map_err(|e| format!("`{text}` is not a time `YYYY-MM-DD HH:MM:SS` ({e})"))?;
    let month0 = u8::from(dt.month()) - 1;
    if dt.day() != 1 || dt.time() != Time::MIDNIGHT {
        return Err(format!(
            "`{text}` is not the start of a month (YYYY-MM-01 00:00:00)"
        ));
    }
    if unit == CalendarUnit::Quarter && month0 % 3 != 0 {
        return Err(format!(
            "`{text}` is not the start of a quarter (January, April, July or October)"
        ));
    }
    Ok(dt.assume_utc().unix_timestamp())
}

/// `[start, end)` in Unix seconds of the month or quarter `2026-11` /
/// `2026-Q4` names.
pub fn parse_period(text: &str) -> Result<(i64, i64), String> {
    let bad = || format!("`{text}` is not a calendar month `YYYY-MM` or quarter `YYYY-Qn`");
    let (y, rest) = text.split_once('-').ok_or_else(bad)?;
    let year: i32 = y.parse().map_err(|_| bad())?;
    let (first, months) = match rest.strip_prefix('Q') {
        Some(q) => {
            let q: u8 = q.parse().map_err(|_| bad())?;
            if !(1..=4).contains(&q) {
                return Err(bad());
            }
            ((q - 1) * 3 + 1, 3)
        }
        None => {
            let m: u8 = rest.parse().map_err(|_| bad())?;
            if !(1..=12).contains(&m) || rest.len() != 2 {
                return Err(bad());
            }
            (m, 1)
        }
    };
    let start = month_start(year, first).ok_or_else(bad)?;
    let end = add_months(start, months).ok_or_else(bad)?;
    Ok((start, end))
}

fn month_start(year: i32, month: u8) -> Option<i64> {
    let m = Month::try_from(month).ok()?;
    let d = Date::from_calendar_date(year, m, 1).ok()?;
    Some(
        PrimitiveDateTime::new(d, Time::MIDNIGHT)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// The start of the month `n` months after the month starting at `start`.
pub fn add_months(start: i64, n: u32) -> Option<i64> {
    let t = OffsetDateTime::from_unix_timestamp(start).ok()?;
    let total = t.year() * 12 + i32::from(u8::from(t.month()) - 1) + n as i32;
    month_start(total.div_euclid(12), (total.rem_euclid(12) + 1) as u8)
}

/// The calendar period (of `unit`, aligned on `anchor`) containing `at`.
pub fn period_containing(anchor: i64, unit: CalendarUnit, at: i64) -> Option<(i64, i64)> {
    let len = match unit {
        CalendarUnit::Month => 1,
        CalendarUnit::Quarter => 3,
    };
    let a = OffsetDateTime::from_unix_timestamp(anchor).ok()?;
    let t = OffsetDateTime::from_unix_timestamp(at).ok()?;
    let idx = |d: OffsetDateTime| d.year() * 12 + i32::from(u8::from(d.month()) - 1);
    let offset = (idx(t) - idx(a)).div_euclid(len as i32) * len as i32;
    let start = if offset >= 0 {
        add_months(anchor, offset as u32)?
    } else {
        let back = idx(a) + offset;
        month_start(back.div_euclid(12), (back.rem_euclid(12) + 1) as u8)?
    };
    Some((start, add_months(start, len)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_quarters() {
        let (s, e) = parse_period("2026-11").unwrap();
        assert_eq!(s, 1_793_491_200); // 2026-11-01T00:00:00Z
        assert_eq!(e - s, 30 * 86_400);
        let (s, e) = parse_period("2026-Q1").unwrap();
        assert_eq!(e - s, 90 * 86_400);
        assert_eq!(
            parse_period("2024-02").map(|(s, e)| e - s).unwrap(),
            29 * 86_400
        );
        for bad in ["2026", "2026-13", "2026-1", "2026-Q5", "x-01"] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
        let anchor = parse_start("2026-01-01 00:00:00", CalendarUnit::Quarter).unwrap();
        let (s, _) = parse_period("2026-11").unwrap();
        assert_eq!(
            period_containing(anchor, CalendarUnit::Quarter, s + 5).unwrap(),
            parse_period("2026-Q4").unwrap()
        );
        assert!(parse_start("2026-02-01 00:00:00", CalendarUnit::Quarter).is_err());
        assert!(parse_start("2026-02-02 00:00:00", CalendarUnit::Month).is_err());
    }
}
