//! `qg-backup list`: the catalog of a target, with each backup's chain status.

use serde::{Deserialize, Serialize};

use crate::catalog::{stream_problem, Catalog, DamagedManifest};
use crate::error::{Error, Result};
use crate::format::BackupKind;
use crate::target::{S3Options, Target};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ListOptions {
    /// Directory, `file://DIR` or `s3://bucket/prefix`.
    pub from: String,
    pub s3: S3Options,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    pub id: String,
    pub kind: BackupKind,
    pub parent: Option<String>,
    pub created: String,
    pub store_id: String,
    pub bytes: u64,
    pub objects: u64,
    pub deleted: u64,
    /// Commit deltas (format 2), and the tree nodes they stand for.
    pub deltas: u64,
    pub delta_nodes: u64,
    pub encrypted: bool,
    /// Whether its whole chain is in the catalog, each stream there with the
    /// length its manifest records (`verify --read-data` reads them).
    pub restorable: bool,
    /// Why not, when it is not: its own stream, or its chain.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListResult {
    pub target: String,
    /// Oldest first.
    pub backups: Vec<ListEntry>,
    /// Streams without a manifest (interrupted or running backups).
    pub incomplete: Vec<String>,
    /// Manifests that could not be read or do not hold together, oldest first:
    /// these backups cannot be restored, and restore without `--id` refuses
    /// to pass over a damaged newest one.
    pub damaged: Vec<DamagedManifest>,
}

pub fn list(opts: &ListOptions) -> Result<ListResult> {
    let target = Target::parse(&opts.from, &opts.s3)?;
    if target.is_stdio() {
        return Err(Error::usage(
            "list needs a directory or s3:// target, not -",
        ));
    }
    let catalog = Catalog::load(&target)?;
    let mut backups: Vec<ListEntry> = catalog
        .backups
        .values()
        .map(|m| {
            let own = stream_problem(&target, m).unwrap_or_else(|e| Some(e.to_string()));
            let chain = match (own, catalog.chain(&m.id)) {
                (Some(p), _) => Err(p),
                (None, Ok(_)) => Ok(()),
                (None, Err(e)) => Err(e.to_string()),
            };
            ListEntry {
                id: m.id.clone(),
                kind: m.kind,
                parent: m.parent.clone(),
                created: m.created.clone(),
                store_id: m.store_id.clone(),
                bytes: m.bytes.unwrap_or(0),
                objects: m.counts.objects,
                deleted: m.counts.deleted,
                deltas: m.counts.deltas,
                delta_nodes: m.counts.delta_nodes,
                encrypted: m.is_encrypted(),
                restorable: chain.is_ok(),
                problem: chain.err(),
            }
        })
        .collect();
    backups.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
    // a member's stream problem breaks every backup whose chain holds it
    let broken: Vec<(String, String)> = backups
        .iter()
        .filter_map(|b| Some((b.id.clone(), b.problem.clone()?)))
        .filter(|(id, _)| catalog.chain(id).is_ok())
        .collect();
    for b in backups.iter_mut().filter(|b| b.restorable) {
        let chain = catalog
            .chain(&b.id)
            .expect("restorable: its chain resolves");
        if let Some((id, why)) = broken
            .iter()
            .find(|(id, _)| chain.iter().any(|m| &m.id == id))
        {
            b.restorable = false;
            b.problem = Some(format!("backup {id} of its chain: {why}"));
        }
    }
    let mut damaged = catalog.damaged;
    damaged.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(ListResult {
        target: target.display(),
        backups,
        incomplete: catalog.incomplete,
        damaged,
    })
}
