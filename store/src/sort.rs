//! External merge sort of keys: sorted, de-duplicated output in bounded memory.
//!
//! Keys are gathered into runs of at most `run_bytes`; a full run is sorted
//! and spilled to a temporary file; the runs are then merged. Run file
//! format: a sequence of (u32 little-endian length, key bytes).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufReader, BufWriter, Read, Write};

use crate::error::Result;

/// Collects keys, spilling sorted runs to disk when memory fills.
pub struct Sorter {
    run: Vec<Vec<u8>>,
    run_bytes: usize,
    limit: usize,
    spilled: Vec<std::fs::File>,
}

impl Sorter {
    /// Keep at most about `limit` bytes of keys in memory.
    pub fn new(limit: usize) -> Self {
        Sorter {
            run: Vec::new(),
            run_bytes: 0,
            limit,
            spilled: Vec::new(),
        }
    }

    pub fn push(&mut self, key: Vec<u8>) -> Result<()> {
        self.run_bytes += key.len() + 24;
        self.run.push(key);
        if self.run_bytes >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        self.run.sort_unstable();
        self.run.dedup();
        let mut file = tempfile::tempfile()?;
        {
            let mut w = BufWriter::with_capacity(1 << 20, &mut file);
            for k in self.run.drain(..) {
                w.write_all(&(k.len() as u32).to_le_bytes())?;
                w.write_all(&k)?;
            }
            w.flush()?;
        }
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0))?;
        self.spilled.push(file);
        self.run_bytes = 0;
        Ok(())
    }

    /// All keys, sorted and unique.
    pub fn finish(mut self) -> Result<Box<dyn Iterator<Item = Result<Vec<u8>>>>> {
        if self.spilled.is_empty() {
            self.run.sort_unstable();
            self.run.dedup();
            return Ok(Box::new(self.run.into_iter().map(Ok)));
        }
        if !self.run.is_empty() {
            self.spill()?;
        }
        let mut readers: Vec<BufReader<std::fs::File>> = self
            .spilled
            .into_iter()
            .map(|f| BufReader::with_capacity(1 << 20, f))
            .collect();
        let mut heap = BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(k) = read_key(r)? {
                heap.push(Reverse((k, i)));
            }
        }
        Ok(Box::new(Merge {
            readers,
            heap,
            last: None,
        }))
    }
}

fn read_key(r: &mut impl Read) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut k = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut k)?;
    Ok(Some(k))
}

struct Merge {
    readers: Vec<BufReader<std::fs::File>>,
    heap: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
    last: Option<Vec<u8>>,
}

impl Iterator for Merge {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Reverse((k, i)) = self.heap.pop()?;
            match read_key(&mut self.readers[i]) {
                Ok(Some(next)) => self.heap.push(Reverse((next, i))),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            if self.last.as_ref() == Some(&k) {
                continue;
            }
            self.last = Some(k.clone());
            return Some(Ok(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_runs_merge_sorted_and_unique() {
        let mut s = Sorter::new(2000);
        for i in (0..3000u32).rev() {
            s.push(format!("k{:05}", i % 1000).into_bytes()).unwrap();
        }
        let out: Vec<_> = s.finish().unwrap().map(|k| k.unwrap()).collect();
        let want: Vec<_> = (0..1000u32)
            .map(|i| format!("k{i:05}").into_bytes())
            .collect();
        assert_eq!(out, want);
    }
}
