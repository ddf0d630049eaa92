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

    /// Bytes for [`NodeIndex`]'s database.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(21 + self.children.len() * 48);
        out.push(self.level);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&(self.children.len() as u32).to_le_bytes());
        for (id, count, key) in self.children.iter() {
            out.extend_from_slice(&id.0);
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&key.to_le_bytes());
        }
        out
    }

    fn decode(b: &[u8]) -> Option<NodeInfo> {
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
        };
        let n = u32::from_le_bytes(b.get(17..21)?.try_into().ok()?) as usize;
        if b.len() != 21 + n * 48 {
            return None;
        }
        let children = (0..n)
            .map(|i| {
                let at = 21 + i * 48;
                Some((
                    ObjectId::from_slice(&b[at..at + 32])?,
                    u64_at(at + 32)?,
                    u64_at(at + 40)?,
                ))
            })
            .collect::<Option<Box<[_]>>>()?;
        Some(NodeInfo {
            level: *b.first()?,
            count: u64_at(1)?,
            first: u64_at(9)?,
            children,
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

/// Tree nodes the final check keeps in memory by default before it moves
/// them to a temporary database: about 200 bytes each with the maps'
/// overhead, some 8 MB, a store of about 1.5 million quads. Measured on a
/// full backup of eight million quads (128,754 nodes): peak RSS 68 MB all in
/// memory, 42 MB all on disk, which made the restore 1.7x slower.
pub const MEMORY_NODES: usize = 40_000;

/// What a restore learnt of every tree node it wrote ([`NodeInfo`] per
/// namespace and id), for the final check. Held in memory up to a number of
/// nodes, then in a temporary SQLite database in the restore's staging
/// directory, so that restore memory stays bounded whatever the store size.
pub struct NodeIndex {
    limit: usize,
    /// Per namespace: each node's info, and whether the walk checked it.
    memory: HashMap<String, HashMap<ObjectId, (NodeInfo, bool)>>,
    spill_dir: std::path::PathBuf,
    disk: Option<DiskNodes>,
}

struct DiskNodes {
    conn: rusqlite::Connection,
    _dir: tempfile::TempDir,
}

impl NodeIndex {
    /// An index that keeps up to `limit` nodes in memory and then moves them
    /// all to a temporary database created in `spill_dir`.
    pub fn new(limit: usize, spill_dir: &std::path::Path) -> NodeIndex {
        NodeIndex {
            limit,
            memory: HashMap::new(),
            spill_dir: spill_dir.to_path_buf(),
            disk: None,
        }
    }

    /// A new, empty index with the same memory limit and spill directory.
    pub fn scratch(&self) -> NodeIndex {
        NodeIndex::new(self.limit, &self.spill_dir)
    }

    /// How many nodes it keeps in memory before it moves them to disk.
    pub fn memory_limit(&self) -> usize {
        self.limit
    }

    /// Whether the nodes moved to the temporary database.
    pub fn on_disk(&self) -> bool {
        self.disk.is_some()
    }

    pub fn insert(&mut self, ns: &str, id: ObjectId, info: NodeInfo) -> Result<()> {
        if self.disk.is_none()
            && self.memory.values().map(HashMap::len).sum::<usize>() >= self.limit
        {
            self.spill()?;
        }
        match &self.disk {
            Some(d) => {
                d.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO nodes(ns, id, info, checked) VALUES (?1, ?2, ?3, 0)",
                    )
                    .and_then(|mut s| s.execute(rusqlite::params![ns, &id.0[..], info.encode()]))?;
            }
            None => {
                // no String allocated per node: the namespace is usually there
                let nodes = match self.memory.get_mut(ns) {
                    Some(nodes) => nodes,
                    None => self.memory.entry(ns.to_string()).or_default(),
                };
                nodes.insert(id, (info, false));
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, ns: &str, id: &ObjectId) -> Result<()> {
        match &self.disk {
            Some(d) => {
                d.conn.execute(
                    "DELETE FROM nodes WHERE ns = ?1 AND id = ?2",
                    rusqlite::params![ns, &id.0[..]],
                )?;
            }
            None => {
                if let Some(m) = self.memory.get_mut(ns) {
                    m.remove(id);
                }
            }
        }
        Ok(())
    }

    /// Forget every node of `ns`.
    pub fn remove_ns(&mut self, ns: &str) -> Result<()> {
        match &self.disk {
            Some(d) => {
                d.conn.execute("DELETE FROM nodes WHERE ns = ?1", [ns])?;
            }
            None => {
                self.memory.remove(ns);
            }
        }
        Ok(())
    }

    /// The info of node `id` of `ns`, if the restore wrote it.
    pub fn get(&self, ns: &str, id: &ObjectId) -> Result<Option<std::borrow::Cow<'_, NodeInfo>>> {
        match &self.disk {
            Some(d) => {
                let row: Option<Vec<u8>> = d
                    .conn
                    .prepare_cached("SELECT info FROM nodes WHERE ns = ?1 AND id = ?2")
                    .and_then(|mut s| {
                        rusqlite::OptionalExtension::optional(
                            s.query_row(rusqlite::params![ns, &id.0[..]], |r| r.get(0)),
                        )
                    })?;
                Ok(row
                    .and_then(|b| NodeInfo::decode(&b))
                    .map(std::borrow::Cow::Owned))
            }
            None => Ok(self
                .memory
                .get(ns)
                .and_then(|m| m.get(id))
                .map(|(info, _)| std::borrow::Cow::Borrowed(info))),
        }
    }

    /// Mark node `id` of `ns` checked; false if it already was.
    pub fn mark_checked(&mut self, ns: &str, id: &ObjectId) -> Result<bool> {
        match &self.disk {
            Some(d) => Ok(d
                .conn
                .prepare_cached(
                    "UPDATE nodes SET checked = 1 WHERE ns = ?1 AND id = ?2 AND checked = 0",
                )
                .and_then(|mut s| s.execute(rusqlite::params![ns, &id.0[..]]))?
                == 1),
            None => Ok(match self.memory.get_mut(ns).and_then(|m| m.get_mut(id)) {
                Some((_, checked)) if !*checked => {
                    *checked = true;
                    true
                }
                _ => false,
            }),
        }
    }

    /// Move every node to a new temporary database.
    fn spill(&mut self) -> Result<()> {
        let dir = tempfile::Builder::new()
            .prefix(".qg-restore-nodes")
            .tempdir_in(&self.spill_dir)
            .map_err(|e| {
                crate::error::Error::io("create a directory in", self.spill_dir.display(), e)
            })?;
        let conn = rusqlite::Connection::open(dir.path().join("nodes.sqlite"))?;
        // scratch data: a crash loses the restore anyway
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -2048;
             CREATE TABLE nodes(ns TEXT NOT NULL, id BLOB NOT NULL, info BLOB NOT NULL,
                                checked INTEGER NOT NULL, PRIMARY KEY(ns, id)) WITHOUT ROWID;
             BEGIN;",
        )?;
        {
            let mut put =
                conn.prepare("INSERT INTO nodes(ns, id, info, checked) VALUES (?1, ?2, ?3, ?4)")?;
            for (ns, nodes) in self.memory.drain() {
                for (id, (info, checked)) in nodes {
                    put.execute(rusqlite::params![ns, &id.0[..], info.encode(), checked])?;
                }
            }
        }
        self.disk = Some(DiskNodes { conn, _dir: dir });
        Ok(())
    }
}

/// Walk every ref of plaintext namespace `ns` like [`walk`], but take tree
/// nodes from `nodes` (every node of the namespace, as decoded and re-hashed
/// when the restore wrote it) instead of reading them back.
pub fn walk_known(
    store: &Store,
    ns: &str,
    objs: &ObjectSet,
    nodes: &mut NodeIndex,
    progress: &dyn Progress,
    out: &mut Walk,
) -> Result<()> {
    let snap = Snapshot::begin(store.db())?;
    // an error of the index itself ends the walk and is the result
    let mut failed = None;
    walk_history(&snap, ns, objs, progress, out, |tree, count| {
        if failed.is_some() {
            return Err((*tree, "not checked: the check stopped".into()));
        }
        match known_subtree(nodes, ns, tree, None, count) {
            Ok(checked) => checked.map(|(n, _)| n),
            Err(e) => {
                failed = Some(e);
                Err((*tree, "not checked: the check stopped".into()))
            }
        }
    })?;
    failed.map_or(Ok(()), Err)
}

fn known_subtree(
    nodes: &mut NodeIndex,
    ns: &str,
    id: &ObjectId,
    level: Option<u8>,
    visited: &mut u64,
) -> Result<Checked<(u64, u64)>> {
    let Some(node) = nodes.get(ns, id)?.map(std::borrow::Cow::into_owned) else {
        return Ok(Err((
            *id,
            "missing (no tree node with this id was restored)".to_string(),
        )));
    };
    if !nodes.mark_checked(ns, id)? {
        return Ok(Ok((node.count, node.first)));
    }
    *visited += 1;
    if let Some(l) = level {
        if node.level != l {
            return Ok(Err((
                *id,
                format!("node is at level {} where level {l} belongs", node.level),
            )));
        }
    }
    if (node.level == 0) != node.children.is_empty() {
        return Ok(Err((*id, "its children do not match its level".into())));
    }
    for (i, (child, count, key)) in node.children.iter().enumerate() {
        if *key == u64::MAX {
            return Ok(Err((*id, "it has more children than keys".into())));
        }
        let (n, first) = match known_subtree(nodes, ns, child, Some(node.level - 1), visited)? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        if n != *count {
            return Ok(Err((
                *id,
                format!("child {child} holds {n} keys, parent says {count}"),
            )));
        }
        if first != *key {
            return Ok(Err((
                *id,
                format!("entry {i} does not carry its child's first key"),
            )));
        }
    }
    Ok(Ok((node.count, node.first)))
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

    fn info(i: u8, children: usize) -> NodeInfo {
        NodeInfo {
            level: u8::from(children > 0),
            count: 100 + u64::from(i),
            first: 7 * u64::from(i),
            children: (0..children)
                .map(|c| (ObjectId([i ^ c as u8; 32]), c as u64, u64::MAX - c as u64))
                .collect(),
        }
    }

    #[test]
    fn the_node_index_answers_the_same_before_and_after_moving_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = NodeIndex::new(4, dir.path());
        let id = |i: u8| ObjectId([i; 32]);
        for i in 0..4 {
            idx.insert("a", id(i), info(i, usize::from(i))).unwrap();
        }
        assert!(!idx.on_disk());
        assert!(idx.mark_checked("a", &id(1)).unwrap());
        assert!(!idx.mark_checked("a", &id(1)).unwrap(), "once");
        assert!(!idx.mark_checked("a", &id(77)).unwrap(), "an unknown node");
        // the fifth node moves them all to a database in `dir`
        idx.insert("b", id(9), info(9, 3)).unwrap();
        assert!(idx.on_disk());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        for i in 0..4 {
            let got = idx.get("a", &id(i)).unwrap().unwrap();
            assert!(same(&got, &info(i, usize::from(i))), "{got:?}");
        }
        assert!(same(&idx.get("b", &id(9)).unwrap().unwrap(), &info(9, 3)));
        assert!(idx.get("b", &id(1)).unwrap().is_none(), "per namespace");
        // checks made before the move are kept; each node is checked once
        assert!(!idx.mark_checked("a", &id(1)).unwrap());
        assert!(idx.mark_checked("a", &id(2)).unwrap());
        assert!(!idx.mark_checked("a", &id(2)).unwrap());
        assert!(!idx.mark_checked("a", &id(77)).unwrap(), "an unknown node");
        idx.remove("a", &id(0)).unwrap();
        assert!(idx.get("a", &id(0)).unwrap().is_none());
        idx.remove_ns("b").unwrap();
        assert!(idx.get("b", &id(9)).unwrap().is_none());
        assert!(idx.get("a", &id(3)).unwrap().is_some());
        drop(idx);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "removed");
    }
}
