//! The PromQL of an SLI over a range, shared by the generated rules and the
//! report, so the report measures exactly what the alerts watch.
//!
//! Ratios never divide by zero: with no events in a range the error ratio
//! is 0 (nothing failed), and with no series at all it is absent (which
//! `SLOMetricAbsent` reports), never NaN. Long ranges are event-weighted:
//! bad events over all events of the range, not an average of short ratios.

use crate::duration::Duration;
use crate::selector::GaugeQuery;
use crate::spec::{Budgeting, Events, Indicator, Op, Slo};

/// A number as PromQL and YAML print it, without float noise (`0.01`, not
/// `0.010000000000000009`).
pub fn num(x: f64) -> String {
    let s = format!("{:.12}", x);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// `sum(FN(selector[range]))` for FN `rate` or `increase`.
fn sum_of(func: &str, sel: &impl std::fmt::Display, range: Duration) -> String {
    format!("sum({func}({sel}[{range}]))")
}

/// Bad events (per second with `rate`, a count with `increase`) over `range`.
fn bad(slo: &Slo, func: &str, range: Duration) -> Option<String> {
    let Indicator::Ratio { events, total } = &slo.indicator else {
        return None;
    };
    Some(match events {
        Events::Bad(b) => format!("({} or vector(0))", sum_of(func, &b.0, range)),
        Events::Good(g) => format!(
            "({} - ({} or vector(0)))",
            sum_of(func, &total.0, range),
            sum_of(func, &g.0, range)
        ),
    })
}

fn total(slo: &Slo, func: &str, range: Duration) -> Option<String> {
    let Indicator::Ratio { total, .. } = &slo.indicator else {
        return None;
    };
    Some(sum_of(func, &total.0, range))
}

/// The gauge over all series it matches, at its worst for the comparison:
/// the age of the newest timestamp (any instance's backup counts), the
/// largest value against an upper bound, the smallest against a lower one.
fn gauge(q: &GaugeQuery, op: Op) -> String {
    match q {
        GaugeQuery::Age(s) => format!("(time() - max({s}))"),
        GaugeQuery::Value(s) if matches!(op, Op::Lt | Op::Lte) => format!("max({s})"),
        GaugeQuery::Value(s) => format!("min({s})"),
    }
}

/// 1 for a good time slice, 0 for a bad one (Timeslices budgeting); the
/// slice ending at each step of a subquery with step `slice`.
fn slice_good(slo: &Slo, slice_target: f64, slice: Duration) -> String {
    match &slo.indicator {
        Indicator::Threshold { query, op, value } => {
            format!(
                "({} {} bool {})",
                gauge(&query.0, *op),
                op.promql(),
                num(*value)
            )
        }
        Indicator::Ratio { .. } => {
            // bad <= (1 - t) * total, so a slice without events is good (no 0/0)
            let b = bad(slo, "rate", slice).expect("ratio");
            let t = total(slo, "rate", slice).expect("ratio");
            format!("({b} <= bool ({} * {t}))", num(1.0 - slice_target))
        }
    }
}

/// The error ratio over `range`: bad events / events, or bad slices / slices.
pub fn error_ratio(slo: &Slo, range: Duration) -> String {
    match slo.budgeting {
        Budgeting::Occurrences => {
            let b = bad(slo, "rate", range).expect("occurrences SLIs are ratios");
            let t = total(slo, "rate", range).expect("occurrences SLIs are ratios");
            format!("({b} / ({t} > 0)) or ({t} * 0)")
        }
        Budgeting::Timeslices { target, window } => format!(
            "1 - avg_over_time({}[{range}:{window}])",
            slice_good(slo, target, window)
        ),
    }
}

/// Bad and total events over `range` (counts of slices for Timeslices).
pub fn event_counts(slo: &Slo, range: Duration) -> (String, String) {
    match slo.budgeting {
        Budgeting::Occurrences => (
            bad(slo, "increase", range).expect("ratio"),
            total(slo, "increase", range).expect("ratio"),
        ),
        Budgeting::Timeslices { target, window } => {
            let g = slice_good(slo, target, window);
            (
                format!(
                    "count_over_time({g}[{range}:{window}]) - sum_over_time({g}[{range}:{window}])"
                ),
                format!("count_over_time({g}[{range}:{window}])"),
            )
        }
    }
}

/// Events in `range` for the minimum-traffic guard (None: a gauge SLI).
pub fn traffic(slo: &Slo, range: Duration) -> Option<String> {
    total(slo, "increase", range)
}

/// The metric whose absence means the SLI cannot be measured.
pub fn measured_metric(slo: &Slo) -> String {
    match &slo.indicator {
        Indicator::Ratio { total, .. } => total.0.metric.clone(),
        Indicator::Threshold { query, .. } => query.0.selector().metric.clone(),
    }
}

/// `numerator > total` over 5m: the events do not add up (None: gauge SLI).
pub fn inconsistent(slo: &Slo) -> Option<String> {
    let Indicator::Ratio { events, total } = &slo.indicator else {
        return None;
    };
    let r = Duration(300);
    let n = match events {
        Events::Good(g) => sum_of("rate", &g.0, r),
        Events::Bad(b) => sum_of("rate", &b.0, r),
    };
    Some(format!("{n} > {}", sum_of("rate", &total.0, r)))
}
