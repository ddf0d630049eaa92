//! `qg-backup list`: the catalog of a target, with each backup's chain status.

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
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
    /// Whether its whole chain is in the catalog.
    pub restorable: bool,
    /// Why not, when it is not.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListResult {
    pub target: String,
    /// Oldest first.
    pub backups: Vec<ListEntry>,
    /// Streams without a manifest (interrupted or running backups).
    pub incomplete: Vec<String>,
    /// Manifests that could not be read, with why.
    pub unreadable: Vec<(String, String)>,
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
            let chain = catalog.chain(&m.id);
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
                problem: chain.err().map(|e| e.to_string()),
            }
        })
        .collect();
    backups.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
    Ok(ListResult {
        target: target.display(),
        backups,
        incomplete: catalog.incomplete,
        unreadable: catalog.unreadable,
    })
}
