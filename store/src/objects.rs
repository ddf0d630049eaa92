//! Reading and writing one namespace's objects during an operation.
//!
//! Reads go through a small cache of decoded tree nodes. Writes are buffered
//! and land in the database only in [`ObjectSet::flush`], which callers run
//! inside the same transaction that moves the ref, so a crash never leaves a
//! ref pointing at objects that were not written.
//!
//! The CPU-heavy parts use every core (see [`crate::parallel`]): new objects
//! are addressed at once but compressed and sealed in batches, and a caller
//! that knows which nodes it will read next can have them decoded ahead
//! ([`ObjectSet::prefetch_nodes`]).

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
/// ... and bytes: 8,192 internal nodes of a large tree would be ~90 MiB.
/// Enough for the leaves a batch of edits reads and writes.
const CACHE_BYTES: usize = 24 << 20;
/// Size of a cache shared across operations (see [`SharedNodes`]).
const SHARED_NODES: usize = 2048;

/// Decoded nodes of one namespace that outlive an operation: objects are
/// immutable, so a node read once stays valid (a long-running server keeps
/// the upper levels of its trees decoded). Only nodes read from the database
/// go in, never buffered ones that may not land.
pub type SharedNodes = std::sync::Arc<std::sync::Mutex<HashMap<ObjectId, Arc<Node>>>>;

/// Access to the objects of one namespace.
pub struct ObjectSet<'a> {
    db: &'a Db,
    ns: String,
    sealer: Box<dyn Sealer + 'a>,
    cache: RefCell<HashMap<ObjectId, Arc<Node>>>,
    /// Approximate heap bytes of `cache`, and their limit.
    cache_bytes: std::cell::Cell<usize>,
    cache_limit: usize,
    shared: Option<SharedNodes>,
    pending: RefCell<Pending>,
}

/// New objects framed (compressed, sealed) together, on every core.
const FRAME_BATCH: usize = 128;

#[derive(Default)]
struct Pending {
    objects: HashMap<ObjectId, (Kind, Buffered)>,
    order: Vec<ObjectId>,
    /// Objects still held as their payload, in `order`'s order.
    unframed: Vec<ObjectId>,
    bytes: usize,
}

/// A buffered object: its payload until it is framed in a batch, then its
/// stored bytes.
enum Buffered {
    /// The payload and its content hash (`ObjectId::hash(kind, payload)`).
    Payload(ObjectId, Vec<u8>),
    Framed(Vec<u8>),
}

