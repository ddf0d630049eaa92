//! Quad sets as Prolly trees: sorted keys cut into chunks at content-defined
//! boundaries, each chunk an immutable object.
//!
//! A key ends a chunk when a seeded hash of it falls under `1/target` (or the
//! chunk grew too large), so boundaries depend only on the keys themselves:
//! the same set always yields the same root, an edit rewrites only the chunks
//! around it plus their ancestors, and two trees are compared by skipping
//! equal subtrees. Node layout: `FORMAT.md`.

use std::cmp::Ordering;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::Result;
use crate::id::ObjectId;
use crate::objects::ObjectSet;

/// Average entries per leaf.
const LEAF_TARGET: u64 = 64;
/// Average entries per internal node.
const INNER_TARGET: u64 = 32;
/// A chunk is cut after this many times its target, whatever the hashes say.
const MAX_FACTOR: usize = 8;
/// A chunk is cut once its keys reach this many bytes.
const MAX_BYTES: usize = 256 * 1024;
/// Fixed seed: changing it changes every tree, so it is part of the format.
const SEED: u64 = 0x5147_5452_4545_0001;

/// A child pointer of an internal node: the child's id and how many keys lie below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Child {
    pub id: ObjectId,
    pub count: u64,
}

/// One tree node. Leaves (level 0) hold keys; internal nodes hold the first key
/// of each child and the child pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub level: u8,
    pub keys: Keys,
    pub children: Vec<Child>,
}

/// The keys of a node, in order, packed in one buffer: a leaf holds dozens,
/// and one allocation per key made decoding and dropping nodes the bulk of
/// a large change's work.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keys {
    bytes: Vec<u8>,
    /// End of each key in `bytes`.
    ends: Vec<u32>,
}

impl Keys {
    pub fn new() -> Keys {
        Keys::default()
    }

    /// Room for `keys` keys of `bytes` bytes in all.
    pub fn with_capacity(keys: usize, bytes: usize) -> Keys {
        Keys {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(keys),
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.bytes[start..end])
    }

    pub fn first(&self) -> Option<&[u8]> {
        self.get(0)
    }

    pub fn last(&self) -> Option<&[u8]> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    pub fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        let end = u32::try_from(self.bytes.len()).expect("a node's keys stay far below 4 GiB");
        self.ends.push(end);
    }

    /// Total bytes of the keys.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn iter(&self) -> KeysIter<'_> {
        KeysIter {
            keys: self,
            front: 0,
            back: self.len(),
        }
    }

    /// The index of the first key for which `pred` is false (keys for which
    /// it holds must come first), as [`slice::partition_point`].
    pub fn partition_point(&self, mut pred: impl FnMut(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self[mid]) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

impl std::ops::Index<usize> for Keys {
    type Output = [u8];

    fn index(&self, i: usize) -> &[u8] {
        self.get(i).expect("key index in range")
    }
}

impl<'k> IntoIterator for &'k Keys {
    type Item = &'k [u8];
    type IntoIter = KeysIter<'k>;

    fn into_iter(self) -> KeysIter<'k> {
        self.iter()
    }
}

/// The keys of a [`Keys`], in order.
pub struct KeysIter<'k> {
    keys: &'k Keys,
    front: usize,
    back: usize,
}

impl<'k> Iterator for KeysIter<'k> {
    type Item = &'k [u8];

    fn next(&mut self) -> Option<&'k [u8]> {
        (self.front < self.back).then(|| {
            self.front += 1;
            &self.keys[self.front - 1]
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.back - self.front, Some(self.back - self.front))
    }
}

impl DoubleEndedIterator for KeysIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        (self.front < self.back).then(|| {
            self.back -= 1;
            &self.keys[self.back]
        })
    }
}

impl ExactSizeIterator for KeysIter<'_> {}

