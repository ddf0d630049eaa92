//! Object-id indexes: which objects a backup chain holds.
//!
//! Every stream ends with an index section listing, in (namespace, id)
//! order, the objects it added and the ones it recorded as deleted (and,
//! since format 2, the namespaces it reset and the trees its delta records
//! rebuild). The set of objects a chain holds is the merge of its members'
//! indexes, where the newest entry for an id decides; a tree entry stands for
//! the nodes of the tree that its base tree lacks, which the store being
//! backed up names (see [`ChainSet::build`]). An incremental backup streams the store's
//! objects in the same order beside that set and keeps only the difference,
//! so it is exact (content addressing) and needs memory for one entry per
//! chain member, whatever the store's size. Indexes are spooled to temporary
//! files first, so a remote target is read once, sequentially.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::io::{BufReader, BufWriter, Seek, Write};

use qg_store::objects::ObjectSet;
use qg_store::snapshot::Snapshot;
use qg_store::{tree, ObjectId};

use crate::catalog::stream_name;
use crate::error::{Error, Result};
use crate::format::{IndexEntry, IndexOp, Record, StreamReader};
use crate::keys::Keyring;
use crate::manifest::Manifest;
use crate::target::Target;

/// Index entries written to a temporary file, then read back in order.
pub struct Spool {
    out: BufWriter<std::fs::File>,
    pub entries: u64,
}

impl Spool {
    pub fn new() -> Result<Spool> {
        let f = tempfile::tempfile().map_err(|e| {
            Error::io(
                "create a temporary index file in",
                std::env::temp_dir().display(),
                e,
            )
        })?;
        Ok(Spool {
            out: BufWriter::with_capacity(256 << 10, f),
            entries: 0,
        })
    }

    pub fn push(&mut self, e: &IndexEntry) -> Result<()> {
        let mut buf = Vec::with_capacity(e.ns.len() + 35);
        e.encode(&mut buf);
        self.out
            .write_all(&buf)
            .map_err(|e| Error::io("write", "a temporary index file", e))?;
        self.entries += 1;
        Ok(())
    }

    /// Read the entries back, in the order they were pushed.
    pub fn reader(self) -> Result<SpoolReader> {
        let mut f = self
            .out
            .into_inner()
            .map_err(|e| Error::io("write", "a temporary index file", e.into_error()))?;
        f.rewind()
            .map_err(|e| Error::io("rewind", "a temporary index file", e))?;
        Ok(SpoolReader {
            inp: BufReader::with_capacity(64 << 10, f),
        })
    }
}

pub struct SpoolReader {
    inp: BufReader<std::fs::File>,
}

impl Iterator for SpoolReader {
    type Item = Result<IndexEntry>;

    fn next(&mut self) -> Option<Result<IndexEntry>> {
        IndexEntry::read_from(&mut self.inp)
            .map_err(|e| Error::io("read", "a temporary index file", e))
            .transpose()
    }
}

/// Memory for a full backup's index before sorted runs spill to temporary
/// files (keys of about 40 bytes).
const SORT_MEMORY: usize = 16 << 20;

/// Object additions pushed in any order (a full backup reads objects in
/// storage order), read back in (namespace, id) order through the store's
/// external sort. Keys are `ns NUL id`: namespace names hold no NUL, so byte
/// order is (namespace, id) order.
pub struct SortedSpool {
    sorter: qg_store::sort::Sorter,
    pub entries: u64,
}

impl Default for SortedSpool {
    fn default() -> SortedSpool {
        SortedSpool::with_memory(SORT_MEMORY)
    }
}

impl SortedSpool {
    pub fn new() -> SortedSpool {
        SortedSpool::default()
    }

    fn with_memory(bytes: usize) -> SortedSpool {
        SortedSpool {
            sorter: qg_store::sort::Sorter::new(bytes),
            entries: 0,
        }
    }

    /// Object `id` of namespace `ns` is added.
    pub fn push(&mut self, ns: &str, id: ObjectId) -> Result<()> {
        let mut key = Vec::with_capacity(ns.len() + 33);
        key.extend_from_slice(ns.as_bytes());
        key.push(0);
        key.extend_from_slice(&id.0);
        self.entries += 1;
        Ok(self.sorter.push(key)?)
    }

