//! Commit deltas (stream format 2): a new commit's quad set stored as the
//! change from its first parent's, instead of the tree nodes the change
//! rewrote.
//!
//! Quad-set trees are history independent (the same set always has the same
//! root), so a restore can rebuild a commit's tree from its parent's tree and
//! the quads added and removed, with the store's own tree code, and check that
//! the root it gets is the commit's `tree`: every rebuilt node is then the
//! node the store has, verified by its hash. A random 1% change rewrites about
//! half the leaves of a tree, so the nodes cost about 40 times what the change
//! itself costs.
//!
//! Layout of a delta record body (see `FORMAT.md`): the namespace, the
//! commit, the base and result tree ids, the base's key count, the number of
//! keys removed and added, a digest of the change, then two zstd frames:
//! removals as positions in the base tree (gaps, varints: about two bytes a
//! key) and additions as front-coded keys in order.
//!
//! The backup side ([`plan`]) decides per new commit whether a delta is
//! smaller than the nodes it replaces; the restore side ([`rebuild`]) applies
//! deltas in bounded memory (batches of edits, each through a fresh node
//! cache) and stores exactly the nodes of the rebuilt tree that its base
//! lacks.

use std::collections::{HashSet, VecDeque};
use std::io::{Read, Write};

use qg_store::commit::Commit;
use qg_store::object::Kind;
use qg_store::objects::ObjectSet;
use qg_store::snapshot::RestoreWriter;
use qg_store::storage::Db;
use qg_store::tree::{self, LeafRef, Node};
use qg_store::ObjectId;
use sha2::{Digest, Sha256};

use crate::check::{NodeIndex, NodeInfo};
use crate::error::{Error, Result};
use crate::format::IndexEntry;

/// zstd level of the two change blocks. Higher levels gain under 1% on a
/// typical change and cost memory (level 9: +20 MiB).
const LEVEL: i32 = 3;
/// Edits applied per batch at restore (each batch has its own node cache).
const BATCH_EDITS: usize = 512;
/// A delta is not attempted when the leaves it would read hold more keys
/// than this: it bounds the time an incremental spends decoding leaves
/// (about half a microsecond per key; memory does not grow, leaves are read
/// one at a time). A scattered 1% change touches about half the leaves, so
/// this covers stores of about 60 million quads.
pub const MAX_DELTA_KEYS: u64 = 64_000_000;
/// Decoded nodes kept while planning a delta (each is read once).
const PLAN_CACHE_BYTES: usize = 1 << 20;
/// Decoded nodes kept per batch of a rebuild (a batch reads and writes at
/// most about a thousand leaves).
const REBUILD_CACHE_BYTES: usize = 16 << 20;
/// Nor kept when it encodes to more than this (a record is at most 64 MiB).
pub const MAX_DELTA_BYTES: usize = 32 << 20;