impl<K: AsRef<[u8]>> FromIterator<K> for Keys {
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Keys {
        let mut keys = Keys::new();
        for k in iter {
            keys.push(k.as_ref());
        }
        keys
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

impl Node {
    pub fn empty() -> Node {
        Node {
            level: 0,
            keys: Keys::new(),
            children: Vec::new(),
        }
    }

    pub fn is_leaf(&self) -> bool {
        self.level == 0
    }

    /// Approximate memory the decoded node holds (for cache budgets).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Node>()
            + self.keys.bytes()
            + 4 * self.keys.len()
            + std::mem::size_of::<Child>() * self.children.len()
    }

    /// Number of keys at or below this node.
    pub fn count(&self) -> u64 {
        if self.is_leaf() {
            self.keys.len() as u64
        } else {
            self.children.iter().map(|c| c.count).sum()
        }
    }

    fn value(&self, i: usize) -> Option<Child> {
        if self.is_leaf() {
            None
        } else {
            Some(self.children[i])
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.keys.bytes() + 2 * self.keys.len());
        out.push(self.level);
        put_varint(&mut out, self.keys.len() as u64);
        let mut prev: &[u8] = &[];
        for (i, key) in self.keys.iter().enumerate() {
            let shared = prev
                .iter()
                .zip(key.iter())
                .take_while(|(a, b)| a == b)
                .count();
            put_varint(&mut out, shared as u64);
            put_varint(&mut out, (key.len() - shared) as u64);
            out.extend_from_slice(&key[shared..]);
            if !self.is_leaf() {
                out.extend_from_slice(&self.children[i].id.0);
                put_varint(&mut out, self.children[i].count);
            }
            prev = key;
        }
        out
    }

    pub fn decode(buf: &[u8]) -> std::result::Result<Node, String> {
        // sized from the entry count and the encoded size (front coding
        // roughly halves the keys), so a node is usually one allocation
        let n = buf
            .get(1..)
            .and_then(|mut rest| get_varint(&mut rest).ok())
            .map_or(0, |n| (n as usize).min(buf.len()));
        let mut keys = Keys::with_capacity(n, buf.len() * 2);
        let mut children = Vec::new();
        let level = Node::scan(buf, |key, child| {
            keys.push(key);
            children.extend(child);
        })?;
        Ok(Node {
            level,
            keys,
            children,
        })
    }

    /// Check an encoded node as [`Node::decode`] does and hand each entry to
    /// `f` (the key in a reused buffer, and the child pointer of an internal
    /// node) without building the node: no allocation per key. Returns the
    /// node's level.
    pub fn scan(
        mut buf: &[u8],
        mut f: impl FnMut(&[u8], Option<Child>),
    ) -> std::result::Result<u8, String> {
        let level = *buf.first().ok_or("empty node")?;
        buf = &buf[1..];
        let n = get_varint(&mut buf)? as usize;
        if n > buf.len() {
            return Err(format!("node claims {n} entries in {} bytes", buf.len()));
        }
        let mut key: Vec<u8> = Vec::with_capacity(256);
        for i in 0..n {
            let shared = get_varint(&mut buf)? as usize;
            let len = get_varint(&mut buf)? as usize;
            if shared > key.len() || len > buf.len() {
                return Err("truncated key".into());
            }
            // the keys share `shared` bytes, so the new one is greater exactly
            // when its suffix is greater than the rest of the previous one
            if i > 0 && buf[..len] <= key[shared..] {
                return Err("keys out of order".into());
            }
            key.truncate(shared);
            key.extend_from_slice(&buf[..len]);
            buf = &buf[len..];
            let child = if level > 0 {
                if buf.len() < 32 {
                    return Err("truncated child id".into());
                }
                let id = ObjectId::from_slice(&buf[..32]).expect("32 bytes");
                buf = &buf[32..];
                let count = get_varint(&mut buf)?;
                Some(Child { id, count })
            } else {
                None
            };
            f(&key, child);
        }
        if !buf.is_empty() {
            return Err(format!("{} trailing bytes", buf.len()));
        }
        if level > 0 && n == 0 {
            return Err("empty internal node".into());
        }
        Ok(level)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> std::result::Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// Accumulates the entries of one level and cuts them into nodes.
struct Chunker {
    level: u8,
    keys: Keys,
    children: Vec<Child>,
}

impl Chunker {
    fn new(level: u8) -> Self {
        Chunker {
            level,
            keys: Keys::new(),
            children: Vec::new(),
        }
    }

    fn target(&self) -> u64 {
        if self.level == 0 {
            LEAF_TARGET
        } else {
            INNER_TARGET
        }
    }

    /// Add an entry; returns the finished node when this entry ends a chunk.
    fn push(&mut self, key: &[u8], child: Option<Child>) -> Option<Node> {
        let cut = self.keys.len() + 1 >= MAX_FACTOR * self.target() as usize
            || self.keys.bytes() + key.len() >= MAX_BYTES
            || xxh3_64_with_seed(key, SEED ^ u64::from(self.level)) < u64::MAX / self.target();
        self.keys.push(key);
        if let Some(c) = child {
            self.children.push(c);
        }
        if cut {
            self.take()
        } else {
            None
        }
    }

    fn take(&mut self) -> Option<Node> {
        if self.keys.is_empty() {
            return None;
        }
        Some(Node {
            level: self.level,
            keys: std::mem::take(&mut self.keys),
            children: std::mem::take(&mut self.children),
        })
    }
}

fn store_node(objs: &ObjectSet, node: Node) -> Result<(Vec<u8>, Child)> {
    let first = node.keys[0].to_vec();
    let count = node.count();
    let id = objs.put_node(node)?;
    Ok((first, Child { id, count }))
}

/// The id of the empty set's tree (an empty leaf), stored on demand.
pub fn empty(objs: &ObjectSet) -> Result<ObjectId> {
    objs.put_node(Node::empty())
}

/// Skip internal nodes with a single child: the canonical root is the lowest
/// level that has exactly one node.
fn collapse(objs: &ObjectSet, mut id: ObjectId) -> Result<ObjectId> {
    loop {
        let node = objs.node(&id)?;
        if node.is_leaf() || node.children.len() != 1 {
            return Ok(id);
        }
        id = node.children[0].id;
    }
}

/// Builds a tree bottom-up from keys given in strictly increasing order, in
/// memory proportional to the tree's height.
pub struct Builder<'o, 'a> {
    objs: &'o ObjectSet<'a>,
    base: u8,
    levels: Vec<(Chunker, u64)>,
    /// The last key pushed (reused: no allocation per key).
    last: Option<Vec<u8>>,
}

impl<'o, 'a> Builder<'o, 'a> {
    pub fn new(objs: &'o ObjectSet<'a>) -> Self {
        Self::at_level(objs, 0)
    }

    fn at_level(objs: &'o ObjectSet<'a>, base: u8) -> Self {
        Builder {
            objs,
            base,
            levels: Vec::new(),
            last: None,
        }
    }

    /// Add the next key (must be greater than the previous one).
    pub fn push(&mut self, key: Vec<u8>) -> Result<()> {
        match &mut self.last {
            Some(last) if last.as_slice() >= key.as_slice() => {
                return Err(crate::error::Error::Other(
                    "tree builder got keys out of order".into(),
                ));
            }
            Some(last) => {
                last.clear();
                last.extend_from_slice(&key);
            }
            None => self.last = Some(key.clone()),
        }
        self.push_at(0, &key, None)
    }

    fn push_at(&mut self, i: usize, key: &[u8], child: Option<Child>) -> Result<()> {
        if self.levels.len() == i {
            self.levels.push((Chunker::new(self.base + i as u8), 0));
        }
        if let Some(node) = self.levels[i].0.push(key, child) {
            self.levels[i].1 += 1;
            let (first, c) = store_node(self.objs, node)?;
            self.push_at(i + 1, &first, Some(c))?;
        }
        Ok(())
    }

    /// Close every level and return the root.
    pub fn finish(mut self) -> Result<ObjectId> {
        if self.levels.is_empty() {
            return empty(self.objs);
        }
        let mut i = 0;
        loop {
            let top = i + 1 == self.levels.len();
            if top && self.levels[i].1 == 0 {
                let node = self.levels[i].0.take().expect("top level holds entries");
                let (_, c) = store_node(self.objs, node)?;
                return collapse(self.objs, c.id);
            }
            if let Some(node) = self.levels[i].0.take() {
                self.levels[i].1 += 1;
                let (first, c) = store_node(self.objs, node)?;
                self.push_at(i + 1, &first, Some(c))?;
            }
            i += 1;
        }
    }
}

/// Build the tree of keys that are already sorted and unique.
pub fn build(objs: &ObjectSet, keys: impl IntoIterator<Item = Vec<u8>>) -> Result<ObjectId> {
    let mut b = Builder::new(objs);
    for k in keys {
        b.push(k)?;
    }
    b.finish()
}

/// A position in one level of a tree: the path from the root down.
struct Cursor<'o, 'a> {
    objs: &'o ObjectSet<'a>,
    stack: Vec<(Arc<Node>, usize)>,
}

impl<'o, 'a> Cursor<'o, 'a> {
    /// Position at the start of the `level` node whose range holds `key`.
    fn seek(objs: &'o ObjectSet<'a>, root: &Arc<Node>, level: u8, key: &[u8]) -> Result<Self> {
        let mut stack = Vec::new();
        let mut node = root.clone();
        while node.level > level {
            let idx = node.keys.partition_point(|k| k <= key).saturating_sub(1);
            let child = objs.node(&node.children[idx].id)?;
            stack.push((node, idx));
            node = child;
        }
        stack.push((node, 0));
        Ok(Cursor { objs, stack })
    }

    fn peek(&self) -> Option<(&[u8], Option<Child>)> {
        let (n, i) = self.stack.last().expect("cursor has a frame");
        (*i < n.keys.len()).then(|| (&n.keys[*i], n.value(*i)))
    }

    /// The node and index of the entry at the cursor (the key stays readable
    /// after the cursor moves on).
    fn current(&self) -> Option<(Arc<Node>, usize)> {
        let (n, i) = self.stack.last().expect("cursor has a frame");
        (*i < n.keys.len()).then(|| (n.clone(), *i))
    }

    fn at_node_start(&self) -> bool {
        self.stack.last().expect("frame").1 == 0
    }

    fn at_node_last(&self) -> bool {
        let (n, i) = self.stack.last().expect("frame");
        *i + 1 == n.keys.len()
    }

    fn advance(&mut self) -> Result<()> {
        let depth = self.stack.len() - 1;
        {
            let (n, i) = &mut self.stack[depth];
            *i += 1;
            if *i < n.keys.len() {
                return Ok(());
            }
        }
        let mut d = depth;
        loop {
            if d == 0 {
                return Ok(()); // exhausted: the last frame stays past its end
            }
            d -= 1;
            let (n, i) = &mut self.stack[d];
            if *i + 1 < n.keys.len() {
                *i += 1;
                break;
            }
        }
        for k in d..depth {
            let (n, i) = &self.stack[k];
            let child = self.objs.node(&n.children[*i].id)?;
            self.stack[k + 1] = (child, 0);
        }
        Ok(())
    }
}

/// A change to one entry of a level: `value` None deletes `key`.
#[derive(Debug, Clone)]
struct Edit {
    key: Vec<u8>,
    value: Option<Option<Child>>,
}

/// Nodes decoded ahead of a rewrite at a time (on every core; a window
/// bounds the memory they hold).
const READ_AHEAD: usize = 256;

/// Decode ahead the `level` nodes that `edits[from..]` fall in, up to
/// [`READ_AHEAD`] of them; returns the index of the first edit past them.
fn prefetch_targets(
    objs: &ObjectSet,
    root: &Arc<Node>,
    level: u8,
    edits: &[Edit],
    from: usize,
) -> Result<usize> {
    let mut ids: Vec<ObjectId> = Vec::with_capacity(READ_AHEAD);
    let mut i = from;
    while i < edits.len() {
        let mut node = root.clone();
        let id = loop {
            let idx = node
                .keys
                .partition_point(|k| k <= edits[i].key.as_slice())
                .saturating_sub(1);
            match node.children.get(idx) {
                Some(c) if node.level == level + 1 => break Some(c.id),
                Some(c) if node.level > level + 1 => node = objs.node(&c.id)?,
                // a malformed tree: the rewrite itself reports it
                _ => break None,
            }
        };
        let Some(id) = id else {
            i = edits.len();
            break;
        };
        if ids.last() != Some(&id) {
            if ids.len() == READ_AHEAD {
                break;
            }
            ids.push(id);
        }
        i += 1;
    }
    objs.prefetch_nodes(&ids)?;
    Ok(i)
}

/// Apply sorted edits to one level; returns the edits this makes to the level above.
fn rewrite_level(
    objs: &ObjectSet,
    root: &Arc<Node>,
    level: u8,
    edits: &[Edit],
) -> Result<Vec<Edit>> {
    let mut up: Vec<Edit> = Vec::new();
    let mut i = 0;
    let mut read_ahead = 0;
    while i < edits.len() {
        if i >= read_ahead && level < root.level {
            read_ahead = prefetch_targets(objs, root, level, edits, i)?;
        }
        let mut cur = Cursor::seek(objs, root, level, &edits[i].key)?;
        let mut chunker = Chunker::new(level);
        loop {
            let old = cur.current();
            let edit = edits.get(i);
            let order = match (&old, edit) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((n, j)), Some(e)) => n.keys[*j].cmp(e.key.as_slice()),
            };
            let mut emitted: Option<(&[u8], Option<Child>)> = None;
            let mut old_node_ended = false;
            if order != Ordering::Greater {
                let (n, j) = old.as_ref().expect("old entry");
                let (k, v) = (&n.keys[*j], n.value(*j));
                if cur.at_node_start() {
                    up.push(Edit {
                        key: k.to_vec(),
                        value: None,
                    });
                }
                old_node_ended = order == Ordering::Less && cur.at_node_last();
                cur.advance()?;
                if order == Ordering::Less {
                    emitted = Some((k, v));
                }
            }
            if order != Ordering::Less {
                let e = edit.expect("edit");
                i += 1;
                if let Some(v) = e.value {
                    emitted = Some((&e.key, v));
                }
            }
            let Some((k, v)) = emitted else { continue };
            if let Some(node) = chunker.push(k, v) {
                let (first, c) = store_node(objs, node)?;
                up.push(Edit {
                    key: first,
                    value: Some(Some(c)),
                });
                // Our cut and an old cut coincide: from here on the old nodes
                // are valid as they are, until the next edit's node.
                if old_node_ended {
                    let resync = match (edits.get(i), cur.peek()) {
                        (None, _) => true,
                        (Some(e), Some((next, _))) => e.key.as_slice() >= next,
                        (Some(_), None) => false,
                    };
                    if resync {
                        break;
                    }
                }
            }
        }
        if let Some(node) = chunker.take() {
            let (first, c) = store_node(objs, node)?;
            up.push(Edit {
                key: first,
                value: Some(Some(c)),
            });
        }
    }
    // A deleted first key may come back as a new node's first key: the insert wins.
    up.sort_by(|a, b| {
        a.key
            .cmp(&b.key)
            .then(a.value.is_some().cmp(&b.value.is_some()))
    });
    let mut merged: Vec<Edit> = Vec::with_capacity(up.len());
    for e in up {
        match merged.last_mut() {
            Some(last) if last.key == e.key => *last = e,
            _ => merged.push(e),
        }
    }
    Ok(merged)
}

/// Apply additions and removals (each sorted, unique) to the tree at `root`.
/// Removing an absent key or adding a present one is a no-op.
pub fn apply(
    objs: &ObjectSet,
    root: ObjectId,
    add: &[Vec<u8>],
    remove: &[Vec<u8>],
) -> Result<ObjectId> {
    let mut edits: Vec<Edit> = Vec::with_capacity(add.len() + remove.len());
    let (mut a, mut r) = (0, 0);
    while a < add.len() || r < remove.len() {
        let take_add = r == remove.len() || (a < add.len() && add[a] <= remove[r]);
        if take_add {
            // adding and removing the same key in one change: the addition wins
            if r < remove.len() && add[a] == remove[r] {
                r += 1;
            }
            edits.push(Edit {
                key: add[a].clone(),
                value: Some(None),
            });
            a += 1;
        } else {
            edits.push(Edit {
                key: remove[r].clone(),
                value: None,
            });
            r += 1;
        }
    }
    if edits.is_empty() {
        return Ok(root);
    }
    let root_node = objs.node(&root)?;
    let top = root_node.level;
    for level in 0..top {
        edits = rewrite_level(objs, &root_node, level, &edits)?;
    }
    let up = rewrite_level(objs, &root_node, top, &edits)?;
    let new_top: Vec<(Vec<u8>, Child)> = up
        .into_iter()
        .filter_map(|e| e.value.flatten().map(|c| (e.key, c)))
        .collect();
    match new_top.len() {
        0 => empty(objs),
        1 => collapse(objs, new_top[0].1.id),
        _ => {
            let mut b = Builder::at_level(objs, top + 1);
            for (k, c) in new_top {
                b.push_at(0, &k, Some(c))?;
            }
            b.finish()
        }
    }
}

/// Number of keys in the tree.
pub fn count(objs: &ObjectSet, root: &ObjectId) -> Result<u64> {
    Ok(objs.node(root)?.count())
}

/// Keys of the tree starting with `prefix`, in order.
pub struct Scan<'o, 'a> {
    cursor: Option<Cursor<'o, 'a>>,
    prefix: Vec<u8>,
}

impl<'o, 'a> Scan<'o, 'a> {
    pub fn new(objs: &'o ObjectSet<'a>, root: &ObjectId, prefix: &[u8]) -> Result<Self> {
        let root = objs.node(root)?;
        let mut cursor = Cursor::seek(objs, &root, 0, prefix)?;
        while let Some((k, _)) = cursor.peek() {
            if k >= prefix {
                break;
            }
            cursor.advance()?;
        }
        Ok(Scan {
            cursor: Some(cursor),
            prefix: prefix.to_vec(),
        })
    }
}

impl Iterator for Scan<'_, '_> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        let cursor = self.cursor.as_mut()?;
        let key = match cursor.peek() {
            Some((k, _)) if k.starts_with(&self.prefix) => k.to_vec(),
            _ => {
                self.cursor = None;
                return None;
            }
        };
        if let Err(e) = cursor.advance() {
            self.cursor = None;
            return Some(Err(e));
        }
        Some(Ok(key))
    }
}

