//! Round trips through the library: full and incremental backups of stores
//! with several namespaces (one encrypted), branches and tags, restored at
//! every point and compared ref by ref with `qg export` output.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use qg_backup::full::{full, FullOptions};
use qg_backup::incremental::{incremental, IncrementalOptions};
use qg_backup::keys::KeyOptions;
use qg_backup::restore::{restore, restore_with_keys, RestoreOptions};
use qg_backup::verify::{verify, VerifyOptions};
use qg_store::progress::NoProgress;
use qg_store::Store;

fn restore_id(
    from: &str,
    id: &str,
    to: &Path,
    keys: Option<&KeyOptions>,
) -> qg_backup::restore::RestoreResult {
    restore_id_with(from, id, to, keys, None)
}

/// [`restore_id`] with the final check's in-memory node limit.
fn restore_id_with(
    from: &str,
    id: &str,
    to: &Path,
    keys: Option<&KeyOptions>,
    memory_nodes: Option<usize>,
) -> qg_backup::restore::RestoreResult {
    restore_with_keys(
        &RestoreOptions {
            from: from.into(),
            id: Some(id.into()),
            to: to.to_path_buf(),
            keys: keys.cloned().unwrap_or_default(),
            memory_nodes,
            ..Default::default()
        },
        Some(keyring()),
        &NoProgress,
    )
    .unwrap()
}

/// Builds the store through three states, backing up after each.
fn three_states(fx: &Fx, target: &str, keys: Option<&KeyOptions>) -> Vec<(String, State)> {
    // state 0: two plaintext namespaces, one encrypted, branches and tags
    fx.commit("default", None, &quads("a", 300), "");
    fx.branch("default", "feature");
    fx.commit("default", Some("feature"), &quads("f", 40), "");
    fx.tag("default", "v1");
    fx.ns("staging");
    fx.commit("staging", None, &quads("s", 120), "");
    fx.encrypted_ns("vault");
    fx.commit("vault", None, &quads("secret", 80), "");
    fx.tag("vault", "sealed-1");
    let s0 = state(&fx.store);
    let b0 = full_to(fx, target, keys);
    assert_eq!(b0.counts.deleted, 0);

    // state 1: more commits, a deleted branch, a new namespace, a deleted namespace
    fx.commit("default", None, &quads("b", 50), &quads("a", 10));
    qg_store::commands::branch::delete_branch(&fx.store, "default", "feature").unwrap();
    fx.branch("default", "hotfix");
    fx.commit("default", Some("hotfix"), &quads("h", 5), "");
    fx.ns("late");
    fx.commit("late", None, &quads("l", 30), "");
    fx.store.delete_namespace("staging").unwrap();
    fx.commit("vault", None, &quads("secret2", 20), "");
    let s1 = state(&fx.store);
    let b1 = inc_to(fx, target, keys);
    assert!(
        b1.counts.deleted > 0,
        "the deleted namespace's objects are recorded as deleted"
    );
    assert!(
        b1.counts.objects < b0.counts.objects,
        "an incremental holds only new objects"
    );

    // state 2: `staging` created again with other data, a tag, a merge-free change
    fx.ns("staging");
    fx.commit("staging", None, &quads("s2", 10), "");
    fx.tag("default", "v2");
    fx.commit("default", None, "", &quads("b", 5));
    let s2 = state(&fx.store);
    let b2 = inc_to(fx, target, keys);
    assert_eq!(b2.parent.as_deref(), Some(b1.id.as_str()));
    vec![(b0.id, s0), (b1.id, s1), (b2.id, s2)]
}

fn check_restores(fx: &Fx, target: &str, points: &[(String, State)], keys: Option<&KeyOptions>) {
    check_restores_with(fx, target, points, keys, None, "restored");
}