/// One delta record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub ns: String,
    /// The commit whose tree this rebuilds.
    pub commit: ObjectId,
    /// The tree of the commit's first parent.
    pub base: ObjectId,
    /// The commit's tree.
    pub tree: ObjectId,
    /// Keys in `base`.
    pub base_count: u64,
    pub removed: u64,
    pub added: u64,
    /// SHA-256 of (SHA-256 of the removal block's plaintext || SHA-256 of the addition block's).
    pub digest: [u8; 32],
    /// zstd frame: positions in `base` of the removed keys (first as is, then gaps − 1), varints.
    pub removals: Vec<u8>,
    /// zstd frame: the added keys in order, each as varint shared-prefix length
    /// with the previous one, varint suffix length, suffix.
    pub additions: Vec<u8>,
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Delta {
    /// Keys the rebuilt tree holds.
    pub fn count(&self) -> Option<u64> {
        self.base_count
            .checked_sub(self.removed)?
            .checked_add(self.added)
    }

    /// The record body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(200 + self.ns.len() + self.removals.len() + self.additions.len());
        out.extend_from_slice(&(self.ns.len() as u16).to_le_bytes());
        out.extend_from_slice(self.ns.as_bytes());
        out.extend_from_slice(&self.commit.0);
        out.extend_from_slice(&self.base.0);
        out.extend_from_slice(&self.tree.0);
        put_u64(&mut out, self.base_count);
        put_u64(&mut out, self.removed);
        put_u64(&mut out, self.added);
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(&(self.removals.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.removals);
        out.extend_from_slice(&self.additions);
        out
    }

    /// Parse a record body (the change blocks are checked by [`Delta::check`]).
    pub fn decode(body: &[u8]) -> std::result::Result<Delta, String> {
        let mut b = body;
        let mut take = |n: usize| -> std::result::Result<&[u8], String> {
            if b.len() < n {
                return Err("truncated delta record".into());
            }
            let (x, rest) = b.split_at(n);
            b = rest;
            Ok(x)
        };
        let ns_len = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
        let ns = String::from_utf8(take(ns_len)?.to_vec())
            .map_err(|_| "namespace is not UTF-8".to_string())?;
        let id = |x: &[u8]| ObjectId::from_slice(x).expect("32 bytes");
        let commit = id(take(32)?);
        let base = id(take(32)?);
        let tree = id(take(32)?);
        let word = |x: &[u8]| u64::from_le_bytes(x.try_into().expect("8 bytes"));
        let base_count = word(take(8)?);
        let removed = word(take(8)?);
        let added = word(take(8)?);
        let digest: [u8; 32] = take(32)?.try_into().expect("32 bytes");
        let rlen = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        let removals = take(rlen)?.to_vec();
        let additions = b.to_vec();
        let d = Delta {
            ns,
            commit,
            base,
            tree,
            base_count,
            removed,
            added,
            digest,
            removals,
            additions,
        };
        if removed > base_count || d.count().is_none() {
            return Err(format!(
                "it removes {removed} of the base's {base_count} keys"
            ));
        }
        Ok(d)
    }

    /// Names the record in errors.
    pub fn what(&self) -> String {
        format!(
            "the delta record for commit {} of namespace `{}`",
            self.commit, self.ns
        )
    }

    /// Decode both change blocks completely: positions strictly increasing
    /// and inside the base, keys strictly increasing, counts and digest as
    /// recorded. What `verify --read-data` checks without a store.
    pub fn check(&self) -> std::result::Result<(), String> {
        let mut r = self.removals()?;
        for o in &mut r {
            o?;
        }
        let mut a = self.additions()?;
        for k in &mut a {
            k?;
        }
        self.check_digest(r, a)
    }

    /// The removed keys' positions in the base tree, in order.
    pub fn removals(&self) -> std::result::Result<Removals<'_>, String> {
        Ok(Removals {
            inp: Block::new(&self.removals)?,
            left: self.removed,
            last: None,
            base_count: self.base_count,
        })
    }

    /// The added keys, in order.
    pub fn additions(&self) -> std::result::Result<Additions<'_>, String> {
        Ok(Additions {
            inp: Block::new(&self.additions)?,
            left: self.added,
            prev: Vec::new(),
        })
    }

    /// After both iterators ran out: no trailing bytes, and the digest matches.
    pub fn check_digest(
        &self,
        r: Removals<'_>,
        a: Additions<'_>,
    ) -> std::result::Result<(), String> {
        if r.left != 0 || a.left != 0 {
            return Err("the change was not read to its end".into());
        }
        let hr = r.inp.finish("removal")?;
        let ha = a.inp.finish("addition")?;
        let mut h = Sha256::new();
        h.update(hr);
        h.update(ha);
        if h.finalize().as_slice() != self.digest {
            return Err("its change does not match its digest".into());
        }
        Ok(())
    }
}

/// A zstd frame read byte by byte, hashed as it goes.
struct Block<'a> {
    dec: zstd::stream::read::Decoder<'static, std::io::BufReader<&'a [u8]>>,
    sha: Sha256,
}