/// One difference between two trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(Vec<u8>),
    Removed(Vec<u8>),
}

impl Change {
    pub fn key(&self) -> &[u8] {
        match self {
            Change::Added(k) | Change::Removed(k) => k,
        }
    }
}

enum Item {
    Sub(u8, ObjectId),
    Key(Vec<u8>),
}

/// The changes from tree `a` to tree `b`, in key order; equal subtrees are skipped
/// without being read, so the cost follows the size of the difference.
pub struct Diff<'o, 'a> {
    objs: &'o ObjectSet<'a>,
    a: Vec<Item>,
    b: Vec<Item>,
}

impl<'o, 'a> Diff<'o, 'a> {
    pub fn new(objs: &'o ObjectSet<'a>, a: &ObjectId, b: &ObjectId) -> Result<Self> {
        let la = objs.node(a)?.level;
        let lb = objs.node(b)?.level;
        Ok(Diff {
            objs,
            a: vec![Item::Sub(la, *a)],
            b: vec![Item::Sub(lb, *b)],
        })
    }

    fn expand(objs: &ObjectSet, side: &mut Vec<Item>) -> Result<()> {
        let Some(Item::Sub(_, id)) = side.pop() else {
            return Ok(());
        };
        let node = objs.node(&id)?;
        if node.is_leaf() {
            side.extend(node.keys.iter().rev().map(|k| Item::Key(k.to_vec())));
        } else {
            side.extend(
                node.children
                    .iter()
                    .rev()
                    .map(|c| Item::Sub(node.level - 1, c.id)),
            );
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Change>> {
        loop {
            match (self.a.last(), self.b.last()) {
                (None, None) => return Ok(None),
                (Some(Item::Sub(la, x)), Some(Item::Sub(lb, y))) => {
                    if x == y {
                        self.a.pop();
                        self.b.pop();
                    } else {
                        let (la, lb) = (*la, *lb);
                        if la >= lb {
                            Self::expand(self.objs, &mut self.a)?;
                        }
                        if lb >= la {
                            Self::expand(self.objs, &mut self.b)?;
                        }
                    }
                }
                (Some(Item::Sub(..)), _) => Self::expand(self.objs, &mut self.a)?,
                (_, Some(Item::Sub(..))) => Self::expand(self.objs, &mut self.b)?,
                (Some(Item::Key(x)), Some(Item::Key(y))) => match x.cmp(y) {
                    Ordering::Equal => {
                        self.a.pop();
                        self.b.pop();
                    }
                    Ordering::Less => {
                        let Some(Item::Key(k)) = self.a.pop() else {
                            unreachable!()
                        };
                        return Ok(Some(Change::Removed(k)));
                    }
                    Ordering::Greater => {
                        let Some(Item::Key(k)) = self.b.pop() else {
                            unreachable!()
                        };
                        return Ok(Some(Change::Added(k)));
                    }
                },
                (Some(Item::Key(_)), None) => {
                    let Some(Item::Key(k)) = self.a.pop() else {
                        unreachable!()
                    };
                    return Ok(Some(Change::Removed(k)));
                }
                (None, Some(Item::Key(_))) => {
                    let Some(Item::Key(k)) = self.b.pop() else {
                        unreachable!()
                    };
                    return Ok(Some(Change::Added(k)));
                }
            }
        }
    }
}

impl Iterator for Diff<'_, '_> {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step().transpose()
    }
}

/// Every object id reachable from `root` (the root included).
pub fn reachable(
    objs: &ObjectSet,
    root: &ObjectId,
    out: &mut std::collections::HashSet<ObjectId>,
) -> Result<()> {
    if !out.insert(*root) {
        return Ok(());
    }
    let node = objs.node(root)?;
    for c in &node.children {
        reachable(objs, &c.id, out)?;
    }
    Ok(())
}

/// A leaf that one tree has and the other lacks (see [`divergence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafRef {
    pub id: ObjectId,
    /// Position (0-based) of the leaf's first key among all keys of its tree.
    pub start: u64,
    /// Keys in the leaf, as its parent records.
    pub count: u64,
}

