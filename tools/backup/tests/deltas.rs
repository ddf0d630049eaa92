//! Commit deltas (stream format 2): incrementals that carry a new commit's
//! quad changes instead of the tree nodes the change rewrote. Restores at
//! every point must give back exactly the store's objects and refs; damaged
//! or wrong delta records must be refused by name.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use qg_backup::backup::BackupResult;
use qg_backup::delta::{Delta, Encoder};
use qg_backup::format::{Record, RecordType, StreamReader, StreamWriter};
use qg_backup::keys::KeyOptions;
use qg_backup::restore::{restore_with_keys, RestoreOptions};
use qg_store::progress::NoProgress;
use qg_store::snapshot::Snapshot;
use qg_store::Store;

fn key_opts(fx: &Fx) -> KeyOptions {
    let file = fx.path("backup.key");
    std::fs::write(&file, BACKUP_KEY).unwrap();
    KeyOptions {
        key_file: Some(file),
        ..Default::default()
    }
}

fn restore_opts(from: &str, id: &str, to: &Path, keys: Option<&KeyOptions>) -> RestoreOptions {
    RestoreOptions {
        from: from.into(),
        id: Some(id.into()),
        to: to.to_path_buf(),
        keys: keys.cloned().unwrap_or_default(),
        ..Default::default()
    }
}

/// A backup, and the store's refs with their exports and its objects when it was taken.
type Point = (BackupResult, State, BTreeSet<(String, String)>);

/// Every (namespace, object id) of a store.
fn objects(store: &Store) -> BTreeSet<(String, String)> {
    let snap = Snapshot::begin(store.db()).unwrap();
    let mut out = BTreeSet::new();
    for n in snap.namespaces().unwrap() {
        for o in snap.object_ids(&n.name) {
            out.insert((n.name.clone(), o.unwrap().to_hex()));
        }
    }
    out
}

/// `n` quads of the base data set whose index is a multiple of `every`
/// (as `quads` writes them): removals spread over the whole key order.
fn every_nth(seed: &str, n: usize, every: usize) -> String {
    quads(seed, n)
        .lines()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .map(|(_, l)| format!("{l}\n"))
        .collect()
}

/// The records of a stream file (unencrypted), with where each starts.
fn records(path: &Path) -> Vec<(u64, u64, Record)> {
    let bytes = std::fs::read(path).unwrap();
    let (mut r, _) = StreamReader::open(&bytes[..], "test").unwrap().unwrap();
    let mut out = Vec::new();
    loop {
        let at = r.position();
        match r.next_record().unwrap() {
            Some(rec) => out.push((at.offset, at.record, rec)),
            None => break,
        }
    }
    out
}

fn stream_of(dir: &Path, id: &str) -> std::path::PathBuf {
    dir.join(format!("{id}.qgb"))
}

/// A store of 4,000 quads in `default` (about 60 leaves), a branch, and an
/// encrypted namespace, fully backed up; then two incrementals with changes
/// spread over the key order. Returns (backup id, refs and exports, object set) per point.
fn delta_chain(fx: &Fx, target: &str, keys: Option<&KeyOptions>) -> Vec<Point> {
    let mut points = Vec::new();
    fx.commit("default", None, &quads("a", 4000), "");
    fx.branch("default", "side");
    fx.encrypted_ns("vault");
    fx.commit("vault", None, &quads("v", 400), "");
    let b0 = full_to(fx, target, keys);
    assert_eq!(b0.counts.deltas, 0, "a full backup carries objects only");
    points.push((b0, state(&fx.store), objects(&fx.store)));

    // two commits on main (the second based on the first, both new), one on
    // a branch, one in the encrypted namespace
    // (over 1,000 edits: a restore applies them in several batches)
    fx.commit("default", None, &quads("c1", 600), &every_nth("a", 4000, 9));
    fx.commit("default", None, &quads("c2", 40), &every_nth("a", 4000, 91));
    fx.commit("default", Some("side"), &quads("sd", 60), "");
    fx.commit("vault", None, &quads("v2", 60), &every_nth("v", 400, 7));
    let b1 = inc_to(fx, target, keys);
    points.push((b1, state(&fx.store), objects(&fx.store)));

    // a change on top of trees the previous incremental only carried as deltas
    fx.commit("default", None, &quads("c3", 70), &quads("c1", 30));
    let b2 = inc_to(fx, target, keys);
    points.push((b2, state(&fx.store), objects(&fx.store)));
    points
}

