//! Reading and writing one namespace's objects during an operation.
//!
//! Reads go through a small cache of decoded tree nodes. Writes are buffered
//! and land in the database only in [`ObjectSet::flush`], which callers run
//! inside the same transaction that moves the ref, so a crash never leaves a
//! ref pointing at objects that were not written.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::object::{self, Kind, Plain, Sealer};
use crate::storage::Db;
use crate::tree::Node;

/// Decoded nodes kept in memory; cleared when full (operations touch few nodes
/// each, and a full scan should not hold the whole tree).
const CACHE_NODES: usize = 8192;
/// Size of a cache shared across operations (see [`SharedNodes`]).
const SHARED_NODES: usize = 2048;

/// Decoded nodes of one namespace that outlive an operation: objects are
/// immutable, so a node read once stays valid (a long-running server keeps
/// the upper levels of its trees decoded). Only nodes read from the database
/// go in, never buffered ones that may not land.
pub type SharedNodes = std::sync::Arc<std::sync::Mutex<HashMap<ObjectId, Arc<Node>>>>;

/// Threads worth using for CPU-bound work (asking the OS reads cgroup
/// files, so it is done once).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8)
    })
}

/// Access to the objects of one namespace.
pub struct ObjectSet<'a> {
    db: &'a Db,
    ns: String,
    sealer: Box<dyn Sealer + 'a>,
    cache: RefCell<HashMap<ObjectId, Arc<Node>>>,
    shared: Option<SharedNodes>,
    pending: RefCell<Pending>,
}

#[derive(Default)]
struct Pending {
    objects: HashMap<ObjectId, (Kind, Vec<u8>)>,
    order: Vec<ObjectId>,
    bytes: usize,
}

impl<'a> ObjectSet<'a> {
    /// Objects of a plaintext namespace.
    pub fn new(db: &'a Db, ns: &str) -> Self {
        Self::with_sealer(db, ns, Box::new(Plain))
    }

    /// Objects addressed and sealed by `sealer` (encrypted namespaces).
    pub fn with_sealer(db: &'a Db, ns: &str, sealer: Box<dyn Sealer + 'a>) -> Self {
        ObjectSet {
            db,
            ns: ns.to_string(),
            sealer,
            cache: RefCell::new(HashMap::new()),
            shared: None,
            pending: RefCell::new(Pending::default()),
        }
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    pub fn db(&self) -> &'a Db {
        self.db
    }

    /// Whether new objects are sealed (the namespace is encrypted).
    pub fn is_sealed(&self) -> bool {
        self.sealer.sealing_version().is_some()
    }

    /// The key version sealing new objects (None: stored unsealed).
    pub fn sealing_version(&self) -> Option<u32> {
        self.sealer.sealing_version()
    }

    /// Raw payload and kind of an object, verified against its id.
    pub fn get(&self, id: &ObjectId) -> Result<(Kind, Vec<u8>)> {
        if let Some((_, bytes)) = self.pending.borrow().objects.get(id) {
            return object::decode(&*self.sealer, &self.ns, id, bytes);
        }
        let bytes = self
            .db
            .get_object(&self.ns, id)?
            .ok_or_else(|| Error::MissingObject {
                ns: self.ns.clone(),
                id: *id,
            })?;
        object::decode(&*self.sealer, &self.ns, id, &bytes)
    }

    /// Also keep decoded nodes in `shared`, beyond this operation.
    pub fn with_shared_nodes(mut self, shared: SharedNodes) -> Self {
        self.shared = Some(shared);
        self
    }