/// The nodes two trees do not share; see [`divergence`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Divergence {
    /// Every node reachable from `a` but not from `b` (internal nodes and
    /// leaves), top level first, in key order within a level.
    pub only_a: Vec<ObjectId>,
    /// Every node reachable from `b` but not from `a`, likewise.
    pub only_b: Vec<ObjectId>,
    /// The leaves among `only_a`, in key order, with where they sit in `a`.
    pub leaves_a: Vec<LeafRef>,
    /// The leaves among `only_b`, in key order, with where they sit in `b`.
    pub leaves_b: Vec<LeafRef>,
    /// Internal nodes (and roots) read to find them.
    pub nodes_read: u64,
}

/// The nodes of tree `a` that tree `b` lacks and the other way round,
/// reading only internal nodes (a leaf is known by its parent's entry), so
/// the cost follows the number of internal nodes the change touched.
///
/// Exact because a node has one parent in a tree: going down level by level,
/// a child of a node only one side has is shared exactly when it is also a
/// child of a node only the other side has (or that side's root). The keys
/// that differ are the keys of `leaves_a` minus those of `leaves_b` (removed)
/// and the other way round (added): every other leaf is in both trees.
pub fn divergence(objs: &ObjectSet, a: &ObjectId, b: &ObjectId) -> Result<Divergence> {
    let mut out = Divergence::default();
    if a == b {
        return Ok(out);
    }
    let ra = objs.node(a)?;
    let rb = objs.node(b)?;
    out.nodes_read = 2;
    let (ha, hb) = (ra.level, rb.level);
    let mut level = ha.max(hb);
    let root = |id: &ObjectId, n: &Node| LeafRef {
        id: *id,
        start: 0,
        count: n.count(),
    };
    // the nodes at `level` that may differ, in key order
    let mut cand_a: Vec<LeafRef> = (ha == level).then(|| root(a, &ra)).into_iter().collect();
    let mut cand_b: Vec<LeafRef> = (hb == level).then(|| root(b, &rb)).into_iter().collect();
    loop {
        out.only_a.extend(cand_a.iter().map(|c| c.id));
        out.only_b.extend(cand_b.iter().map(|c| c.id));
        if level == 0 {
            out.leaves_a = cand_a;
            out.leaves_b = cand_b;
            return Ok(out);
        }
        let below = level - 1;
        // The children of the differing nodes, merged in key order: a child
        // both sides have sits at the same first key on both (its keys fix its
        // place), so it is dropped there; the rest differ. Only those are kept.
        let mut sa = Children::new(
            objs,
            &cand_a,
            level,
            (ha == below).then(|| (root(a, &ra), ra.clone())),
        );
        let mut sb = Children::new(
            objs,
            &cand_b,
            level,
            (hb == below).then(|| (root(b, &rb), rb.clone())),
        );
        let (mut next_a, mut next_b) = (Vec::new(), Vec::new());
        loop {
            let step = match (sa.peek()?, sb.peek()?) {
                (None, None) => break,
                (Some((_, x)), None) => (Some(x), None, true, false),
                (None, Some((_, y))) => (None, Some(y), false, true),
                (Some((kx, x)), Some((ky, y))) => match kx.cmp(ky) {
                    Ordering::Less => (Some(x), None, true, false),
                    Ordering::Greater => (None, Some(y), false, true),
                    Ordering::Equal if x.id == y.id => (None, None, true, true),
                    Ordering::Equal => (Some(x), Some(y), true, true),
                },
            };
            let (keep_a, keep_b, next_of_a, next_of_b) = step;
            next_a.extend(keep_a);
            next_b.extend(keep_b);
            if next_of_a {
                sa.advance();
            }
            if next_of_b {
                sb.advance();
            }
        }
        out.nodes_read += sa.read + sb.read;
        cand_a = next_a;
        cand_b = next_b;
        level = below;
    }
}

