//! `qg-slo generate`: Prometheus recording and alerting rules for an SLO
//! set, with Sloth's rule names, deterministic (same specs, same bytes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::burn::{self, Severity};
use crate::error::{Error, Result};
use crate::promql::{self, num};
use crate::spec::{self, Slo};

/// The file `generate` writes into an output folder.
pub const RULES_FILE: &str = "slo.rules.yaml";

/// How long each alert's condition must hold before it fires.
pub const PAGE_FOR: &str = "2m";
pub const TICKET_FOR: &str = "15m";
pub const ABSENT_FOR: &str = "10m";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GenerateOptions {
    /// A spec file or a folder of them.
    pub spec: PathBuf,
    /// A folder (the rules go to `slo.rules.yaml` in it) or a `.yaml` file;
    /// None: only return the text.
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    pub path: Option<PathBuf>,
    pub slos: usize,
    pub recording_rules: usize,
    pub alerting_rules: usize,
    /// Recording rules per SLO, by name.
    pub recording_rules_per_slo: BTreeMap<String, usize>,
    #[serde(skip)]
    pub yaml: String,
}

#[derive(Serialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Serialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Serialize)]
struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<String>,
    expr: String,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    for_: Option<String>,
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

fn labels(slo: &Slo, extra: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("slo".to_string(), slo.name.clone()),
        ("service".to_string(), slo.service.clone()),
    ]);
    for (k, v) in extra {
        l.insert(k.to_string(), v.clone());
    }
    l
}

fn record(name: String, expr: String, labels: BTreeMap<String, String>) -> Rule {
    Rule {
        record: Some(name),
        alert: None,
        expr,
        for_: None,
        labels,
        annotations: BTreeMap::new(),
    }
}

/// The selector of one of this SLO's recording rules.
fn rec(name: &str, slo: &Slo) -> String {
    format!("{name}{{slo=\"{}\"}}", slo.name)
}

/// The fewest events in an alert's long window for it to fire: with fewer,
/// a single bad event already burns faster than `factor` (Pyrra #1925).
pub fn min_events(slo: &Slo, factor: f64) -> u64 {
    slo.alerting
        .min_events
        .unwrap_or_else(|| (1.0 / (factor * slo.error_budget()) - 1e-9).ceil().max(1.0) as u64)
}

