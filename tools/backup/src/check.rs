//! The check a restore ends with: what `qg fsck` checks, in bounded memory.
//!
//! `qg fsck` re-hashes every object and then walks every ref's history and
//! trees through the store's node cache. A restore has already re-hashed
//! every plaintext object (and decoded every tree node) as it wrote it, so
//! this check does the rest: SQLite's own integrity check, and a walk from
//! every ref through every commit and tree node, checking that each exists,
//! decodes, sits at the right level, holds the key count its parent says and
//! starts with the key its parent says, and that each commit's quad count is
//! its tree's. Nodes are read without a cache (one in memory per tree level);
//! what is remembered per visited node is its id, key count and first key.
//! Encrypted namespaces are walked the same way when the keyring opens them
//! (which also decrypts and re-hashes every object); otherwise their ref
//! targets are checked to exist.

use std::collections::{HashMap, HashSet};

use qg_store::commit::Commit;
use qg_store::object::Kind;
use qg_store::objects::ObjectSet;
use qg_store::progress::Progress;
use qg_store::snapshot::Snapshot;
use qg_store::tree::Node;
use qg_store::{ObjectId, Store};

use crate::error::Result;

/// What the walk saw.
#[derive(Debug, Clone, Default)]
pub struct Walk {
    pub refs: u64,
    pub commits: u64,
    pub nodes: u64,
    /// Objects decrypted and re-hashed (encrypted namespaces opened by the keyring).
    pub decrypted: u64,
    pub problems: Vec<String>,
}

/// SQLite's integrity check of the store's database.
pub fn integrity(store: &Store) -> Result<Vec<String>> {
    Ok(store
        .db()
        .integrity_check()?
        .into_iter()
        .filter(|l| l != "ok")
        .map(|l| format!("SQLite integrity: {l}"))
        .collect())
}

/// Walk every ref of `ns` through `objs`; with `rehash_all`, first read
/// every object of the namespace through `objs` (decrypting and re-hashing it).
pub fn walk(
    store: &Store,
    ns: &str,
    objs: &ObjectSet,
    rehash_all: bool,
    progress: &dyn Progress,
    out: &mut Walk,
) -> Result<()> {
    let snap = Snapshot::begin(store.db())?;
    if rehash_all {
        let (n, _) = snap.object_stats(Some(ns))?;
        progress.start(&format!("decrypt {ns}"), Some(n));
        for o in snap.objects(ns) {
            let o = o?;
            progress.inc(1);
            match objs.get(&o.id) {
                Ok((k, _)) if k as u8 == o.kind => out.decrypted += 1,
                Ok((k, _)) => out.problems.push(format!(
                    "{ns}: object {}: stored as kind {} but is a {}",
                    o.id,
                    o.kind,
                    k.name()
                )),
                Err(e) => out.problems.push(format!("{ns}: {e}")),
            }
        }
        progress.finish();
    }
    let mut nodes: NodeMemo = HashMap::new();
    walk_history(&snap, ns, objs, progress, out, |tree, count| {
        subtree(objs, tree, None, &mut nodes, count).map(|(n, _)| n)
    })
}

/// Follow every ref of `ns` through all its commits; `tree` checks a commit's
/// tree (counting nodes into its second argument) and returns its key count.
fn walk_history(
    snap: &Snapshot,
    ns: &str,
    objs: &ObjectSet,
    progress: &dyn Progress,
    out: &mut Walk,
    mut tree: impl FnMut(&ObjectId, &mut u64) -> Checked<u64>,
) -> Result<()> {
    let refs: Vec<_> = snap.refs()?.into_iter().filter(|r| r.ns == ns).collect();
    let mut seen_commits: HashSet<ObjectId> = HashSet::new();
    progress.start(&format!("walk {ns}"), None);
    for r in refs {
        out.refs += 1;
        let mut stack = vec![r.target];
        while let Some(id) = stack.pop() {
            if !seen_commits.insert(id) {
                continue;
            }
            out.commits += 1;
            progress.inc(1);
            let commit = match Commit::load(objs, &id) {
                Ok(c) => c,
                Err(e) => {
                    out.problems
                        .push(format!("{ns}: commit {id} (reached from {}): {e}", r.name));
                    continue;
                }
            };
            match tree(&commit.tree, &mut out.nodes) {
                Ok(count) if count != commit.quads => out.problems.push(format!(
                    "{ns}: commit {id} says {} quads but its tree holds {count}",
                    commit.quads
                )),
                Ok(_) => {}
                Err((bad, what)) => out.problems.push(format!(
                    "{ns}: object {bad}: {what} (in the tree of commit {id}, ref {})",
                    r.name
                )),
            }
            stack.extend(commit.parents);
        }
    }
    progress.finish();
    Ok(())
}