impl<'a> Block<'a> {
    fn new(frame: &'a [u8]) -> std::result::Result<Block<'a>, String> {
        Ok(Block {
            dec: zstd::stream::read::Decoder::new(frame)
                .map_err(|e| format!("bad zstd frame: {e}"))?
                .single_frame(),
            sha: Sha256::new(),
        })
    }

    fn fill(&mut self, buf: &mut [u8]) -> std::result::Result<(), String> {
        self.dec
            .read_exact(buf)
            .map_err(|e| format!("truncated or bad change block: {e}"))?;
        self.sha.update(&*buf);
        Ok(())
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let mut b = [0u8; 1];
            self.fill(&mut b)?;
            v |= u64::from(b[0] & 0x7f) << shift;
            if b[0] < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn finish(mut self, what: &str) -> std::result::Result<[u8; 32], String> {
        let mut extra = [0u8; 1];
        match self.dec.read(&mut extra) {
            Ok(0) => Ok(self.sha.finalize().into()),
            Ok(_) => Err(format!("the {what} block has bytes after its last entry")),
            Err(e) => Err(format!("bad {what} block: {e}")),
        }
    }
}

/// Positions of removed keys; see [`Delta::removals`].
pub struct Removals<'a> {
    inp: Block<'a>,
    left: u64,
    last: Option<u64>,
    base_count: u64,
}

impl Removals<'_> {
    /// Positions not read yet.
    pub fn remaining(&self) -> u64 {
        self.left
    }
}

impl Iterator for Removals<'_> {
    type Item = std::result::Result<u64, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut step = || -> std::result::Result<u64, String> {
            let gap = self.inp.varint()?;
            let pos = match self.last {
                None => Some(gap),
                Some(l) => l.checked_add(gap).and_then(|v| v.checked_add(1)),
            }
            .filter(|p| *p < self.base_count)
            .ok_or("a removed key's position is outside the base tree")?;
            self.last = Some(pos);
            Ok(pos)
        };
        let r = step();
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }
}

/// Added keys; see [`Delta::additions`].
pub struct Additions<'a> {
    inp: Block<'a>,
    left: u64,
    prev: Vec<u8>,
}

/// Longest key accepted (a tree caps a chunk's keys at 256 KiB).
const MAX_KEY: u64 = 1 << 20;

impl Iterator for Additions<'_> {
    type Item = std::result::Result<Vec<u8>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let first = self.prev.is_empty() && self.left > 0;
        self.left -= 1;
        let mut step = || -> std::result::Result<Vec<u8>, String> {
            let shared = self.inp.varint()?;
            let len = self.inp.varint()?;
            if shared > self.prev.len() as u64 || len > MAX_KEY {
                return Err("bad front coding of an added key".into());
            }
            let mut key = Vec::with_capacity(shared as usize + len as usize);
            key.extend_from_slice(&self.prev[..shared as usize]);
            let at = key.len();
            key.resize(at + len as usize, 0);
            self.inp.fill(&mut key[at..])?;
            if !first && key <= self.prev {
                return Err("added keys are not in strictly increasing order".into());
            }
            self.prev.clone_from(&key);
            Ok(key)
        };
        let r = step();
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }
}

/// Builds a delta from the change, in order.
pub struct Encoder {
    removals: zstd::stream::write::Encoder<'static, Vec<u8>>,
    additions: zstd::stream::write::Encoder<'static, Vec<u8>>,
    sha_r: Sha256,
    sha_a: Sha256,
    last: Option<u64>,
    prev: Vec<u8>,
    removed: u64,
    added: u64,
    scratch: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Result<Encoder> {
        let enc = || {
            zstd::stream::write::Encoder::new(Vec::new(), LEVEL)
                .map_err(|e| Error::io("start compressing", "a delta record", e))
        };
        Ok(Encoder {
            removals: enc()?,
            additions: enc()?,
            sha_r: Sha256::new(),
            sha_a: Sha256::new(),
            last: None,
            prev: Vec::new(),
            removed: 0,
            added: 0,
            scratch: Vec::new(),
        })
    }

    /// The key at position `pos` of the base tree is removed (positions increase).
    pub fn remove(&mut self, pos: u64) -> Result<()> {
        let gap = match self.last {
            None => pos,
            Some(l) => pos - l - 1,
        };
        self.last = Some(pos);
        self.scratch.clear();
        put_varint(&mut self.scratch, gap);
        self.sha_r.update(&self.scratch);
        self.removals
            .write_all(&self.scratch)
            .map_err(|e| Error::io("compress", "a delta record", e))?;
        self.removed += 1;
        Ok(())
    }