    /// The entries in (namespace, id) order.
    pub fn reader(self) -> Result<EntryReader> {
        Ok(Box::new(self.sorter.finish()?.map(|key| {
            let key = key?;
            let split = key.len().saturating_sub(33);
            match (
                std::str::from_utf8(&key[..split]),
                ObjectId::from_slice(&key[split + 1..]),
            ) {
                (Ok(ns), Some(id)) if key[split] == 0 => Ok(IndexEntry::add(ns, id)),
                _ => Err(Error::io(
                    "read",
                    "a temporary index file",
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed entry"),
                )),
            }
        })))
    }
}

/// A tree a delta record rebuilt (a tree index entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeRef {
    pub ns: String,
    /// The delta's base: the tree of the commit's first parent.
    pub base: ObjectId,
    pub tree: ObjectId,
}

/// What one backup's index says about the chain's objects.
pub struct MemberIndex {
    /// Object additions and deletions, in (namespace, id) order.
    pub spool: Spool,
    /// Trees its delta records rebuilt, in stream order.
    pub trees: Vec<TreeRef>,
    /// Namespaces it reset.
    pub resets: Vec<String>,
}

/// Copy the index section of backup `m` into a spool, checking every record
/// and the order of the entries (resets, then additions and deletions in
/// (namespace, id) order, then trees).
pub fn fetch(target: &Target, m: &Manifest, keys: &Keyring) -> Result<MemberIndex> {
    let cipher = match &m.encryption {
        Some(info) => Some(keys.master(info, &m.id)?.frames(info, &m.id)),
        None => None,
    };
    let inp = target.open_read(&stream_name(&m.id), m.index.offset)?;
    let mut r = StreamReader::resume(inp, &m.id, m.index, cipher);
    let mut out = MemberIndex {
        spool: Spool::new()?,
        trees: Vec::new(),
        resets: Vec::new(),
    };
    let mut last: Option<(String, ObjectId)> = None;
    let mut phase = 0u8;
    while let Some(rec) = r.next_record()? {
        match rec {
            Record::Index(entries) => {
                for e in entries {
                    let p = match e.op {
                        IndexOp::Reset => 0,
                        IndexOp::Add | IndexOp::Delete => 1,
                        IndexOp::Tree => 2,
                    };
                    if p != 1 && m.format < 2 {
                        return Err(Error::damaged(
                            &m.id,
                            "its index holds format-2 entries in a format-1 backup",
                        ));
                    }
                    if p < phase {
                        return Err(Error::damaged(
                            &m.id,
                            "its index entries are not in section order",
                        ));
                    }
                    phase = p;
                    match e.op {
                        IndexOp::Reset => {
                            if out.resets.last().is_some_and(|l| *l >= e.ns) {
                                return Err(Error::damaged(
                                    &m.id,
                                    "its index resets are not in namespace order",
                                ));
                            }
                            out.resets.push(e.ns);
                        }
                        IndexOp::Add | IndexOp::Delete => {
                            let key = (e.ns.clone(), e.id);
                            if last.as_ref().is_some_and(|l| *l >= key) {
                                return Err(Error::damaged(
                                    &m.id,
                                    "its index is not in (namespace, id) order",
                                ));
                            }
                            last = Some(key);
                            out.spool.push(&e)?;
                        }
                        IndexOp::Tree => out.trees.push(TreeRef {
                            ns: e.ns,
                            base: e.base,
                            tree: e.id,
                        }),
                    }
                }
            }
            Record::Trailer(t) => {
                if t.id != m.id || t.index != m.index {
                    return Err(Error::damaged(
                        &m.id,
                        "its trailer does not match its manifest",
                    ));
                }
            }
            other => {
                return Err(Error::damaged(
                    &m.id,
                    format!(
                        "a {} record inside its index section",
                        other.record_type().name()
                    ),
                ))
            }
        }
    }
    r.finish()?;
    Ok(out)
}

/// (namespace, id, member rank, reader, op): the merge's order.
type HeapEntry = (String, ObjectId, usize, usize, IndexOp);

/// Index entries, one at a time.
pub type EntryReader = Box<dyn Iterator<Item = Result<IndexEntry>>>;