fn check_restores_with(
    fx: &Fx,
    target: &str,
    points: &[(String, State)],
    keys: Option<&KeyOptions>,
    memory_nodes: Option<usize>,
    prefix: &str,
) {
    for (i, (id, want)) in points.iter().enumerate() {
        let dest = fx.path(&format!("{prefix}-{i}"));
        let r = restore_id_with(target, id, &dest, keys, memory_nodes);
        assert_eq!(r.check.nodes_on_disk, memory_nodes.is_some(), "point {i}");
        assert_eq!(r.chain.len(), i + 1);
        assert_eq!(r.check.decrypted_namespaces, vec!["vault".to_string()]);
        let restored = open(&dest);
        assert_same(want, &state(&restored), &format!("restore of point {i}"));
        assert_eq!(restored.id().unwrap(), fx.store.id().unwrap());
        qg_store::audit::verify(restored.db()).unwrap();
        let last = qg_store::audit::list(restored.db(), None)
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(last.action, "restore");
        assert_eq!(last.detail["backup_id"], id.as_str());
        assert_same_history(&fx.store, &restored, i);
        let fsck =
            qg_store::commands::fsck::fsck(&restored, &Default::default(), &NoProgress).unwrap();
        assert!(fsck.is_clean(), "{:?}", fsck.problems);
    }
}

