//! Object-id indexes: which objects a backup chain holds.
//!
//! Every stream ends with an index section listing, in (namespace, id)
//! order, the objects it added and the ones it recorded as deleted. The set
//! of objects a chain holds is the merge of its members' indexes, where the
//! newest entry for an id decides. An incremental backup streams the store's
//! objects in the same order beside that set and keeps only the difference,
//! so it is exact (content addressing) and needs memory for one entry per
//! chain member, whatever the store's size. Indexes are spooled to temporary
//! files first, so a remote target is read once, sequentially.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufReader, BufWriter, Seek, Write};

use qg_store::ObjectId;

use crate::catalog::stream_name;
use crate::error::{Error, Result};
use crate::format::{IndexEntry, IndexOp, Manifest, Record, StreamReader};
use crate::keys::Keyring;
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

/// Copy the index section of backup `m` into a spool, checking every record.
pub fn fetch(target: &Target, m: &Manifest, keys: &Keyring) -> Result<Spool> {
    let cipher = match &m.encryption {
        Some(info) => Some(keys.master(info, &m.id)?.frames(info, &m.id)),
        None => None,
    };
    let inp = target.open_read(&stream_name(&m.id), m.index.offset)?;
    let mut r = StreamReader::resume(inp, &m.id, m.index, cipher);
    let mut spool = Spool::new()?;
    let mut last: Option<(String, ObjectId)> = None;
    while let Some(rec) = r.next_record()? {
        match rec {
            Record::Index(entries) => {
                for e in entries {
                    let key = (e.ns.clone(), e.id);
                    if last.as_ref().is_some_and(|l| *l >= key) {
                        return Err(Error::damaged(
                            &m.id,
                            "its index is not in (namespace, id) order",
                        ));
                    }
                    last = Some(key);
                    spool.push(&e)?;
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
    Ok(spool)
}

/// The objects a chain holds, in (namespace, id) order: a k-way merge of the
/// members' indexes (oldest first in `spools`), newest entry per id winning.
pub struct ChainSet {
    readers: Vec<SpoolReader>,
    heap: BinaryHeap<Reverse<(String, ObjectId, usize, IndexOp)>>,
}

impl ChainSet {
    pub fn new(spools: Vec<Spool>) -> Result<ChainSet> {
        let mut set = ChainSet {
            readers: Vec::new(),
            heap: BinaryHeap::new(),
        };
        for (i, s) in spools.into_iter().enumerate() {
            set.readers.push(s.reader()?);
            set.refill(i)?;
        }
        Ok(set)
    }

    /// An empty set (the base of a full backup).
    pub fn empty() -> ChainSet {
        ChainSet {
            readers: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    fn refill(&mut self, i: usize) -> Result<()> {
        if let Some(e) = self.readers[i].next().transpose()? {
            self.heap.push(Reverse((e.ns, e.id, i, e.op)));
        }
        Ok(())
    }

    /// The next object present in the chain.
    pub fn next_present(&mut self) -> Result<Option<(String, ObjectId)>> {
        loop {
            let Some(Reverse((ns, id, i, op))) = self.heap.pop() else {
                return Ok(None);
            };
            self.refill(i)?;
            // entries for the same id from newer members come next (higher i)
            let (mut newest, mut newest_op) = (i, op);
            while let Some(Reverse((n2, id2, _, _))) = self.heap.peek() {
                if *n2 != ns || *id2 != id {
                    break;
                }
                let Reverse((_, _, j, op2)) = self.heap.pop().expect("peeked");
                self.refill(j)?;
                if j >= newest {
                    newest = j;
                    newest_op = op2;
                }
            }
            if newest_op == IndexOp::Add {
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
                ns: ns.to_string(),
                id: ObjectId([*id; 32]),
            })
            .unwrap();
        }
        s
    }

    #[test]
    fn newest_entry_wins() {
        use IndexOp::*;
        let full = spool(&[(Add, "a", 1), (Add, "a", 2), (Add, "b", 1)]);
        let inc1 = spool(&[(Delete, "a", 2), (Add, "a", 3)]);
        let inc2 = spool(&[(Add, "a", 2), (Delete, "b", 1)]);
        let mut set = ChainSet::new(vec![full, inc1, inc2]).unwrap();
        let mut got = Vec::new();
        while let Some((ns, id)) = set.next_present().unwrap() {
            got.push((ns, id.0[0]));
        }
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