fn slo_groups(slo: &Slo) -> (Vec<Group>, usize, usize) {
    let period = slo.window.nominal();
    let scaled = slo.alerting.scale_windows;
    let budget = slo.error_budget();
    let mut sli = Vec::new();
    for name in burn::WINDOW_NAMES {
        let range = burn::range_of(name, period, scaled);
        sli.push(record(
            format!("slo:sli_error:ratio_rate{name}"),
            promql::error_ratio(slo, range),
            labels(slo, &[("window", range.to_string())]),
        ));
    }
    let period_name = format!("slo:sli_error:ratio_rate{period}");
    if !sli
        .iter()
        .any(|r| r.record.as_deref() == Some(&period_name))
    {
        sli.push(record(
            period_name.clone(),
            promql::error_ratio(slo, period),
            labels(slo, &[("window", period.to_string())]),
        ));
    }
    let meta = vec![
        record(
            "slo:objective:ratio".into(),
            format!("vector({})", num(slo.target)),
            labels(slo, &[]),
        ),
        record(
            "slo:error_budget:ratio".into(),
            format!("vector({})", num(budget)),
            labels(slo, &[]),
        ),
        record(
            "slo:time_period:days".into(),
            format!("vector({})", num(period.secs() as f64 / 86_400.0)),
            labels(slo, &[]),
        ),
        record(
            "slo:current_burn_rate:ratio".into(),
            format!(
                "max without (window) ({}) / {}",
                rec("slo:sli_error:ratio_rate5m", slo),
                num(budget)
            ),
            labels(slo, &[]),
        ),
        record(
            "slo:period_burn_rate:ratio".into(),
            format!(
                "max without (window) ({}) / {}",
                rec(&period_name, slo),
                num(budget)
            ),
            labels(slo, &[]),
        ),
        record(
            "slo:period_error_budget_remaining:ratio".into(),
            format!("1 - {}", rec("slo:period_burn_rate:ratio", slo)),
            labels(slo, &[]),
        ),
    ];
    let n_records = sli.len() + meta.len();

    let mut alerts = Vec::new();
    let windows = burn::windows(period, scaled);
    for (severity, enabled, for_) in [
        (Severity::Page, slo.alerting.page, PAGE_FOR),
        (Severity::Ticket, slo.alerting.ticket, TICKET_FOR),
    ] {
        if !enabled {
            continue;
        }
        let pairs: Vec<String> = windows
            .iter()
            .filter(|w| w.severity == severity)
            .map(|w| {
                let threshold = format!("({} * {})", num(w.factor), num(budget));
                let mut cond = format!(
                    "(\n  max without (window) ({}) > {threshold}\n  and\n  max without (window) ({}) > {threshold}",
                    rec(&format!("slo:sli_error:ratio_rate{}", w.long_name), slo),
                    rec(&format!("slo:sli_error:ratio_rate{}", w.short_name), slo),
                );
                if let Some(traffic) = promql::traffic(slo, w.long) {
                    cond.push_str(&format!(
                        "\n  and on ()\n  {traffic} >= {}",
                        min_events(slo, w.factor)
                    ));
                }
                cond.push_str("\n)");
                cond
            })
            .collect();
        let described: Vec<String> = windows
            .iter()
            .filter(|w| w.severity == severity)
            .map(|w| format!("{}× over {} and {}", num(w.factor), w.long, w.short))
            .collect();
        let mut l = labels(slo, &[("severity", severity.as_str().to_string())]);
        l.extend(slo.alerting.labels.clone());
        alerts.push(Rule {
            record: None,
            alert: Some(match severity {
                Severity::Page => "SLOErrorBudgetBurnPage".into(),
                Severity::Ticket => "SLOErrorBudgetBurnTicket".into(),
            }),
            expr: pairs.join("\nor\n"),
            for_: Some(for_.into()),
            labels: l,
            annotations: BTreeMap::from([
                (
                    "summary".to_string(),
                    format!(
                        "SLO {} of {} is burning its error budget: the error ratio is above {} by {}",
                        slo.name,
                        slo.service,
                        num(budget),
                        described.join(", or ")
                    ),
                ),
                ("runbook".to_string(), "runbooks/slo-review.md".to_string()),
            ]),
        });
    }
    let mut l = labels(slo, &[("severity", "ticket".to_string())]);
    l.extend(slo.alerting.labels.clone());
    let metric = promql::measured_metric(slo);
    alerts.push(Rule {
        record: None,
        alert: Some("SLOMetricAbsent".into()),
        expr: format!("absent({metric})"),
        for_: Some(ABSENT_FOR.into()),
        labels: l.clone(),
        annotations: BTreeMap::from([(
            "summary".to_string(),
            format!(
                "SLO {} cannot be measured: Prometheus has no {metric} series (scrape failing, or the metric renamed)",
                slo.name
            ),
        )]),
    });
    if let Some(expr) = promql::inconsistent(slo) {
        alerts.push(Rule {
            record: None,
            alert: Some("SLOGoodAboveTotal".into()),
            expr,
            for_: Some(ABSENT_FOR.into()),
            labels: l,
            annotations: BTreeMap::from([(
                "summary".to_string(),
                format!(
                    "SLO {}: more good (or bad) events than events in total; the SLI queries do not select the same requests",
                    slo.name
                ),
            )]),
        });
    }
    let n_alerts = alerts.len();
    let groups = vec![
        Group {
            name: format!("slo-sli-recordings-{}", slo.name),
            rules: sli,
        },
        Group {
            name: format!("slo-meta-recordings-{}", slo.name),
            rules: meta,
        },
        Group {
            name: format!("slo-alerts-{}", slo.name),
            rules: alerts,
        },
    ];
    (groups, n_records, n_alerts)
}

/// The rules of `slos` as one YAML document.
pub fn rules_yaml(slos: &[Slo]) -> Result<(String, BTreeMap<String, usize>, usize, usize)> {
    let mut groups = Vec::new();
    let mut per = BTreeMap::new();
    let (mut recs, mut alerts) = (0, 0);
    let mut sorted: Vec<&Slo> = slos.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for slo in sorted {
        let (g, r, a) = slo_groups(slo);
        per.insert(slo.name.clone(), r);
        recs += r;
        alerts += a;
        groups.extend(g);
    }
    let body = serde_yaml_ng::to_string(&RuleFile { groups })
        .map_err(|e| Error::Render(format!("rules YAML: {e}")))?;
    let header = "# Generated by `qg-slo generate` from the OpenSLO specs in slo/; do not edit.\n\
                  # Regenerate: qg-slo generate --spec slo/ --output dashboards/prometheus/\n";
    Ok((format!("{header}{body}"), per, recs, alerts))
}

/// Generate the rules of the specs under `opts.spec`.
pub fn generate(opts: &GenerateOptions) -> Result<Generated> {
    let slos = spec::load(&opts.spec)?;
    let (yaml, per, recs, alerts) = rules_yaml(&slos)?;
    let path = opts.output.as_ref().map(|o| {
        if o.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            o.clone()
        } else {
            o.join(RULES_FILE)
        }
    });
    if let Some(p) = &path {
        write_file(p, yaml.as_bytes())?;
    }
    Ok(Generated {
        path,
        slos: slos.len(),
        recording_rules: recs,
        alerting_rules: alerts,
        recording_rules_per_slo: per,
        yaml,
    })
}

/// Write atomically (a temp file in the same folder, then rename).
pub(crate) fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::write(path, e)
        })
}
