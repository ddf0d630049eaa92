//! `qg-sbom scan`: the vulnerability gate. Runs `trivy sbom --format json`
//! on the SBOM (or reads a saved trivy JSON report), applies an ignore list
//! whose entries each carry a reason and an expiry date, summarises findings
//! by severity and package, and says whether the gate (`fail_on`) fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{read_file, write_file, Error, Result};

/// The ignore file looked for next to where the command runs.
pub const DEFAULT_IGNORE_FILE: &str = ".qg-sbom-ignore.yaml";

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "UNKNOWN" => Severity::Unknown,
            "LOW" => Severity::Low,
            "MEDIUM" => Severity::Medium,
            "HIGH" => Severity::High,
            "CRITICAL" => Severity::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "UNKNOWN",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ScanOptions {
    pub sbom: PathBuf,
    /// A saved `trivy ... --format json` report; when None, trivy is run.
    pub trivy_json: Option<PathBuf>,
    /// The trivy program to run.
    pub trivy: PathBuf,
    /// Fail when a finding is at or above this severity; None never fails.
    pub fail_on: Option<Severity>,
    /// Ignore list (YAML); None for none.
    pub ignore_file: Option<PathBuf>,
    /// Also write the JSON summary here.
    pub summary: Option<PathBuf>,
    /// Today (YYYY-MM-DD, UTC) for expiry checks; None for the real date.
    pub today: Option<String>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            sbom: PathBuf::from("SBOM.json"),
            trivy_json: None,
            trivy: PathBuf::from("trivy"),
            fail_on: None,
            ignore_file: None,
            summary: None,
            today: None,
        }
    }
}

/// One entry of the ignore file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IgnoreEntry {
    /// Vulnerability id (CVE-…, GHSA-…, RUSTSEC-…).
    pub id: String,
    /// Only for this package (name as trivy reports it); all packages if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Why it is acceptable (required).
    pub reason: String,
    /// Last day the entry applies, YYYY-MM-DD (required).
    pub expires: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnoreFile {
    #[serde(default)]
    ignore: Vec<IgnoreEntry>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub id: String,
    pub package: String,
    pub installed_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_version: Option<String>,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// trivy's result target (file or SBOM).
    pub target: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IgnoredFinding {
    #[serde(flatten)]
    pub finding: Finding,
    pub reason: String,
    pub expires: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanResult {
    pub sbom: PathBuf,
    /// `trivy` or the saved report's path.
    pub report: String,
    pub artifact: Option<String>,
    /// Active findings (after the ignore list), most severe first.
    pub findings: Vec<Finding>,
    /// Active findings by severity.
    pub counts: BTreeMap<Severity, usize>,
    /// Findings suppressed by a current ignore entry.
    pub ignored: Vec<IgnoredFinding>,
    /// Ignore entries past their expiry date: no longer applied.
    pub expired_ignores: Vec<IgnoreEntry>,
    /// Current ignore entries that matched nothing (candidates for removal).
    pub unused_ignores: Vec<IgnoreEntry>,
    pub fail_on: Option<Severity>,
    /// Findings at or above `fail_on`.
    pub blocking: usize,
    /// True when `blocking > 0`: the gate fails (exit 1).
    pub gate_failed: bool,
}

fn valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && s.split('-').all(|p| p.bytes().all(|c| c.is_ascii_digit()))
        && (1..=12).contains(&s[5..7].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&s[8..10].parse::<u32>().unwrap_or(0))
}

/// Parse an ignore file; every entry needs an id, a reason and an expiry date.
pub fn read_ignore_file(path: &Path) -> Result<Vec<IgnoreEntry>> {
    let text = String::from_utf8(read_file(path)?)
        .map_err(|_| Error::bad_input(path, "not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: IgnoreFile = serde_yaml_ng::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("line {}: ", l.line()))
            .unwrap_or_default();
        Error::bad_input(path, format!("{at}{e}"))
    })?;
    for (i, e) in doc.ignore.iter().enumerate() {
        let at = format!("ignore entry {} ({})", i + 1, e.id);
        if e.id.trim().is_empty() {
            return Err(Error::bad_input(
                path,
                format!("ignore entry {} has an empty id", i + 1),
            ));
        }
        if e.reason.trim().is_empty() {
            return Err(Error::bad_input(
                path,
                format!("{at}: a reason is required"),
            ));
        }
        if !valid_date(&e.expires) {
            return Err(Error::bad_input(
                path,
                format!("{at}: expires `{}` is not a date YYYY-MM-DD", e.expires),
            ));
        }
    }
    Ok(doc.ignore)
}

#[derive(Deserialize)]
struct TrivyReport {
    #[serde(rename = "ArtifactName")]
    artifact_name: Option<String>,
    #[serde(rename = "Results", default)]
    results: Option<Vec<TrivyResult>>,
}

#[derive(Deserialize)]
struct TrivyResult {
    #[serde(rename = "Target", default)]
    target: String,
    #[serde(rename = "Vulnerabilities", default)]
    vulnerabilities: Option<Vec<TrivyVuln>>,
}

#[derive(Deserialize)]
struct TrivyVuln {
    #[serde(rename = "VulnerabilityID")]
    id: String,
    #[serde(rename = "PkgName")]
    pkg_name: String,
    #[serde(rename = "InstalledVersion", default)]
    installed: String,
    #[serde(rename = "FixedVersion", default)]
    fixed: Option<String>,
    #[serde(rename = "Severity", default)]
    severity: Option<String>,
    #[serde(rename = "Title", default)]
    title: Option<String>,
    #[serde(rename = "PrimaryURL", default)]
    url: Option<String>,
}

/// Parse trivy's JSON report (`SchemaVersion` 2): `Results[].Vulnerabilities[]`.
pub fn parse_trivy_report(data: &[u8], path: &Path) -> Result<(Option<String>, Vec<Finding>)> {
    let report: TrivyReport = serde_json::from_slice(data).map_err(|e| {
        Error::bad_input(
            path,
            format!("not a trivy JSON report (line {}): {e}", e.line()),
        )
    })?;
    let mut seen = BTreeSet::new();
    let mut findings = Vec::new();
    for r in report.results.unwrap_or_default() {
        for v in r.vulnerabilities.unwrap_or_default() {
            if !seen.insert((v.id.clone(), v.pkg_name.clone(), v.installed.clone())) {
                continue;
            }
            findings.push(Finding {
                severity: v
                    .severity
                    .as_deref()
                    .and_then(Severity::parse)
                    .unwrap_or(Severity::Unknown),
                id: v.id,
                package: v.pkg_name,
                installed_version: v.installed,
                fixed_version: v.fixed.filter(|f| !f.is_empty()),
                title: v.title,
                url: v.url,
                target: r.target.clone(),
            });
        }
    }
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.package.cmp(&b.package))
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok((report.artifact_name, findings))
}

