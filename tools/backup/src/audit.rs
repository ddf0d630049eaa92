//! Recording qg-backup's runs in the store's audit log, where evidence
//! reports and the "last successful backup" metric read them.
//!
//! `verify`, `prune` and `restore` may run on a host without the live store
//! (a disaster-recovery machine, a backup server): there they record nothing.
//! Where the store is there but the record fails, the run says so in a
//! warning instead of dropping it.

use std::path::Path;

use qg_store::audit::{Event, Outcome};
use qg_store::Store;

use crate::error::Result;

/// Record the event `make` builds in the store at `path`, if a store is
/// there (and `make` returns one: it may find the store is not the one
/// concerned). Returns a warning when something is there and the record
/// failed (a store that cannot be opened, locked by a key rotation, or
/// refusing).
pub(crate) fn record_if_present(
    path: &Path,
    make: impl FnOnce(&Store) -> Option<Event>,
) -> Option<String> {
    let warning = |e: qg_store::Error| {
        format!(
            "could not record this run in the audit log of {}: {e}",
            path.display()
        )
    };
    let store = match Store::open(path) {
        Ok(store) => store,
        Err(qg_store::Error::NoStore { .. }) => return None,
        Err(e) => return Some(warning(e)),
    };
    let event = make(&store)?;
    store.record(&event).err().map(warning)
}

/// Record a run of `action` on target `from` that ended in `result`: a
/// failure with its error, or the outcome and detail `success` gives.
/// Returns the warning of [`record_if_present`].
pub(crate) fn record_run<T>(
    path: &Path,
    action: &str,
    from: &str,
    result: &Result<T>,
    success: impl FnOnce(&T) -> (Outcome, serde_json::Value),
) -> Option<String> {
    let (outcome, detail) = match result {
        Ok(r) => success(r),
        Err(e) => (
            Outcome::Failure,
            serde_json::json!({"target": from, "error": e.to_string()}),
        ),
    };
    record_if_present(path, |store| {
        Some(
            Event::new(store.actor(), action)
                .target(from.to_string())
                .outcome(outcome)
                .detail(detail),
        )
    })
}
