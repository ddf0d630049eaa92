//! Commits: who changed the quad set, when, why, and on top of what.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::object::Kind;
use crate::objects::ObjectSet;

/// A commit object. Serialised as JSON with this field order (see `FORMAT.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Root of the quad-set tree.
    pub tree: ObjectId,
    /// First parent is the branch the commit was made on.
    pub parents: Vec<ObjectId>,
    pub author: String,
    /// RFC 3339 UTC.
    pub time: String,
    pub message: String,
    /// Number of quads in `tree`.
    pub quads: u64,
    /// 1 + the largest parent generation (0 for a root commit): speeds up ancestry walks.
    pub generation: u64,
}

impl Commit {
    pub fn store(&self, objs: &ObjectSet) -> Result<ObjectId> {
        let payload = serde_json::to_vec(self).map_err(|e| Error::Other(e.to_string()))?;
        objs.put(Kind::Commit, &payload)
    }

    pub fn load(objs: &ObjectSet, id: &ObjectId) -> Result<Commit> {
        let (kind, payload) = objs.get(id)?;
        if kind != Kind::Commit {
            return Err(Error::CorruptObject {
                ns: objs.ns().to_string(),
                id: *id,
                reason: format!("expected a commit, found a {}", kind.name()),
            });
        }
        serde_json::from_slice(&payload).map_err(|e| Error::CorruptObject {
            ns: objs.ns().to_string(),
            id: *id,
            reason: format!("bad commit: {e}"),
        })
    }
}

/// Does `ancestor` lie in the history of `descendant` (or equal it)?
pub fn is_ancestor(objs: &ObjectSet, ancestor: &ObjectId, descendant: &ObjectId) -> Result<bool> {
    Ok(merge_base(objs, ancestor, descendant)? == Some(*ancestor))
}

/// The best common ancestor of two commits (highest generation), if any.
pub fn merge_base(objs: &ObjectSet, a: &ObjectId, b: &ObjectId) -> Result<Option<ObjectId>> {
    use std::collections::{BinaryHeap, HashMap};
    // Walk both histories newest-generation first, colouring commits by which
    // side reaches them; the first commit reached from both is the answer.
    const A: u8 = 1;
    const B: u8 = 2;
    let mut colour: HashMap<ObjectId, u8> = HashMap::new();
    let mut heap: BinaryHeap<(u64, ObjectId)> = BinaryHeap::new();
    for (id, c) in [(a, A), (b, B)] {
        let commit = Commit::load(objs, id)?;
        *colour.entry(*id).or_default() |= c;
        heap.push((commit.generation, *id));
    }
    while let Some((_, id)) = heap.pop() {
        let c = colour[&id];
        if c == A | B {
            return Ok(Some(id));
        }
        for p in Commit::load(objs, &id)?.parents {
            let entry = colour.entry(p).or_default();
            if *entry & c != c {
                let fresh = *entry == 0;
                *entry |= c;
                if fresh {
                    heap.push((Commit::load(objs, &p)?.generation, p));
                } else if *entry == A | B {
                    // already queued; it will be popped with both colours
                }
            }
        }
    }
    Ok(None)
}