type NodeMemo = HashMap<ObjectId, (u64, Option<Vec<u8>>)>;

/// A subtree's (key count, first key), or the object that is wrong and why.
type Checked<T> = std::result::Result<T, (ObjectId, String)>;

/// What the walk needs of a tree node, kept from when the restore decoded
/// it: about 80 bytes per leaf (keys are remembered by a 64-bit hash).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub level: u8,
    pub count: u64,
    /// Hash of the node's first key (0 for an empty node).
    pub first: u64,
    /// Internal nodes: (child id, its key count, hash of its first key).
    pub children: Box<[(ObjectId, u64, u64)]>,
}

fn key_hash(k: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(k) | 1
}

impl NodeInfo {
    /// The info of an encoded node, checked as [`Node::decode`] would, without
    /// decoding it (no allocation per key).
    pub fn of_payload(payload: &[u8]) -> std::result::Result<NodeInfo, String> {
        let (mut count, mut first) = (0u64, None);
        let mut children = Vec::new();
        let level = Node::scan(payload, |key, child| {
            if first.is_none() {
                first = Some(key_hash(key));
            }
            match child {
                Some(c) => {
                    count += c.count;
                    children.push((c.id, c.count, key_hash(key)));
                }
                None => count += 1,
            }
        })?;
        Ok(NodeInfo {
            level,
            count,
            first: first.unwrap_or(0),
            children: children.into_boxed_slice(),
        })
    }

    pub fn of(node: &Node) -> NodeInfo {
        NodeInfo {
            level: node.level,
            count: node.count(),
            first: node.keys.first().map(key_hash).unwrap_or(0),
            children: if node.is_leaf() {
                Box::new([])
            } else if node.children.len() != node.keys.len() {
                // malformed: the walk reports it (a child without a key)
                node.children
                    .iter()
                    .map(|c| (c.id, c.count, u64::MAX))
                    .collect()
            } else {
                node.children
                    .iter()
                    .zip(&node.keys)
                    .map(|(c, k)| (c.id, c.count, key_hash(k)))
                    .collect()
            },
        }
    }
}

/// Walk every ref of plaintext namespace `ns` like [`walk`], but take tree
/// nodes from `nodes` (every node of the namespace, as decoded and re-hashed
/// when the restore wrote it) instead of reading them back.
pub fn walk_known(
    store: &Store,
    ns: &str,
    objs: &ObjectSet,
    nodes: &HashMap<ObjectId, NodeInfo>,
    progress: &dyn Progress,
    out: &mut Walk,
) -> Result<()> {
    let snap = Snapshot::begin(store.db())?;
    let mut checked: HashSet<ObjectId> = HashSet::new();
    walk_history(&snap, ns, objs, progress, out, |tree, count| {
        known_subtree(nodes, tree, None, &mut checked, count).map(|(n, _)| n)
    })
}

