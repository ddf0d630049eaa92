//! Integrity: fsck finds corruption, the audit chain finds tampering, gc keeps
//! what is reachable, concurrent writers never lose an update, and `kill -9`
//! mid-write leaves a store that opens cleanly at the old or the new commit.

mod common;
use common::*;

use std::process::Stdio;
use std::time::Duration;

#[test]
fn fsck_names_a_corrupt_object() {
    let q = Qg::new();
    q.add(&quads(0..500), "data");
    q.run(&["fsck"]).ok();
    let db = q.sqlite();
    let (id, data): (Vec<u8>, Vec<u8>) = db
        .query_row(
            "SELECT id, data FROM objects WHERE kind = 1 ORDER BY length(data) DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut bad = data.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    db.execute(
        "UPDATE objects SET data = ?1 WHERE id = ?2",
        rusqlite::params![bad, id],
    )
    .unwrap();
    drop(db);
    let hex_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let r = q.run(&["fsck"]).code(1);
    assert!(
        r.stdout.contains(&hex_id) && r.stdout.contains("corrupt"),
        "{}",
        r.stdout
    );
    // reads of the damaged data fail loudly, never with garbage
    let r = q.run(&["export"]).code(1);
    assert!(r.stderr.contains(&hex_id), "{}", r.stderr);
}

#[test]
fn fsck_finds_missing_objects() {
    let q = Qg::new();
    q.add(&quads(0..500), "data");
    let db = q.sqlite();
    db.execute(
        "DELETE FROM objects WHERE id = (SELECT id FROM objects WHERE kind = 1 ORDER BY length(data) DESC LIMIT 1)",
        [],
    )
    .unwrap();
    drop(db);
    let r = q.run(&["fsck", "--json"]).code(1);
    let j = r.json();
    assert!(!j["problems"].as_array().unwrap().is_empty());
    assert!(
        j["problems"][0]["what"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{}",
        r.stdout
    );
}

#[test]
fn audit_verify_detects_edits_and_deletions() {
    for tamper in [
        "UPDATE audit SET actor = 'mallory' WHERE seq = 3",
        "UPDATE audit SET detail = '{}' WHERE seq = 4",
        "DELETE FROM audit WHERE seq = 2",
        "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)",
    ] {
        let q = Qg::new();
        q.add(&quads(0..3), "one");
        q.add(&quads(3..6), "two");
        let r = q.run(&["audit", "verify"]).ok();
        assert!(r.stdout.contains("4 audit entries"), "{}", r.stdout);
        q.sqlite().execute(tamper, []).unwrap();
        let r = q.run(&["audit", "verify"]).code(1);
        assert!(
            r.stderr.contains("audit log entry #"),
            "{tamper}: {}",
            r.stderr
        );
    }
}

#[test]
fn audit_log_records_actor_and_filters_by_time() {
    let q = Qg::new();
    q.add(&quads(0..1), "x");
    let all = q.run(&["audit", "log", "--json"]).ok().json();
    let actions: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["store.init", "ns.create", "commit"]);
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == "tester"));
    let future = q
        .run(&["audit", "log", "--since", "2999-01-01", "--json"])
        .ok()
        .json();
    assert_eq!(future, serde_json::json!([]));
    let recent = q
        .run(&["audit", "log", "--since", "1h", "--json"])
        .ok()
        .json();
    assert_eq!(recent.as_array().unwrap().len(), 3);
}

#[test]
fn gc_removes_only_unreachable_objects() {
    let q = Qg::new();
    q.add(&quads(0..300), "a");
    q.run(&["branch", "tmp"]).ok();
    let rm = q.write("rm.nq", &quads(0..100));
    q.run(&[
        "commit",
        "-m",
        "on tmp",
        "--branch",
        "tmp",
        "--remove",
        rm.to_str().unwrap(),
    ])
    .ok();
    q.run(&["branch", "-d", "tmp"]).ok();
    // an orphan, as a crashed bulk load would leave
    {
        let store = qg_store::Store::open(&q.data()).unwrap();
        let objs = store.objects("default").unwrap();
        objs.put(
            qg_store::object::Kind::Node,
            &qg_store::tree::Node::empty().encode()[..],
        )
        .unwrap();
        objs.put(qg_store::object::Kind::Commit, b"{\"orphan\":true}")
            .unwrap();
        store.db().write(|_| objs.flush()).unwrap();
    }
    let dry = q.run(&["gc", "--dry-run", "--json"]).ok().json();
    assert_eq!(
        dry["removed"], 1,
        "the empty leaf is reachable from the root commit; the orphan commit is not"
    );
    let r = q.run(&["gc", "--json"]).ok().json();
    assert_eq!(r["removed"], 1);
    // the deleted branch's commit is kept by its reflog entry
    q.run(&["fsck"]).ok();
    let again = q.run(&["gc", "--json"]).ok().json();
    assert_eq!(again["removed"], 0);
    assert_eq!(q.export("main").lines().count(), 300);
}

