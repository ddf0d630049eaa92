//! A [`Report`] as Markdown (the monthly review document), one
//! self-contained HTML file (tera, inline SVG charts, no external assets) or
//! JSON.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::{Point, Report, SloReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Md,
    Html,
    Json,
}

const HTML: &str = include_str!("../templates/report.html.tera");
const MD: &str = include_str!("../templates/report.md.tera");

pub fn render(report: &Report, format: Format) -> Result<String> {
    match format {
        Format::Json => serde_json::to_string_pretty(report)
            .map(|s| s + "\n")
            .map_err(|e| Error::Render(e.to_string())),
        Format::Md => template("report.md", MD, report, false),
        Format::Html => template("report.html", HTML, report, true),
    }
}

/// Seconds as `3d 4h`, `12m 5s`, `0s`.
pub fn human_secs(secs: f64) -> String {
    if !secs.is_finite() {
        return "—".into();
    }
    let neg = secs < 0.0;
    let mut s = secs.abs().round() as u64;
    let mut parts = Vec::new();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= n && parts.len() < 2 {
            parts.push(format!("{}{unit}", s / n));
            s %= n;
        }
    }
    if parts.is_empty() {
        parts.push("0s".into());
    }
    format!("{}{}", if neg { "-" } else { "" }, parts.join(" "))
}

fn utc(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn pct(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{:.*}%", digits, v * 100.0))
        .unwrap_or_else(|| "—".into())
}

#[derive(Serialize)]
struct View<'a> {
    source: &'a str,
    generated: String,
    breached: &'a [String],
    slos: Vec<SloView<'a>>,
}

#[derive(Serialize)]
struct SloView<'a> {
    r: &'a SloReport,
    title: String,
    window: String,
    sli: String,
    target: String,
    budget_total: String,
    budget_spent: String,
    budget_remaining: String,
    budget_time_total: String,
    budget_time_remaining: String,
    burn_now: String,
    burns: Vec<(String, String)>,
    exhaustion: String,
    burndown_svg: String,
    sli_svg: String,
}

fn view(report: &Report, charts: bool) -> View<'_> {
    View {
        source: &report.source,
        generated: utc(report.generated_at),
        breached: &report.breached,
        slos: report
            .slos
            .iter()
            .map(|r| SloView {
                title: r.display_name.clone().unwrap_or_else(|| r.name.clone()),
                window: format!(
                    "{} ({} to {})",
                    r.window,
                    utc(r.window_start),
                    utc(r.window_end)
                ),
                sli: pct(r.sli, 4),
                target: pct(Some(r.target), 3),
                budget_total: format!("{:.2}", r.budget.events_total),
                budget_spent: format!(
                    "{:.2} ({})",
                    r.budget.events_spent,
                    pct(Some(r.budget.spent_ratio), 1)
                ),
                budget_remaining: format!(
                    "{:.2} ({})",
                    r.budget.events_remaining,
                    pct(Some(r.budget.remaining_ratio), 1)
                ),
                budget_time_total: human_secs(r.budget.seconds_total),
                budget_time_remaining: human_secs(r.budget.seconds_remaining),
                burn_now: r
                    .burn_rate_now
                    .map(|b| format!("{b:.2}×"))
                    .unwrap_or_else(|| "—".into()),
                burns: r
                    .burn_rates
                    .iter()
                    .map(|b| {
                        (
                            if b.name == b.range.to_string() {
                                b.name.clone()
                            } else {
                                format!("{} ({})", b.name, b.range)
                            },
                            b.burn_rate
                                .map(|x| format!("{x:.2}×"))
                                .unwrap_or_else(|| "—".into()),
                        )
                    })
                    .collect(),
                exhaustion: match r.seconds_to_exhaustion {
                    Some(s) if s <= 0.0 => "exhausted".into(),
                    Some(s) => human_secs(s),
                    None => "not burning".into(),
                },
                burndown_svg: if charts {
                    chart(
                        &r.series,
                        |p| Some(p.budget_remaining),
                        0.0,
                        "error budget remaining",
                        r.window_start,
                        r.window_end,
                    )
                } else {
                    String::new()
                },
                sli_svg: if charts {
                    chart(
                        &r.series,
                        |p| p.sli,
                        r.target,
                        "SLI",
                        r.window_start,
                        r.window_end,
                    )
                } else {
                    String::new()
                },
                r,
            })
            .collect(),
    }
}

fn template(name: &str, text: &str, report: &Report, html: bool) -> Result<String> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(if html { vec!["report.html"] } else { vec![] });
    tera.add_raw_template(name, text)
        .map_err(|e| Error::Render(format!("{name}: {e}")))?;
    let ctx = tera::Context::from_serialize(view(report, html))
        .map_err(|e| Error::Render(e.to_string()))?;
    tera.render(name, &ctx).map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        Error::Render(msg)
    })
}

/// An inline SVG line chart of `value` over `[start, end]`, with a dashed
/// reference line at `reference` (the target, or budget zero).
fn chart(
    points: &[Point],
    value: impl Fn(&Point) -> Option<f64>,
    reference: f64,
    label: &str,
    start: i64,
    end: i64,
) -> String {
    const W: f64 = 640.0;
    const H: f64 = 200.0;
    const PAD: f64 = 40.0;
    let vals: Vec<(i64, f64)> = points
        .iter()
        .filter_map(|p| value(p).map(|v| (p.time, v)))
        .collect();
    let mut lo = vals.iter().map(|v| v.1).fold(reference, f64::min);
    let mut hi = vals.iter().map(|v| v.1).fold(reference, f64::max).max(1.0);
    if hi - lo < 1e-6 {
        lo -= 0.01;
        hi += 0.01;
    }
    let span = (end - start).max(1) as f64;
    let x = |t: i64| PAD + (t - start) as f64 / span * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD + (lo - v) / (hi - lo) * (H - 2.0 * PAD) + 0.0;
    let path: Vec<String> = vals
        .iter()
        .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
        .collect();
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    );
    svg.push_str(&format!(
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fbfbfd\" stroke=\"#d0d4dc\"/>"
    ));
    svg.push_str(&format!(
        "<line x1=\"{PAD}\" y1=\"{r:.1}\" x2=\"{x2}\" y2=\"{r:.1}\" stroke=\"#c0392b\" stroke-dasharray=\"4 3\"/>",
        r = y(reference),
        x2 = W - PAD
    ));
    for (v, anchor) in [(hi, "hi"), (lo, "lo")] {
        let _ = anchor;
        svg.push_str(&format!(
            "<text x=\"4\" y=\"{:.1}\" font-size=\"10\" fill=\"#555\">{:.4}</text>",
            y(v) + 3.0,
            v
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{PAD}\" y=\"{:.1}\" font-size=\"10\" fill=\"#555\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#555\" text-anchor=\"end\">{}</text>",
        H - 8.0,
        esc(&utc(start)),
        W - PAD,
        H - 8.0,
        esc(&utc(end))
    ));
    if path.len() == 1 {
        let (t, v) = vals[0];
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1f6feb\"/>",
            x(t),
            y(v)
        ));
    } else if !path.is_empty() {
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        ));
    } else {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#555\" text-anchor=\"middle\">no events in the window</text>",
            W / 2.0,
            H / 2.0
        ));
    }
    svg.push_str("</svg>");
    svg
}
