//! `qg fsck`: re-hash every object and check that every ref reaches complete history and trees.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::commit::Commit;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::object::Kind;
use crate::objects::ObjectSet;
use crate::progress::Progress;
use crate::store::Store;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FsckOptions {
    /// Only this namespace; all when None.
    pub ns: Option<String>,
}

/// One thing fsck found wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub ns: Option<String>,
    pub object: Option<ObjectId>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.ns, &self.object) {
            (Some(ns), Some(id)) => write!(f, "{ns}: object {id}: {}", self.what),
            (Some(ns), None) => write!(f, "{ns}: {}", self.what),
            _ => write!(f, "{}", self.what),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    pub namespaces: u64,
    pub objects: u64,
    pub refs: u64,
    pub commits: u64,
    pub problems: Vec<Problem>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn fsck(store: &Store, opts: &FsckOptions, progress: &dyn Progress) -> Result<FsckReport> {
    store.db().read(|db| {
        let mut report = FsckReport::default();
        for line in db.integrity_check()? {
            if line != "ok" {
                report.problems.push(Problem {
                    ns: None,
                    object: None,
                    what: format!("SQLite integrity: {line}"),
                });
            }
        }
        let namespaces = match &opts.ns {
            Some(ns) => {
                store.default_branch(ns)?;
                vec![ns.clone()]
            }
            None => store.namespaces()?,
        };
        for ns in namespaces {
            report.namespaces += 1;
            check_namespace(store, &ns, &mut report, progress)?;
        }
        Ok(report)
    })
}

fn check_namespace(
    store: &Store,
    ns: &str,
    report: &mut FsckReport,
    progress: &dyn Progress,
) -> Result<()> {
    let objs = match store.objects_uncached(ns) {
        Ok(o) => o,
        Err(e @ (Error::Locked { .. } | Error::RateLimited { .. })) => {
            report.problems.push(Problem {
                ns: Some(ns.to_string()),
                object: None,
                what: format!("not verified: {e}"),
            });
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let problem = |report: &mut FsckReport, object: Option<ObjectId>, what: String| {
        report.problems.push(Problem {
            ns: Some(ns.to_string()),
            object,
            what,
        })
    };
    // 1. every stored object decodes and hashes to its id
    let ids = store.db().object_ids(ns)?;
    progress.start(&format!("checking objects of {ns}"), Some(ids.len() as u64));
    for (id, kind) in &ids {
        report.objects += 1;
        progress.inc(1);
        match objs.get(id) {
            Ok((k, _)) if k as u8 != *kind => problem(
                report,
                Some(*id),
                format!("stored as kind {kind} but is a {}", k.name()),
            ),
            Ok((Kind::Node, payload)) => {
                if let Err(e) = crate::tree::Node::decode(&payload) {
                    problem(report, Some(*id), format!("bad tree node: {e}"))
                }
            }
            Ok(_) => {}
            Err(e) => problem(report, Some(*id), strip(&e, id)),
        }
    }
    progress.finish();
    // 2. every ref reaches complete commits and trees
    let mut seen_commits = HashSet::new();
    let mut seen_nodes = HashSet::new();
    for (name, target) in store.db().refs(ns, "")? {
        report.refs += 1;
        let mut stack = vec![target];
        while let Some(id) = stack.pop() {
            if !seen_commits.insert(id) {
                continue;
            }
            report.commits += 1;
            let commit = match Commit::load(&objs, &id) {
                Ok(c) => c,
                Err(e) => {
                    problem(
                        report,
                        Some(id),
                        format!("{} (reached from ref {name})", strip(&e, &id)),
                    );
                    continue;
                }
            };
            match check_tree(&objs, &commit.tree, None, &mut seen_nodes) {
                Ok(Some(count)) if count != commit.quads => problem(
                    report,
                    Some(id),
                    format!(
                        "commit says {} quads but its tree holds {count}",
                        commit.quads
                    ),
                ),
                Ok(_) => {}
                Err((bad, what)) => problem(
                    report,
                    Some(bad),
                    format!("{what} (in the tree of commit {id}, ref {name})"),
                ),
            }
            stack.extend(commit.parents);
        }
    }
    Ok(())
}

/// Check a subtree; returns its key count (None when already checked).
fn check_tree(
    objs: &ObjectSet,
    id: &ObjectId,
    expect_level: Option<u8>,
    seen: &mut HashSet<ObjectId>,
) -> std::result::Result<Option<u64>, (ObjectId, String)> {
    if seen.contains(id) {
        return Ok(None);
    }
    let node = objs.node(id).map_err(|e| (*id, strip(&e, id)))?;
    if let Some(l) = expect_level {
        if node.level != l {
            return Err((
                *id,
                format!("node is at level {} where level {l} belongs", node.level),
            ));
        }
    }
    for (i, child) in node.children.iter().enumerate() {
        if let Some(count) = check_tree(objs, &child.id, Some(node.level - 1), seen)? {
            if count != child.count {
                return Err((
                    *id,
                    format!(
                        "child {} holds {count} keys, parent says {}",
                        child.id, child.count
                    ),
                ));
            }
        }
        let first = objs
            .node(&child.id)
            .map_err(|e| (child.id, strip(&e, &child.id)))?;
        if first.keys.first() != Some(&node.keys[i]) {
            return Err((
                *id,
                format!("entry {i} does not carry its child's first key"),
            ));
        }
    }
    seen.insert(*id);
    Ok(Some(node.count()))
}

/// The error text without the "object X in namespace Y" preamble fsck already prints.
fn strip(e: &Error, id: &ObjectId) -> String {
    match e {
        Error::CorruptObject { reason, .. } => format!("corrupt: {reason}"),
        Error::MissingObject { .. } => "missing".into(),
        other => other.to_string().replace(&id.to_hex(), "it"),
    }
}