#[track_caller]
fn check_points(fx: &Fx, target: &str, points: &[Point], keys: Option<&KeyOptions>) {
    for (i, (b, want, objs)) in points.iter().enumerate() {
        let dest = fx.path(&format!("restored-{i}"));
        let r = restore_with_keys(
            &restore_opts(target, &b.id, &dest, keys),
            Some(keyring()),
            &NoProgress,
        )
        .unwrap();
        let deltas: u64 = points[..=i].iter().map(|p| p.0.counts.deltas).sum();
        assert_eq!(r.check.trees_rebuilt, deltas, "point {i}");
        let restored = open(&dest);
        assert_same(want, &state(&restored), &format!("restore of point {i}"));
        assert!(
            objects(&restored) == *objs,
            "point {i}: the restored store's objects differ from the original's"
        );
        let fsck =
            qg_store::commands::fsck::fsck(&restored, &Default::default(), &NoProgress).unwrap();
        assert!(fsck.is_clean(), "point {i}: {:?}", fsck.problems);
    }
}

#[test]
fn deltas_restore_every_point_exactly() {
    let fx = Fx::new();
    let target = fx.target("bk");
    let points = delta_chain(&fx, &target, None);
    let (b1, b2) = (&points[1].0, &points[2].0);
    assert_eq!(
        b1.counts.deltas, 3,
        "two commits on main, one on the branch"
    );
    assert!(b1.counts.delta_nodes > 20, "{:?}", b1.counts);
    assert_eq!(b2.counts.deltas, 1);
    assert!(
        b1.bytes * 3 < b1.counts.delta_node_bytes,
        "the deltas are much smaller than the nodes: {} bytes for {} bytes of nodes",
        b1.bytes,
        b1.counts.delta_node_bytes
    );

    // the encrypted namespace's objects go as objects; deltas are plaintext-only
    let recs = records(&stream_of(&fx.path("bk"), &b1.id));
    let delta_ns: BTreeSet<String> = recs
        .iter()
        .filter_map(|(_, _, r)| match r {
            Record::Delta(d) => Some(d.ns.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(delta_ns, BTreeSet::from(["default".to_string()]));
    let vault_objects = recs
        .iter()
        .filter(|(_, _, r)| matches!(r, Record::Object { ns, .. } if ns == "vault"))
        .count();
    assert!(vault_objects > 2, "{vault_objects} vault objects");
    let default_nodes = recs
        .iter()
        .filter(|(_, _, r)| matches!(r, Record::Object { ns, kind: 1, .. } if ns == "default"))
        .count();
    assert_eq!(
        default_nodes, 0,
        "default's new nodes are all rebuilt from deltas"
    );

    check_points(&fx, &target, &points, None);

    // with a node index of three nodes in memory, the nodes a rebuild builds
    // go to disk too, and the new ones are sorted out three at a time
    let dest = fx.path("three-in-memory");
    let r = restore_with_keys(
        &RestoreOptions {
            memory_nodes: Some(3),
            ..restore_opts(&target, &b2.id, &dest, None)
        },
        Some(keyring()),
        &NoProgress,
    )
    .unwrap();
    assert!(
        r.check.nodes_on_disk && r.check.nodes_rebuilt > 20,
        "{:?}",
        r.check
    );
    let restored = open(&dest);
    assert_same(
        &points[2].1,
        &state(&restored),
        "restore with 3 nodes in memory",
    );
    assert!(objects(&restored) == points[2].2, "objects differ");

    // the chain's object set stays exact: nothing new, nothing resent
    let b3 = inc_to(&fx, &target, None);
    assert_eq!(
        (b3.counts.objects, b3.counts.deleted, b3.counts.deltas),
        (0, 0, 0),
        "{:?}",
        b3.counts
    );
    assert!(b3.warnings.is_empty(), "{:?}", b3.warnings);

    let v = verify_data(&target);
    assert!(v.is_clean(), "{:?}", v.problems);
    assert_eq!(v.read.len(), 4);

    // a partial restore of the namespace with deltas
    let dest = fx.path("only-default");
    let r = restore_with_keys(
        &RestoreOptions {
            ns: Some("default".into()),
            ..restore_opts(&target, &b2.id, &dest, None)
        },
        None,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(r.check.trees_rebuilt, 4);
    let want: State = points[2]
        .1
        .clone()
        .into_iter()
        .filter(|((ns, _), _)| ns == "default")
        .collect();
    assert_same(&want, &state(&open(&dest)), "partial restore");
}

#[test]
fn encrypted_chain_with_deltas_round_trips() {
    let fx = Fx::new();
    let target = fx.target("bk");
    let keys = key_opts(&fx);
    let points = delta_chain(&fx, &target, Some(&keys));
    assert!(points[1].0.counts.deltas > 0 && points[1].0.encrypted);
    check_points(&fx, &target, &points, Some(&keys));
    // the delta records are sealed: without the key the stream does not read
    let bytes = std::fs::read(stream_of(&fx.path("bk"), &points[1].0.id)).unwrap();
    let (mut r, h) = StreamReader::open(&bytes[..], "x").unwrap().unwrap();
    assert!(h.encryption.is_some());
    let mut failed = false;
    while let Ok(Some(_)) = r.next_record().map_err(|_| failed = true) {}
    assert!(failed, "sealed records do not decode without the key");
}

#[test]
fn a_damaged_delta_record_is_named_and_nothing_is_restored() {
    let fx = Fx::new();
    let target = fx.target("bk");
    let points = delta_chain(&fx, &target, None);
    let b1 = &points[1].0;
    let stream = stream_of(&fx.path("bk"), &b1.id);
    let (offset, index, _) = records(&stream)
        .into_iter()
        .find(|(_, _, r)| matches!(r, Record::Delta(_)))
        .unwrap();
    let mut bytes = std::fs::read(&stream).unwrap();
    bytes[offset as usize + 5 + 120] ^= 0x20; // inside the delta's body
    std::fs::write(&stream, &bytes).unwrap();

    let dest = fx.path("r");
    let err = restore_with_keys(
        &restore_opts(&target, &points[2].0.id, &dest, None),
        None,
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&b1.id) && err.contains(&format!("record #{index} (delta)")),
        "{err}"
    );
    assert!(!dest.exists(), "a failed restore leaves nothing behind");

    let v = verify_data(&target);
    assert!(!v.is_clean());
    let p = v
        .problems
        .iter()
        .find(|p| p.backup.as_deref() == Some(b1.id.as_str()))
        .unwrap_or_else(|| panic!("{:?}", v.problems));
    assert!(p.what.contains(&format!("record #{index} (delta)")), "{p}");
    // the binary says so too, and exits 1
    let r = run(&["verify", "--from", &target, "--read-data"], &[]).code(1);
    assert!(
        r.stdout.contains(&format!("DAMAGED backup {}", b1.id)),
        "{}",
        r.stdout
    );
}

/// Rewrite backup `id` in directory target `dir` (unencrypted), passing each
/// record through `change`; the new stream is well formed (checksums,
/// trailer, footer, manifest all agree), only its content is what `change` made it.
fn rewrite(dir: &Path, id: &str, change: &mut dyn FnMut(Record) -> Record) {
    let stream = stream_of(dir, id);
    let bytes = std::fs::read(&stream).unwrap();
    let (mut r, header) = StreamReader::open(&bytes[..], id).unwrap().unwrap();
    let mut w = StreamWriter::start(Vec::new(), &header, None).unwrap();
    let mut index = None;
    let mut trailer = None;
    while let Some(rec) = r.next_record().unwrap() {
        match rec {
            Record::Trailer(m) => trailer = Some(*m),
            rec => {
                if rec.record_type() == RecordType::Index && index.is_none() {
                    index = Some(w.position());
                }
                w.record(&change(rec)).unwrap();
            }
        }
    }
    let mut t = trailer.unwrap();
    t.index = index.unwrap();
    let (out, mut m, len, sha) = w.finish(t).unwrap();
    std::fs::write(&stream, &out).unwrap();
    m.stream = Some(format!("{id}.qgb"));
    m.bytes = Some(len);
    m.sha256 = Some(sha);
    std::fs::write(
        dir.join(format!("{id}.manifest.json")),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_delta_that_rebuilds_another_tree_is_refused() {
    let fx = Fx::new();
    let target = fx.target("bk");
    let points = delta_chain(&fx, &target, None);
    let b2 = &points[2].0;
    // a well-formed delta (its digest matches) that drops one added quad
    let mut commit = None;
    rewrite(&fx.path("bk"), &b2.id, &mut |rec| match rec {
        Record::Delta(d) => {
            commit = Some(d.commit);
            let mut e = Encoder::new().unwrap();
            for p in d.removals().unwrap() {
                e.remove(p.unwrap()).unwrap();
            }
            let adds: Vec<Vec<u8>> = d.additions().unwrap().map(|k| k.unwrap()).collect();
            for k in &adds[1..] {
                e.add(k).unwrap();
            }
            let forged: Delta = e
                .finish(&d.ns, d.commit, d.base, d.tree, d.base_count)
                .unwrap();
            forged.check().unwrap();
            Record::Delta(Box::new(forged))
        }
        other => other,
    });
    let commit = commit.expect("the incremental has a delta record").to_hex();
    // structurally it is sound: verify --read-data reads it without complaint
    let v = verify_data(&target);
    assert!(v.is_clean(), "{:?}", v.problems);
    // a restore rebuilds the tree and refuses it
    let dest = fx.path("r");
    let err = restore_with_keys(
        &restore_opts(&target, &b2.id, &dest, None),
        None,
        &NoProgress,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&b2.id)
            && text.contains(&commit)
            && text.contains("not the commit's tree")
            && text.contains("refused"),
        "{text}"
    );
    assert_eq!(err.kind(), qg_store::ErrorKind::Failed);
    assert!(!dest.exists());
    // the point before it still restores
    restore_with_keys(
        &restore_opts(&target, &points[1].0.id, &fx.path("r1"), None),
        None,
        &NoProgress,
    )
    .unwrap();
}

#[test]
fn a_dropped_namespace_with_deltas_is_reset_and_comes_back_exactly() {
    let fx = Fx::new();
    let target = fx.target("bk");
    fx.ns("other");
    fx.commit("other", None, &quads("o", 3000), "");
    fx.commit("default", None, &quads("d", 100), "");
    full_to(&fx, &target, None);
    fx.commit("other", None, &quads("o2", 80), &every_nth("o", 3000, 29));
    let b1 = inc_to(&fx, &target, None);
    assert_eq!(b1.counts.deltas, 1);

    // the namespace goes: its delta can no longer be expanded from the store
    fx.store.delete_namespace("other").unwrap();
    let b2 = inc_to(&fx, &target, None);
    assert_eq!(b2.counts.resets, 1, "{:?}", b2.counts);
    assert!(
        b2.warnings.iter().any(|w| w.contains("`other`")),
        "{:?}",
        b2.warnings
    );
    let at2 = (state(&fx.store), objects(&fx.store));
    let dest = fx.path("after-drop");
    restore_with_keys(
        &restore_opts(&target, &b2.id, &dest, None),
        None,
        &NoProgress,
    )
    .unwrap();
    let snap_seq = Snapshot::begin(open(&dest).db())
        .unwrap()
        .max_reflog_seq()
        .unwrap();
    assert!(snap_seq >= b2.manifest.reflog_seq);
    // a full backup without the dropped namespace's (newest) reflog entries:
    // the restored store still numbers new entries after them
    let f = full_to(&fx, &fx.target("bk-full"), None);
    let dest = fx.path("full-after-drop");
    restore_with_keys(
        &restore_opts(&fx.target("bk-full"), &f.id, &dest, None),
        None,
        &NoProgress,
    )
    .unwrap();
    let restored = Snapshot::begin(open(&dest).db())
        .unwrap()
        .max_reflog_seq()
        .unwrap();
    assert!(
        restored >= f.manifest.reflog_seq && f.manifest.reflog_seq >= b2.manifest.reflog_seq,
        "the restored store would reuse reflog numbers ({restored} < {})",
        f.manifest.reflog_seq
    );

    // it comes back with the same data: the same node ids, all sent again
    fx.ns("other");
    fx.commit("other", None, &quads("o", 3000), "");
    fx.commit("other", None, &quads("o2", 80), &every_nth("o", 3000, 29));
    let b3 = inc_to(&fx, &target, None);
    assert_eq!(b3.counts.resets, 0);
    assert!(b3.counts.objects > 40, "{:?}", b3.counts);
    let at3 = (state(&fx.store), objects(&fx.store));

    for (b, (want, objs)) in [(&b2, at2), (&b3, at3)] {
        let dest = fx.path(&format!("r-{}", b.id));
        restore_with_keys(
            &restore_opts(&target, &b.id, &dest, None),
            None,
            &NoProgress,
        )
        .unwrap();
        let restored = open(&dest);
        assert_same(&want, &state(&restored), &b.id);
        assert!(objects(&restored) == objs, "{}: object sets differ", b.id);
    }
    // and the chain goes on exactly
    let b4 = inc_to(&fx, &target, None);
    assert_eq!(
        (b4.counts.objects, b4.counts.resets),
        (0, 0),
        "{:?}",
        b4.counts
    );
}

#[test]
fn version_1_chains_restore_and_continue_in_version_2() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1");
    let fx = Fx::new();
    let dir = fx.path("v1");
    std::fs::create_dir_all(&dir).unwrap();
    let mut ids = Vec::new();
    for f in files(&fixture) {
        if let Some(id) = f.strip_suffix(".qgb") {
            ids.push(id.to_string());
        }
        if f.ends_with(".qgb") || f.ends_with(".manifest.json") {
            std::fs::copy(fixture.join(&f), dir.join(&f)).unwrap();
        }
    }
    assert_eq!(ids.len(), 2);
    let header = std::fs::read(dir.join(format!("{}.qgb", ids[1]))).unwrap();
    assert_eq!(
        &header[..10],
        b"QGBACKUP\x01\x00",
        "the fixture is a version-1 stream"
    );
    let target = dir.display().to_string();

    let v = verify_data(&target);
    assert!(v.is_clean() && v.read.len() == 2, "{:?}", v.problems);

    let dest = fx.path("restored");
    restore_with_keys(
        &restore_opts(&target, &ids[1], &dest, None),
        None,
        &NoProgress,
    )
    .unwrap();
    let restored = open(&dest);
    let got = state(&restored);
    let (_, text) = &got[&("default".to_string(), "main".to_string())];
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let expected = std::fs::read_to_string(fixture.join("expected.nq")).unwrap();
    assert_eq!(lines, expected.lines().collect::<Vec<_>>());

    // the restored store goes on with version-2 incrementals on the version-1 chain
    drop(restored);
    let again = Fx {
        store: open(&dest),
        data: dest.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    again.commit("default", None, &quads("v2", 40), &every_nth("v1", 300, 7));
    let b = inc_to(&again, &target, None);
    assert_eq!(b.manifest.format, 2);
    assert_eq!(b.parent.as_deref(), Some(ids[1].as_str()));
    let want = (state(&again.store), objects(&again.store));
    let dest2 = fx.path("restored-2");
    let r = restore_with_keys(
        &restore_opts(&target, &b.id, &dest2, None),
        None,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(r.chain.len(), 3);
    let restored = open(&dest2);
    assert_same(&want.0, &state(&restored), "v1 chain + v2 incremental");
    assert!(objects(&restored) == want.1);
}

#[test]
fn deltas_restore_from_concatenated_streams_on_standard_input() {
    let fx = Fx::new();
    let target = fx.target("bk");
    let points = delta_chain(&fx, &target, None);
    let dir = fx.path("bk");
    let cat: Vec<String> = points
        .iter()
        .map(|p| stream_of(&dir, &p.0.id).display().to_string())
        .collect();
    let dest = fx.path("from-stdin");
    let r = sh(
        &format!(
            "cat {} | qg-backup restore --from - --to {} --json",
            cat.join(" "),
            dest.display()
        ),
        &[],
    )
    .ok();
    assert_eq!(r.json()["check"]["trees_rebuilt"], 4);
    let restored = open(&dest);
    assert_same(
        &points[2].1,
        &state(&restored),
        "restore from standard input",
    );
    assert!(objects(&restored) == points[2].2);
    // and verify reads the same concatenation
    let v = sh(
        &format!(
            "cat {} | qg-backup verify --from - --read-data",
            cat.join(" ")
        ),
        &[],
    )
    .ok();
    assert!(v.stdout.contains("OK"), "{}", v.stdout);
}