    /// `key` is added (keys increase).
    pub fn add(&mut self, key: &[u8]) -> Result<()> {
        let shared = self
            .prev
            .iter()
            .zip(key)
            .take_while(|(a, b)| a == b)
            .count();
        self.scratch.clear();
        put_varint(&mut self.scratch, shared as u64);
        put_varint(&mut self.scratch, (key.len() - shared) as u64);
        self.scratch.extend_from_slice(&key[shared..]);
        self.sha_a.update(&self.scratch);
        self.additions
            .write_all(&self.scratch)
            .map_err(|e| Error::io("compress", "a delta record", e))?;
        self.prev.clear();
        self.prev.extend_from_slice(key);
        self.added += 1;
        Ok(())
    }

    /// Bytes compressed so far (a lower bound of the final size).
    pub fn size_hint(&self) -> usize {
        self.removals.get_ref().len() + self.additions.get_ref().len()
    }

    pub fn finish(
        self,
        ns: &str,
        commit: ObjectId,
        base: ObjectId,
        tree: ObjectId,
        base_count: u64,
    ) -> Result<Delta> {
        let zerr = |e: std::io::Error| Error::io("compress", "a delta record", e);
        let removals = self.removals.finish().map_err(zerr)?;
        let additions = self.additions.finish().map_err(zerr)?;
        let mut h = Sha256::new();
        h.update(self.sha_r.finalize());
        h.update(self.sha_a.finalize());
        Ok(Delta {
            ns: ns.to_string(),
            commit,
            base,
            tree,
            base_count,
            removed: self.removed,
            added: self.added,
            digest: h.finalize().into(),
            removals,
            additions,
        })
    }
}

// ---------------------------------------------------------------- backup side

/// A new object of a namespace, as the backup found it.
#[derive(Debug, Clone, Copy)]
pub struct NewObject {
    pub id: ObjectId,
    pub kind: u8,
    pub len: u64,
}

/// What [`plan`] chose for one namespace.
#[derive(Debug, Default)]
pub struct NsPlan {
    /// The tree index entries of the deltas, in the order they must be
    /// applied (parents first); their bodies went to the sink.
    pub trees: Vec<IndexEntry>,
    /// New objects the deltas rebuild (not sent as object records).
    pub covered: HashSet<ObjectId>,
    /// Stored bytes of those objects.
    pub covered_bytes: u64,
}

/// Keys of a sequence of leaves, in order, with their positions.
struct LeafKeys<'o, 'a> {
    objs: &'o ObjectSet<'a>,
    leaves: std::slice::Iter<'o, LeafRef>,
    cur: Option<(LeafRef, Node, usize)>,
}

impl<'o, 'a> LeafKeys<'o, 'a> {
    fn new(objs: &'o ObjectSet<'a>, leaves: &'o [LeafRef]) -> Self {
        LeafKeys {
            objs,
            leaves: leaves.iter(),
            cur: None,
        }
    }

    /// The next (key, position), reading leaves without caching them.
    fn peek(&mut self) -> Result<Option<(&[u8], u64)>> {
        while !matches!(&self.cur, Some((_, n, i)) if *i < n.keys.len()) {
            let Some(l) = self.leaves.next() else {
                return Ok(None);
            };
            let (kind, payload) = self.objs.get(&l.id)?;
            let bad = |reason: String| {
                Error::Store(qg_store::Error::CorruptObject {
                    ns: self.objs.ns().to_string(),
                    id: l.id,
                    reason,
                })
            };
            if kind != Kind::Node {
                return Err(bad(format!("a {} where a leaf belongs", kind.name())));
            }
            let node = Node::decode(&payload).map_err(|e| bad(format!("bad tree node: {e}")))?;
            if !node.is_leaf() || node.count() != l.count {
                return Err(bad("not the leaf its parent describes".into()));
            }
            self.cur = Some((*l, node, 0));
        }
        let (l, n, i) = self.cur.as_ref().expect("a current leaf");
        Ok(Some((&n.keys[*i], l.start + *i as u64)))
    }

    fn advance(&mut self) {
        if let Some((_, _, i)) = &mut self.cur {
            *i += 1;
        }
    }
}

