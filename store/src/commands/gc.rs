//! `qg gc`: delete objects no ref, tag or reflog entry reaches.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::audit::Event;
use crate::commit::Commit;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::objects::ObjectSet;
use crate::store::Store;
use crate::tree;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GcOptions {
    /// Report what would be removed without removing it.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub kept: u64,
    pub removed: u64,
    pub removed_bytes: u64,
    pub dry_run: bool,
    /// Encrypted namespaces skipped because their keys were not available.
    pub skipped_locked: Vec<String>,
}

/// Everything reachable in `ns` from refs and reflog entries.
pub fn reachable(
    objs: &ObjectSet,
    roots: impl IntoIterator<Item = ObjectId>,
) -> Result<HashSet<ObjectId>> {
    let mut live = HashSet::new();
    let mut stack: Vec<ObjectId> = roots.into_iter().collect();
    while let Some(id) = stack.pop() {
        if !live.insert(id) {
            continue;
        }
        let c = Commit::load(objs, &id)?;
        tree::reachable(objs, &c.tree, &mut live)?;
        stack.extend(c.parents);
    }
    Ok(live)
}

pub fn gc(store: &Store, opts: &GcOptions) -> Result<GcReport> {
    // Mark and sweep under the write lock, so no commit lands half-way through.
    let report = store.db().write(|db| {
        if let Some((pid, what)) = db.live_leases()?.into_iter().next() {
            return Err(Error::Other(format!(
                "a long write is running ({what}, pid {pid}); run gc after it finishes"
            )));
        }
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        for ns in store.namespaces()? {
            // without its keys a namespace's reachability is unknown: leave it alone
            let objs = match store.objects(&ns) {
                Ok(o) => o,
                Err(Error::Locked { .. } | Error::RateLimited { .. }) => {
                    report.skipped_locked.push(ns.clone());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let roots: Vec<ObjectId> = db
                .refs(&ns, "")?
                .into_iter()
                .map(|(_, id)| id)
                .chain(db.reflog_targets(&ns)?)
                .collect();
            let live = reachable(&objs, roots)?;
            for (id, _) in db.object_ids(&ns)? {
                if live.contains(&id) {
                    report.kept += 1;
                    continue;
                }
                report.removed += 1;
                report.removed_bytes += db.get_object(&ns, &id)?.map(|b| b.len() as u64).unwrap_or(0);
                if !opts.dry_run {
                    db.delete_object(&ns, &id)?;
                }
            }
        }
        if !opts.dry_run {
            crate::audit::append(
                db,
                &Event::new(store.actor(), "gc").detail(serde_json::json!({
                    "removed": report.removed, "removed_bytes": report.removed_bytes, "kept": report.kept,
                })),
            )?;
        }
        Ok(report)
    })?;
    Ok(report)
}
