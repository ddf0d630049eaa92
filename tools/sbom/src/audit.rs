//! Audit events `qg-sbom` writes into a QuadGit store (when one is named),
//! so evidence reports can show which release was described, signed and
//! scanned. Actions: `sbom.generate`, `sbom.check`, `sbom.keygen`,
//! `sbom.sign`, `sbom.verify`, `sbom.provenance`, `sbom.verify-provenance`,
//! `sbom.scan`.

use std::path::Path;

use qg_store::audit::{Event, Outcome};
use qg_store::Store;

use crate::error::Result;

/// Open the store first (so a missing store fails before any work is done),
/// then [`record`] after the command ran.
pub fn open(dir: &Path, actor: &str) -> Result<Store> {
    Ok(Store::open(dir)?.with_actor(actor))
}

/// Append one event for `action` on `target` with `detail`.
pub fn record(
    store: &Store,
    action: &str,
    target: &str,
    outcome: Outcome,
    detail: serde_json::Value,
) -> Result<i64> {
    let event = Event::new(store.actor(), &format!("sbom.{action}"))
        .target(target)
        .outcome(outcome)
        .detail(detail);
    Ok(store.record(&event)?)
}
