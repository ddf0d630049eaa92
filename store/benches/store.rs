//! Criterion benchmarks of the `qg-store` library on modest sizes (100k quads),
//! so `cargo bench -p qg-store` finishes in a few minutes.
//!
//! Side-by-side comparisons with peers (oxigraph, git) at 1M quads live in
//! `benches/compare.sh` at the repository root; see `benches/README.md`.
//!
//! Groups:
//! - `store/init`: create a store (SQLite file, schema, default namespace).
//! - `commit/one_quad_100k`: `commands::commit::commit` of one new quad on a
//!   branch of 100k quads (parse, tree edit, diff, one durable transaction).
//! - `tree/build_100k`: `tree::build` of 100k sorted keys (encode + hash
//!   every node, buffered in an `ObjectSet`, not written).
//! - `tree/apply_*_100k`: `tree::apply` of 1 and of 1,000 scattered edits to a
//!   stored 100k-key tree, from a cold node cache (nodes read from SQLite).
//! - `tree/diff_1000_100k`: `tree::Diff` of two stored 100k-key trees 1,000
//!   keys apart, from a cold node cache.
//! - `tree/scan_100k`: `tree::Scan` of every key of a stored 100k-key tree.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use qg_store::commands::bulk_load::{bulk_load, BulkLoadOptions};
use qg_store::commands::commit::{commit, CommitOptions};
use qg_store::objects::ObjectSet;
use qg_store::progress::NoProgress;
use qg_store::rdf::Source;
use qg_store::tree::{self, Diff, Scan};
use qg_store::{ObjectId, Store};

const NS: &str = "default";
const QUADS: usize = 100_000;
const SCHEMA: &str = "http://schema.org/";

/// Small deterministic generator (xorshift64*), so every run sees the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: [&str; 12] = [
    "quantum", "ledger", "river", "orbit", "signal", "harbor", "vector", "maple", "granite",
    "cipher", "meadow", "falcon",
];

/// `n` distinct N-Quads lines in the spirit of `benches/gen_dataset.py`: IRIs,
/// plain, language-tagged and typed literals over ten named graphs.
fn nquads(n: usize, seed: u64) -> String {
    let mut r = Rng(seed | 1);
    let mut out = String::with_capacity(n * 140);
    let mut i = 0u64;
    let mut written = 0;
    while written < n {
        let kind = ["person", "org", "product", "place"][(i % 4) as usize];
        let s = format!("<http://bench.example.org/{kind}/{i}>");
        let g = format!("<http://bench.example.org/graph/{}>", (i / 1000) % 10);
        let w = |r: &mut Rng| WORDS[r.below(WORDS.len() as u64) as usize];
        let props = [
            format!("<http://www.w3.org/1999/02/22-rdf-syntax-ns#type> <{SCHEMA}{kind}>"),
            format!("<{SCHEMA}name> \"{} {}\"", w(&mut r), w(&mut r)),
            format!(
                "<{SCHEMA}description> \"{} {} {}\"@en",
                w(&mut r),
                w(&mut r),
                w(&mut r)
            ),
            format!(
                "<{SCHEMA}size> \"{}\"^^<http://www.w3.org/2001/XMLSchema#integer>",
                r.below(1_000_000)
            ),
            format!(
                "<{SCHEMA}related> <http://bench.example.org/org/{}>",
                r.below(n as u64 / 7 + 1) * 4 + 1
            ),
            format!("<{SCHEMA}label> \"{} {}\"@de", w(&mut r), i),
            format!("<{SCHEMA}sku> \"SKU-{i:09}\""),
        ];
        for p in props.iter().take(n - written) {
            out.push_str(&format!("{s} {p} {g} .\n"));
            written += 1;
        }
        i += 1;
    }
    out
}

fn text(name: &str, text: String) -> Source {
    Source::Text {
        name: name.into(),
        text,
    }
}

/// Sorted, distinct quad keys of some N-Quads text, as the store keeps them.
fn keys_of(nq: &str) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    text("keys", nq.to_string())
        .parse(None, None, |k| {
            keys.push(k);
            Ok(())
        })
        .expect("bench data parses");
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// A new quad that lands at a pseudo-random place among the existing subjects.
fn new_quad(r: &mut Rng, n: u64) -> String {
    let i = r.below(n / 7 + 1);
    let kind = ["person", "org", "product", "place"][(i % 4) as usize];
    format!(
        "<http://bench.example.org/{kind}/{i}> <{SCHEMA}comment> \"edit {}\" <http://bench.example.org/graph/{}> .\n",
        r.next(),
        (i / 1000) % 10
    )
}

