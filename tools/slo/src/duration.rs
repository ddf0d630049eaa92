//! Durations as OpenSLO and Prometheus write them (`5m`, `28d`, `1h30m`),
//! held as whole seconds.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A span of whole seconds, written in Prometheus' duration syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

const UNITS: [(char, u64); 6] = [
    ('w', 604_800),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
    ('y', 365 * 86_400),
];

impl Duration {
    pub const MINUTE: Duration = Duration(60);
    pub const HOUR: Duration = Duration(3_600);
    pub const DAY: Duration = Duration(86_400);

    pub fn secs(self) -> u64 {
        self.0
    }

    /// Parse `1h30m`, `28d`, `5m`: one or more `<digits><unit>` parts, units
    /// `y w d h m s` in decreasing order, as Prometheus accepts them
    /// (milliseconds are not used by SLOs and are refused).
    pub fn parse(text: &str) -> Result<Duration, String> {
        let bad = |why: &str| format!("`{text}` is not a duration ({why}; e.g. 5m, 6h, 28d)");
        if text.is_empty() {
            return Err(bad("empty"));
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        let mut last_rank = usize::MAX;
        for c in text.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let Some(rank) = UNITS.iter().position(|(u, _)| *u == c) else {
                return Err(bad(&format!("unknown unit `{c}`")));
            };
            // y is listed last in UNITS but is the largest unit
            let order = if c == 'y' { 0 } else { rank + 1 };
            if digits.is_empty() {
                return Err(bad("a unit without a number"));
            }
            if last_rank != usize::MAX && order <= last_rank {
                return Err(bad("units must go from largest to smallest, each once"));
            }
            last_rank = order;
            let n: u64 = digits.parse().map_err(|_| bad("number too large"))?;
            total = n
                .checked_mul(UNITS[rank].1)
                .and_then(|s| total.checked_add(s))
                .ok_or_else(|| bad("too long"))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(bad("a number without a unit"));
        }
        if total == 0 {
            return Err(bad("zero"));
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    /// The shortest Prometheus spelling: `5m`, `1h30m`, `28d`, `2d19h12m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        if rest == 0 {
            return f.write_str("0s");
        }
        // weeks only when exact, so 28d stays 28d rather than 4w
        for (unit, secs) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
            if rest >= secs {
                write!(f, "{}{unit}", rest / secs)?;
                rest %= secs;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_prometheus_durations() {
        for (text, secs, shown) in [
            ("5m", 300, "5m"),
            ("28d", 28 * 86_400, "28d"),
            ("4w", 28 * 86_400, "28d"),
            ("1h30m", 5_400, "1h30m"),
            ("90m", 5_400, "1h30m"),
            ("1y", 365 * 86_400, "365d"),
        ] {
            let d = Duration::parse(text).unwrap();
            assert_eq!(d.secs(), secs, "{text}");
            assert_eq!(d.to_string(), shown, "{text}");
        }
        for bad in ["", "5", "m", "5x", "0m", "30m1h", "5m5m", "1.5h", "-5m"] {
            assert!(Duration::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