#[test]
fn concurrent_commits_one_wins_the_other_gets_a_conflict() {
    let q = Qg::new();
    // a slow pre-commit hook makes both writers build on the same parent
    q.install_hook("pre-commit", "#!/bin/sh\ncat >/dev/null\nsleep 1\n");
    let base = q.head("main");
    let a = q.write("a.nq", &quads(0..10));
    let b = q.write("b.nq", &quads(10..20));
    let spawn = |f: &std::path::Path| {
        q.cmd(&["commit", "-m", "racer", "--add", f.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    let ra: Run = ca.wait_with_output().unwrap().into();
    let rb: Run = cb.wait_with_output().unwrap().into();
    let codes = [ra.code, rb.code];
    assert!(
        codes.contains(&0) && codes.contains(&1),
        "a: {} {}\nb: {} {}",
        ra.code,
        ra.stderr,
        rb.code,
        rb.stderr
    );
    let loser = if ra.code == 1 { &ra } else { &rb };
    assert!(
        loser.stderr.contains("moved to") && loser.stderr.contains("retry"),
        "{}",
        loser.stderr
    );
    let log = q.run(&["log", "--json"]).ok().json();
    assert_eq!(
        log.as_array().unwrap().len(),
        2,
        "exactly one commit on top of the root"
    );
    assert_eq!(log[1]["id"], base.as_str());
    assert_eq!(q.export("main").lines().count(), 10);
    q.run(&["fsck"]).ok();
}

#[test]
fn expected_parent_is_compare_and_swap() {
    let q = Qg::new();
    let root = q.head("main");
    q.add(&quads(0..1), "moves main");
    let r = q
        .run_stdin(
            &[
                "commit",
                "-m",
                "stale",
                "--add",
                "-",
                "--expected-parent",
                &root,
            ],
            &quads(5..6),
        )
        .code(1);
    assert!(r.stderr.contains("moved to"), "{}", r.stderr);
    let head = q.head("main");
    q.run_stdin(
        &[
            "commit",
            "-m",
            "fresh",
            "--add",
            "-",
            "--expected-parent",
            &head,
        ],
        &quads(5..6),
    )
    .ok();
}

#[test]
fn kill_9_mid_write_leaves_old_or_new_commit() {
    let q = Qg::new();
    q.add(&quads(0..100), "base");
    let big = q.write("big.nq", &quads(100..40_100));
    let expected_new: Vec<String> = sorted_lines(&(quads(0..100) + &quads(100..40_100)));
    let mut seen_new = 0;
    let mut seen_old = 0;
    // kill at spread-out moments, through commit and bulk-load
    for i in 0..12u64 {
        let old = q.head("main");
        let args: Vec<&str> = if i % 2 == 0 {
            vec!["commit", "-m", "big", "--add", big.to_str().unwrap()]
        } else {
            vec!["bulk-load", big.to_str().unwrap(), "-m", "big"]
        };
        let mut child = q
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(40 * i + (i * 7919) % 53));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        q.run(&["fsck"]).ok();
        let head = q.head("main");
        if head == old {
            seen_old += 1;
        } else {
            let show = q.run(&["show", &head, "--json"]).ok().json();
            assert_eq!(
                show["parents"][0],
                old.as_str(),
                "the branch moved to an unexpected commit"
            );
            assert_eq!(sorted_lines(&q.export("main")), expected_new);
            seen_new += 1;
            // reset the branch content for the next round
            let rm = q.write("rm.nq", &quads(100..40_100));
            q.run(&["commit", "-m", "reset", "--remove", rm.to_str().unwrap()])
                .ok();
        }
        assert_eq!(q.export("main").lines().count(), 100, "round {i}");
    }
    eprintln!("kills before landing: {seen_old}, after: {seen_new}");
    q.run(&["audit", "verify"]).ok();
}
