//! `qg commit`: one atomic change of additions and removals on a branch.

use serde::{Deserialize, Serialize};

use crate::audit::Event;
use crate::clock;
use crate::commit::Commit;
use crate::error::{Error, Result};
use crate::hooks::Hook;
use crate::id::ObjectId;
use crate::rdf::{BlankNodes, Format, Source};
use crate::store::Store;
use crate::tree::{self, Change, Diff};

/// What to commit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CommitOptions {
    pub ns: String,
    /// Branch to commit on; the namespace's default branch when None.
    pub branch: Option<String>,
    pub message: String,
    /// Author; the store's actor when None.
    pub author: Option<String>,
    pub add: Vec<Source>,
    pub remove: Vec<Source>,
    /// Format of every source; else from each file's extension.
    pub format: Option<Format>,
    /// Compare-and-swap: fail unless the branch is at this commit.
    pub expected_parent: Option<ObjectId>,
    /// Make a commit even when it changes nothing.
    pub allow_empty: bool,
}

/// What a commit did.
#[derive(Debug, Clone, Serialize)]
pub struct CommitResult {
    pub ns: String,
    pub branch: String,
    pub commit: ObjectId,
    pub parent: ObjectId,
    /// Quads actually added and removed (already-present or absent ones do not count).
    pub added: u64,
    pub removed: u64,
    /// Quads on the branch after the commit.
    pub quads: u64,
    pub objects_written: u64,
    pub bytes_written: u64,
    /// Failures of post-commit / post-receive hooks (the commit stands).
    pub hook_warnings: Vec<String>,
}

/// Parse every source fully first, so bad input changes nothing.
fn read_keys(
    store: &Store,
    sources: &[Source],
    format: Option<Format>,
    relabel: bool,
) -> Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let mut bnodes = relabel.then(|| BlankNodes::lazy(|| store.next_import_tag()));
    for s in sources {
        s.parse(format, bnodes.as_mut(), |k| {
            keys.push(k);
            Ok(())
        })?;
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

pub fn commit(store: &Store, opts: &CommitOptions) -> Result<CommitResult> {
    let ns = opts.ns.as_str();
    let objs = store.objects(ns)?;
    let super::Target {
        branch,
        refname,
        head: parent,
    } = super::target_branch(store, ns, opts.branch.as_deref())?;
    if let Some(expected) = opts.expected_parent {
        if expected != parent {
            return Err(Error::Conflict {
                ns: ns.to_string(),
                branch,
                expected: expected.short(),
                actual: parent.short(),
            });
        }
    }
    let add = read_keys(store, &opts.add, opts.format, true)?;
    let remove = read_keys(store, &opts.remove, opts.format, false)?;
    let parent_commit = Commit::load(&objs, &parent)?;
    let new_tree = tree::apply(&objs, parent_commit.tree, &add, &remove)?;
    let changes: Vec<Change> =
        Diff::new(&objs, &parent_commit.tree, &new_tree)?.collect::<Result<_>>()?;
    if changes.is_empty() && !opts.allow_empty {
        return Err(Error::EmptyCommit(branch));
    }
    let added = changes
        .iter()
        .filter(|c| matches!(c, Change::Added(_)))
        .count() as u64;
    let removed = changes.len() as u64 - added;
    let author = opts
        .author
        .clone()
        .unwrap_or_else(|| store.actor().to_string());
    let commit = Commit {
        tree: new_tree,
        parents: vec![parent],
        author: author.clone(),
        time: clock::now(),
        message: opts.message.clone(),
        quads: tree::count(&objs, &new_tree)?,
        generation: parent_commit.generation + 1,
    };
    let id = commit.store(&objs)?;

    let (change_doc, _files) = super::hook_changes(&changes)?;
    let doc = super::extend(
        serde_json::json!({
            "namespace": ns,
            "branch": branch,
            "parent": parent,
            "commit": id,
            "author": author,
            "message": opts.message,
        }),
        change_doc,
    );
    let event = Event::new(store.actor(), "commit")
        .ns(ns)
        .target(refname.clone())
        .detail(serde_json::json!({
            "commit": id, "parent": parent, "author": author,
            "added": added, "removed": removed, "message": super::loggable(&objs, &opts.message),
        }));
    let ((objects_written, bytes_written), hook_warnings) = super::publish(super::Publish {
        store,
        objs: &objs,
        operation: "commit",
        pre: Hook::PreCommit,
        post: Hook::PostCommit,
        doc,
        refname: &refname,
        parent,
        commit: id,
        reflog: format!(
            "commit: {}",
            super::loggable(&objs, &opts.message).unwrap_or_default()
        ),
        event,
    })?;
    Ok(CommitResult {
        ns: ns.to_string(),
        branch,
        commit: id,
        parent,
        added,
        removed,
        quads: commit.quads,
        objects_written,
        bytes_written,
        hook_warnings,
    })
}
