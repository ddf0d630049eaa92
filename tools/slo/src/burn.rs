//! The SRE Workbook's multi-window, multi-burn-rate alerts, with windows
//! scaled to the SLO's period as Pyrra does (the Workbook's windows are for
//! 30 days).

use serde::Serialize;

use crate::duration::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Page,
    Ticket,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One long/short window pair: alert when both error ratios exceed
/// `factor × (1 - target)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BurnWindow {
    pub severity: Severity,
    pub factor: f64,
    /// The Workbook's window names (`1h`, `5m`): the recording rules are
    /// named for these, as Sloth names them.
    pub long_name: &'static str,
    pub short_name: &'static str,
    /// The ranges actually used, scaled to the period.
    pub long: Duration,
    pub short: Duration,
}

/// The Workbook's table for a 30-day period.
const WORKBOOK: [(Severity, &str, u64, &str, u64, f64); 4] = [
    (Severity::Page, "1h", 3_600, "5m", 300, 14.4),
    (Severity::Page, "6h", 21_600, "30m", 1_800, 6.0),
    (Severity::Ticket, "1d", 86_400, "2h", 7_200, 3.0),
    (Severity::Ticket, "3d", 259_200, "6h", 21_600, 1.0),
];

/// The period the Workbook's windows are written for.
pub const WORKBOOK_PERIOD: Duration = Duration(30 * 86_400);

/// Every recording window, by Workbook name, shortest first.
pub const WINDOW_NAMES: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// Scale a Workbook window to `period`, to whole minutes (at least 1m).
pub fn scale(nominal: Duration, period: Duration, scaled: bool) -> Duration {
    if !scaled {
        return nominal;
    }
    let secs = (nominal.secs() as u128 * period.secs() as u128) / WORKBOOK_PERIOD.secs() as u128;
    let minutes = ((secs as f64) / 60.0).round().max(1.0) as u64;
    Duration(minutes * 60)
}

/// The range used for the recording rule of Workbook window `name`.
pub fn range_of(name: &str, period: Duration, scaled: bool) -> Duration {
    let nominal = Duration::parse(name).expect("workbook window names parse");
    scale(nominal, period, scaled)
}

/// The four alert window pairs for `period`.
pub fn windows(period: Duration, scaled: bool) -> Vec<BurnWindow> {
    WORKBOOK
        .iter()
        .map(|&(severity, ln, l, sn, s, factor)| BurnWindow {
            severity,
            factor,
            long_name: ln,
            short_name: sn,
            long: scale(Duration(l), period, scaled),
            short: scale(Duration(s), period, scaled),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_scale_with_the_period() {
        let w30 = windows(Duration(30 * 86_400), true);
        assert_eq!(w30[0].long, Duration(3_600));
        assert_eq!(w30[3].long, Duration(3 * 86_400));
        let w28 = windows(Duration(28 * 86_400), true);
        assert_eq!(w28[0].long.to_string(), "56m");
        assert_eq!(w28[0].short.to_string(), "5m"); // 4m40s rounds to 5m
        assert_eq!(w28[3].long.to_string(), "2d19h12m");
        let fixed = windows(Duration(7 * 86_400), false);
        assert_eq!(fixed[3].long, Duration(3 * 86_400));
    }
}