impl Buffered {
    fn len(&self) -> usize {
        match self {
            Buffered::Payload(_, b) | Buffered::Framed(b) => b.len(),
        }
    }
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
            cache_bytes: std::cell::Cell::new(0),
            cache_limit: CACHE_BYTES,
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
        match self.pending.borrow().objects.get(id) {
            Some((kind, Buffered::Payload(_, p))) => return Ok((*kind, p.clone())),
            Some((_, Buffered::Framed(bytes))) => {
                return object::decode(&*self.sealer, &self.ns, id, bytes)
            }
            None => {}
        }
        object::decode(&*self.sealer, &self.ns, id, &self.stored(id)?)
    }

    /// Cache at most `bytes` of decoded nodes (default 24 MiB): for a walk
    /// that reads each node once, where caching only costs memory.
    pub fn with_cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_limit = bytes;
        self
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
        let (node, from_db) = match self.pending.borrow().objects.get(id) {
            Some((kind, Buffered::Payload(_, p))) => (parse_node(&self.ns, id, *kind, p)?, false),
            Some((_, Buffered::Framed(bytes))) => (self.decode_node(id, bytes)?, false),
            None => (self.decode_node(id, &self.stored(id)?)?, true),
        };
        self.remember(&[(*id, node.clone())], from_db);
        Ok(node)
    }

    /// Read the tree nodes `ids` into the cache, decoding them on every core:
    /// for a caller about to visit many nodes it knows in advance. Nodes
    /// already cached or buffered are skipped; a missing or damaged one is the
    /// error [`ObjectSet::node`] would give.
    pub fn prefetch_nodes(&self, ids: &[ObjectId]) -> Result<()> {
        let mut wanted: Vec<ObjectId> = Vec::with_capacity(ids.len());
        {
            let cache = self.cache.borrow();
            let pending = self.pending.borrow();
            let shared = self
                .shared
                .as_ref()
                .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()));
            for id in ids {
                if !cache.contains_key(id)
                    && !pending.objects.contains_key(id)
                    && !shared.as_ref().is_some_and(|s| s.contains_key(id))
                    && !wanted.contains(id)
                {
                    wanted.push(*id);
                }
            }
        }
        if wanted.len() < 2 {
            return Ok(()); // nothing to spread: `node` reads it when asked
        }
        let stored = wanted
            .iter()
            .map(|id| Ok((*id, self.stored(id)?)))
            .collect::<Result<Vec<_>>>()?;
        let (sealer, ns) = (&*self.sealer, self.ns.as_str());
        let decoded =
            crate::parallel::map(&stored, |(id, bytes)| decode_node(sealer, ns, id, bytes));
        let mut nodes = Vec::with_capacity(decoded.len());
        for ((id, _), node) in stored.iter().zip(decoded) {
            nodes.push((*id, node?));
        }
        self.remember(&nodes, true);
        Ok(())
    }

    /// The stored bytes of `id`.
    fn stored(&self, id: &ObjectId) -> Result<Vec<u8>> {
        self.db
            .get_object(&self.ns, id)?
            .ok_or_else(|| Error::MissingObject {
                ns: self.ns.clone(),
                id: *id,
            })
    }

    fn decode_node(&self, id: &ObjectId, bytes: &[u8]) -> Result<Arc<Node>> {
        decode_node(&*self.sealer, &self.ns, id, bytes)
    }

    /// Keep decoded nodes in the cache, and in the shared one when they came
    /// from the database (`landed`).
    fn remember(&self, nodes: &[(ObjectId, Arc<Node>)], landed: bool) {
        if let (true, Some(shared)) = (landed, &self.shared) {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            if s.len() + nodes.len() > SHARED_NODES {
                s.clear();
            }
            s.extend(nodes.iter().map(|(id, n)| (*id, n.clone())));
        }
        let bytes: usize = nodes.iter().map(|(_, n)| n.heap_bytes()).sum();
        let mut cache = self.cache.borrow_mut();
        if cache.len() + nodes.len() > CACHE_NODES
            || self.cache_bytes.get() + bytes > self.cache_limit
        {
            cache.clear();
            self.cache_bytes.set(0);
        }
        self.cache_bytes.set(self.cache_bytes.get() + bytes);
        cache.extend(nodes.iter().cloned());
    }

    /// Buffer a new object; returns its id. It is compressed and sealed
    /// later, with others (`FRAME_BATCH` at a time).
    pub fn put(&self, kind: Kind, payload: &[u8]) -> Result<ObjectId> {
        let content = ObjectId::hash(kind as u8, payload);
        let id = self.sealer.address_of(&content);
        let full = {
            let mut p = self.pending.borrow_mut();
            if !p.objects.contains_key(&id) {
                p.bytes += payload.len();
                p.order.push(id);
                p.unframed.push(id);
                p.objects
                    .insert(id, (kind, Buffered::Payload(content, payload.to_vec())));
            }
            p.unframed.len() >= FRAME_BATCH
        };
        if full {
            self.frame_pending()?;
        }
        Ok(id)
    }

    /// Compress and seal the buffered payloads, spread over the cores.
    fn frame_pending(&self) -> Result<()> {
        let mut p = self.pending.borrow_mut();
        let ids = std::mem::take(&mut p.unframed);
        let work: Vec<(ObjectId, ObjectId, Kind, &[u8])> = ids
            .iter()
            .filter_map(|id| match p.objects.get(id) {
                Some((kind, Buffered::Payload(content, b))) => {
                    Some((*id, *content, *kind, b.as_slice()))
                }
                _ => None,
            })
            .collect();
        let sealer = &*self.sealer;
        let framed = crate::parallel::map(&work, |(id, content, kind, payload)| {
            object::frame(sealer, id, content, *kind, payload)
        });
        let ids: Vec<ObjectId> = work.iter().map(|(id, _, _, _)| *id).collect();
        drop(work);
        let mut first_error = None;
        for (id, r) in ids.into_iter().zip(framed) {
            match r {
                Ok(bytes) => {
                    let p = &mut *p;
                    let entry = p.objects.get_mut(&id).expect("buffered");
                    p.bytes = p.bytes - entry.1.len() + bytes.len();
                    entry.1 = Buffered::Framed(bytes);
                }
                Err(e) => {
                    p.unframed.push(id);
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The sealer that addresses and seals (or opens) this set's objects.
    pub fn sealer(&self) -> &dyn Sealer {
        &*self.sealer
    }

    /// Encode, buffer and cache a tree node.
    pub fn put_node(&self, node: Node) -> Result<ObjectId> {
        let id = self.put(Kind::Node, &node.encode())?;
        self.remember(&[(id, Arc::new(node))], false);
        Ok(id)
    }

    /// Bytes buffered and not yet flushed.
    pub fn pending_bytes(&self) -> usize {
        self.pending.borrow().bytes
    }

    /// Write buffered objects to the database (in the caller's transaction).
    /// Returns (objects written, bytes written), counting only new ones.
    pub fn flush(&self) -> Result<(u64, u64)> {
        self.frame_pending()?;
        let mut p = self.pending.borrow_mut();
        let order = std::mem::take(&mut p.order);
        let mut objects = std::mem::take(&mut p.objects);
        p.bytes = 0;
        drop(p);
        let framed: Vec<(ObjectId, Kind, Vec<u8>)> = order
            .into_iter()
            .filter_map(|id| match objects.remove(&id) {
                Some((kind, Buffered::Framed(bytes))) => Some((id, kind, bytes)),
                _ => None,
            })
            .collect();
        write_framed(self.db, &self.ns, self.sealer.sealing_version(), &framed)
    }
}

/// Write framed objects of `ns` to `db` (in the caller's transaction),
/// counting them against key version `sealing` (None: unsealed), which they
/// were sealed under. Returns (objects written, bytes written), counting
/// only new ones.
pub fn write_framed(
    db: &Db,
    ns: &str,
    sealing: Option<u32>,
    framed: &[(ObjectId, Kind, Vec<u8>)],
) -> Result<(u64, u64)> {
    let written = db.put_objects(
        ns,
        framed.iter().map(|(id, kind, b)| (id, *kind, b.as_slice())),
    )?;
    if let (Some(v), true) = (sealing, written.0 > 0) {
        let sealed = db.add_key_usage(ns, v, written.0)?;
        if sealed > crate::crypto::SEAL_LIMIT {
            return Err(Error::KeyExhausted {
                ns: ns.to_string(),
                version: v,
                sealed,
            });
        }
    }
    Ok(written)
}

/// Open, check and parse the tree node stored as `bytes`.
fn decode_node(sealer: &dyn Sealer, ns: &str, id: &ObjectId, bytes: &[u8]) -> Result<Arc<Node>> {
    let (kind, payload) = object::decode(sealer, ns, id, bytes)?;
    parse_node(ns, id, kind, &payload)
}

/// Parse the payload of object `id` as a tree node.
fn parse_node(ns: &str, id: &ObjectId, kind: Kind, payload: &[u8]) -> Result<Arc<Node>> {
    if kind != Kind::Node {
        return Err(Error::CorruptObject {
            ns: ns.to_string(),
            id: *id,
            reason: format!("expected a tree node, found a {}", kind.name()),
        });
    }
    let node = Node::decode(payload).map_err(|reason| Error::CorruptObject {
        ns: ns.to_string(),
        id: *id,
        reason,
    })?;
    Ok(Arc::new(node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;

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

    /// Leaves 0..n stored in namespace `a` of `db`; their ids.
    fn stored_leaves(db: &Db, n: usize) -> Vec<ObjectId> {
        let objs = ObjectSet::new(db, "a");
        let ids = (0..n).map(|i| objs.put_node(leaf(i)).unwrap()).collect();
        db.write(|_| objs.flush()).unwrap();
        ids
    }

    #[test]
    fn buffered_objects_read_back_before_and_after_framing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::create(dir.path(), "test", "now").unwrap();
        let objs = ObjectSet::new(&db, "a");
        // more than one framing batch, and a last partial one
        let n = FRAME_BATCH * 2 + 7;
        let ids: Vec<ObjectId> = (0..n).map(|i| objs.put_node(leaf(i)).unwrap()).collect();
        let again = objs.put_node(leaf(3)).unwrap();
        assert_eq!(again, ids[3], "content addressed: one object");
        // the ids do not depend on framing
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(*id, ObjectId::hash(Kind::Node as u8, &leaf(i).encode()));
        }
        // the last partial batch is still payload, the rest framed: both read back
        for i in [0, n - 1] {
            let (kind, payload) = objs.get(&ids[i]).unwrap();
            assert_eq!((kind, payload), (Kind::Node, leaf(i).encode()));
        }
        let fresh = ObjectSet::new(&db, "a");
        assert!(fresh.get(&ids[0]).is_err(), "nothing lands before flush");
        let (written, _) = db.write(|_| objs.flush()).unwrap();
        assert_eq!(written, n as u64);
        assert_eq!(objs.pending_bytes(), 0);
        for (i, id) in ids.iter().enumerate() {
            // stored compressed and framed, and hashing back to its id
            let stored = db.get_object("a", id).unwrap().unwrap();
            assert!(stored.len() < leaf(i).encode().len(), "compressed");
            assert_eq!(*fresh.node(id).unwrap(), leaf(i));
        }
    }

    #[test]
    fn prefetched_nodes_are_the_stored_ones_and_errors_name_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::create(dir.path(), "test", "now").unwrap();
        let ids = stored_leaves(&db, 40);
        let objs = ObjectSet::new(&db, "a");
        let commit = objs.put(Kind::Commit, b"{}").unwrap();
        db.write(|_| objs.flush()).unwrap();

        let reader = ObjectSet::new(&db, "a");
        reader.prefetch_nodes(&ids).unwrap();
        assert_eq!(reader.cache.borrow().len(), ids.len());
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(*reader.node(id).unwrap(), leaf(i));
        }

        let missing = ObjectId::hash(1, b"not stored");
        for (bad, what) in [(missing, "missing"), (commit, "found a commit")] {
            let r = ObjectSet::new(&db, "a");
            let err = r
                .prefetch_nodes(&[ids[0], bad, ids[1]])
                .unwrap_err()
                .to_string();
            assert!(err.contains(&bad.to_hex()) && err.contains(what), "{err}");
            assert!(
                r.cache.borrow().is_empty(),
                "nothing cached from a failed read"
            );
        }
    }

    #[test]
    fn the_node_cache_stays_within_its_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::create(dir.path(), "test", "now").unwrap();
        let ids = stored_leaves(&db, 64);
        let one = leaf(0).heap_bytes();
        let small = ObjectSet::new(&db, "a").with_cache_bytes(one * 5);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(*small.node(id).unwrap(), leaf(i));
            assert!(small.cache_bytes.get() <= one * 5 + one / 2);
            assert!(small.cache.borrow().len() <= 5);
        }
        small.prefetch_nodes(&ids[..20]).unwrap();
        assert!(
            small.cache.borrow().len() <= 20,
            "a window larger than the budget replaces it"
        );
    }
}