/// Encode the change from `base` to `tree` (of namespace `objs`); `None`
/// when it would exceed `limit` bytes.
pub fn encode_change(
    objs: &ObjectSet,
    div: &tree::Divergence,
    limit: usize,
) -> Result<Option<Encoder>> {
    let mut enc = Encoder::new()?;
    let mut a = LeafKeys::new(objs, &div.leaves_a);
    let mut b = LeafKeys::new(objs, &div.leaves_b);
    let mut n = 0u64;
    loop {
        let (next_a, next_b) = match (a.peek()?, b.peek()?) {
            (None, None) => break,
            (Some((_, p)), None) => {
                enc.remove(p)?;
                (true, false)
            }
            (None, Some((k, _))) => {
                enc.add(k)?;
                (false, true)
            }
            (Some((x, p)), Some((y, _))) => match x.cmp(y) {
                std::cmp::Ordering::Equal => (true, true),
                std::cmp::Ordering::Less => {
                    enc.remove(p)?;
                    (true, false)
                }
                std::cmp::Ordering::Greater => {
                    enc.add(y)?;
                    (false, true)
                }
            },
        };
        if next_a {
            a.advance();
        }
        if next_b {
            b.advance();
        }
        n += 1;
        if n % 4096 == 0 && enc.size_hint() >= limit {
            return Ok(None);
        }
    }
    Ok(Some(enc))
}

