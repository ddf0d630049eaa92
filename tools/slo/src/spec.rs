//! OpenSLO v1 documents (`kind: SLO`, `kind: SLI`) read into [`Slo`]s.
//!
//! Only the subset `tools/slo/README.md` lists is accepted; every other
//! field is an error naming file, line and field. Malformed YAML and fields
//! of the wrong type are reported with the line serde_yaml_ng saw; checks
//! across fields (an unknown `indicatorRef`, a duplicate name, a target out
//! of range) name the line of the field they are about.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::error::{Error, Result};
use crate::selector::{self, GaugeQuery, Selector};

/// The store's latency histogram and its buckets: a latency SLI must read
/// one of these `le` boundaries.
pub fn known_histogram(metric: &str) -> Option<&'static [f64]> {
    match metric {
        "qg_http_request_duration_seconds" => Some(qg_store::server::LATENCY_BUCKETS),
        _ => None,
    }
}

/// The `le` label text of a bucket boundary as the server exports it
/// (prometheus-client prints floats with Rust's `{}` plus `.0` for whole
/// numbers: `0.1`, `1.0`, `30.0`).
pub fn le_label(bound: f64) -> String {
    let s = format!("{bound}");
    if s.contains('.') || s.contains('e') || s.contains("inf") {
        s
    } else {
        format!("{s}.0")
    }
}

/// One SLO, resolved (its SLI looked up) and checked.
#[derive(Debug, Clone, Serialize)]
pub struct Slo {
    pub name: String,
    pub display_name: Option<String>,
    pub service: String,
    pub description: Option<String>,
    /// Where it was defined.
    pub file: PathBuf,
    pub line: usize,
    pub indicator: Indicator,
    pub window: Window,
    pub budgeting: Budgeting,
    /// The objective, in (0, 1).
    pub target: f64,
    pub alerting: Alerting,
}

impl Slo {
    /// The allowed fraction of bad events (or slices): `1 - target`.
    pub fn error_budget(&self) -> f64 {
        1.0 - self.target
    }
}

/// What counts as good.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    /// Counters of events: bad (or good) out of total.
    Ratio { events: Events, total: Sel },
    /// A gauge compared with a threshold, per time slice.
    Threshold { query: Gauge, op: Op, value: f64 },
}

/// The numerator of a ratio SLI.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Events {
    Good(Sel),
    Bad(Sel),
}

/// A selector that serializes as its PromQL text.
#[derive(Debug, Clone)]
pub struct Sel(pub Selector);

impl Serialize for Sel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

/// A gauge query that serializes as its PromQL text.
#[derive(Debug, Clone)]
pub struct Gauge(pub GaugeQuery);

impl Serialize for Gauge {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

/// The comparison of a threshold SLI (OpenSLO `op`): the value is good when
/// `value op threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Lt,
    Lte,
    Gt,
    Gte,
}

impl Op {
    pub fn promql(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Lte => "<=",
            Op::Gt => ">",
            Op::Gte => ">=",
        }
    }

    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Lte => a <= b,
            Op::Gt => a > b,
            Op::Gte => a >= b,
        }
    }
}