fn run_trivy(trivy: &Path, sbom: &Path) -> Result<Vec<u8>> {
    if !sbom.is_file() {
        return Err(Error::bad_input(
            sbom,
            "no such SBOM (generate it with `qg-sbom generate`)",
        ));
    }
    tracing::debug!(trivy = %trivy.display(), sbom = %sbom.display(), "running trivy sbom");
    let out = std::process::Command::new(trivy)
        .args(["sbom", "--format", "json", "--quiet"])
        .arg(sbom)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingTool(format!(
                    "trivy is not installed (`{}` was not found on PATH): install trivy \
                     (https://trivy.dev) or pass a saved report with --trivy-json FILE",
                    trivy.display()
                ))
            } else {
                Error::Tool {
                    program: trivy.display().to_string(),
                    reason: e.to_string(),
                }
            }
        })?;
    if !out.status.success() {
        return Err(Error::Tool {
            program: format!("{} sbom {}", trivy.display(), sbom.display()),
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}

fn today_utc() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

pub fn scan(opts: &ScanOptions) -> Result<ScanResult> {
    let ignores = match &opts.ignore_file {
        Some(p) => read_ignore_file(p)?,
        None => Vec::new(),
    };
    let today = opts.today.clone().unwrap_or_else(today_utc);
    let (report_name, data, report_path) = match &opts.trivy_json {
        Some(p) => (p.display().to_string(), read_file(p)?, p.clone()),
        None => (
            "trivy".to_string(),
            run_trivy(&opts.trivy, &opts.sbom)?,
            PathBuf::from("trivy output"),
        ),
    };
    let (artifact, all) = parse_trivy_report(&data, &report_path)?;

    // ISO dates compare correctly as strings.
    let (current, expired): (Vec<IgnoreEntry>, Vec<IgnoreEntry>) = ignores
        .into_iter()
        .partition(|e| e.expires.as_str() >= today.as_str());
    let mut used = vec![false; current.len()];
    let mut findings = Vec::new();
    let mut ignored = Vec::new();
    for f in all {
        let hit = current
            .iter()
            .position(|e| e.id == f.id && e.package.as_deref().is_none_or(|p| p == f.package));
        match hit {
            Some(i) => {
                used[i] = true;
                ignored.push(IgnoredFinding {
                    reason: current[i].reason.clone(),
                    expires: current[i].expires.clone(),
                    finding: f,
                });
            }
            None => findings.push(f),
        }
    }
    let unused_ignores = current
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(e, _)| e.clone())
        .collect();
    let mut counts = BTreeMap::new();
    for f in &findings {
        *counts.entry(f.severity).or_insert(0) += 1;
    }
    let blocking = opts
        .fail_on
        .map(|t| findings.iter().filter(|f| f.severity >= t).count())
        .unwrap_or(0);
    let result = ScanResult {
        sbom: opts.sbom.clone(),
        report: report_name,
        artifact,
        findings,
        counts,
        ignored,
        expired_ignores: expired,
        unused_ignores,
        fail_on: opts.fail_on,
        blocking,
        gate_failed: blocking > 0,
    };
    if let Some(p) = &opts.summary {
        let mut text =
            serde_json::to_string_pretty(&result).map_err(|e| Error::Other(e.to_string()))?;
        text.push('\n');
        write_file(p, text.as_bytes())?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::Low > Severity::Unknown);
        assert_eq!(Severity::parse("high"), Some(Severity::High));
        assert_eq!(Severity::parse("severe"), None);
    }

    #[test]
    fn dates_are_checked() {
        assert!(valid_date("2026-01-31"));
        assert!(!valid_date("2026-13-01"));
        assert!(!valid_date("31.01.2026"));
        assert!(!valid_date("2026-1-1"));
    }
}
