//! `qg diff`: the quads that differ between two refs.

use serde::{Deserialize, Serialize};

use crate::commit::Commit;
use crate::error::Result;
use crate::id::ObjectId;
use crate::refs;
use crate::store::Store;
use crate::tree::{Change, Diff};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DiffOptions {
    pub ns: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffStat {
    pub from: Option<ObjectId>,
    pub to: Option<ObjectId>,
    pub added: u64,
    pub removed: u64,
}

/// Stream the changes from `from` to `to` (in key order) into `sink`.
pub fn diff(
    store: &Store,
    opts: &DiffOptions,
    mut sink: impl FnMut(&Change) -> Result<()>,
) -> Result<DiffStat> {
    let objs = store.objects(&opts.ns)?;
    let a = refs::resolve(&objs, &opts.from)?;
    let b = refs::resolve(&objs, &opts.to)?;
    let ta = Commit::load(&objs, &a)?.tree;
    let tb = Commit::load(&objs, &b)?.tree;
    let mut stat = DiffStat {
        from: Some(a),
        to: Some(b),
        ..Default::default()
    };
    for c in Diff::new(&objs, &ta, &tb)? {
        let c = c?;
        match &c {
            Change::Added(_) => stat.added += 1,
            Change::Removed(_) => stat.removed += 1,
        }
        sink(&c)?;
    }
    Ok(stat)
}