    /// A tree node, from the cache when possible.
    pub fn node(&self, id: &ObjectId) -> Result<Arc<Node>> {
        if let Some(n) = self.cache.borrow().get(id) {
            return Ok(n.clone());
        }
        if let Some(shared) = &self.shared {
            if let Some(n) = shared.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
                return Ok(n.clone());
            }
        }
        let from_db = !self.pending.borrow().objects.contains_key(id);
        let (kind, payload) = self.get(id)?;
        if kind != Kind::Node {
            return Err(Error::CorruptObject {
                ns: self.ns.clone(),
                id: *id,
                reason: format!("expected a tree node, found a {}", kind.name()),
            });
        }
        let node = Arc::new(
            Node::decode(&payload).map_err(|reason| Error::CorruptObject {
                ns: self.ns.clone(),
                id: *id,
                reason,
            })?,
        );
        if let (true, Some(shared)) = (from_db, &self.shared) {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            if s.len() >= SHARED_NODES {
                s.clear();
            }
            s.insert(*id, node.clone());
        }
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE_NODES {
            cache.clear();
        }
        cache.insert(*id, node.clone());
        Ok(node)
    }

    /// Encode and buffer an object; returns its id.
    pub fn put(&self, kind: Kind, payload: &[u8]) -> Result<ObjectId> {
        let (id, bytes) = object::encode(&*self.sealer, kind, payload)?;
        self.buffer(kind, id, bytes);
        Ok(id)
    }

    /// Copy tree leaves `ids` of `from` (the same namespace under its old
    /// keys) into this set, re-addressed and re-sealed by this set's sealer
    /// without recompressing them (see [`object::reseal`]); buffered like
    /// `put`. Returns their new ids, in order. Leaves only: other objects name
    /// their children by id, so their payload changes with the addresses.
    ///
    /// The reads are sequential (one connection); opening, hashing and
    /// sealing, most of the work, is spread over the machine's cores.
    pub fn put_resealed_leaves(&self, from: &ObjectSet, ids: &[ObjectId]) -> Result<Vec<ObjectId>> {
        let stored = ids
            .iter()
            .map(|id| {
                from.db
                    .get_object(&from.ns, id)?
                    .ok_or_else(|| Error::MissingObject {
                        ns: from.ns.clone(),
                        id: *id,
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let (old, new, ns) = (&*from.sealer, &*self.sealer, from.ns.as_str());
        let reseal = |i: usize| -> Result<object::Resealed> {
            let r = object::reseal(old, new, ns, &ids[i], &stored[i])?;
            if r.kind != Kind::Node || r.payload.first() != Some(&0) {
                return Err(Error::CorruptObject {
                    ns: ns.to_string(),
                    id: ids[i],
                    reason: match r.payload.first() {
                        Some(level) if r.kind == Kind::Node => {
                            format!("expected a tree leaf, found a level-{level} node")
                        }
                        _ => format!("expected a tree leaf, found a {}", r.kind.name()),
                    },
                });
            }
            Ok(r)
        };
        let threads = cores().min(ids.len().max(1));
        let chunk = ids.len().div_ceil(threads).max(1);
        let results: Vec<Result<object::Resealed>> = std::thread::scope(|scope| {
            let reseal = &reseal;
            let workers: Vec<_> = (chunk..ids.len())
                .step_by(chunk)
                .map(|start| {
                    scope.spawn(move || {
                        (start..(start + chunk).min(ids.len()))
                            .map(reseal)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<_> = (0..chunk.min(ids.len())).map(reseal).collect();
            for w in workers {
                all.extend(w.join().expect("reseal worker panicked"));
            }
            all
        });
        let mut out = Vec::with_capacity(ids.len());
        for r in results {
            let r = r?;
            out.push(r.id);
            self.buffer(r.kind, r.id, r.bytes);
        }
        Ok(out)
    }

    fn buffer(&self, kind: Kind, id: ObjectId, bytes: Vec<u8>) {
        let mut p = self.pending.borrow_mut();
        if !p.objects.contains_key(&id) {
            p.bytes += bytes.len();
            p.order.push(id);
            p.objects.insert(id, (kind, bytes));
        }
    }

    /// Encode, buffer and cache a tree node.
    pub fn put_node(&self, node: Node) -> Result<ObjectId> {
        let id = self.put(Kind::Node, &node.encode())?;
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE_NODES {
            cache.clear();
        }
        cache.insert(id, Arc::new(node));
        Ok(id)
    }

    /// Bytes buffered and not yet flushed.
    pub fn pending_bytes(&self) -> usize {
        self.pending.borrow().bytes
    }

    /// Write buffered objects to the database (in the caller's transaction).
    /// Returns (objects written, bytes written), counting only new ones.
    pub fn flush(&self) -> Result<(u64, u64)> {
        let mut p = self.pending.borrow_mut();
        let mut written = (0u64, 0u64);
        for id in std::mem::take(&mut p.order) {
            if let Some((kind, bytes)) = p.objects.remove(&id) {
                if self.db.put_object(&self.ns, &id, kind, &bytes)? {
                    written.0 += 1;
                    written.1 += bytes.len() as u64;
                }
            }
        }
        p.bytes = 0;
        if let (Some(v), true) = (self.sealer.sealing_version(), written.0 > 0) {
            let sealed = self.db.add_key_usage(&self.ns, v, written.0)?;
            if sealed > crate::crypto::SEAL_LIMIT {
                return Err(Error::KeyExhausted {
                    ns: self.ns.clone(),
                    version: v,
                    sealed,
                });
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{self, Node};

    fn leaf(i: usize) -> Node {
        Node {
            level: 0,
            keys: (0..40)
                .map(|k| {
                    format!("<http://example.org/s{i:05}>\0<http://p{k:02}>\0\"v\"").into_bytes()
                })
                .collect(),
            children: Vec::new(),
        }
    }

    #[test]
    fn resealed_leaves_keep_their_payload_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::create(dir.path(), "test", "now").unwrap();
        let from = ObjectSet::new(&db, "a");
        // enough leaves for every worker thread to get some
        let ids: Vec<ObjectId> = (0..50).map(|i| from.put_node(leaf(i)).unwrap()).collect();
        db.write(|_| from.flush()).unwrap();
        let to = ObjectSet::new(&db, "b");
        let new = to.put_resealed_leaves(&from, &ids).unwrap();
        // the same sealer: the same ids, in the order asked
        assert_eq!(new, ids);
        assert_eq!(to.pending_bytes(), from_bytes(&db, "a", &ids));
        db.write(|_| to.flush()).unwrap();
        for (i, id) in new.iter().enumerate() {
            assert_eq!(*to.node(id).unwrap(), leaf(i));
        }
    }

    fn from_bytes(db: &Db, ns: &str, ids: &[ObjectId]) -> usize {
        ids.iter()
            .map(|id| db.get_object(ns, id).unwrap().unwrap().len())
            .sum()
    }

    #[test]
    fn an_internal_node_or_commit_is_refused_and_nothing_is_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::create(dir.path(), "test", "now").unwrap();
        let from = ObjectSet::new(&db, "a");
        let keys = (0..5000u32)
            .map(|i| format!("<http://example.org/s{i:08}>\0<http://p>\0\"v\"").into_bytes());
        let root = tree::build(&from, keys).unwrap();
        let commit = from.put(Kind::Commit, b"{}").unwrap();
        db.write(|_| from.flush()).unwrap();
        assert!(
            from.node(&root).unwrap().level > 0,
            "the test needs an internal node"
        );
        let to = ObjectSet::new(&db, "b");
        for (id, what) in [(root, "level-"), (commit, "found a commit")] {
            let err = to
                .put_resealed_leaves(&from, &[id])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("expected a tree leaf") && err.contains(what),
                "{err}"
            );
        }
        assert_eq!(to.pending_bytes(), 0);
        let missing = ObjectId::hash(1, b"not stored");
        let err = to
            .put_resealed_leaves(&from, &[missing])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&missing.to_hex()), "{err}");
    }
}