/// Choose deltas for the new commits of plaintext namespace `ns`.
///
/// `new` is every object of `ns` the chain lacks, in id order. A commit gets
/// a delta when its first parent's tree is complete where the restore will
/// apply it (the parent is in the chain, or is a new commit handled earlier
/// in this stream) and the delta is smaller than the new nodes it replaces.
/// Each new node is provided once: by an object record, or by the first
/// delta that rebuilds it; nodes a later delta's base needs are never left to
/// a later delta.
pub fn plan(
    db: &Db,
    ns: &str,
    new: &[NewObject],
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<NsPlan> {
    let objs = ObjectSet::new(db, ns);
    let find = |id: &ObjectId| new.binary_search_by(|o| o.id.cmp(id)).ok().map(|i| &new[i]);
    let mut commits = Vec::new();
    for o in new.iter().filter(|o| o.kind == Kind::Commit as u8) {
        // a commit that does not load is simply sent as it is
        if let Ok(c) = Commit::load(&objs, &o.id) {
            commits.push((c.generation, o.id, c));
        }
    }
    commits.sort_by_key(|a| (a.0, a.1));
    let mut out = NsPlan::default();
    let mut complete: HashSet<ObjectId> = HashSet::new();
    let mut pinned: HashSet<ObjectId> = HashSet::new();
    for (_, id, c) in commits {
        let Some(parent) = c.parents.first() else {
            continue;
        };
        if find(parent).is_some() && !complete.contains(parent) {
            continue; // the parent's tree is not complete before this commit
        }
        let Ok(pc) = Commit::load(&objs, parent) else {
            continue;
        };
        if pc.tree == c.tree {
            complete.insert(id);
            continue;
        }
        // a fresh, small node cache per commit: the walk reads each node once
        let objs = ObjectSet::new(db, ns).with_cache_bytes(PLAN_CACHE_BYTES);
        let Ok(div) = tree::divergence(&objs, &pc.tree, &c.tree) else {
            continue;
        };
        for n in &div.only_a {
            if find(n).is_some() && !out.covered.contains(n) {
                pinned.insert(*n);
            }
        }
        let cov: Vec<&NewObject> = div
            .only_b
            .iter()
            .filter_map(&find)
            .filter(|o| !out.covered.contains(&o.id) && !pinned.contains(&o.id))
            .collect();
        complete.insert(id);
        if cov.is_empty() {
            continue;
        }
        let bytes: u64 = cov.iter().map(|o| o.len).sum();
        let keys: u64 = div
            .leaves_a
            .iter()
            .chain(&div.leaves_b)
            .map(|l| l.count)
            .sum();
        let limit = (bytes as usize).min(MAX_DELTA_BYTES);
        let enc = if keys <= MAX_DELTA_KEYS {
            encode_change(&objs, &div, limit)?
        } else {
            None
        };
        let base_count = tree::count(&objs, &pc.tree)?;
        let delta = match enc {
            Some(e) => Some(e.finish(ns, id, pc.tree, c.tree, base_count)?),
            None => None,
        };
        let body = delta.map(|d| (d.encode(), d));
        match body {
            Some((body, d)) if body.len() < limit => {
                sink(&body)?;
                out.covered_bytes += bytes;
                out.covered.extend(cov.iter().map(|o| o.id));
                out.trees.push(IndexEntry::tree(ns, d.tree, d.base));
            }
            _ => pinned.extend(cov.iter().map(|o| o.id)),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- restore side

/// What applying one delta did.
pub struct Rebuilt {
    /// Nodes written: those of the tree its base lacked and the store did not
    /// have yet. What the final check needs of each is now in the index.
    pub nodes: u64,
}

/// Objects looked at per query when the new nodes are sorted out (fewer
/// when the node index keeps fewer nodes in memory).
const SORT_PAGE: usize = 4096;

/// Apply delta `d` to the store being restored: rebuild the tree of its
/// commit from its base tree with the store's own tree code, in batches of
/// edits (each with a fresh node cache, its new nodes stored before the next
/// batch reads them), check that the root is the commit's tree, and keep of
/// the nodes written exactly those the tree has and its base lacks (a
/// rebuilt root that matches vouches, through the hashes, for every node
/// under it), adding what the final check needs of each to `index`.
///
/// The nodes built along the way are tracked in a second index of the same
/// kind (a large change builds more nodes than memory should hold): the
/// main one cannot tell them from the base tree's, which must stay.
pub fn rebuild(
    w: &RestoreWriter,
    d: &Delta,
    backup: &str,
    index: &mut NodeIndex,
) -> Result<Rebuilt> {
    let damaged = |reason: String| Error::damaged(backup, format!("{}: {reason}", d.what()));
    // the commit came as an object record before the deltas
    {
        let objs = w.objects(&d.ns);
        let c = Commit::load(&objs, &d.commit)
            .map_err(|e| damaged(format!("its commit is not in the restored store: {e}")))?;
        if c.tree != d.tree {
            return Err(damaged(format!(
                "it names tree {} but the commit's tree is {}",
                d.tree, c.tree
            )));
        }
        let n = tree::count(&objs, &d.base).map_err(|e| {
            Error::Chain(format!(
                "{} of backup {backup} needs tree {}, which the restored chain does not hold: {e}",
                d.what(),
                d.base
            ))
        })?;
        if n != d.base_count {
            return Err(damaged(format!(
                "its base tree {} holds {n} keys, not {}",
                d.base, d.base_count
            )));
        }
    }
    let since = w.object_mark()?;
    let mut removals = d.removals().map_err(&damaged)?;
    let mut additions = d.additions().map_err(&damaged)?;
    let mut pending_rem: VecDeque<Vec<u8>> = VecDeque::new();
    let mut next_add: Option<Vec<u8>> = None;
    let mut built = index.scratch();
    let mut root = d.base;
    loop {
        // a fresh node cache per batch, enough for the leaves it reads and
        // writes, keeps memory bounded
        let objs = w.objects(&d.ns).with_cache_bytes(REBUILD_CACHE_BYTES);
        if pending_rem.is_empty() {
            // positions refer to the base tree, which stays as it is
            let mut pos = Vec::with_capacity(BATCH_EDITS);
            for p in removals.by_ref().take(BATCH_EDITS) {
                pos.push(p.map_err(&damaged)?);
            }
            let keys = tree::keys_at(&objs, &d.base, &pos)
                .map_err(|e| damaged(format!("a removed key cannot be found: {e}")))?;
            pending_rem.extend(keys);
        }
        if next_add.is_none() {
            next_add = additions.next().transpose().map_err(&damaged)?;
        }
        let (mut add, mut rem) = (Vec::new(), Vec::new());
        while add.len() + rem.len() < BATCH_EDITS {
            let take_add = match (&next_add, pending_rem.front()) {
                (None, None) => break,
                (Some(_), None) => {
                    if removals.remaining() > 0 {
                        break; // resolve the next removals first: batches follow key order
                    }
                    true
                }
                (None, Some(_)) => false,
                (Some(a), Some(r)) => a < r,
            };
            if take_add {
                add.push(next_add.take().expect("checked"));
                next_add = additions.next().transpose().map_err(&damaged)?;
            } else {
                rem.push(pending_rem.pop_front().expect("checked"));
            }
        }
        if add.is_empty() && rem.is_empty() {
            if pending_rem.is_empty() && next_add.is_none() && removals.remaining() == 0 {
                break;
            }
            continue;
        }
        let next = tree::apply(&objs, root, &add, &rem)
            .map_err(|e| damaged(format!("it cannot be applied to its base tree: {e}")))?;
        // what the final check needs of this step's new nodes, from the cache
        let div = tree::divergence(&objs, &root, &next)
            .map_err(|e| damaged(format!("its rebuilt tree cannot be read: {e}")))?;
        // `built` holds the built nodes of the current tree only: those of
        // earlier batches that this one replaced go (a large change replaces
        // internal nodes hundreds of times)
        for id in &div.only_a {
            built.remove(&d.ns, id)?;
        }
        for id in &div.only_b {
            let node = objs
                .node(id)
                .map_err(|e| damaged(format!("rebuilt node {id}: {e}")))?;
            built.insert(&d.ns, *id, NodeInfo::of(&node))?;
        }
        // the nodes as the tree code encoded and hashed them
        objs.flush()?;
        root = next;
    }
    d.check_digest(removals, additions).map_err(&damaged)?;
    if root != d.tree {
        return Err(damaged(format!(
            "it rebuilds tree {root}, not the commit's tree {}: refused",
            d.tree
        )));
    }
    // keep exactly the new nodes of the final tree: `built` holds the built
    // nodes of the final tree, not those of the trees between batches, nor
    // the single-child nodes the tree code stores above a root and skips
    let (mut mark, mut nodes) = (since, 0);
    let page_size = index.memory_limit().clamp(1, SORT_PAGE);
    loop {
        let page = w.objects_since(&d.ns, mark, page_size)?;
        let Some(&(last, _)) = page.last() else { break };
        for (_, id) in page {
            match built.get(&d.ns, &id)? {
                Some(info) => {
                    let info = info.into_owned();
                    index.insert(&d.ns, id, info)?;
                    nodes += 1;
                }
                None => w.delete_object(&d.ns, &id)?,
            }
        }
        mark = last;
    }
    Ok(Rebuilt { nodes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_blocks_round_trip_and_reject_damage() {
        let mut e = Encoder::new().unwrap();
        for p in [3u64, 4, 90, 1000] {
            e.remove(p).unwrap();
        }
        let keys: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("<http://g>\0<http://s{i:04}>\0<http://p>\0\"v\"").into_bytes())
            .collect();
        for k in &keys {
            e.add(k).unwrap();
        }
        let d = e
            .finish(
                "default",
                ObjectId([1; 32]),
                ObjectId([2; 32]),
                ObjectId([3; 32]),
                2000,
            )
            .unwrap();
        let back = Delta::decode(&d.encode()).unwrap();
        assert_eq!(back, d);
        back.check().unwrap();
        let rem: Vec<u64> = back.removals().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(rem, vec![3, 4, 90, 1000]);
        let add: Vec<Vec<u8>> = back.additions().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(add, keys);
        assert_eq!(back.count(), Some(2046));

        // positions outside the base, a wrong digest, truncation
        let mut small = d.clone();
        small.base_count = 1000;
        assert!(small.check().unwrap_err().contains("outside"));
        let mut bad = d.clone();
        bad.digest[0] ^= 1;
        assert!(bad.check().unwrap_err().contains("digest"));
        let mut more = d.clone();
        more.added += 1;
        assert!(more.check().is_err());
        let mut fewer = d.clone();
        fewer.added -= 1;
        assert!(fewer.check().is_err());
        let body = d.encode();
        for cut in [10, 60, 150, body.len() - 5] {
            assert!(
                Delta::decode(&body[..cut]).and_then(|d| d.check()).is_err(),
                "cut at {cut}"
            );
        }
    }
}