fn known_subtree(
    nodes: &HashMap<ObjectId, NodeInfo>,
    id: &ObjectId,
    level: Option<u8>,
    checked: &mut HashSet<ObjectId>,
    visited: &mut u64,
) -> Checked<(u64, u64)> {
    let node = nodes.get(id).ok_or_else(|| {
        (
            *id,
            "missing (no tree node with this id was restored)".to_string(),
        )
    })?;
    if !checked.insert(*id) {
        return Ok((node.count, node.first));
    }
    *visited += 1;
    if let Some(l) = level {
        if node.level != l {
            return Err((
                *id,
                format!("node is at level {} where level {l} belongs", node.level),
            ));
        }
    }
    if (node.level == 0) != node.children.is_empty() {
        return Err((*id, "its children do not match its level".into()));
    }
    for (i, (child, count, key)) in node.children.iter().enumerate() {
        if *key == u64::MAX {
            return Err((*id, "it has more children than keys".into()));
        }
        let (n, first) = known_subtree(nodes, child, Some(node.level - 1), checked, visited)?;
        if n != *count {
            return Err((
                *id,
                format!("child {child} holds {n} keys, parent says {count}"),
            ));
        }
        if first != *key {
            return Err((
                *id,
                format!("entry {i} does not carry its child's first key"),
            ));
        }
    }
    Ok((node.count, node.first))
}

/// Check a subtree; returns its key count and first key.
fn subtree(
    objs: &ObjectSet,
    id: &ObjectId,
    level: Option<u8>,
    memo: &mut NodeMemo,
    visited: &mut u64,
) -> Checked<(u64, Option<Vec<u8>>)> {
    if let Some(v) = memo.get(id) {
        return Ok(v.clone());
    }
    let (kind, payload) = objs.get(id).map_err(|e| (*id, e.to_string()))?;
    if kind != Kind::Node {
        return Err((*id, format!("a {} where a tree node belongs", kind.name())));
    }
    let node = Node::decode(&payload).map_err(|e| (*id, format!("bad tree node: {e}")))?;
    drop(payload);
    *visited += 1;
    if let Some(l) = level {
        if node.level != l {
            return Err((
                *id,
                format!("node is at level {} where level {l} belongs", node.level),
            ));
        }
    }
    if node.is_leaf() != node.children.is_empty()
        || (!node.is_leaf() && node.children.len() != node.keys.len())
    {
        return Err((*id, "its children do not match its level and keys".into()));
    }
    for (i, child) in node.children.iter().enumerate() {
        let (count, first) = subtree(objs, &child.id, Some(node.level - 1), memo, visited)?;
        if count != child.count {
            return Err((
                *id,
                format!(
                    "child {} holds {count} keys, parent says {}",
                    child.id, child.count
                ),
            ));
        }
        if first.as_deref() != node.keys.get(i) {
            return Err((
                *id,
                format!("entry {i} does not carry its child's first key"),
            ));
        }
    }
    let v = (node.count(), node.keys.first().map(<[u8]>::to_vec));
    memo.insert(*id, v.clone());
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qg_store::tree::Child;

    fn same(a: &NodeInfo, b: &NodeInfo) -> bool {
        (a.level, a.count, a.first, &a.children) == (b.level, b.count, b.first, &b.children)
    }

    #[test]
    fn node_info_from_the_payload_is_the_info_of_the_decoded_node() {
        let keys: Vec<Vec<u8>> = (0..70)
            .map(|i| format!("<http://example.org/s{:04}>\0<http://p>", i * 3).into_bytes())
            .collect();
        let leaf = Node {
            level: 0,
            keys: keys.iter().collect(),
            children: Vec::new(),
        };
        let inner = Node {
            level: 2,
            keys: keys[..5].iter().collect(),
            children: (0..5u8)
                .map(|i| Child {
                    id: ObjectId([i; 32]),
                    count: 1000 + u64::from(i),
                })
                .collect(),
        };
        for node in [leaf, inner, Node::empty()] {
            let from_payload = NodeInfo::of_payload(&node.encode()).unwrap();
            assert!(
                same(&from_payload, &NodeInfo::of(&node)),
                "{from_payload:?}"
            );
        }
        assert!(NodeInfo::of_payload(&[0, 5, 0]).is_err(), "truncated");
    }
}
