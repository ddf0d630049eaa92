//! `qg-backup prune`: retention. Keeps the newest backup of each of the last
//! N days, weeks (ISO) and months (UTC) that have backups, plus the last N
//! backups, plus every backup a kept one needs (its full backup and the
//! incrementals between); removes the rest. Never removes a full backup that
//! a kept incremental needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use qg_store::audit::Outcome;
use serde::{Deserialize, Serialize};

use crate::catalog::{manifest_name, stream_name, Catalog, INCOMPLETE_GRACE_SECS};
use crate::error::{Error, Result};
use crate::format::BackupKind;
use crate::manifest::Manifest;
use crate::target::{S3Options, Target};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PruneOptions {
    /// Directory, `file://DIR` or `s3://bucket/prefix`.
    pub from: String,
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
    pub s3: S3Options,
    /// A store to record the prune in (`prune.backup`), when it exists.
    pub record_in: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    pub id: String,
    /// `last`, `daily`, `weekly`, `monthly`, or `needed by <id>`.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub id: String,
    pub kind: BackupKind,
    pub created: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneResult {
    pub target: String,
    pub dry_run: bool,
    pub kept: Vec<Kept>,
    pub removed: Vec<Removed>,
    pub removed_bytes: u64,
    /// Streams of interrupted backups (no manifest, older than a day) removed.
    pub incomplete_removed: Vec<String>,
    /// What went wrong without failing the run (the audit record).
    pub warnings: Vec<String>,
}

/// A retention rule: its name, how many buckets it keeps, and the bucket of a time.
type Rule = (&'static str, u32, fn(&str) -> String);

/// Which backups the policy keeps, with why (pure: used by [`prune`] and tests).
pub fn select(backups: &[&Manifest], opts: &PruneOptions) -> BTreeMap<String, Vec<String>> {
    let mut keep: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut by_store: BTreeMap<&str, Vec<&Manifest>> = BTreeMap::new();
    for m in backups {
        by_store.entry(&m.store_id).or_default().push(m);
    }
    for (_, mut list) in by_store {
        list.sort_by(|a, b| (&b.created, &b.id).cmp(&(&a.created, &a.id))); // newest first
        let rules: [Rule; 4] = [
            ("last", opts.keep_last, |c| c.to_string()),
            ("daily", opts.keep_daily, |c| c[..10].to_string()),
            ("weekly", opts.keep_weekly, iso_week),
            ("monthly", opts.keep_monthly, |c| c[..7].to_string()),
        ];
        for (name, n, bucket) in rules {
            let mut seen = BTreeSet::new();
            for m in &list {
                if seen.len() as u32 >= n {
                    break;
                }
                if m.created.len() < 10 {
                    continue;
                }
                if seen.insert(bucket(&m.created)) {
                    keep.entry(m.id.clone()).or_default().push(name.to_string());
                }
            }
        }
    }
    keep
}

fn iso_week(created: &str) -> String {
    match qg_store::clock::parse(created) {
        Some(t) => {
            let (y, w, _) = t.to_iso_week_date();
            format!("{y}-W{w:02}")
        }
        None => created[..10].to_string(),
    }
}

pub fn prune(opts: &PruneOptions) -> Result<PruneResult> {
    let mut result = run(opts);
    if let Some(path) = &opts.record_in {
        let warning = crate::audit::record_run(path, "prune.backup", &opts.from, &result, |r| {
            (
                Outcome::Success,
                serde_json::json!({
                    "target": r.target, "dry_run": r.dry_run, "kept": r.kept.len(),
                    "removed": r.removed.iter().map(|x| x.id.clone()).collect::<Vec<_>>(),
                    "removed_bytes": r.removed_bytes,
                }),
            )
        });
        // a failed prune's error is what the operator must see
        if let (Ok(r), Some(w)) = (&mut result, warning) {
            r.warnings.push(w);
        }
    }
    result
}

fn run(opts: &PruneOptions) -> Result<PruneResult> {
    if opts.keep_last + opts.keep_daily + opts.keep_weekly + opts.keep_monthly == 0 {
        return Err(Error::usage(
            "refusing to remove every backup: give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly",
        ));
    }
    let target = Target::parse(&opts.from, &opts.s3)?;
    if target.is_stdio() {
        return Err(Error::usage(
            "prune needs a directory or s3:// target, not -",
        ));
    }
    let catalog = Catalog::load(&target)?;
    let all: Vec<&Manifest> = catalog.backups.values().collect();
    let mut keep = select(&all, opts);
    // everything a kept backup needs to be restored
    let kept_ids: Vec<String> = keep.keys().cloned().collect();
    for id in kept_ids {
        let mut cur = catalog.backups.get(&id).and_then(|m| m.parent.clone());
        while let Some(p) = cur {
            let Some(pm) = catalog.backups.get(&p) else {
                break;
            };
            let reasons = keep.entry(p.clone()).or_default();
            let why = format!("needed by {id}");
            if !reasons.contains(&why) {
                reasons.push(why);
            }
            cur = pm.parent.clone();
        }
    }
    let mut removed = Vec::new();
    for m in catalog.backups.values() {
        if keep.contains_key(&m.id) {
            continue;
        }
        removed.push(Removed {
            id: m.id.clone(),
            kind: m.kind,
            created: m.created.clone(),
            bytes: m.bytes.unwrap_or(0),
        });
    }
    // newest first, so a chain is never left with a hole before its end
    removed.sort_by(|a, b| b.created.cmp(&a.created));
    let mut incomplete_removed = Vec::new();
    for name in &catalog.incomplete {
        if target
            .age_secs(name)
            .is_some_and(|a| a >= INCOMPLETE_GRACE_SECS)
        {
            incomplete_removed.push(name.clone());
        }
    }
    if !opts.dry_run {
        for r in &removed {
            // the manifest first: the backup leaves the catalog in one step
            target.delete(&manifest_name(&r.id))?;
            target.delete(&stream_name(&r.id))?;
        }
        for name in &incomplete_removed {
            target.delete(name)?;
        }
    }
    let mut kept: Vec<Kept> = keep
        .into_iter()
        .map(|(id, reasons)| Kept { id, reasons })
        .collect();
    kept.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(PruneResult {
        target: target.display(),
        dry_run: opts.dry_run,
        removed_bytes: removed.iter().map(|r| r.bytes).sum(),
        kept,
        removed,
        incomplete_removed,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Counts, Position};

    fn m(id: &str, created: &str, kind: BackupKind, parent: Option<&str>) -> Manifest {
        Manifest {
            format: 1,
            id: id.into(),
            parent: parent.map(str::to_string),
            kind,
            created: created.into(),
            finished: created.into(),
            store_id: "s".into(),
            counts: Counts::default(),
            audit_seq: 0,
            audit_head: None,
            reflog_seq: 0,
            encryption: None,
            index: Position::default(),
            trailer: Position::default(),
            prefix_sha256: String::new(),
            hooks_sha256: String::new(),
            tool: String::new(),
            stream: None,
            bytes: Some(10),
            sha256: None,
            mac: None,
        }
    }

    #[test]
    fn daily_weekly_monthly_buckets() {
        let b = [
            m("a", "2026-01-01T01:00:00.000Z", BackupKind::Full, None),
            m(
                "b",
                "2026-01-01T02:00:00.000Z",
                BackupKind::Incremental,
                Some("a"),
            ),
            m("c", "2026-01-02T01:00:00.000Z", BackupKind::Full, None),
            m("d", "2026-02-10T01:00:00.000Z", BackupKind::Full, None),
            m(
                "e",
                "2026-02-11T01:00:00.000Z",
                BackupKind::Incremental,
                Some("d"),
            ),
        ];
        let refs: Vec<&Manifest> = b.iter().collect();
        let daily = select(
            &refs,
            &PruneOptions {
                keep_daily: 2,
                ..Default::default()
            },
        );
        assert_eq!(daily.keys().cloned().collect::<Vec<_>>(), vec!["d", "e"]);
        let monthly = select(
            &refs,
            &PruneOptions {
                keep_monthly: 2,
                ..Default::default()
            },
        );
        assert_eq!(monthly.keys().cloned().collect::<Vec<_>>(), vec!["c", "e"]);
        let weekly = select(
            &refs,
            &PruneOptions {
                keep_weekly: 3,
                ..Default::default()
            },
        );
        // 2026-01-01 and 01-02 are ISO week 1; 02-10 and 02-11 week 7
        assert_eq!(weekly.keys().cloned().collect::<Vec<_>>(), vec!["c", "e"]);
        let last = select(
            &refs,
            &PruneOptions {
                keep_last: 1,
                ..Default::default()
            },
        );
        assert_eq!(last.keys().cloned().collect::<Vec<_>>(), vec!["e"]);
    }
}
