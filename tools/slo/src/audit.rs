//! The audit event a report run writes into a QuadGit store (`--data`):
//! evidence that error budgets are reviewed (SOC 2 CC7.2). Action
//! `slo.report`, outcome `failure` when an SLO is breached.

use std::path::Path;

use qg_store::audit::{Event, Outcome};
use qg_store::Store;

use crate::error::Result;
use crate::report::Report;

/// Append the `slo.report` event for `report` to the store at `data`.
pub fn record_report(data: &Path, actor: &str, report: &Report) -> Result<i64> {
    let store = Store::open(data)?.with_actor(actor);
    let slos: Vec<serde_json::Value> = report
        .slos
        .iter()
        .map(|s| {
            serde_json::json!({
                "slo": s.name,
                "window": s.window,
                "window_start": s.window_start,
                "window_end": s.window_end,
                "sli": s.sli,
                "target": s.target,
                "budget_remaining": s.budget.remaining_ratio,
                "breached": s.breached,
            })
        })
        .collect();
    let event = Event::new(store.actor(), "slo.report")
        .target(report.source.clone())
        .outcome(if report.breached.is_empty() {
            Outcome::Success
        } else {
            Outcome::Failure
        })
        .detail(serde_json::json!({ "slos": slos, "breached": report.breached }));
    Ok(store.record(&event)?)
}
