//! Merges (clean, fast-forward, conflicting, strategies) and hooks end to end.

mod common;
use common::*;

fn person(name: &str, age: u32) -> String {
    format!("<http://ex/{name}> <http://ex/age> \"{age}\" .\n<http://ex/{name}> <http://ex/name> \"{name}\" .\n")
}

/// main and dev diverge from a common base with `alice` aged 30.
fn diverged() -> Qg {
    let q = Qg::new();
    q.add(&(person("alice", 30) + &person("bob", 40)), "base");
    q.run(&["branch", "dev"]).ok();
    q
}

fn commit_on(q: &Qg, branch: &str, add: &str, remove: &str, msg: &str) {
    let a = q.write("add.nq", add);
    let r = q.write("rm.nq", remove);
    q.run(&[
        "commit",
        "-m",
        msg,
        "--branch",
        branch,
        "--add",
        a.to_str().unwrap(),
        "--remove",
        r.to_str().unwrap(),
    ])
    .ok();
}

#[test]
fn fast_forward_and_up_to_date() {
    let q = diverged();
    commit_on(&q, "dev", &person("carol", 20), "", "carol");
    let dev = q.head("dev");
    let r = q.run(&["merge", "dev", "--json"]).ok().json();
    assert_eq!(r["kind"], "fast-forward");
    assert_eq!(q.head("main"), dev);
    let r = q.run(&["merge", "dev", "--json"]).ok().json();
    assert_eq!(r["kind"], "up-to-date");
}

#[test]
fn clean_three_way_merge_combines_both_sides() {
    let q = diverged();
    commit_on(&q, "dev", &person("carol", 20), "", "carol on dev");
    commit_on(
        &q,
        "main",
        "<http://ex/bob> <http://ex/age> \"41\" .\n",
        "<http://ex/bob> <http://ex/age> \"40\" .\n",
        "bob ages",
    );
    let main_before = q.head("main");
    let dev = q.head("dev");
    let r = q.run(&["merge", "dev", "--json"]).ok().json();
    assert_eq!(r["kind"], "merged");
    let show = q.run(&["show", "main", "--json"]).ok().json();
    assert_eq!(show["parents"], serde_json::json!([main_before, dev]));
    let out = q.export("main");
    assert!(
        out.contains("\"41\"") && out.contains("carol") && !out.contains("\"40\""),
        "{out}"
    );
    q.run(&["fsck"]).ok();
}

