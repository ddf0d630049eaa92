//! Three-way merge of quad sets.
//!
//! Changes are grouped by (graph, subject, predicate). A group changed on one
//! side only takes that side's change; a group changed identically on both
//! sides is taken once; a group changed differently on both sides is a
//! conflict, resolved by the strategy or reported.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::id::ObjectId;
use crate::objects::ObjectSet;
use crate::rdf;
use crate::tree::{Change, Diff, Scan};

/// How conflicting groups are settled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Report conflicts and change nothing.
    #[default]
    ThreeWay,
    /// Keep the target's version of conflicting groups.
    Ours,
    /// Take the source's version of conflicting groups.
    Theirs,
}

impl Strategy {
    pub fn from_name(s: &str) -> Option<Strategy> {
        match s {
            "three-way" => Some(Strategy::ThreeWay),
            "ours" => Some(Strategy::Ours),
            "theirs" => Some(Strategy::Theirs),
            _ => None,
        }
    }
}

/// Both sides changed the objects of one (graph, subject, predicate) differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeConflict {
    /// Graph IRI, or empty for the default graph.
    pub graph: String,
    pub subject: String,
    pub predicate: String,
    /// Objects in the common ancestor, the target (ours) and the source (theirs).
    pub base: Vec<String>,
    pub ours: Vec<String>,
    pub theirs: Vec<String>,
}

/// The edits that turn `ours` into the merge result.
#[derive(Debug, Default)]
pub struct MergePlan {
    pub add: Vec<Vec<u8>>,
    pub remove: Vec<Vec<u8>>,
    pub conflicts: Vec<MergeConflict>,
}

fn collect(objs: &ObjectSet, a: &ObjectId, b: &ObjectId) -> Result<Vec<Change>> {
    Diff::new(objs, a, b)?.collect()
}

fn objects_in(objs: &ObjectSet, tree: &ObjectId, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
    Scan::new(objs, tree, prefix)?.collect()
}

/// Plan the merge of `theirs` into `ours` with common ancestor `base` (trees).
pub fn plan(
    objs: &ObjectSet,
    base: &ObjectId,
    ours: &ObjectId,
    theirs: &ObjectId,
    strategy: Strategy,
) -> Result<MergePlan> {
    let d_ours = collect(objs, base, ours)?;
    let d_theirs = collect(objs, base, theirs)?;
    let mut plan = MergePlan::default();
    let (mut i, mut j) = (0, 0);
    while j < d_theirs.len() {
        let group = rdf::gsp_prefix(d_theirs[j].key()).to_vec();
        let t_end = j + d_theirs[j..]
            .iter()
            .take_while(|c| c.key().starts_with(&group))
            .count();
        // skip our changes in earlier groups
        while i < d_ours.len()
            && d_ours[i].key() < group.as_slice()
            && !d_ours[i].key().starts_with(&group)
        {
            i += 1;
        }
        let o_end = i + d_ours[i..]
            .iter()
            .take_while(|c| c.key().starts_with(&group))
            .count();
        let (o, t) = (&d_ours[i..o_end], &d_theirs[j..t_end]);
        if o.is_empty() {
            for c in t {
                match c {
                    Change::Added(k) => plan.add.push(k.clone()),
                    Change::Removed(k) => plan.remove.push(k.clone()),
                }
            }
        } else if o != t {
            match strategy {
                Strategy::Ours => {}
                Strategy::Theirs => {
                    plan.remove.extend(objects_in(objs, ours, &group)?);
                    plan.add.extend(objects_in(objs, theirs, &group)?);
                }
                Strategy::ThreeWay => {
                    let terms = |keys: Vec<Vec<u8>>| -> Vec<String> {
                        keys.iter()
                            .map(|k| rdf::split_key(k)[3].to_string())
                            .collect()
                    };
                    let [g, s, p, _] = rdf::split_key(d_theirs[j].key()).map(str::to_string);
                    plan.conflicts.push(MergeConflict {
                        graph: g,
                        subject: s,
                        predicate: p,
                        base: terms(objects_in(objs, base, &group)?),
                        ours: terms(objects_in(objs, ours, &group)?),
                        theirs: terms(objects_in(objs, theirs, &group)?),
                    });
                }
            }
        }
        i = o_end;
        j = t_end;
    }
    plan.add.sort();
    plan.add.dedup();
    plan.remove.sort();
    plan.remove.dedup();
    // under `theirs`, a key removed (ours' version) and re-added (theirs') stays
    plan.remove.retain(|k| plan.add.binary_search(k).is_err());
    Ok(plan)
}
