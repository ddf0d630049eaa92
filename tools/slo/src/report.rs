//! `qg-slo report`: per SLO, the SLI over a window, the error budget (total,
//! spent, remaining, as events and as time), burn rates now and over each
//! alert window, the projected time to exhaustion, and whether it is
//! breached. Computed from a Prometheus or from samples of `/metrics`.

use std::path::PathBuf;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use crate::burn;
use crate::calendar;
use crate::duration::Duration;
use crate::error::{Error, Result};
use crate::promql;
use crate::source::{self, Prometheus, Scrape};
use crate::spec::{self, Budgeting, Events, Indicator, Slo, Window};

/// Where the numbers come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A Prometheus HTTP API base URL.
    Prometheus { url: String },
    /// A server's `/metrics`, sampled every `interval` for `duration`.
    Metrics {
        url: String,
        duration: Duration,
        interval: Duration,
    },
}

impl Default for Source {
    fn default() -> Self {
        Source::Prometheus {
            url: "http://127.0.0.1:9090".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReportOptions {
    /// A spec file or a folder of them.
    pub spec: PathBuf,
    pub source: Source,
    /// A rolling window for every SLO instead of its own period.
    pub window: Option<Duration>,
    /// A calendar month `2026-11` or quarter `2026-Q4` for every SLO.
    pub calendar: Option<String>,
    /// The end of the window (Unix seconds; default: now). Prometheus only.
    pub at: Option<i64>,
}

/// The whole report. JSON schema: this structure (see tools/slo/README.md).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `qg-slo-report/v1`.
    pub schema: &'static str,
    /// When the report was made (Unix seconds).
    pub generated_at: i64,
    /// `prometheus URL` or `metrics URL`.
    pub source: String,
    pub slos: Vec<SloReport>,
    /// Names of the breached SLOs.
    pub breached: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SloReport {
    pub name: String,
    pub display_name: Option<String>,
    pub service: String,
    pub target: f64,
    /// `occurrences` or `timeslices`.
    pub budgeting: String,
    /// Window `[start, end]` (Unix seconds) and how it was chosen.
    pub window_start: i64,
    pub window_end: i64,
    pub window: String,
    /// Events (or time slices) in the window.
    pub events_total: f64,
    pub events_bad: f64,
    /// good / total; None without events.
    pub sli: Option<f64>,
    pub budget: Budget,
    /// The burn rate over the shortest alert window (5m, scaled).
    pub burn_rate_now: Option<f64>,
    /// Burn rate over each alert window.
    pub burn_rates: Vec<BurnRate>,
    /// At the burn rate of the 1h (scaled) window; None when not burning.
    pub seconds_to_exhaustion: Option<f64>,
    pub breached: bool,
    /// SLI and budget remaining over the window, for the charts.
    pub series: Vec<Point>,
    /// The PromQL that measured it (Prometheus) or the selectors (metrics).
    pub queries: Queries,
}

#[derive(Debug, Clone, Serialize)]
pub struct Budget {
    /// Bad events the objective allows in the window: (1 - target) × total.
    pub events_total: f64,
    pub events_spent: f64,
    pub events_remaining: f64,
    /// spent / allowed (1 = all of it; more = overspent). 0 without events.
    pub spent_ratio: f64,
    pub remaining_ratio: f64,
    /// The budget as time: (1 - target) × the period.
    pub seconds_total: f64,
    pub seconds_spent: f64,
    pub seconds_remaining: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BurnRate {
    /// The Workbook's name of the window (`1h`) and the range used (`56m`).
    pub name: String,
    pub range: Duration,
    pub burn_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub time: i64,
    /// SLI of the step ending here (None without events).
    pub sli: Option<f64>,
    /// Budget remaining from the window's start up to here (1 = untouched).
    pub budget_remaining: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Queries {
    pub bad: String,
    pub total: String,
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The window of `slo` ending at `at`, given the options.
fn window_of(slo: &Slo, opts: &ReportOptions, at: i64) -> Result<(i64, i64, String)> {
    if let Some(c) = &opts.calendar {
        let (s, e) =
            calendar::parse_period(c).map_err(|e| Error::BadInput(format!("--calendar: {e}")))?;
        return Ok((s, e.min(at), format!("calendar {c}")));
    }
    if let Some(w) = opts.window {
        return Ok((at - w.secs() as i64, at, format!("rolling {w}")));
    }
    Ok(match slo.window {
        Window::Rolling(d) => (at - d.secs() as i64, at, format!("rolling {d}")),
        Window::Calendar { unit, start } => {
            let (s, e) = calendar::period_containing(start, unit, at).ok_or_else(|| {
                Error::BadInput(format!("{}: no calendar period at {at}", slo.name))
            })?;
            (
                s,
                e.min(at),
                format!("calendar {unit:?} to date").to_lowercase(),
            )
        }
    })
}

fn budget(slo: &Slo, total: f64, bad: f64, period_secs: f64) -> Budget {
    let allowed = slo.error_budget() * total;
    let spent_ratio = if allowed > 0.0 { bad / allowed } else { 0.0 };
    let seconds_total = slo.error_budget() * period_secs;
    Budget {
        events_total: allowed,
        events_spent: bad,
        events_remaining: allowed - bad,
        spent_ratio,
        remaining_ratio: 1.0 - spent_ratio,
        seconds_total,
        seconds_spent: spent_ratio * seconds_total,
        seconds_remaining: (1.0 - spent_ratio) * seconds_total,
    }
}

fn finish(
    slo: &Slo,
    (start, end, window): (i64, i64, String),
    (total, bad): (f64, f64),
    burn_rates: Vec<BurnRate>,
    series: Vec<Point>,
    queries: Queries,
) -> SloReport {
    let period = (end - start).max(1) as f64;
    let b = budget(slo, total, bad, period);
    let sli = (total > 0.0).then(|| 1.0 - bad / total);
    let burn_rate_now = burn_rates.first().and_then(|b| b.burn_rate);
    let hour = burn_rates
        .iter()
        .find(|b| b.name == "1h")
        .and_then(|b| b.burn_rate);
    let seconds_to_exhaustion = match hour {
        _ if b.remaining_ratio <= 0.0 => Some(0.0),
        Some(r) if r > 0.0 => Some(b.remaining_ratio * slo.window.nominal().secs() as f64 / r),
        _ => None,
    };
    SloReport {
        name: slo.name.clone(),
        display_name: slo.display_name.clone(),
        service: slo.service.clone(),
        target: slo.target,
        budgeting: match slo.budgeting {
            Budgeting::Occurrences => "occurrences".into(),
            Budgeting::Timeslices { .. } => "timeslices".into(),
        },
        window_start: start,
        window_end: end,
        window,
        events_total: total,
        events_bad: bad,
        breached: sli.is_some_and(|s| s < slo.target),
        sli,
        budget: b,
        burn_rate_now,
        burn_rates,
        seconds_to_exhaustion,
        series,
        queries,
    }
}

/// Points from per-step bad and total counts.
fn points(slo: &Slo, steps: &[(i64, f64, f64)], total_events: f64) -> Vec<Point> {
    let allowed = slo.error_budget() * total_events;
    let mut cum_bad = 0.0;
    steps
        .iter()
        .map(|&(t, bad, total)| {
            cum_bad += bad;
            Point {
                time: t,
                sli: (total > 0.0).then(|| 1.0 - bad / total),
                budget_remaining: if allowed > 0.0 {
                    1.0 - cum_bad / allowed
                } else {
                    1.0
                },
            }
        })
        .collect()
}

fn from_prometheus(slo: &Slo, prom: &Prometheus, win: (i64, i64, String)) -> Result<SloReport> {
    let (start, end, _) = win;
    let range = Duration((end - start).max(60) as u64);
    let (bad_q, total_q) = promql::event_counts(slo, range);
    let total = prom.scalar(&total_q, end)?.unwrap_or(0.0);
    let bad = prom.scalar(&bad_q, end)?.unwrap_or(0.0).max(0.0);
    let period = slo.window.nominal();
    let mut burn_rates = Vec::new();
    for name in burn::WINDOW_NAMES {
        let r = burn::range_of(name, period, slo.alerting.scale_windows);
        let ratio = prom.scalar(&promql::error_ratio(slo, r), end)?;
        burn_rates.push(BurnRate {
            name: name.to_string(),
            range: r,
            burn_rate: ratio.map(|x| x / slo.error_budget()),
        });
    }
    // ~60 steps over the window, a whole number of minutes (at least the slice)
    let min_step = match slo.budgeting {
        Budgeting::Timeslices { window, .. } => window.secs() as i64,
        Budgeting::Occurrences => 60,
    };
    let step = (((end - start) / 60).max(min_step) / min_step) * min_step;
    let (bad_s, total_s) = promql::event_counts(slo, Duration(step as u64));
    let first = start + step;
    let bads = prom.range(&bad_s, first, end, step)?;
    let totals = prom.range(&total_s, first, end, step)?;
    let steps: Vec<(i64, f64, f64)> = totals
        .iter()
        .map(|&(t, tot)| {
            let b = bads
                .iter()
                .find(|(bt, _)| *bt == t)
                .map(|x| x.1)
                .unwrap_or(0.0);
            (t, b.max(0.0), tot)
        })
        .collect();
    Ok(finish(
        slo,
        win,
        (total, bad),
        burn_rates,
        points(slo, &steps, total),
        Queries {
            bad: bad_q,
            total: total_q,
        },
    ))
}

fn from_scrapes(slo: &Slo, scrapes: &[Scrape]) -> SloReport {
    let (first, last) = (scrapes[0].at, scrapes[scrapes.len() - 1].at);
    let win = (
        first.floor() as i64,
        last.ceil() as i64,
        format!(
            "sampled {}",
            Duration((last - first).round().max(1.0) as u64)
        ),
    );
    // bad and total between consecutive scrapes
    let counts = |pair: &[Scrape]| -> (f64, f64) {
        match &slo.indicator {
            Indicator::Ratio { events, total } => {
                let t = source::increase(pair, &total.0).unwrap_or(0.0);
                let b = match events {
                    Events::Bad(b) => source::increase(pair, &b.0).unwrap_or(0.0),
                    Events::Good(g) => t - source::increase(pair, &g.0).unwrap_or(0.0),
                };
                match slo.budgeting {
                    Budgeting::Occurrences => (b.max(0.0), t),
                    Budgeting::Timeslices { target, .. } => {
                        (f64::from(u8::from(b > (1.0 - target) * t)), 1.0)
                    }
                }
            }
            Indicator::Threshold { query, op, value } => {
                match pair[1].gauge(&query.0, matches!(op, spec::Op::Lt | spec::Op::Lte)) {
                    Some(v) => (f64::from(u8::from(!op.holds(v, *value))), 1.0),
                    None => (0.0, 0.0),
                }
            }
        }
    };
    let steps: Vec<(i64, f64, f64)> = scrapes
        .windows(2)
        .map(|p| {
            let (b, t) = counts(p);
            (p[1].at.round() as i64, b, t)
        })
        .collect();
    let (bad, total) = match slo.budgeting {
        Budgeting::Occurrences => counts(&[scrapes[0].clone(), scrapes[scrapes.len() - 1].clone()]),
        Budgeting::Timeslices { .. } => steps
            .iter()
            .fold((0.0, 0.0), |(b, t), s| (b + s.1, t + s.2)),
    };
    // with only the sampled span, every alert window's burn rate is the span's
    let span_ratio = if total > 0.0 {
        Some(bad / total)
    } else {
        (!steps.is_empty()).then_some(0.0)
    };
    let burn_rates = vec![BurnRate {
        name: "sampled".into(),
        range: Duration((last - first).round().max(1.0) as u64),
        burn_rate: span_ratio.map(|r| r / slo.error_budget()),
    }];
    let (bad_q, total_q) = match &slo.indicator {
        Indicator::Ratio { events, total } => (
            match events {
                Events::Bad(b) => b.0.to_string(),
                Events::Good(g) => format!("{} - {}", total.0, g.0),
            },
            total.0.to_string(),
        ),
        Indicator::Threshold { query, op, value } => (
            format!("not ({} {} {})", query.0, op.promql(), value),
            "samples".into(),
        ),
    };
    let mut r = finish(
        slo,
        win,
        (total, bad),
        burn_rates,
        points(slo, &steps, total),
        Queries {
            bad: bad_q,
            total: total_q,
        },
    );
    // the sampled span's burn rate is also "now"
    r.burn_rate_now = r.burn_rates[0].burn_rate;
    r.seconds_to_exhaustion = match r.burn_rate_now {
        _ if r.budget.remaining_ratio <= 0.0 => Some(0.0),
        Some(b) if b > 0.0 => {
            Some(r.budget.remaining_ratio * slo.window.nominal().secs() as f64 / b)
        }
        _ => None,
    };
    r
}

/// Make the report of every SLO under `opts.spec`.
pub fn report(opts: &ReportOptions) -> Result<Report> {
    let slos = spec::load(&opts.spec)?;
    if opts.window.is_some() && opts.calendar.is_some() {
        return Err(Error::BadInput(
            "give --window or --calendar, not both".into(),
        ));
    }
    let generated_at = now();
    let (source, reports) = match &opts.source {
        Source::Prometheus { url } => {
            let prom = Prometheus::new(url)?;
            let at = opts.at.unwrap_or(generated_at);
            let mut out = Vec::new();
            for slo in &slos {
                let win = window_of(slo, opts, at)?;
                if win.1 <= win.0 {
                    return Err(Error::BadInput(format!(
                        "{}: the window {} has not started at {at}",
                        slo.name, win.2
                    )));
                }
                out.push(from_prometheus(slo, &prom, win)?);
            }
            (format!("prometheus {url}"), out)
        }
        Source::Metrics {
            url,
            duration,
            interval,
        } => {
            if opts.window.is_some() || opts.calendar.is_some() || opts.at.is_some() {
                return Err(Error::BadInput(
                    "--window, --calendar and --at need --prometheus; --metrics-url reports over --duration".into(),
                ));
            }
            if interval > duration {
                return Err(Error::BadInput(format!(
                    "--interval {interval} is longer than --duration {duration}"
                )));
            }
            let scrapes = source::sample(
                url,
                StdDuration::from_secs(duration.secs()),
                StdDuration::from_secs(interval.secs()),
            )?;
            (
                format!("metrics {url}"),
                slos.iter().map(|s| from_scrapes(s, &scrapes)).collect(),
            )
        }
    };
    Ok(Report {
        schema: "qg-slo-report/v1",
        generated_at,
        source,
        breached: reports
            .iter()
            .filter(|r| r.breached)
            .map(|r| r.name.clone())
            .collect(),
        slos: reports,
    })
}