/// The restored audit log is the original's up to the backup (plus the
/// restore's own entry), and every restored ref has the original's reflog.
fn assert_same_history(original: &Store, restored: &Store, point: usize) {
    let orig = qg_store::audit::list(original.db(), None).unwrap();
    let mut got = qg_store::audit::list(restored.db(), None).unwrap();
    got.pop(); // the restore event
    assert!(
        got.len() > 3 && got.len() <= orig.len(),
        "point {point}: {} audit entries",
        got.len()
    );
    for (a, b) in got.iter().zip(&orig) {
        assert_eq!(
            (a.seq, &a.hash),
            (b.seq, &b.hash),
            "point {point}: audit entry #{} differs",
            a.seq
        );
    }
    let snap_o = qg_store::snapshot::Snapshot::begin(original.db()).unwrap();
    let snap_r = qg_store::snapshot::Snapshot::begin(restored.db()).unwrap();
    let created: std::collections::HashMap<_, _> = snap_o
        .namespaces()
        .unwrap()
        .into_iter()
        .map(|n| (n.name, n.created))
        .collect();
    let mut checked = 0;
    for n in snap_r.namespaces().unwrap() {
        if created.get(&n.name) != Some(&n.created) {
            continue; // deleted (and maybe created again) in the original since
        }
        for r in snap_r
            .refs()
            .unwrap()
            .into_iter()
            .filter(|r| r.ns == n.name)
        {
            let mine = restored.db().reflog(&r.ns, &r.name).unwrap();
            let max = mine.first().map(|e| e.seq).unwrap_or(0);
            let theirs: Vec<_> = original
                .db()
                .reflog(&r.ns, &r.name)
                .unwrap()
                .into_iter()
                .filter(|e| e.seq <= max)
                .collect();
            let key = |v: &[qg_store::storage::ReflogEntry]| -> Vec<_> {
                v.iter()
                    .map(|e| (e.seq, e.old, e.new, e.time.clone(), e.message.clone()))
                    .collect()
            };
            assert!(
                !mine.is_empty(),
                "point {point}: ref {} has no reflog",
                r.name
            );
            assert_eq!(
                key(&mine),
                key(&theirs),
                "point {point}: reflog of {}/{}",
                r.ns,
                r.name
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn round_trip_every_point_of_a_chain() {
    let fx = Fx::new();
    let target = fx.target("backups");
    let points = three_states(&fx, &target, None);
    check_restores(&fx, &target, &points, None);
    // the same with the final check's nodes moved to a temporary database
    // after the first few (what bounds memory on a large store)
    check_restores_with(&fx, &target, &points, None, Some(3), "restored-on-disk");

    // --at picks the newest backup at or before a time
    let cat = qg_backup::list::list(&qg_backup::list::ListOptions {
        from: target.clone(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(cat.backups.len(), 3);
    assert!(cat.backups.iter().all(|b| b.restorable));
    let at = cat.backups[1].created.clone();
    let r = restore(
        &RestoreOptions {
            from: target.clone(),
            at: Some(at),
            to: fx.path("at-1"),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert_eq!(r.id, points[1].0);
    // without keys the encrypted namespace is restored sealed and still opens with them
    assert_eq!(r.check.encrypted_namespaces, vec!["vault".to_string()]);
    assert_same(
        &points[1].1,
        &state(&open(&fx.path("at-1"))),
        "restore --at",
    );

    // every backup run is in the store's audit log
    let log = qg_store::audit::list(fx.store.db(), None).unwrap();
    let runs: Vec<_> = log
        .iter()
        .filter(|e| e.action.starts_with("backup."))
        .collect();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0].action, "backup.full");
    assert_eq!(runs[2].detail["backup_id"], points[2].0.as_str());
    assert!(runs[2].detail["bytes"].as_u64().unwrap() > 0);

    let v = verify_data(&target);
    assert!(v.is_clean(), "{:?}", v.problems);
    assert_eq!(v.read.len(), 3);
}

#[test]
fn encrypted_backups_round_trip_with_key_and_passphrase() {
    for (kind, secret) in [
        ("key", BACKUP_KEY),
        ("passphrase", "correct horse battery staple"),
    ] {
        let fx = Fx::new();
        let secret_file = fx.path("secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        let keys = if kind == "key" {
            KeyOptions {
                key_file: Some(secret_file.clone()),
                ..Default::default()
            }
        } else {
            KeyOptions {
                passphrase_file: Some(secret_file.clone()),
                ..Default::default()
            }
        };
        let target = fx.target("enc");
        let points = three_states(&fx, &target, Some(&keys));
        check_restores(&fx, &target, &points, Some(&keys));
        // nothing readable in the streams: ref names and audit details are sealed
        for s in streams(&fx.path("enc")) {
            let bytes = std::fs::read(&s).unwrap();
            for needle in [
                &b"heads/hotfix"[..],
                b"backup.full",
                b"ns.create",
                b"tags/v1",
            ] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{kind}: {} shows {:?} in clear",
                    s.display(),
                    String::from_utf8_lossy(needle)
                );
            }
        }
        // an incremental of an encrypted chain needs the secret
        fx.commit("default", None, &quads("z", 3), "");
        let err = incremental(
            &IncrementalOptions {
                data: fx.data.clone(),
                to: target.clone(),
                ..Default::default()
            },
            &NoProgress,
        )
        .unwrap_err();
        assert!(err.to_string().contains("encrypted"), "{err}");
    }
}

#[test]
fn unencrypted_streams_show_their_records() {
    // the counterpart of the test above: the needles are there without --encrypt
    let fx = Fx::new();
    fx.branch("default", "hotfix");
    full_to(&fx, &fx.target("plain"), None);
    let bytes = std::fs::read(&streams(&fx.path("plain"))[0]).unwrap();
    assert!(bytes.windows(12).any(|w| w == b"heads/hotfix"));
}

#[test]
fn partial_restore_of_one_namespace() {
    let fx = Fx::new();
    fx.commit("default", None, &quads("d", 20), "");
    fx.ns("one");
    fx.commit("one", None, &quads("o", 25), "");
    fx.branch("one", "b");
    let want: State = state(&fx.store)
        .into_iter()
        .filter(|((ns, _), _)| ns == "one")
        .collect();
    let target = fx.target("bk");
    full_to(&fx, &target, None);
    let dest = fx.path("only-one");
    let r = restore(
        &RestoreOptions {
            from: target.clone(),
            to: dest.clone(),
            ns: Some("one".into()),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert_eq!(r.namespaces, vec!["one".to_string()]);
    let restored = Store::open(&dest).unwrap();
    assert_eq!(restored.namespaces().unwrap(), vec!["one".to_string()]);
    assert_same(&want, &state(&restored), "partial restore");
    assert_ne!(
        restored.id().unwrap(),
        fx.store.id().unwrap(),
        "a partial restore is a new store"
    );
    qg_store::audit::verify(restored.db()).unwrap();

    let err = restore(
        &RestoreOptions {
            from: target,
            to: fx.path("nope"),
            ns: Some("missing".into()),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("namespace `missing` is not in backup"),
        "{err}"
    );
    assert!(
        !fx.path("nope").exists(),
        "a failed restore leaves no directory behind"
    );
}

#[test]
fn a_restored_store_continues_its_chain() {
    let fx = Fx::new();
    fx.commit("default", None, &quads("x", 50), "");
    let target = fx.target("bk");
    full_to(&fx, &target, None);
    fx.commit("default", None, &quads("y", 5), "");
    let b1 = inc_to(&fx, &target, None);
    // disaster: restore, then keep working and backing up from the restored store
    let dest = fx.path("new");
    restore_id(&target, &b1.id, &dest, None);
    let again = Fx {
        store: open(&dest),
        data: dest.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    again.commit("default", None, &quads("after", 7), "");
    let b2 = inc_to(&again, &target, None);
    assert_eq!(b2.parent.as_deref(), Some(b1.id.as_str()));
    assert!(
        b2.counts.objects < 20,
        "only the new commit's objects: {}",
        b2.counts.objects
    );
    let want = state(&again.store);
    let final_dest = fx.path("final");
    restore_id(&target, &b2.id, &final_dest, None);
    assert_same(
        &want,
        &state(&open(&final_dest)),
        "chain continued after a restore",
    );

    // the original store (which did not see the restored store's commit) has diverged
    fx.commit("default", None, &quads("other", 3), "");
    let err = incremental(
        &IncrementalOptions {
            data: fx.data.clone(),
            to: target,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("diverged"), "{err}");
    assert_eq!(err.kind(), qg_store::ErrorKind::Usage);
}

#[test]
fn backup_while_a_writer_commits_in_a_loop() {
    let fx = Fx::new();
    fx.commit("default", None, &quads("base", 200), "");
    let stop = Arc::new(AtomicBool::new(false));
    let data = fx.data.clone();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let store = open(&data);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("<http://ex.org/w> <http://ex.org/n> \"{n}\" .\n");
                let r = qg_store::commands::commit::commit(
                    &store,
                    &qg_store::commands::commit::CommitOptions {
                        ns: "default".into(),
                        message: format!("loop {n}"),
                        add: vec![qg_store::rdf::Source::Text {
                            name: "w".into(),
                            text,
                        }],
                        ..Default::default()
                    },
                );
                if r.is_ok() {
                    n += 1;
                }
            }
            n
        })
    };
    // wait for the writer to get going
    while qg_store::audit::list(fx.store.db(), None).unwrap().len() < 8 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let target = fx.target("bk");
    let mut ids = vec![full_to(&fx, &target, None).id];
    for _ in 0..3 {
        ids.push(inc_to(&fx, &target, None).id);
    }
    stop.store(true, Ordering::Relaxed);
    let commits = writer.join().unwrap();
    assert!(commits > 3, "the writer committed only {commits} times");

    for (i, id) in ids.iter().enumerate() {
        let dest = fx.path(&format!("r{i}"));
        let r = restore_id(&target, id, &dest, None);
        assert_eq!(r.check.objects_verified, r.objects);
        let restored = open(&dest);
        // one point in time: the branch head is the commit the newest restored
        // `commit` audit entry names, and that commit holds exactly its history
        let head = state(&restored)[&("default".to_string(), "main".to_string())].clone();
        let last_commit = qg_store::audit::list(restored.db(), None)
            .unwrap()
            .into_iter()
            .rev()
            .find(|e| e.action == "commit")
            .unwrap();
        assert_eq!(
            last_commit.detail["commit"],
            head.0.as_str(),
            "refs and audit log of backup {i} are from one instant"
        );
        let mut original = Vec::new();
        qg_store::commands::export::export(
            &fx.store,
            &qg_store::commands::export::ExportOptions {
                ns: "default".into(),
                reference: Some(head.0.clone()),
                ..Default::default()
            },
            &mut original,
        )
        .unwrap();
        assert!(
            original == head.1.as_bytes(),
            "backup {i}: the restored head exports as in the original"
        );
    }
}

#[test]
fn restore_check_rejects_a_store_missing_a_tree_node() {
    use qg_store::snapshot::{RestoreWriter, Snapshot};
    let fx = Fx::new();
    fx.commit("default", None, &quads("t", 500), "");
    // a copy of the store without the root node of main's tree
    let broken = fx.path("broken");
    {
        let objs = qg_store::objects::ObjectSet::new(fx.store.db(), "default");
        let head = fx
            .store
            .db()
            .get_ref("default", "heads/main")
            .unwrap()
            .unwrap();
        let root = qg_store::commit::Commit::load(&objs, &head).unwrap().tree;
        let snap = Snapshot::begin(fx.store.db()).unwrap();
        let mut w = RestoreWriter::create(
            &broken,
            &snap.store_id().unwrap(),
            "2026-01-01T00:00:00.000Z",
        )
        .unwrap();
        for n in snap.namespaces().unwrap() {
            w.put_namespace(&n).unwrap();
            for o in snap.objects(&n.name) {
                let o = o.unwrap();
                if o.id != root {
                    w.put_object(&n.name, &o.id, o.kind, &o.data).unwrap();
                }
            }
        }
        for r in snap.refs().unwrap() {
            w.put_ref(&r).unwrap();
        }
        for r in snap.reflog_after(0) {
            w.put_reflog(&r.unwrap()).unwrap();
        }
        for a in snap.audit_after(0) {
            w.put_audit(&a.unwrap()).unwrap();
        }
        w.finish().unwrap();
        let target = fx.target("bk");
        full(
            &FullOptions {
                data: broken.clone(),
                to: target.clone(),
                ..Default::default()
            },
            &NoProgress,
        )
        .unwrap();
        // with the final check's nodes in memory, and moved to disk
        for memory_nodes in [None, Some(2)] {
            let dest = fx.path(&format!("restored-{memory_nodes:?}"));
            let err = restore(
                &RestoreOptions {
                    from: target.clone(),
                    to: dest.clone(),
                    memory_nodes,
                    ..Default::default()
                },
                &NoProgress,
            )
            .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("failed its check") && text.contains(&root.to_hex()),
                "{memory_nodes:?}: {text}"
            );
            assert_eq!(err.kind(), qg_store::ErrorKind::Failed);
            assert!(
                !dest.exists(),
                "nothing is left of a restore that failed its check"
            );
        }
    }
}

#[test]
fn api_tokens_and_protected_branches_come_back() {
    let fx = Fx::new();
    let db = fx.store.db();
    db.protect_branch("default", "main", "2026-01-01T00:00:00.000Z", "admin")
        .unwrap();
    let token = qg_store::storage::ApiTokenRow {
        id: "tok1".into(),
        user: "ci".into(),
        role: "writer".into(),
        ns: Some("default".into()),
        created: "2026-01-01T00:00:00.000Z".into(),
        expires: None,
        revoked: None,
    };
    db.insert_api_token(&token, &[7u8; 32]).unwrap();
    let target = fx.target("bk");
    let b0 = full_to(&fx, &target, None);
    assert_eq!(b0.counts.rows, 2);
    // an incremental carries the tables as they are then: the token is revoked
    db.revoke_api_token("tok1", "2026-02-01T00:00:00.000Z")
        .unwrap();
    let b1 = inc_to(&fx, &target, None);
    for (id, revoked) in [(&b0.id, false), (&b1.id, true)] {
        let dest = fx.path(&format!("r-{revoked}"));
        restore_id(&target, id, &dest, None);
        let r = Store::open(&dest).unwrap();
        assert_eq!(
            r.db().protected_branches("default").unwrap(),
            vec!["main".to_string()]
        );
        let tokens = r.db().api_tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].revoked.is_some(), revoked);
        assert_eq!(
            r.db().api_token_by_hash(&[7u8; 32]).unwrap().unwrap().id,
            "tok1"
        );
    }
}

#[test]
fn a_run_whose_audit_record_fails_says_so_in_a_warning() {
    let fx = Fx::new();
    fx.commit("default", None, &quads("a", 20), "");
    let target = fx.dir.path().join("t").display().to_string();
    full_to(&fx, &target, None);
    // the store is there, but refuses new audit entries
    let audit_rows = |fx: &Fx| -> i64 {
        rusqlite::Connection::open(fx.data.join("qg.sqlite"))
            .unwrap()
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .unwrap()
    };
    rusqlite::Connection::open(fx.data.join("qg.sqlite"))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER frozen BEFORE INSERT ON audit \
             BEGIN SELECT RAISE(ABORT, 'audit log frozen by the test'); END;",
        )
        .unwrap();
    let before = audit_rows(&fx);

    let v = verify(
        &VerifyOptions {
            from: target.clone(),
            record_in: Some(fx.data.clone()),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(v.is_clean(), "{:?}", v.problems);
    let p = qg_backup::prune::prune(&qg_backup::prune::PruneOptions {
        from: target.clone(),
        keep_last: 5,
        dry_run: true,
        record_in: Some(fx.data.clone()),
        ..Default::default()
    })
    .unwrap();
    for (what, warnings) in [("verify", &v.warnings), ("prune", &p.warnings)] {
        assert!(
            warnings.iter().any(
                |w| w.contains("could not record this run") && w.contains("frozen by the test")
            ),
            "{what}: {warnings:?}"
        );
    }
    assert_eq!(audit_rows(&fx), before);

    // no store at the path (a recovery host): nothing recorded, no warning
    let elsewhere = fx.dir.path().join("no-store-here");
    let p = qg_backup::prune::prune(&qg_backup::prune::PruneOptions {
        from: target,
        keep_last: 5,
        dry_run: true,
        record_in: Some(elsewhere),
        ..Default::default()
    })
    .unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);

    // something that is not a store where one should be: said, not skipped
    let not_a_store = fx.dir.path().join("not-a-store");
    std::fs::create_dir_all(&not_a_store).unwrap();
    std::fs::write(not_a_store.join("qg.sqlite"), b"not a database").unwrap();
    let p = qg_backup::prune::prune(&qg_backup::prune::PruneOptions {
        from: fx.dir.path().join("t").display().to_string(),
        keep_last: 5,
        dry_run: true,
        record_in: Some(not_a_store),
        ..Default::default()
    })
    .unwrap();
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("could not record this run")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn a_failed_run_is_recorded_with_its_error() {
    let fx = Fx::new();
    let target = fx.dir.path().join("t").display().to_string();
    full_to(&fx, &target, None);
    // no retention rule: prune refuses to run, and says so in the audit log
    let err = qg_backup::prune::prune(&qg_backup::prune::PruneOptions {
        from: target.clone(),
        record_in: Some(fx.data.clone()),
        ..Default::default()
    })
    .unwrap_err();
    let last = qg_store::audit::list(fx.store.db(), None)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.action, "prune.backup");
    assert_eq!(last.outcome, qg_store::audit::Outcome::Failure);
    assert_eq!(last.target.as_deref(), Some(target.as_str()));
    assert_eq!(last.detail["error"], err.to_string().as_str());
}