/// How [`ChainSet::build`] went.
#[derive(Debug, Clone, Default)]
pub struct Expansion {
    /// Tree entries expanded from the store, and the nodes they named.
    pub trees: u64,
    pub nodes: u64,
    /// Namespaces whose chain entries could not be expanded (they need a reset),
    /// with why.
    pub resets: Vec<(String, String)>,
}

/// The objects a chain holds, in (namespace, id) order: a k-way merge of the
/// members' indexes (oldest first), newest entry per id winning, entries
/// older than their namespace's latest reset left out. A tree entry stands
/// for the nodes of its tree that its base lacks: the store being backed up
/// names them (its nodes are immutable), reading only internal nodes.
pub struct ChainSet {
    readers: Vec<(usize, EntryReader)>,
    heap: BinaryHeap<Reverse<HeapEntry>>,
    reset_at: HashMap<String, usize>,
}

impl ChainSet {
    /// The set of `members`' objects, tree entries expanded through `snap`;
    /// `plaintext` is the namespaces the store has now that are not
    /// encrypted. A tree the store can no longer expand (its namespace is
    /// gone or encrypted, or a node is missing) resets its namespace: the
    /// chain then holds nothing of it, and the backup sends it whole.
    pub fn build(
        members: Vec<MemberIndex>,
        snap: &Snapshot,
        plaintext: &BTreeSet<String>,
    ) -> Result<(ChainSet, Expansion)> {
        let mut set = ChainSet::empty();
        let mut exp = Expansion::default();
        for (i, m) in members.iter().enumerate() {
            for ns in &m.resets {
                set.reset_at.insert(ns.clone(), i);
            }
        }
        let now = members.len();
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        let mut expansions = Vec::new();
        for (i, m) in members.iter().enumerate() {
            for t in &m.trees {
                if set.reset_at.get(&t.ns).is_some_and(|r| *r > i) || failed.contains_key(&t.ns) {
                    continue;
                }
                if !plaintext.contains(&t.ns) {
                    failed.insert(
                        t.ns.clone(),
                        "the namespace is gone or now encrypted".into(),
                    );
                    continue;
                }
                let objs = ObjectSet::new(snap.db(), &t.ns);
                match tree::divergence(&objs, &t.base, &t.tree) {
                    Ok(d) => {
                        let mut ids = d.only_b;
                        ids.sort();
                        ids.dedup();
                        exp.trees += 1;
                        exp.nodes += ids.len() as u64;
                        let mut spool = Spool::new()?;
                        for id in ids {
                            spool.push(&IndexEntry::add(&t.ns, id))?;
                        }
                        expansions.push((i, spool));
                    }
                    Err(
                        e @ (qg_store::Error::MissingObject { .. }
                        | qg_store::Error::CorruptObject { .. }),
                    ) => {
                        failed.insert(
                            t.ns.clone(),
                            format!("tree {} of a delta cannot be expanded: {e}", t.tree),
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for (ns, why) in failed {
            set.reset_at.insert(ns.clone(), now);
            exp.resets.push((ns, why));
        }
        let mut readers: Vec<(usize, EntryReader)> = Vec::new();
        for (i, m) in members.into_iter().enumerate() {
            readers.push((i, Box::new(m.spool.reader()?)));
        }
        for (i, s) in expansions {
            readers.push((i, Box::new(s.reader()?)));
        }
        for (rank, r) in readers {
            set.readers.push((rank, r));
            set.refill(set.readers.len() - 1)?;
        }
        Ok((set, exp))
    }

    /// The set of plain index spools (oldest first), without trees or resets.
    pub fn from_spools(spools: Vec<Spool>) -> Result<ChainSet> {
        let mut set = ChainSet::empty();
        for (i, s) in spools.into_iter().enumerate() {
            set.readers.push((i, Box::new(s.reader()?)));
            set.refill(i)?;
        }
        Ok(set)
    }

    /// An empty set (the base of a full backup).
    pub fn empty() -> ChainSet {
        ChainSet {
            readers: Vec::new(),
            heap: BinaryHeap::new(),
            reset_at: HashMap::new(),
        }
    }

    /// Whether the chain holds nothing of `ns` from before this backup.
    pub fn is_reset(&self, ns: &str, now: usize) -> bool {
        self.reset_at.get(ns) == Some(&now)
    }

    fn refill(&mut self, r: usize) -> Result<()> {
        let (rank, reader) = &mut self.readers[r];
        if let Some(e) = reader.next().transpose()? {
            self.heap.push(Reverse((e.ns, e.id, *rank, r, e.op)));
        }
        Ok(())
    }

    /// The next object present in the chain.
    pub fn next_present(&mut self) -> Result<Option<(String, ObjectId)>> {
        loop {
            let Some(Reverse((ns, id, rank, r, op))) = self.heap.pop() else {
                return Ok(None);
            };
            self.refill(r)?;
            // entries for the same id from other members and expansions come next
            let mut newest = (rank, r, op);
            while let Some(Reverse((n2, id2, _, _, _))) = self.heap.peek() {
                if *n2 != ns || *id2 != id {
                    break;
                }
                let Reverse((_, _, rank2, r2, op2)) = self.heap.pop().expect("peeked");
                self.refill(r2)?;
                if (rank2, r2) >= (newest.0, newest.1) {
                    newest = (rank2, r2, op2);
                }
            }
            if self.reset_at.get(&ns).is_some_and(|at| newest.0 < *at) {
                continue;
            }
            if newest.2 == IndexOp::Add {
                return Ok(Some((ns, id)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(entries: &[(IndexOp, &str, u8)]) -> Spool {
        let mut s = Spool::new().unwrap();
        for (op, ns, id) in entries {
            s.push(&IndexEntry {
                op: *op,
                ..IndexEntry::add(ns, ObjectId([*id; 32]))
            })
            .unwrap();
        }
        s
    }

    /// What the chain holds, as (namespace, first byte of the id).
    fn present(set: &mut ChainSet) -> Vec<(String, u8)> {
        let mut got = Vec::new();
        while let Some((ns, id)) = set.next_present().unwrap() {
            got.push((ns, id.0[0]));
        }
        got
    }

    #[test]
    fn a_reset_voids_older_entries_of_its_namespace_only() {
        use IndexOp::*;
        let full = spool(&[(Add, "a", 1), (Add, "a", 2), (Add, "b", 1)]);
        let inc1 = spool(&[(Add, "a", 3), (Add, "b", 2)]);
        let inc2 = spool(&[(Add, "a", 2)]);
        let mut set = ChainSet::from_spools(vec![full, inc1, inc2]).unwrap();
        // `a` was reset by the third member: only its own entries count
        set.reset_at.insert("a".into(), 2);
        let got = present(&mut set);
        assert_eq!(
            got,
            vec![
                ("a".to_string(), 2),
                ("b".to_string(), 1),
                ("b".to_string(), 2)
            ]
        );
    }

    #[test]
    fn sorted_spool_sorts_across_spilled_runs() {
        let mut x: u64 = 7;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // 40-byte keys and 64 KiB runs: the larger case spills several runs
        for n in [10usize, 5_000] {
            let mut s = SortedSpool::with_memory(64 << 10);
            let mut want = Vec::new();
            for i in 0..n {
                let ns = if i % 3 == 0 { "b" } else { "a" };
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&rnd().to_le_bytes());
                id[8..16].copy_from_slice(&(i as u64).to_le_bytes());
                s.push(ns, ObjectId(id)).unwrap();
                want.push((ns.to_string(), ObjectId(id)));
            }
            want.sort();
            let got: Vec<(String, ObjectId)> = s
                .reader()
                .unwrap()
                .map(|e| e.map(|e| (e.ns, e.id)).unwrap())
                .collect();
            assert!(got == want, "{n} entries");
        }
    }

    #[test]
    fn newest_entry_wins() {
        use IndexOp::*;
        let full = spool(&[(Add, "a", 1), (Add, "a", 2), (Add, "b", 1)]);
        let inc1 = spool(&[(Delete, "a", 2), (Add, "a", 3)]);
        let inc2 = spool(&[(Add, "a", 2), (Delete, "b", 1)]);
        let mut set = ChainSet::from_spools(vec![full, inc1, inc2]).unwrap();
        let got = present(&mut set);
        assert_eq!(
            got,
            vec![
                ("a".to_string(), 1),
                ("a".to_string(), 2),
                ("a".to_string(), 3)
            ]
        );
    }
}
