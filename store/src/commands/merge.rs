//! `qg merge`: bring a branch (or any ref) into a target branch.

use serde::{Deserialize, Serialize};

use crate::audit::{Event, Outcome};
use crate::commit::{self as commits, Commit};
use crate::error::{Error, Result};
use crate::hooks::Hook;
use crate::id::ObjectId;
use crate::merge::{plan, Strategy};
use crate::store::Store;
use crate::tree::{self, Change, Diff};
use crate::{clock, refs};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MergeOptions {
    pub ns: String,
    /// Ref to merge from.
    pub source: String,
    /// Branch to merge into; the default branch when None.
    pub into: Option<String>,
    pub strategy: Strategy,
    /// Message of the merge commit (a default names both sides).
    pub message: Option<String>,
    pub author: Option<String>,
}

/// How the merge ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MergeKind {
    /// The target already contains the source; nothing changed.
    UpToDate,
    /// The target only moved forward to the source.
    FastForward,
    /// A merge commit with two parents was made.
    Merged,
}

#[derive(Debug, Clone, Serialize)]
pub struct MergeResult {
    pub ns: String,
    pub into: String,
    pub kind: MergeKind,
    /// The target's new head.
    pub commit: ObjectId,
    pub base: Option<ObjectId>,
    pub added: u64,
    pub removed: u64,
    /// Conflicting groups settled by the `ours`/`theirs` strategy.
    pub resolved_conflicts: u64,
    pub hook_warnings: Vec<String>,
}

pub fn merge(store: &Store, opts: &MergeOptions) -> Result<MergeResult> {
    let ns = opts.ns.as_str();
    let objs = store.objects(ns)?;
    let super::Target {
        branch: into,
        refname,
        head: ours,
    } = super::target_branch(store, ns, opts.into.as_deref())?;
    let theirs = refs::resolve(&objs, &opts.source)?;
    let base = commits::merge_base(&objs, &ours, &theirs)?;
    let author = opts
        .author
        .clone()
        .unwrap_or_else(|| store.actor().to_string());
    let mut result = MergeResult {
        ns: ns.to_string(),
        into: into.clone(),
        kind: MergeKind::UpToDate,
        commit: ours,
        base,
        added: 0,
        removed: 0,
        resolved_conflicts: 0,
        hook_warnings: vec![],
    };
    if base == Some(theirs) {
        return Ok(result);
    }
    let message = opts
        .message
        .clone()
        .unwrap_or_else(|| format!("Merge {} into {}", opts.source, into));
    let ours_c = Commit::load(&objs, &ours)?;
    let theirs_c = Commit::load(&objs, &theirs)?;
    let (new_id, new_tree, kind, resolved) = if base == Some(ours) {
        (theirs, theirs_c.tree, MergeKind::FastForward, 0)
    } else {
        let base_tree = match base {
            Some(b) => Commit::load(&objs, &b)?.tree,
            None => tree::empty(&objs)?,
        };
        let p = plan(
            &objs,
            &base_tree,
            &ours_c.tree,
            &theirs_c.tree,
            opts.strategy,
        )?;
        if !p.conflicts.is_empty() {
            store.record(
                &Event::new(store.actor(), "merge")
                    .ns(ns)
                    .target(refname.clone())
                    .outcome(Outcome::Failure)
                    .detail(
                        serde_json::json!({"source": opts.source, "conflicts": p.conflicts.len()}),
                    ),
            )?;
            return Err(Error::MergeConflict {
                source_ref: opts.source.clone(),
                target: into,
                conflicts: p.conflicts,
            });
        }
        // with ours/theirs every conflicting group produced edits or none; count groups via a rerun
        let resolved = if opts.strategy == Strategy::ThreeWay {
            0
        } else {
            plan(
                &objs,
                &base_tree,
                &ours_c.tree,
                &theirs_c.tree,
                Strategy::ThreeWay,
            )?
            .conflicts
            .len() as u64
        };
        let new_tree = tree::apply(&objs, ours_c.tree, &p.add, &p.remove)?;
        let c = Commit {
            tree: new_tree,
            parents: vec![ours, theirs],
            author: author.clone(),
            time: clock::now(),
            message: message.clone(),
            quads: tree::count(&objs, &new_tree)?,
            generation: ours_c.generation.max(theirs_c.generation) + 1,
        };
        (c.store(&objs)?, new_tree, MergeKind::Merged, resolved)
    };
    let changes: Vec<Change> = Diff::new(&objs, &ours_c.tree, &new_tree)?.collect::<Result<_>>()?;
    let (change_doc, _files) = super::hook_changes(&changes)?;
    result.added = changes
        .iter()
        .filter(|c| matches!(c, Change::Added(_)))
        .count() as u64;
    result.removed = changes.len() as u64 - result.added;
    let doc = super::extend(
        serde_json::json!({
            "namespace": ns, "branch": into, "source": opts.source, "ours": ours, "theirs": theirs,
            "base": base, "parent": ours, "commit": new_id, "author": author, "message": message,
            "strategy": opts.strategy, "fast_forward": kind == MergeKind::FastForward,
        }),
        change_doc,
    );
    let event = Event::new(store.actor(), "merge")
        .ns(ns)
        .target(refname.clone())
        .detail(serde_json::json!({
            "source": opts.source, "theirs": theirs, "ours": ours, "commit": new_id, "kind": kind,
            "strategy": opts.strategy, "added": result.added, "removed": result.removed,
        }));
    let (_, warnings) = super::publish(super::Publish {
        store,
        objs: &objs,
        operation: "merge",
        pre: Hook::PreMerge,
        post: Hook::PostMerge,
        doc,
        refname: &refname,
        parent: ours,
        commit: new_id,
        reflog: format!("merge {}: {:?}", opts.source, kind),
        event,
    })?;
    result.hook_warnings = warnings;
    result.kind = kind;
    result.commit = new_id;
    result.resolved_conflicts = resolved;
    Ok(result)
}
