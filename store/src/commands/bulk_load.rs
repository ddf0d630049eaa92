//! `qg bulk-load`: the fast path for large loads.
//!
//! The input is sorted externally (bounded memory), merged with the branch's
//! current quads, and the tree is built bottom-up in one pass; the result is
//! the same tree a `commit --add` of the file would produce. Objects are
//! written in batches under a lease (so a concurrent `gc` leaves them alone);
//! the branch moves only at the end, in one compare-and-swap transaction.

use serde::{Deserialize, Serialize};

use crate::audit::Event;
use crate::clock;
use crate::commit::Commit;
use crate::error::{Error, Result};
use crate::hooks::Hook;
use crate::id::ObjectId;
use crate::progress::Progress;
use crate::rdf::{BlankNodes, Format, Source};
use crate::sort::Sorter;
use crate::store::Store;
use crate::tree::{Builder, Scan};

/// What to load.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BulkLoadOptions {
    pub ns: String,
    pub branch: Option<String>,
    pub source: Source,
    pub format: Option<Format>,
    pub message: String,
    pub author: Option<String>,
    /// Memory for sorting before spilling runs to temporary files.
    pub sort_memory_bytes: usize,
    /// Buffered object bytes that trigger a batch write.
    pub batch_bytes: usize,
}

impl Default for BulkLoadOptions {
    fn default() -> Self {
        BulkLoadOptions {
            ns: crate::store::DEFAULT_NAMESPACE.into(),
            branch: None,
            source: Source::Stdin,
            format: None,
            message: String::new(),
            author: None,
            sort_memory_bytes: 256 << 20,
            batch_bytes: 32 << 20,
        }
    }
}

/// What a bulk load did.
#[derive(Debug, Clone, Serialize)]
pub struct BulkLoadResult {
    pub ns: String,
    pub branch: String,
    pub commit: ObjectId,
    pub parent: ObjectId,
    /// Quads read from the input (duplicates included).
    pub read: u64,
    /// Quads on the branch after the load.
    pub quads: u64,
    pub added: u64,
    pub objects_written: u64,
    pub bytes_written: u64,
    /// Failures of post-commit / post-receive hooks (the load stands).
    pub hook_warnings: Vec<String>,
}

pub fn bulk_load(
    store: &Store,
    opts: &BulkLoadOptions,
    progress: &dyn Progress,
) -> Result<BulkLoadResult> {
    let ns = opts.ns.as_str();
    let objs = store.objects(ns)?;
    let super::Target {
        branch,
        refname,
        head: parent,
    } = super::target_branch(store, ns, opts.branch.as_deref())?;
    let parent_commit = Commit::load(&objs, &parent)?;

    // 1. parse and sort (nothing is written if the input is malformed)
    progress.start("reading", None);
    let mut sorter = Sorter::new(opts.sort_memory_bytes.max(1 << 20));
    let mut bnodes = BlankNodes::lazy(|| store.next_import_tag());
    let mut read = 0u64;
    opts.source.parse(opts.format, Some(&mut bnodes), |k| {
        read += 1;
        if read % 65536 == 0 {
            progress.inc(65536);
        }
        sorter.push(k)
    })?;
    progress.finish();

    // 2. merge with the branch's quads and build bottom-up, writing in batches
    let lease = store
        .db()
        .write(|db| db.take_lease(&format!("bulk-load {ns}/{branch}"), &clock::now()))?;
    let result = (|| {
        progress.start("building", Some(read));
        let mut builder = Builder::new(&objs);
        let mut existing = Scan::new(&objs, &parent_commit.tree, b"")?.peekable();
        let mut quads = 0u64;
        let mut flushed = (0u64, 0u64);
        let mut flush = |force: bool| -> Result<()> {
            if force || objs.pending_bytes() >= opts.batch_bytes {
                let (n, b) = store.db().write(|_| objs.flush())?;
                flushed.0 += n;
                flushed.1 += b;
            }
            Ok(())
        };
        for (i, key) in sorter.finish()?.enumerate() {
            let key = key?;
            while let Some(old) = existing.peek() {
                let old = match old {
                    Ok(k) => k,
                    Err(_) => return Err(existing.next().expect("peeked").expect_err("error")),
                };
                if old.as_slice() >= key.as_slice() {
                    break;
                }
                builder.push(existing.next().expect("peeked")?)?;
                quads += 1;
            }
            if matches!(existing.peek(), Some(Ok(old)) if *old == key) {
                existing.next();
            }
            builder.push(key)?;
            quads += 1;
            if i % 65536 == 0 {
                progress.inc(65536);
                flush(false)?;
            }
        }
        for old in existing {
            builder.push(old?)?;
            quads += 1;
        }
        let tree = builder.finish()?;
        progress.finish();
        if tree == parent_commit.tree {
            return Err(Error::EmptyCommit(branch.clone()));
        }
        let added = quads - parent_commit.quads;
        let author = opts
            .author
            .clone()
            .unwrap_or_else(|| store.actor().to_string());
        let commit = Commit {
            tree,
            parents: vec![parent],
            author: author.clone(),
            time: clock::now(),
            message: opts.message.clone(),
            quads,
            generation: parent_commit.generation + 1,
        };
        let id = commit.store(&objs)?;
        flush(true)?;
        let doc = serde_json::json!({
            "namespace": ns, "branch": branch, "parent": parent, "commit": id,
            "author": author, "message": opts.message, "added_count": added, "removed_count": 0,
            "added": null, "removed": "", "added_file": opts.source.name(), "removed_file": null,
        });
        let event = Event::new(store.actor(), "commit")
            .ns(ns)
            .target(refname.clone())
            .detail(serde_json::json!({
                "commit": id, "parent": parent, "author": author, "added": added, "removed": 0,
                "message": super::loggable(&objs, &opts.message), "bulk_load": true, "read": read,
            }));
        let ((n, b), hook_warnings) = super::publish(super::Publish {
            store,
            objs: &objs,
            operation: "bulk-load",
            pre: Hook::PreCommit,
            post: Hook::PostCommit,
            doc,
            refname: &refname,
            parent,
            commit: id,
            reflog: format!(
                "bulk-load: {}",
                super::loggable(&objs, &opts.message).unwrap_or_default()
            ),
            event,
        })?;
        Ok(BulkLoadResult {
            ns: ns.to_string(),
            branch: branch.clone(),
            commit: id,
            parent,
            read,
            quads,
            added,
            objects_written: flushed.0 + n,
            bytes_written: flushed.1 + b,
            hook_warnings,
        })
    })();
    store.db().write(|db| db.drop_lease(lease))?;
    result
}