/// The children of some nodes at one level, in key order, each with its
/// first key as its parent records it and where it sits; or one tree's root,
/// when that tree's top is the level below.
struct Children<'c, 'o, 'a> {
    objs: &'o ObjectSet<'a>,
    parents: std::slice::Iter<'c, LeafRef>,
    level: u8,
    cur: Option<(Arc<Node>, usize, u64)>,
    root: Option<(LeafRef, Arc<Node>)>,
    read: u64,
}

impl<'c, 'o, 'a> Children<'c, 'o, 'a> {
    fn new(
        objs: &'o ObjectSet<'a>,
        parents: &'c [LeafRef],
        level: u8,
        root: Option<(LeafRef, Arc<Node>)>,
    ) -> Self {
        Children {
            objs,
            parents: parents.iter(),
            level,
            cur: None,
            root,
            read: 0,
        }
    }

    fn peek(&mut self) -> Result<Option<(&[u8], LeafRef)>> {
        if let Some((r, n)) = &self.root {
            return Ok(Some((n.keys.first().unwrap_or(&[]), *r)));
        }
        while !matches!(&self.cur, Some((n, i, _)) if *i < n.children.len()) {
            let Some(p) = self.parents.next() else {
                return Ok(None);
            };
            self.read += 1;
            let node = self.objs.node(&p.id)?;
            if node.level != self.level || node.children.len() != node.keys.len() {
                return Err(crate::error::Error::CorruptObject {
                    ns: self.objs.ns().to_string(),
                    id: p.id,
                    reason: format!(
                        "expected an internal node at level {}, found level {} with {} children for {} keys",
                        self.level,
                        node.level,
                        node.children.len(),
                        node.keys.len()
                    ),
                });
            }
            self.cur = Some((node, 0, p.start));
        }
        let (n, i, start) = self.cur.as_ref().expect("a current parent");
        let c = n.children[*i];
        Ok(Some((
            &n.keys[*i],
            LeafRef {
                id: c.id,
                start: *start,
                count: c.count,
            },
        )))
    }