/// The SLO's compliance period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    Rolling(Duration),
    /// Calendar months or quarters (UTC), the first starting at `start` (Unix seconds).
    Calendar {
        unit: CalendarUnit,
        start: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CalendarUnit {
    Month,
    Quarter,
}

impl Window {
    /// The length burn-rate windows are scaled against, and the range of the
    /// period recording rule: the rolling duration, 30d for a month, 90d for
    /// a quarter (PromQL ranges are fixed; exact calendar periods are the
    /// report's `--calendar`).
    pub fn nominal(self) -> Duration {
        match self {
            Window::Rolling(d) => d,
            Window::Calendar {
                unit: CalendarUnit::Month,
                ..
            } => Duration(30 * 86_400),
            Window::Calendar {
                unit: CalendarUnit::Quarter,
                ..
            } => Duration(90 * 86_400),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Budgeting {
    Occurrences,
    /// A slice of `window` is good when its SLI is at least `target`.
    Timeslices {
        target: f64,
        window: Duration,
    },
}

/// Alerting settings from the `qg-slo/*` annotations and the SLO's labels.
#[derive(Debug, Clone, Serialize)]
pub struct Alerting {
    pub page: bool,
    pub ticket: bool,
    /// Fewest events in an alert's long window for it to fire (None: derived).
    pub min_events: Option<u64>,
    /// Scale the burn-rate windows to the period (Pyrra) or keep the SRE
    /// Workbook's 30-day windows (Sloth).
    pub scale_windows: bool,
    /// `metadata.labels`, copied onto every generated alert (routing).
    pub labels: BTreeMap<String, String>,
}

// ---------- the raw documents (exactly the supported subset) ----------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDoc {
    api_version: String,
    kind: String,
    metadata: RawMetadata,
    spec: RawSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMetadata {
    name: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The fields of an SLO spec and of an SLI spec together (one struct, so
/// that serde keeps the line of every error); [`Loader`] checks that each
/// kind only uses its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    description: Option<String>,
    // SLO
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    indicator: Option<RawInlineSli>,
    #[serde(default)]
    indicator_ref: Option<String>,
    #[serde(default)]
    time_window: Option<Vec<RawTimeWindow>>,
    #[serde(default)]
    budgeting_method: Option<RawBudgeting>,
    #[serde(default)]
    objectives: Option<Vec<RawObjective>>,
    #[serde(default)]
    alert_policies: Option<serde_yaml_ng::Value>,
    // SLI
    #[serde(default)]
    threshold_metric: Option<RawMetric>,
    #[serde(default)]
    ratio_metric: Option<RawRatio>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawInlineSli {
    #[serde(default)]
    metadata: Option<RawMetadata>,
    spec: RawSliSpec,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSliSpec {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    threshold_metric: Option<RawMetric>,
    #[serde(default)]
    ratio_metric: Option<RawRatio>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRatio {
    counter: bool,
    #[serde(default)]
    good: Option<RawMetric>,
    #[serde(default)]
    bad: Option<RawMetric>,
    total: RawMetric,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMetric {
    metric_source: RawMetricSource,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMetricSource {
    #[serde(rename = "type")]
    kind: RawSourceType,
    spec: RawPromSpec,
}

#[derive(Debug, Deserialize, Clone, Copy)]
enum RawSourceType {
    Prometheus,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawPromSpec {
    query: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTimeWindow {
    duration: String,
    #[serde(default)]
    is_rolling: Option<bool>,
    #[serde(default)]
    calendar: Option<RawCalendar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCalendar {
    start_time: String,
    time_zone: String,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
enum RawBudgeting {
    Occurrences,
    Timeslices,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawObjective {
    // accepted as documentation of the objective; reports use the SLO's displayName
    #[allow(dead_code)]
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    op: Option<Op>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    target: Option<f64>,
    #[serde(default)]
    target_percent: Option<f64>,
    #[serde(default)]
    time_slice_target: Option<f64>,
    #[serde(default)]
    time_slice_window: Option<String>,
}

// ---------- loading ----------

/// The spec files under `path`: the file itself, or a folder's `*.yaml` and
/// `*.yml` files, sorted by name.
pub fn spec_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::read(path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::read(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::BadInput(format!(
            "{}: no *.yaml SLO specs in this folder",
            path.display()
        )));
    }
    Ok(files)
}

/// Read and check every SLO under `path` (a file or a folder of them).
pub fn load(path: &Path) -> Result<Vec<Slo>> {
    let mut loader = Loader::default();
    for file in spec_files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|e| Error::read(&file, e))?;
        loader.add(&file, &text)?;
    }
    loader.finish()
}

/// Read and check the SLOs of one YAML text (`file` names it in errors).
pub fn load_str(file: &Path, text: &str) -> Result<Vec<Slo>> {
    let mut loader = Loader::default();
    loader.add(file, text)?;
    loader.finish()
}

struct Doc {
    file: PathBuf,
    text: std::sync::Arc<str>,
    /// 1-based line of the document's first line.
    start: usize,
    raw: RawDoc,
}

#[derive(Default)]
struct Loader {
    docs: Vec<Doc>,
}

/// The line where a document starts: after the `---` separators before it.
fn document_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![1];
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            if i == 0 {
                starts[0] = 2;
            } else {
                starts.push(i + 2);
            }
        }
    }
    starts
}

impl Loader {
    fn add(&mut self, file: &Path, text: &str) -> Result<()> {
        let shared: std::sync::Arc<str> = text.into();
        let starts = document_starts(text);
        for (n, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let raw = RawDoc::deserialize(de).map_err(|e| yaml_error(file, &e))?;
            self.docs.push(Doc {
                file: file.to_path_buf(),
                text: shared.clone(),
                start: starts.get(n).copied().unwrap_or(1),
                raw,
            });
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<Slo>> {
        let mut slis: BTreeMap<String, (usize, RawSliSpec)> = BTreeMap::new();
        for (i, d) in self.docs.iter().enumerate() {
            if d.raw.api_version != "openslo/v1" {
                return Err(d.err(
                    &["apiVersion"],
                    "apiVersion",
                    format!("`{}` is not supported (only openslo/v1)", d.raw.api_version),
                ));
            }
            check_name(
                d,
                &["metadata", "name"],
                "metadata.name",
                &d.raw.metadata.name,
            )?;
            match d.raw.kind.as_str() {
                "SLO" => {}
                "SLI" => {
                    let s = &d.raw.spec;
                    let slo_only = [
                        ("service", s.service.is_some()),
                        ("indicator", s.indicator.is_some()),
                        ("indicatorRef", s.indicator_ref.is_some()),
                        ("timeWindow", s.time_window.is_some()),
                        ("budgetingMethod", s.budgeting_method.is_some()),
                        ("objectives", s.objectives.is_some()),
                        ("alertPolicies", s.alert_policies.is_some()),
                    ];
                    if let Some((f, _)) = slo_only.iter().find(|(_, set)| *set) {
                        return Err(d.err(
                            &["spec", f],
                            &format!("spec.{f}"),
                            "is a field of kind SLO, not of kind SLI".into(),
                        ));
                    }
                    let spec = RawSliSpec {
                        description: s.description.clone(),
                        threshold_metric: s.threshold_metric.clone(),
                        ratio_metric: s.ratio_metric.clone(),
                    };
                    if slis
                        .insert(d.raw.metadata.name.clone(), (i, spec))
                        .is_some()
                    {
                        return Err(d.err(
                            &["metadata", "name"],
                            "metadata.name",
                            format!("SLI `{}` is defined twice", d.raw.metadata.name),
                        ));
                    }
                }
                other => {
                    return Err(d.err(
                        &["kind"],
                        "kind",
                        format!("`{other}` is not supported (only SLO and SLI)"),
                    ))
                }
            }
        }
        let mut slos: Vec<Slo> = Vec::new();
        for d in self.docs.iter().filter(|d| d.raw.kind == "SLO") {
            let slo = d.slo(&slis, &self.docs)?;
            if let Some(first) = slos.iter().find(|s| s.name == slo.name) {
                return Err(d.err(
                    &["metadata", "name"],
                    "metadata.name",
                    format!(
                        "duplicate SLO name `{}` (first defined at {}:{})",
                        slo.name,
                        first.file.display(),
                        first.line
                    ),
                ));
            }
            slos.push(slo);
        }
        if slos.is_empty() {
            return Err(Error::BadInput(
                "no kind: SLO documents in the specs".into(),
            ));
        }
        Ok(slos)
    }
}

/// A serde_yaml_ng error as `file:line: field: reason`.
fn yaml_error(file: &Path, e: &serde_yaml_ng::Error) -> Error {
    let line = e.location().map(|l| l.line()).unwrap_or(0);
    let mut msg = e.to_string();
    if let Some(at) = msg.find(" at line ") {
        msg.truncate(at);
    }
    // serde_yaml_ng prefixes the path of the value (`spec.objectives[0].target: ...`)
    let (field, reason) = match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_string(), rest.to_string()),
        _ => ("(document)".to_string(), msg),
    };
    Error::Spec {
        file: file.display().to_string(),
        line,
        field,
        reason,
    }
}

fn check_name(d: &Doc, at: &[&str], field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(d.err(
            at,
            field,
            format!("`{name}` is not a valid name (lowercase letters, digits and `-`, at most 63)"),
        ))
    }
}

impl Doc {
    /// An error about the field at key path `at` (its line, found in the text).
    fn err(&self, at: &[&str], field: &str, reason: String) -> Error {
        Error::Spec {
            file: self.file.display().to_string(),
            line: locate(&self.text, self.start, at),
            field: field.to_string(),
            reason,
        }
    }

    fn slo(&self, slis: &BTreeMap<String, (usize, RawSliSpec)>, docs: &[Doc]) -> Result<Slo> {
        let s = &self.raw.spec;
        let m = &self.raw.metadata;
        if s.threshold_metric.is_some() || s.ratio_metric.is_some() {
            let f = if s.ratio_metric.is_some() {
                "ratioMetric"
            } else {
                "thresholdMetric"
            };
            return Err(self.err(
                &["spec", f],
                &format!("spec.{f}"),
                "belongs in an SLI (`indicator.spec` or a kind: SLI document)".into(),
            ));
        }
        if s.alert_policies.is_some() {
            return Err(self.err(
                &["spec", "alertPolicies"],
                "spec.alertPolicies",
                "is not supported: qg-slo generates the SRE Workbook's page and ticket alerts; \
                 route them with metadata.labels and the qg-slo/page, qg-slo/ticket annotations \
                 (see tools/slo/README.md)"
                    .into(),
            ));
        }
        let service = s
            .service
            .clone()
            .ok_or_else(|| self.err(&["spec"], "spec.service", "is required".into()))?;
        // the SLI: inline or by reference, and where its fields are
        let (sli, sli_doc, sli_path): (RawSliSpec, &Doc, Vec<&'static str>) =
            match (&s.indicator, &s.indicator_ref) {
                (Some(_), Some(_)) => {
                    return Err(self.err(
                        &["spec", "indicatorRef"],
                        "spec.indicatorRef",
                        "give either indicator or indicatorRef, not both".into(),
                    ))
                }
                (None, None) => {
                    return Err(self.err(
                        &["spec"],
                        "spec.indicator",
                        "is required (or spec.indicatorRef naming a kind: SLI)".into(),
                    ))
                }
                (Some(inline), None) => {
                    if let Some(meta) = &inline.metadata {
                        check_name(
                            self,
                            &["spec", "indicator", "metadata", "name"],
                            "spec.indicator.metadata.name",
                            &meta.name,
                        )?;
                    }
                    (inline.spec.clone(), self, vec!["spec", "indicator", "spec"])
                }
                (None, Some(name)) => match slis.get(name) {
                    Some((i, spec)) => (spec.clone(), &docs[*i], vec!["spec"]),
                    None => {
                        return Err(self.err(
                            &["spec", "indicatorRef"],
                            "spec.indicatorRef",
                            format!("no kind: SLI named `{name}` in the specs"),
                        ))
                    }
                },
            };
        let field = |tail: &[&str]| -> String {
            let mut p: Vec<&str> = sli_path.clone();
            p.extend_from_slice(tail);
            p.join(".")
        };
        let at = |tail: &[&'static str]| -> Vec<&'static str> {
            let mut p: Vec<&str> = sli_path.clone();
            p.extend_from_slice(tail);
            p
        };

        let objectives = s.objectives.as_deref().unwrap_or_default();
        let objective = match objectives {
            [one] => one,
            [] => {
                return Err(self.err(
                    &["spec"],
                    "spec.objectives",
                    "one objective is required".into(),
                ))
            }
            _ => {
                return Err(self.err(
                    &["spec", "objectives"],
                    "spec.objectives",
                    format!(
                    "{} objectives: exactly one per SLO is supported (write one SLO per objective)",
                    objectives.len()
                ),
                ))
            }
        };
        let obj_at = |f: &'static str| -> Vec<&'static str> { vec!["spec", "objectives", f] };
        let target = match (objective.target, objective.target_percent) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    &obj_at("targetPercent"),
                    "spec.objectives[0].targetPercent",
                    "give target or targetPercent, not both".into(),
                ))
            }
            (Some(t), None) => (t, "target"),
            (None, Some(p)) => (p / 100.0, "targetPercent"),
            (None, None) => {
                return Err(self.err(
                    &["spec", "objectives"],
                    "spec.objectives[0].target",
                    "is required (or targetPercent)".into(),
                ))
            }
        };
        let (target, target_field) = target;
        if !(target > 0.0 && target < 1.0) {
            return Err(self.err(
                &obj_at(target_field),
                &format!("spec.objectives[0].{target_field}"),
                format!(
                    "{} is outside (0, 1){}",
                    target,
                    if target_field == "targetPercent" {
                        " once divided by 100"
                    } else {
                        ""
                    }
                ),
            ));
        }

        let budgeting_method = s.budgeting_method.ok_or_else(|| {
            self.err(
                &["spec"],
                "spec.budgetingMethod",
                "is required (Occurrences or Timeslices)".into(),
            )
        })?;
        let budgeting = match budgeting_method {
            RawBudgeting::Occurrences => {
                for (f, set) in [
                    ("timeSliceTarget", objective.time_slice_target.is_some()),
                    ("timeSliceWindow", objective.time_slice_window.is_some()),
                ] {
                    if set {
                        return Err(self.err(
                            &obj_at(f),
                            &format!("spec.objectives[0].{f}"),
                            "is only used with budgetingMethod: Timeslices".into(),
                        ));
                    }
                }
                Budgeting::Occurrences
            }
            RawBudgeting::Timeslices => {
                let t = objective.time_slice_target.ok_or_else(|| {
                    self.err(
                        &["spec", "objectives"],
                        "spec.objectives[0].timeSliceTarget",
                        "is required with budgetingMethod: Timeslices".into(),
                    )
                })?;
                if !(t > 0.0 && t <= 1.0) {
                    return Err(self.err(
                        &obj_at("timeSliceTarget"),
                        "spec.objectives[0].timeSliceTarget",
                        format!("{t} is outside (0, 1]"),
                    ));
                }
                let w = objective.time_slice_window.as_deref().ok_or_else(|| {
                    self.err(
                        &["spec", "objectives"],
                        "spec.objectives[0].timeSliceWindow",
                        "is required with budgetingMethod: Timeslices".into(),
                    )
                })?;
                let w = Duration::parse(w).map_err(|e| {
                    self.err(
                        &obj_at("timeSliceWindow"),
                        "spec.objectives[0].timeSliceWindow",
                        e,
                    )
                })?;
                Budgeting::Timeslices {
                    target: t,
                    window: w,
                }
            }
        };

        let indicator = match (&sli.ratio_metric, &sli.threshold_metric) {
            (Some(_), Some(_)) => {
                return Err(sli_doc.err(
                    &at(&["thresholdMetric"]),
                    &field(&["thresholdMetric"]),
                    "give ratioMetric or thresholdMetric, not both".into(),
                ))
            }
            (None, None) => {
                return Err(sli_doc.err(
                    &at(&[]),
                    &field(&["ratioMetric"]),
                    "an SLI needs ratioMetric or thresholdMetric".into(),
                ))
            }
            (Some(r), None) => {
                if !r.counter {
                    return Err(sli_doc.err(
                        &at(&["ratioMetric", "counter"]),
                        &field(&["ratioMetric", "counter"]),
                        "only counters are supported (counter: true): qg-slo takes rates and increases of them".into(),
                    ));
                }
                for (f, set) in [
                    ("op", objective.op.is_some()),
                    ("value", objective.value.is_some()),
                ] {
                    if set {
                        return Err(self.err(
                            &obj_at(f),
                            &format!("spec.objectives[0].{f}"),
                            "is only used with a thresholdMetric SLI".into(),
                        ));
                    }
                }
                let sel = |m: &RawMetric, name: &'static str| -> Result<Selector> {
                    selector::parse(&m.metric_source.spec.query).map_err(|e| {
                        sli_doc.err(
                            &at(&["ratioMetric", name, "metricSource", "spec", "query"]),
                            &field(&["ratioMetric", name, "metricSource", "spec", "query"]),
                            e,
                        )
                    })
                };
                let _ = r.total.metric_source.kind;
                let total = sel(&r.total, "total")?;
                let events = match (&r.good, &r.bad) {
                    (Some(g), None) => Events::Good(Sel(sel(g, "good")?)),
                    (None, Some(b)) => Events::Bad(Sel(sel(b, "bad")?)),
                    (Some(_), Some(_)) => {
                        return Err(sli_doc.err(
                            &at(&["ratioMetric", "bad"]),
                            &field(&["ratioMetric", "bad"]),
                            "give good or bad, not both".into(),
                        ))
                    }
                    (None, None) => {
                        return Err(sli_doc.err(
                            &at(&["ratioMetric"]),
                            &field(&["ratioMetric", "good"]),
                            "a ratioMetric needs good or bad (with total)".into(),
                        ))
                    }
                };
                // a latency SLI reads a bucket the histogram has, spelled as exported
                let (num, num_name) = match &events {
                    Events::Good(s) => (&s.0, "good"),
                    Events::Bad(s) => (&s.0, "bad"),
                };
                for (s, name) in [(num, num_name), (&total, "total")] {
                    check_bucket(s).map_err(|e| {
                        sli_doc.err(
                            &at(&["ratioMetric", name, "metricSource", "spec", "query"]),
                            &field(&["ratioMetric", name, "metricSource", "spec", "query"]),
                            e,
                        )
                    })?;
                }
                Indicator::Ratio {
                    events,
                    total: Sel(total),
                }
            }
            (None, Some(t)) => {
                let q = GaugeQuery::parse(&t.metric_source.spec.query).map_err(|e| {
                    sli_doc.err(
                        &at(&["thresholdMetric", "metricSource", "spec", "query"]),
                        &field(&["thresholdMetric", "metricSource", "spec", "query"]),
                        e,
                    )
                })?;
                if q.selector().metric.ends_with("_bucket") {
                    return Err(sli_doc.err(
                        &at(&["thresholdMetric", "metricSource", "spec", "query"]),
                        &field(&["thresholdMetric", "metricSource", "spec", "query"]),
                        "a latency SLI is a ratioMetric of histogram buckets (good: the `le` bucket of the threshold, total: `_count`)".into(),
                    ));
                }
                let op = objective.op.ok_or_else(|| {
                    self.err(
                        &["spec", "objectives"],
                        "spec.objectives[0].op",
                        "is required with a thresholdMetric SLI (lt, lte, gt, gte)".into(),
                    )
                })?;
                let value = objective.value.ok_or_else(|| {
                    self.err(
                        &["spec", "objectives"],
                        "spec.objectives[0].value",
                        "is required with a thresholdMetric SLI".into(),
                    )
                })?;
                if !value.is_finite() {
                    return Err(self.err(
                        &obj_at("value"),
                        "spec.objectives[0].value",
                        format!("{value} is not a finite number"),
                    ));
                }
                if budgeting_method != RawBudgeting::Timeslices {
                    return Err(self.err(
                        &["spec", "budgetingMethod"],
                        "spec.budgetingMethod",
                        "a thresholdMetric SLI (a gauge) is budgeted in Timeslices".into(),
                    ));
                }
                Indicator::Threshold {
                    query: Gauge(q),
                    op,
                    value,
                }
            }
        };

        let window = self.window()?;
        let alerting = self.alerting()?;
        // every alert window must fit in the period
        let longest = crate::burn::windows(window.nominal(), alerting.scale_windows)
            .iter()
            .map(|w| w.long)
            .max()
            .unwrap_or(Duration(0));
        if window.nominal() < longest {
            return Err(self.err(
                &["spec", "timeWindow", "duration"],
                "spec.timeWindow[0].duration",
                format!(
                    "the period {} is shorter than the longest alert window {longest}",
                    window.nominal()
                ),
            ));
        }
        if let Budgeting::Timeslices { window: slice, .. } = budgeting {
            if slice > Duration(300) {
                return Err(self.err(
                    &obj_at("timeSliceWindow"),
                    "spec.objectives[0].timeSliceWindow",
                    format!("{slice} is longer than the shortest alert window (5m)"),
                ));
            }
        }
        Ok(Slo {
            name: m.name.clone(),
            display_name: m.display_name.clone(),
            service,
            description: s.description.clone().or(sli.description),
            file: self.file.clone(),
            line: locate(&self.text, self.start, &["metadata", "name"]),
            indicator,
            window,
            budgeting,
            target,
            alerting,
        })
    }

    fn window(&self) -> Result<Window> {
        let windows = self.raw.spec.time_window.as_deref().unwrap_or_default();
        let w = match windows {
            [one] => one,
            _ => {
                return Err(self.err(
                    &["spec", "timeWindow"],
                    "spec.timeWindow",
                    format!("exactly one time window is required, not {}", windows.len()),
                ))
            }
        };
        let at = |f: &'static str| -> Vec<&'static str> { vec!["spec", "timeWindow", f] };
        let field = |f: &str| format!("spec.timeWindow[0].{f}");
        match (w.is_rolling.unwrap_or(w.calendar.is_none()), &w.calendar) {
            (true, Some(_)) => Err(self.err(
                &at("calendar"),
                &field("calendar"),
                "a rolling window has no calendar (isRolling: false for calendar periods)".into(),
            )),
            (false, None) => Err(self.err(
                &at("isRolling"),
                &field("calendar"),
                "a calendar window (isRolling: false) needs calendar.startTime and calendar.timeZone".into(),
            )),
            (true, None) => {
                if w.duration.ends_with('M') || w.duration.ends_with('Q') {
                    return Err(self.err(
                        &at("duration"),
                        &field("duration"),
                        format!("`{}` is a calendar period: set isRolling: false and calendar", w.duration),
                    ));
                }
                let d = Duration::parse(&w.duration)
                    .map_err(|e| self.err(&at("duration"), &field("duration"), e))?;
                Ok(Window::Rolling(d))
            }
            (false, Some(cal)) => {
                let unit = match w.duration.as_str() {
                    "1M" => CalendarUnit::Month,
                    "1Q" => CalendarUnit::Quarter,
                    other => {
                        return Err(self.err(
                            &at("duration"),
                            &field("duration"),
                            format!("`{other}`: calendar periods are 1M (month) or 1Q (quarter)"),
                        ))
                    }
                };
                if !matches!(cal.time_zone.as_str(), "UTC" | "Etc/UTC") {
                    return Err(self.err(
                        &["spec", "timeWindow", "calendar", "timeZone"],
                        &field("calendar.timeZone"),
                        format!("`{}` is not supported: calendar periods are in UTC", cal.time_zone),
                    ));
                }
                let start = crate::calendar::parse_start(&cal.start_time, unit).map_err(|e| {
                    self.err(
                        &["spec", "timeWindow", "calendar", "startTime"],
                        &field("calendar.startTime"),
                        e,
                    )
                })?;
                Ok(Window::Calendar { unit, start })
            }
        }
    }

    fn alerting(&self) -> Result<Alerting> {
        let m = &self.raw.metadata;
        let mut a = Alerting {
            page: true,
            ticket: true,
            min_events: None,
            scale_windows: true,
            labels: m.labels.clone(),
        };
        for k in m.labels.keys() {
            let ok_key = !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with(|c: char| c.is_ascii_digit());
            let reserved = matches!(k.as_str(), "slo" | "service" | "window" | "severity")
                || k.starts_with("__");
            if !ok_key || reserved {
                return Err(self.err(
                    &["metadata", "labels", k],
                    &format!("metadata.labels.{k}"),
                    if reserved {
                        "is set by qg-slo on every rule (slo, service, window, severity)".into()
                    } else {
                        "is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)".into()
                    },
                ));
            }
        }
        for (k, v) in &m.annotations {
            let Some(key) = k.strip_prefix("qg-slo/") else {
                continue; // free-form annotations, as OpenSLO allows
            };
            let at = ["metadata", "annotations", k.as_str()];
            let field = format!("metadata.annotations.{k}");
            let flag = |v: &str| match v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.err(
                    &at,
                    &field,
                    format!("`{v}`: expected \"true\" or \"false\""),
                )),
            };
            match key {
                "page" => a.page = flag(v)?,
                "ticket" => a.ticket = flag(v)?,
                "scale-windows" => a.scale_windows = flag(v)?,
                "min-events" => {
                    a.min_events = Some(v.parse::<u64>().map_err(|_| {
                        self.err(
                            &at,
                            &field,
                            format!("`{v}` is not a whole number of events"),
                        )
                    })?)
                }
                _ => {
                    return Err(self.err(
                        &at,
                        &field,
                        "unknown qg-slo annotation (page, ticket, min-events, scale-windows)"
                            .into(),
                    ))
                }
            }
        }
        Ok(a)
    }
}

/// A `_bucket` selector must name an `le` the histogram exports.
fn check_bucket(s: &Selector) -> std::result::Result<(), String> {
    let Some(base) = s.metric.strip_suffix("_bucket") else {
        return Ok(());
    };
    let Some(buckets) = known_histogram(base) else {
        return Err(format!(
            "`{}`: the buckets of histogram {base} are not known to qg-slo, so the threshold cannot be checked (known: qg_http_request_duration_seconds)",
            s.metric
        ));
    };
    let bounds = || {
        buckets
            .iter()
            .map(|b| le_label(*b))
            .chain(["+Inf".to_string()])
    };
    let Some(le) = s.label_eq("le") else {
        return Err(format!(
            "`{s}` reads {base}_bucket without `le=\"...\"`: name the bucket of the latency threshold"
        ));
    };
    if bounds().any(|b| b == le) {
        return Ok(());
    }
    let near = le
        .parse::<f64>()
        .ok()
        .and_then(|v| buckets.iter().find(|b| (**b - v).abs() < 1e-12))
        .map(|b| format!(" (the server spells it le=\"{}\")", le_label(*b)))
        .unwrap_or_default();
    Err(format!(
        "le=\"{le}\" is not a bucket boundary of {base}{near}; its buckets are {}",
        bounds().collect::<Vec<_>>().join(", ")
    ))
}

/// The 1-based line of key path `path` in the document starting at line
/// `start`: each key is looked for below the previous one, deeper
/// indented; where a key is missing, the line of the deepest one found.
fn locate(text: &str, start: usize, path: &[&str]) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut line = start.saturating_sub(1); // 0-based index
    let mut found = start;
    let mut indent: Option<usize> = None;
    'keys: for key in path {
        let mut i = if indent.is_some() { line + 1 } else { line };
        while i < lines.len() {
            let l = lines[i];
            if l.trim_end() == "---" {
                break;
            }
            let body = l.trim_start_matches([' ', '-']);
            let ind = l.len() - body.len();
            if !body.is_empty() && !body.starts_with('#') {
                if let Some(min) = indent {
                    if ind <= min && !l.trim_start().starts_with('-') && i > line {
                        break; // left the parent's block
                    }
                }
                let k = body
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(['"', '\'']);
                if k == *key
                    && body[k.len()..]
                        .trim_start_matches(['"', '\''])
                        .starts_with(':')
                {
                    line = i;
                    found = i + 1;
                    indent = Some(ind);
                    continue 'keys;
                }
            }
            i += 1;
        }
        break;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_keys() {
        let text = "apiVersion: openslo/v1\nkind: SLO\nmetadata:\n  name: x\nspec:\n  service: s\n  objectives:\n    - displayName: a\n      target: 2\n";
        assert_eq!(locate(text, 1, &["metadata", "name"]), 4);
        assert_eq!(locate(text, 1, &["spec", "objectives", "target"]), 9);
        assert_eq!(locate(text, 1, &["spec", "nothing"]), 5);
        assert_eq!(locate(text, 1, &["kind"]), 2);
    }

    #[test]
    fn le_labels_are_spelled_as_prometheus_client_does() {
        assert_eq!(le_label(0.1), "0.1");
        assert_eq!(le_label(0.0005), "0.0005");
        assert_eq!(le_label(1.0), "1.0");
        assert_eq!(le_label(30.0), "30.0");
    }
}
