//! `qg log` and `qg show`: history and single commits.

use std::collections::{BinaryHeap, HashSet};

use serde::{Deserialize, Serialize};

use crate::commit::Commit;
use crate::error::Result;
use crate::id::ObjectId;
use crate::refs;
use crate::store::Store;
use crate::tree::{Change, Diff};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LogOptions {
    pub ns: String,
    /// Where to start; the default branch when None.
    pub reference: Option<String>,
    /// At most this many commits (all when None).
    pub limit: Option<usize>,
}

/// One commit as `log` and `show` report it.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub id: ObjectId,
    #[serde(flatten)]
    pub commit: Commit,
}

/// Commits reachable from the ref, newest generation first.
pub fn log(store: &Store, opts: &LogOptions) -> Result<Vec<LogEntry>> {
    let objs = store.objects(&opts.ns)?;
    let spec = match &opts.reference {
        Some(r) => r.clone(),
        None => store.default_branch(&opts.ns)?,
    };
    let start = refs::resolve(&objs, &spec)?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut heap = BinaryHeap::new();
    let mut loaded = std::collections::HashMap::new();
    let c = Commit::load(&objs, &start)?;
    seen.insert(start);
    heap.push((c.generation, c.time.clone(), start));
    loaded.insert(start, c);
    while let Some((_, _, id)) = heap.pop() {
        let commit = loaded.remove(&id).expect("queued commits are loaded");
        if opts.limit.is_some_and(|n| out.len() >= n) {
            break;
        }
        for p in &commit.parents {
            if seen.insert(*p) {
                let pc = Commit::load(&objs, p)?;
                heap.push((pc.generation, pc.time.clone(), *p));
                loaded.insert(*p, pc);
            }
        }
        out.push(LogEntry { id, commit });
    }
    Ok(out)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ShowOptions {
    pub ns: String,
    pub reference: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShowResult {
    #[serde(flatten)]
    pub entry: LogEntry,
    /// Quads added and removed relative to the first parent.
    pub added: u64,
    pub removed: u64,
}

pub fn show(store: &Store, opts: &ShowOptions) -> Result<ShowResult> {
    let objs = store.objects(&opts.ns)?;
    let id = refs::resolve(&objs, &opts.reference)?;
    let commit = Commit::load(&objs, &id)?;
    let (mut added, mut removed) = (0, 0);
    if let Some(p) = commit.parents.first() {
        let parent = Commit::load(&objs, p)?;
        for c in Diff::new(&objs, &parent.tree, &commit.tree)? {
            match c? {
                Change::Added(_) => added += 1,
                Change::Removed(_) => removed += 1,
            }
        }
    } else {
        added = commit.quads;
    }
    Ok(ShowResult {
        entry: LogEntry { id, commit },
        added,
        removed,
    })
}
