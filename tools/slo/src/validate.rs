//! `qg-slo validate`: read and check an SLO set without writing anything.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::burn;
use crate::duration::Duration;
use crate::error::Result;
use crate::spec::{self, Budgeting, Window};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ValidateOptions {
    /// A spec file or a folder of them.
    pub spec: PathBuf,
}

/// What was checked: one line per SLO.
#[derive(Debug, Clone, Serialize)]
pub struct Validated {
    pub files: Vec<PathBuf>,
    pub slos: Vec<SloSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SloSummary {
    pub name: String,
    pub service: String,
    pub file: PathBuf,
    pub line: usize,
    pub target: f64,
    /// `28d`, `calendar month`, `calendar quarter`.
    pub window: String,
    pub budgeting: String,
    /// The longest alert window, scaled to the period.
    pub longest_alert_window: Duration,
}

/// Check every spec under `opts.spec`; the first problem is the error.
pub fn validate(opts: &ValidateOptions) -> Result<Validated> {
    let files = spec::spec_files(&opts.spec)?;
    let slos = spec::load(&opts.spec)?;
    Ok(Validated {
        files,
        slos: slos
            .iter()
            .map(|s| SloSummary {
                name: s.name.clone(),
                service: s.service.clone(),
                file: s.file.clone(),
                line: s.line,
                target: s.target,
                window: match s.window {
                    Window::Rolling(d) => d.to_string(),
                    Window::Calendar { unit, .. } => format!("calendar {unit:?}").to_lowercase(),
                },
                budgeting: match s.budgeting {
                    Budgeting::Occurrences => "occurrences".into(),
                    Budgeting::Timeslices { target, window } => {
                        format!("timeslices of {window} (good at {target})")
                    }
                },
                longest_alert_window: burn::windows(s.window.nominal(), s.alerting.scale_windows)
                    .iter()
                    .map(|w| w.long)
                    .max()
                    .unwrap_or(Duration(0)),
            })
            .collect(),
    })
}