/// A store in a temporary directory whose default branch holds the quads of `nq`.
fn loaded_store(nq: &str) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::init(&dir.path().join("store")).expect("init");
    bulk_load(
        &store,
        &BulkLoadOptions {
            ns: NS.into(),
            source: text("bench", nq.to_string()),
            message: "load".into(),
            ..Default::default()
        },
        &NoProgress,
    )
    .expect("bulk load");
    (dir, store)
}

/// Build the tree of `keys` and write it to the store; returns its root.
fn stored_tree(store: &Store, keys: Vec<Vec<u8>>) -> ObjectId {
    let objs = store.objects(NS).expect("namespace");
    let root = tree::build(&objs, keys).expect("build");
    store.db().write(|_| objs.flush()).expect("flush");
    root
}

/// `count` edits spread over `keys`: every other one removes an existing key,
/// the others add new keys. Returns (sorted additions, sorted removals).
fn scattered_edits(keys: &[Vec<u8>], count: usize, seed: u64) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut r = Rng(seed | 1);
    let mut add = Vec::new();
    let mut remove = Vec::new();
    for e in 0..count {
        let k = &keys[r.below(keys.len() as u64) as usize];
        if e % 2 == 0 {
            remove.push(k.clone());
        } else {
            let mut n = k.clone();
            n.extend_from_slice(format!(" edit {e}").as_bytes());
            add.push(n);
        }
    }
    add.sort_unstable();
    add.dedup();
    remove.sort_unstable();
    remove.dedup();
    (add, remove)
}

fn bench_init(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.sample_size(20);
    g.bench_function("init", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temp dir"),
            |dir| {
                let store = Store::init(&dir.path().join("store")).expect("init");
                black_box(store.id().expect("id"));
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn bench_commit(c: &mut Criterion) {
    let nq = nquads(QUADS, 7);
    let (_dir, store) = loaded_store(&nq);
    let mut r = Rng(99);
    let mut g = c.benchmark_group("commit");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    g.bench_function("one_quad_100k", |b| {
        b.iter_batched(
            || CommitOptions {
                ns: NS.into(),
                message: "one quad".into(),
                add: vec![text("one", new_quad(&mut r, QUADS as u64))],
                ..Default::default()
            },
            |opts| black_box(commit(&store, &opts).expect("commit")),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_tree(c: &mut Criterion) {
    let keys = keys_of(&nquads(QUADS, 7));
    let n = keys.len() as u64;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::init(&dir.path().join("store")).expect("init");
    let base = stored_tree(&store, keys.clone());

    let mut g = c.benchmark_group("tree");
    g.sample_size(10);

    g.throughput(Throughput::Elements(n));
    g.bench_function("build_100k", |b| {
        b.iter_batched(
            || keys.clone(),
            |keys| {
                let objs = ObjectSet::new(store.db(), NS);
                black_box(tree::build(&objs, keys).expect("build"))
            },
            BatchSize::LargeInput,
        )
    });

    g.bench_function("scan_100k", |b| {
        b.iter(|| {
            let objs = ObjectSet::new(store.db(), NS);
            let mut seen = 0u64;
            for k in Scan::new(&objs, &base, b"").expect("scan") {
                black_box(k.expect("key"));
                seen += 1;
            }
            assert_eq!(seen, n);
        })
    });

    g.sample_size(30);
    let mut one = keys[keys.len() / 2].clone();
    one.extend_from_slice(b" one");
    for (edits, (add, remove)) in [
        (1, (vec![one], Vec::new())),
        (1000, scattered_edits(&keys, 1000, 11)),
    ] {
        g.throughput(Throughput::Elements((add.len() + remove.len()) as u64));
        g.bench_function(format!("apply_{edits}_100k"), |b| {
            b.iter(|| {
                let objs = ObjectSet::new(store.db(), NS);
                black_box(tree::apply(&objs, base, &add, &remove).expect("apply"))
            })
        });
    }

    let (add, remove) = scattered_edits(&keys, 1000, 23);
    let changed = {
        let objs = store.objects(NS).expect("namespace");
        let root = tree::apply(&objs, base, &add, &remove).expect("apply");
        store.db().write(|_| objs.flush()).expect("flush");
        root
    };
    let expected = (add.len() + remove.len()) as u64;
    g.throughput(Throughput::Elements(expected));
    g.bench_function("diff_1000_100k", |b| {
        b.iter(|| {
            let objs = ObjectSet::new(store.db(), NS);
            let changes = Diff::new(&objs, &base, &changed).expect("diff").count() as u64;
            assert_eq!(changes, expected);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_init, bench_commit, bench_tree);
criterion_main!(benches);
