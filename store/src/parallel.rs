//! CPU-bound work spread over the machine's cores, results kept in order.
//!
//! Used where a sequential reader (one SQLite connection, one stream) hands
//! out many independent pieces of work: decoding tree nodes, checking or
//! re-sealing objects. Scoped threads, no pool: each call is a few hundred
//! items, so spawning costs far less than the work.

use std::sync::OnceLock;

/// Threads worth using (asking the OS reads cgroup files, so it is done once).
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8)
    })
}

/// Fewest items worth a thread of their own (spawning one costs about as
/// much as decoding a few tree nodes).
const MIN_PER_THREAD: usize = 4;

/// `f` applied to every item, on up to [`cores`] threads (the caller's among
/// them), in the items' order.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = cores().min(items.len() / MIN_PER_THREAD);
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let f = &f;
        let workers: Vec<_> = items[chunk..]
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut all: Vec<R> = items[..chunk].iter().map(f).collect();
        for w in workers {
            match w.join() {
                Ok(part) => all.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_for_any_length() {
        for n in [0usize, 1, 2, 3, 7, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let out = super::map(&items, |i| i * 2);
            assert_eq!(
                out,
                items.iter().map(|i| i * 2).collect::<Vec<_>>(),
                "n = {n}"
            );
        }
    }

    #[test]
    fn a_panicking_item_panics_the_caller() {
        let items: Vec<u32> = (0..100).collect();
        let r = std::panic::catch_unwind(|| {
            super::map(&items, |i| {
                assert!(*i != 97, "item 97");
                *i
            })
        });
        assert!(r.is_err());
    }
}