    fn advance(&mut self) {
        if self.root.take().is_some() {
            return;
        }
        if let Some((n, i, start)) = &mut self.cur {
            *start += n.children[*i].count;
            *i += 1;
        }
    }
}

/// The keys at positions `ordinals` (0-based, strictly increasing) of the
/// tree at `root`, found through the key counts internal nodes carry.
pub fn keys_at(objs: &ObjectSet, root: &ObjectId, ordinals: &[u64]) -> Result<Vec<Vec<u8>>> {
    /// Find the leaf of each ordinal through the internal nodes: (leaf, its
    /// first ordinal, how many of `ordinals` it holds).
    fn locate(
        objs: &ObjectSet,
        id: &ObjectId,
        start: u64,
        ordinals: &[u64],
        out: &mut Vec<(ObjectId, u64, usize)>,
    ) -> Result<()> {
        let node = objs.node(id)?;
        if node.is_leaf() {
            out.push((*id, start, ordinals.len()));
            return Ok(());
        }
        let mut rest = ordinals;
        let mut start = start;
        for child in &node.children {
            let n = rest.partition_point(|o| *o < start + child.count);
            if n > 0 {
                if node.level == 1 {
                    out.push((child.id, start, n));
                } else {
                    locate(objs, &child.id, start, &rest[..n], out)?;
                }
                rest = &rest[n..];
            }
            if rest.is_empty() {
                break;
            }
            start += child.count;
        }
        if !rest.is_empty() {
            return Err(crate::error::Error::CorruptObject {
                ns: objs.ns().to_string(),
                id: *id,
                reason: format!("no key at position {} below this node", rest[0]),
            });
        }
        Ok(())
    }
    if ordinals.windows(2).any(|w| w[0] >= w[1]) {
        return Err(crate::error::Error::Other(
            "key positions must be strictly increasing".into(),
        ));
    }
    let mut leaves = Vec::new();
    if !ordinals.is_empty() {
        locate(objs, root, 0, ordinals, &mut leaves)?;
    }
    let mut out = Vec::with_capacity(ordinals.len());
    let mut rest = ordinals;
    for window in leaves.chunks(READ_AHEAD) {
        let ids: Vec<ObjectId> = window.iter().map(|(id, _, _)| *id).collect();
        objs.prefetch_nodes(&ids)?;
        for (id, start, n) in window {
            let node = objs.node(id)?;
            for o in &rest[..*n] {
                let key = node
                    .keys
                    .get((o - start) as usize)
                    .filter(|_| node.is_leaf())
                    .ok_or_else(|| crate::error::Error::CorruptObject {
                        ns: objs.ns().to_string(),
                        id: *id,
                        reason: format!("leaf holds no key at position {o}"),
                    })?;
                out.push(key.to_vec());
            }
            rest = &rest[*n..];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Db;
    use std::collections::BTreeSet;

    fn key(i: u64) -> Vec<u8> {
        format!("<http://example.org/s{i:08}>\0<http://p>\0\"v\"").into_bytes()
    }

    fn with_objs(f: impl FnOnce(&ObjectSet)) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::create(dir.path(), "test", "now").unwrap();
        let objs = ObjectSet::new(&db, "t");
        f(&objs);
    }

    fn all(objs: &ObjectSet, root: &ObjectId) -> Vec<Vec<u8>> {
        Scan::new(objs, root, b"")
            .unwrap()
            .map(|k| k.unwrap())
            .collect()
    }

    #[test]
    fn node_round_trip() {
        let n = Node {
            level: 1,
            keys: [b"abc", b"abd", b"b" as &[u8]].into_iter().collect(),
            children: (0..3)
                .map(|i| Child {
                    id: ObjectId([i; 32]),
                    count: 300 + i as u64,
                })
                .collect(),
        };
        assert_eq!(Node::decode(&n.encode()).unwrap(), n);
        assert!(Node::decode(&n.encode()[..10]).is_err());
    }

    #[test]
    fn decode_refuses_keys_out_of_order_or_repeated() {
        let leaf = |keys: &[&[u8]]| {
            // encoded by hand: encode itself does not check order
            let n = Node {
                level: 0,
                keys: keys.iter().map(|k| k.to_vec()).collect(),
                children: Vec::new(),
            };
            Node::decode(&n.encode())
        };
        assert!(leaf(&[b"a", b"ab", b"abc", b"b"]).is_ok());
        for bad in [
            &[b"ab" as &[u8], b"ab"][..],
            &[b"ab", b"a"],
            &[b"abc", b"abb"],
            &[b"b", b"a"],
            &[b"a", b"c", b"b"],
        ] {
            let err = leaf(bad).unwrap_err();
            assert!(err.contains("out of order"), "{bad:?}: {err}");
        }
        let empty_inner = [1u8, 0];
        assert!(Node::decode(&empty_inner)
            .unwrap_err()
            .contains("empty internal"));
        let mut trailing = Node::empty().encode();
        trailing.push(7);
        assert!(Node::decode(&trailing).unwrap_err().contains("trailing"));
    }

    #[test]
    fn same_set_same_root_whatever_the_history() {
        with_objs(|objs| {
            let keys: Vec<_> = (0..5000).map(key).collect();
            let direct = build(objs, keys.clone()).unwrap();
            // grow the tree in uneven batches and shrink it again
            let mut root = empty(objs).unwrap();
            for chunk in keys.chunks(777) {
                root = apply(objs, root, chunk, &[]).unwrap();
            }
            assert_eq!(root, direct);
            assert_eq!(count(objs, &root).unwrap(), 5000);
            let evens: Vec<_> = (0..5000).filter(|i| i % 2 == 0).map(key).collect();
            let odds: Vec<_> = (0..5000).filter(|i| i % 2 == 1).map(key).collect();
            let shrunk = apply(objs, root, &[], &odds).unwrap();
            assert_eq!(shrunk, build(objs, evens.clone()).unwrap());
            assert_eq!(all(objs, &shrunk), evens);
            let gone = apply(objs, shrunk, &[], &evens).unwrap();
            assert_eq!(gone, empty(objs).unwrap());
        });
    }

    #[test]
    fn random_edits_match_rebuild() {
        with_objs(|objs| {
            let mut set: BTreeSet<Vec<u8>> = (0..3000).map(|i| key(i * 3)).collect();
            let mut root = build(objs, set.iter().cloned()).unwrap();
            let mut x: u64 = 12345;
            let mut rnd = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            for round in 0..40 {
                let n = 1 + rnd() % if round % 5 == 0 { 400 } else { 8 };
                let mut add = BTreeSet::new();
                let mut rem = BTreeSet::new();
                for _ in 0..n {
                    let k = key(rnd() % 12000);
                    if rnd() % 2 == 0 {
                        add.insert(k);
                    } else {
                        rem.insert(k);
                    }
                }
                let add: Vec<_> = add.into_iter().collect();
                let rem: Vec<_> = rem.into_iter().filter(|k| !add.contains(k)).collect();
                root = apply(objs, root, &add, &rem).unwrap();
                for k in &rem {
                    set.remove(k);
                }
                set.extend(add);
                assert_eq!(
                    root,
                    build(objs, set.iter().cloned()).unwrap(),
                    "round {round}"
                );
            }
            assert_eq!(all(objs, &root), set.iter().cloned().collect::<Vec<_>>());
        });
    }

    #[test]
    fn diff_lists_exact_changes() {
        with_objs(|objs| {
            let a_keys: Vec<_> = (0..4000).map(key).collect();
            let a = build(objs, a_keys.clone()).unwrap();
            let add = vec![key(5000), key(6000)];
            let rem = vec![key(10), key(3999)];
            let b = apply(objs, a, &add, &rem).unwrap();
            let changes: Vec<_> = Diff::new(objs, &a, &b)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            assert_eq!(
                changes,
                vec![
                    Change::Removed(key(10)),
                    Change::Removed(key(3999)),
                    Change::Added(key(5000)),
                    Change::Added(key(6000)),
                ]
            );
            assert_eq!(Diff::new(objs, &a, &a).unwrap().count(), 0);
        });
    }

    #[test]
    fn divergence_names_exactly_the_unshared_nodes() {
        with_objs(|objs| {
            let all = |root: &ObjectId| {
                let mut s = std::collections::HashSet::new();
                reachable(objs, root, &mut s).unwrap();
                s
            };
            let base: BTreeSet<Vec<u8>> = (0..6000).map(|i| key(i * 2)).collect();
            let a = build(objs, base.iter().cloned()).unwrap();
            type Keys = Vec<Vec<u8>>;
            let cases: Vec<(Keys, Keys)> = vec![
                (vec![key(1), key(7001), key(11999)], vec![key(0), key(5000)]),
                ((0..3000).map(|i| key(i * 4 + 1)).collect(), vec![]),
                (vec![], (0..5990).map(|i| key(i * 2)).collect()), // much lower tree
                ((20000..40000).map(key).collect(), vec![]),       // taller tree
                (vec![], vec![]),
            ];
            for (n, (add, rem)) in cases.into_iter().enumerate() {
                let b = apply(objs, a, &add, &rem).unwrap();
                let d = divergence(objs, &a, &b).unwrap();
                let (ra, rb) = (all(&a), all(&b));
                let only_a: std::collections::HashSet<_> = ra.difference(&rb).copied().collect();
                let only_b: std::collections::HashSet<_> = rb.difference(&ra).copied().collect();
                assert_eq!(
                    d.only_a
                        .iter()
                        .copied()
                        .collect::<std::collections::HashSet<_>>(),
                    only_a,
                    "case {n}"
                );
                assert_eq!(
                    d.only_b
                        .iter()
                        .copied()
                        .collect::<std::collections::HashSet<_>>(),
                    only_b,
                    "case {n}"
                );
                assert_eq!(d.only_a.len(), only_a.len(), "case {n}: no repeats");
                // the keys of the unshared leaves differ exactly by the change
                let keys = |leaves: &[LeafRef], root: &ObjectId| -> BTreeSet<Vec<u8>> {
                    let mut out = BTreeSet::new();
                    for l in leaves {
                        let node = objs.node(&l.id).unwrap();
                        assert!(node.is_leaf());
                        assert_eq!(node.count(), l.count);
                        let at: Vec<u64> = (l.start..l.start + l.count).collect();
                        let all: Vec<Vec<u8>> = node.keys.iter().map(<[u8]>::to_vec).collect();
                        assert_eq!(keys_at(objs, root, &at).unwrap(), all, "case {n}");
                        out.extend(all);
                    }
                    out
                };
                let ka = keys(&d.leaves_a, &a);
                let kb = keys(&d.leaves_b, &b);
                let removed: BTreeSet<_> = ka.difference(&kb).cloned().collect();
                let added: BTreeSet<_> = kb.difference(&ka).cloned().collect();
                let want_rem: BTreeSet<_> =
                    rem.iter().filter(|k| base.contains(*k)).cloned().collect();
                let want_add: BTreeSet<_> =
                    add.iter().filter(|k| !base.contains(*k)).cloned().collect();
                assert_eq!(removed, want_rem, "case {n}");
                assert_eq!(added, want_add, "case {n}");
            }
            // a tree that is one of the other's subtrees: the merge by key
            // finds the shared node below the taller tree's top
            let mut first = objs.node(&a).unwrap();
            while !first.is_leaf() {
                first = objs.node(&first.children[0].id).unwrap();
            }
            let sub = build(objs, first.keys.iter().map(<[u8]>::to_vec)).unwrap();
            let (ra, rs) = (all(&a), all(&sub));
            assert!(ra.is_superset(&rs), "the test needs a shared subtree");
            for (x, y) in [(a, sub), (sub, a)] {
                let d = divergence(objs, &x, &y).unwrap();
                let (rx, ry) = (all(&x), all(&y));
                let set =
                    |v: &[ObjectId]| v.iter().copied().collect::<std::collections::HashSet<_>>();
                assert_eq!(set(&d.only_a), rx.difference(&ry).copied().collect());
                assert_eq!(set(&d.only_b), ry.difference(&rx).copied().collect());
            }
            assert!(keys_at(objs, &a, &[5, 3]).is_err());
            assert!(keys_at(objs, &a, &[6000]).is_err());
            assert_eq!(
                keys_at(objs, &a, &[0, 5999]).unwrap(),
                vec![key(0), key(11998)]
            );
        });
    }

    #[test]
    fn scan_by_prefix() {
        with_objs(|objs| {
            let root = build(objs, (0..1000).map(key)).unwrap();
            let hits: Vec<_> = Scan::new(objs, &root, b"<http://example.org/s0000012")
                .unwrap()
                .map(|k| k.unwrap())
                .collect();
            assert_eq!(hits, (120..130).map(key).collect::<Vec<_>>());
        });
    }
}