#[test]
fn conflict_exits_1_lists_conflicts_and_changes_nothing() {
    let q = diverged();
    let alice30 = "<http://ex/alice> <http://ex/age> \"30\" .\n";
    commit_on(
        &q,
        "main",
        "<http://ex/alice> <http://ex/age> \"31\" .\n",
        alice30,
        "alice 31 on main",
    );
    commit_on(
        &q,
        "dev",
        "<http://ex/alice> <http://ex/age> \"32\" .\n",
        alice30,
        "alice 32 on dev",
    );
    let main = q.head("main");
    let r = q.run(&["merge", "dev"]).code(1);
    assert!(
        r.stdout
            .contains("CONFLICT <http://ex/alice> <http://ex/age>"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("ours [\"31\"]") && r.stdout.contains("theirs [\"32\"]"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("1 conflict"), "{}", r.stderr);
    assert_eq!(q.head("main"), main);
    // both sides making the same change is not a conflict
    let q2 = diverged();
    for b in ["main", "dev"] {
        commit_on(
            &q2,
            b,
            "<http://ex/alice> <http://ex/age> \"31\" .\n",
            alice30,
            "same change",
        );
    }
    q2.run(&["merge", "dev"]).ok();
    // strategies settle it
    let ours = q
        .run(&["merge", "dev", "--strategy", "ours", "--json"])
        .ok()
        .json();
    assert_eq!(ours["resolved_conflicts"], 1);
    assert!(q.export("main").contains("\"31\""));
    let q3 = diverged();
    commit_on(
        &q3,
        "main",
        "<http://ex/alice> <http://ex/age> \"31\" .\n",
        alice30,
        "31",
    );
    commit_on(
        &q3,
        "dev",
        "<http://ex/alice> <http://ex/age> \"32\" .\n",
        alice30,
        "32",
    );
    q3.run(&["merge", "dev", "--strategy", "theirs"]).ok();
    let out = q3.export("main");
    assert!(out.contains("\"32\"") && !out.contains("\"31\""), "{out}");
    q3.run(&["merge", "dev", "--strategy", "sideways"]).code(2);
}

#[test]
fn failing_pre_commit_hook_aborts_with_its_stderr() {
    let q = Qg::new();
    q.install_hook(
        "pre-commit",
        "#!/bin/sh\nif grep -q forbidden; then echo 'policy: forbidden predicate' >&2; exit 1; fi\n",
    );
    let head = q.head("main");
    let r = q
        .run_stdin(
            &["commit", "-m", "bad", "--add", "-"],
            "<http://ex/a> <http://ex/forbidden> \"x\" .\n",
        )
        .code(1);
    assert!(
        r.stderr
            .contains("pre-commit hook rejected the commit: policy: forbidden predicate"),
        "{}",
        r.stderr
    );
    assert_eq!(q.head("main"), head);
    let audit = q.run(&["audit", "log", "--json"]).ok().json();
    let last = audit.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "hook.pre-commit");
    assert_eq!(last["outcome"], "denied");
    q.add("<http://ex/a> <http://ex/fine> \"x\" .\n", "good");
}

#[test]
fn hook_receives_the_documented_json() {
    let q = Qg::new();
    let seen = q.path("seen.json");
    q.install_hook(
        "post-commit",
        &format!("#!/bin/sh\ncat > '{}'\n", seen.display()),
    );
    let c = q.add("<http://ex/a> <http://ex/p> \"x\" .\n", "doc");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(doc["hook"], "post-commit");
    assert_eq!(doc["namespace"], "default");
    assert_eq!(doc["branch"], "main");
    assert_eq!(doc["commit"], c.as_str());
    assert_eq!(doc["message"], "doc");
    assert_eq!(doc["author"], "tester");
    assert_eq!(doc["added_count"], 1);
    assert_eq!(doc["added"], "<http://ex/a> <http://ex/p> \"x\" .\n");
    assert_eq!(doc["removed_count"], 0);
}

#[test]
fn failing_post_commit_hook_warns_but_commit_stands() {
    let q = Qg::new();
    q.install_hook(
        "post-commit",
        "#!/bin/sh\necho 'notify failed' >&2\nexit 5\n",
    );
    let r = q
        .run_stdin(&["commit", "-m", "x", "--add", "-", "--json"], &quads(0..1))
        .ok();
    assert!(
        r.stderr.contains("post-commit hook failed: notify failed"),
        "{}",
        r.stderr
    );
    let c = r.json()["commit"].as_str().unwrap().to_string();
    assert_eq!(q.head("main"), c);
}

#[test]
fn hook_timeout_rejects_pre_commit() {
    let q = Qg::new();
    q.install_hook("pre-commit", "#!/bin/sh\nsleep 20\n");
    let head = q.head("main");
    let start = std::time::Instant::now();
    let r = q
        .run_stdin(
            &["--hook-timeout", "1", "commit", "-m", "x", "--add", "-"],
            &quads(0..1),
        )
        .code(1);
    assert!(r.stderr.contains("timed out"), "{}", r.stderr);
    assert!(start.elapsed().as_secs() < 15, "the hook was not killed");
    assert_eq!(q.head("main"), head);
}

#[test]
fn pre_merge_hook_can_block_a_merge() {
    let q = diverged();
    commit_on(&q, "dev", &person("carol", 20), "", "carol");
    q.install_hook("pre-merge", "#!/bin/sh\necho 'merges frozen' >&2\nexit 1\n");
    let main = q.head("main");
    let r = q.run(&["merge", "dev"]).code(1);
    assert!(r.stderr.contains("merges frozen"), "{}", r.stderr);
    assert_eq!(q.head("main"), main);
}

#[test]
fn hook_that_ignores_stdin_does_not_kill_qg() {
    let q = Qg::new();
    q.install_hook("pre-commit", "#!/bin/sh\nexit 0\n");
    q.install_hook("post-commit", "#!/bin/sh\nexit 0\n");
    // far more than a pipe buffer, so the write to the hook must hit EPIPE
    let r = q
        .run_stdin(
            &["commit", "-m", "big", "--add", "-", "--json"],
            &quads(0..5000),
        )
        .ok();
    assert_eq!(r.json()["added"], 5000);
}

#[test]
fn bulk_load_runs_the_same_hooks_as_commit() {
    let q = Qg::new();
    q.install_hook(
        "post-commit",
        "#!/bin/sh\necho 'indexer down' >&2\nexit 3\n",
    );
    let f = q.write("load.nq", &quads(0..50));
    let r = q
        .run(&["bulk-load", f.to_str().unwrap(), "-m", "load", "--json"])
        .ok();
    assert!(
        r.stderr.contains("post-commit hook failed: indexer down"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.json()["hook_warnings"][0],
        "post-commit hook failed: indexer down"
    );
    q.install_hook("pre-commit", "#!/bin/sh\necho 'frozen' >&2\nexit 1\n");
    let head = q.head("main");
    let more = q.write("more.nq", &quads(50..60));
    let r = q
        .run(&["bulk-load", more.to_str().unwrap(), "-m", "more"])
        .code(1);
    assert!(
        r.stderr
            .contains("pre-commit hook rejected the bulk-load: frozen"),
        "{}",
        r.stderr
    );
    assert_eq!(q.head("main"), head);
}
