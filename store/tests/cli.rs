//! End-to-end tests of the `qg` binary: the command-line contract, and bad
//! input that must produce one clear error, the documented exit code and no change.

mod common;
use common::*;

#[test]
fn init_twice_is_an_error_that_changes_nothing() {
    let q = Qg::new();
    let before = q.run(&["audit", "log", "--json"]).ok().json();
    let r = q.run(&["init"]).code(2);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert_eq!(q.run(&["audit", "log", "--json"]).ok().json(), before);
    assert_eq!(q.run(&["ns", "list"]).ok().stdout, "default\n");
}

#[test]
fn missing_store_and_non_store_directories() {
    let q = Qg::empty();
    let r = q.run(&["log"]).code(2);
    assert!(
        r.stderr.contains("no QuadGit store") && r.stderr.contains("qg init"),
        "{}",
        r.stderr
    );
    std::fs::create_dir_all(q.data()).unwrap();
    std::fs::write(q.data().join("notes.txt"), "hi").unwrap();
    let r = q.run(&["log"]).code(2);
    assert!(r.stderr.contains("is not a QuadGit store"), "{}", r.stderr);
    std::fs::write(
        q.data().join("qg.sqlite"),
        "not a database at all, just text",
    )
    .unwrap();
    let r = q.run(&["export"]).code(2);
    assert!(r.stderr.contains("is not a QuadGit store"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"));
}

#[test]
fn commit_export_round_trip_and_global_flags_anywhere() {
    let q = Qg::new();
    let text = quads(0..50);
    q.add(&text, "fifty");
    assert_eq!(sorted_lines(&q.export("main")), sorted_lines(&text));
    // global flags before and after the subcommand
    let data = q.data();
    let a = q
        .run(&["--data", data.to_str().unwrap(), "--json", "log", "-n", "1"])
        .ok()
        .json();
    let b = q
        .run(&["log", "-n", "1", "--json", "--data", data.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(a, b);
    assert_eq!(a[0]["message"], "fifty");
    assert_eq!(a[0]["quads"], 50);
}

#[test]
fn malformed_rdf_names_file_and_line_and_commits_nothing() {
    let q = Qg::new();
    q.add(&quads(0..3), "base");
    let head = q.head("main");
    let audit_before = q.run(&["audit", "log", "--json"]).ok().json();
    let bad = q.write(
        "bad.nq",
        "<http://ex/a> <http://ex/p> \"ok\" .\n<http://ex/a> <http://ex/p> .\n",
    );
    let r = q
        .run(&["commit", "-m", "bad", "--add", bad.to_str().unwrap()])
        .code(2);
    assert!(r.stderr.contains("bad.nq:2:"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "one clear error: {}", r.stderr);
    assert_eq!(q.head("main"), head);
    assert_eq!(q.run(&["audit", "log", "--json"]).ok().json(), audit_before);
    // unknown extension without --format
    let odd = q.write("data.xyz", "");
    let r = q
        .run(&["commit", "-m", "x", "--add", odd.to_str().unwrap()])
        .code(2);
    assert!(r.stderr.contains("--format"), "{}", r.stderr);
    // missing file
    let r = q.run(&["commit", "-m", "x", "--add", "nope.nq"]).code(2);
    assert!(r.stderr.contains("nope.nq"), "{}", r.stderr);
    // the same bad input through bulk-load
    let r = q
        .run(&["bulk-load", bad.to_str().unwrap(), "-m", "bad"])
        .code(2);
    assert!(r.stderr.contains("bad.nq:2:"), "{}", r.stderr);
    assert_eq!(q.head("main"), head);
    q.run(&["fsck"]).ok();
}

#[test]
fn unknown_refs_and_bad_usage_exit_2() {
    let q = Qg::new();
    for args in [
        vec!["show", "nosuch"],
        vec!["export", "main~7"],
        vec!["diff", "main", "zzzz"],
        vec!["log", "feature"],
        vec!["branch", "x", "nosuch"],
        vec!["merge", "nosuch"],
    ] {
        let r = q.run(&args).code(2);
        assert!(
            r.stderr.starts_with("error: unknown ref"),
            "{args:?}: {}",
            r.stderr
        );
    }
    q.run(&["frobnicate"]).code(2);
    q.run(&["commit"]).code(2); // -m is required
    let r = q.run(&["--ns", "nope", "log"]).code(2);
    assert!(
        r.stderr.contains("namespace `nope` does not exist"),
        "{}",
        r.stderr
    );
    let r = q.run(&["branch", "bad..name"]).code(2);
    assert!(r.stderr.contains("invalid branch"), "{}", r.stderr);
    let r = q.run(&["query", "?s", "?p"]).code(2);
    assert!(r.stderr.contains("3 or 4 terms"), "{}", r.stderr);
    let r = q.run(&["audit", "log", "--since", "last tuesday"]).code(2);
    assert!(r.stderr.contains("last tuesday"), "{}", r.stderr);
}

#[test]
fn help_documents_exit_codes() {
    let r = Qg::empty().run(&["--help"]).ok();
    assert!(
        r.stdout.contains("Exit codes:") && r.stdout.contains("2  bad usage"),
        "{}",
        r.stdout
    );
}

#[test]
fn refs_resolve_by_branch_tag_prefix_and_ancestry() {
    let q = Qg::new();
    let c1 = q.add(&quads(0..1), "one");
    let c2 = q.add(&quads(1..2), "two");
    q.run(&["tag", "v1", "main~1"]).ok();
    assert_eq!(q.head("v1"), c1);
    assert_eq!(q.head(&c2[..10]), c2);
    assert_eq!(q.head("main~1"), c1);
    assert_eq!(q.head("main~"), c1);
    assert_eq!(q.head("v1~1"), q.head("main~2"));
    // full ref names, and a tag hidden by a same-named branch
    assert_eq!(q.head("heads/main"), c2);
    q.run(&["branch", "v1"]).ok();
    assert_eq!(
        q.head("v1"),
        c2,
        "a branch wins over a tag of the same name"
    );
    assert_eq!(q.head("tags/v1"), c1);
    let r = q.run(&["tag", "v1"]).code(2);
    assert!(r.stderr.contains("tag `v1` already exists"), "{}", r.stderr);
    let tags = q.run(&["tag", "--json"]).ok().json();
    assert_eq!(tags[0]["name"], "v1");
}

#[test]
fn diff_lines_and_stat() {
    let q = Qg::new();
    q.add(&quads(0..5), "five");
    q.run(&["branch", "dev"]).ok();
    let rm = q.write("rm.nq", &quads(0..2));
    let add = q.write("add.nq", &quads(10..11));
    q.run(&[
        "commit",
        "-m",
        "edit",
        "--branch",
        "dev",
        "--remove",
        rm.to_str().unwrap(),
        "--add",
        add.to_str().unwrap(),
    ])
    .ok();
    let r = q.run(&["diff", "main", "dev"]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(lines.contains(&"- <http://ex/s0> <http://ex/p> \"v0\" <http://ex/g0> ."));
    assert!(lines.contains(&"- <http://ex/s1> <http://ex/p> \"v1\" <http://ex/g1> ."));
    assert!(lines.contains(&"+ <http://ex/s10> <http://ex/p> \"v10\" <http://ex/g1> ."));
    assert_eq!(
        q.run(&["diff", "main", "dev", "--stat"]).ok().stdout,
        "1 added, 2 removed\n"
    );
    assert_eq!(q.run(&["diff", "dev", "dev"]).ok().stdout, "");
}

#[test]
fn branches_list_create_delete() {
    let q = Qg::new();
    q.run(&["branch", "feature/x"]).ok();
    let list = q.run(&["branch"]).ok().stdout;
    assert!(
        list.contains("* main") && list.contains("  feature/x"),
        "{list}"
    );
    let r = q.run(&["branch", "feature/x"]).code(2);
    assert!(r.stderr.contains("already exists"));
    let r = q.run(&["branch", "-d", "main"]).code(2);
    assert!(r.stderr.contains("default branch"), "{}", r.stderr);
    q.run(&["branch", "-d", "feature/x"]).ok();
    q.run(&["show", "feature/x"]).code(2);
}

#[test]
fn empty_commit_is_refused() {
    let q = Qg::new();
    q.add(&quads(0..2), "two");
    let head = q.head("main");
    // adding quads that are already there changes nothing
    let r = q
        .run_stdin(&["commit", "-m", "again", "--add", "-"], &quads(0..2))
        .code(1);
    assert!(r.stderr.contains("nothing to commit"), "{}", r.stderr);
    assert_eq!(q.head("main"), head);
    q.run(&["commit", "-m", "marker", "--allow-empty"]).ok();
    assert_ne!(q.head("main"), head);
}

#[test]
fn blank_nodes_are_store_unique_across_imports() {
    let q = Qg::new();
    let text = "_:a <http://ex/knows> _:b .\n";
    q.add(text, "one");
    q.add(text, "two");
    let out = q.export("main");
    assert_eq!(
        out.lines().count(),
        2,
        "two imports must not collide: {out}"
    );
}

#[test]
fn bulk_load_equals_commit_add() {
    let q = Qg::new();
    let text = quads(0..3000);
    let file = q.write("big.nq", &text);
    q.run(&["branch", "viacommit"]).ok();
    let a = q
        .run(&[
            "bulk-load",
            file.to_str().unwrap(),
            "-m",
            "bulk",
            "--json",
            "--sort-memory",
            "1",
        ])
        .ok()
        .json();
    assert_eq!(a["quads"], 3000);
    let b = q
        .run(&[
            "commit",
            "-m",
            "commit",
            "--branch",
            "viacommit",
            "--add",
            file.to_str().unwrap(),
            "--json",
        ])
        .ok()
        .json();
    let tree = |c: &serde_json::Value| {
        q.run(&["show", c["commit"].as_str().unwrap(), "--json"])
            .ok()
            .json()["tree"]
            .clone()
    };
    assert_eq!(tree(&a), tree(&b));
    // bulk-load onto a branch with data merges with what is there
    let more = q.write("more.nq", &quads(2000..4000));
    let r = q
        .run(&["bulk-load", more.to_str().unwrap(), "-m", "more", "--json"])
        .ok()
        .json();
    assert_eq!(r["quads"], 4000);
    assert_eq!(r["added"], 1000);
    q.run(&["fsck"]).ok();
}

#[test]
fn query_patterns() {
    let q = Qg::new();
    q.add(
        "<http://ex/a> <http://ex/name> \"Alice\"@en <http://ex/g> .\n<http://ex/b> <http://ex/name> \"Bob\" .\n<http://ex/a> <http://ex/knows> <http://ex/a> .\n<http://ex/a> <http://ex/knows> <http://ex/b> .\n",
        "people",
    );
    let r = q.run(&["query", "?s <http://ex/name> ?n"]).ok();
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    let r = q.run(&["query", "*", "*", "*", "<http://ex/g>"]).ok();
    assert_eq!(
        r.stdout,
        "<http://ex/a> <http://ex/name> \"Alice\"@en <http://ex/g> .\n"
    );
    let j = q
        .run(&["query", "?x <http://ex/knows> ?x", "--json"])
        .ok()
        .json();
    assert_eq!(j.as_array().unwrap().len(), 1);
    assert_eq!(j[0]["bindings"]["x"], "<http://ex/a>");
    let r = q.run(&["query", "--at", "main~1", "?s ?p ?o"]).ok();
    assert_eq!(r.stdout, "");
}

#[test]
fn export_graph_and_trig() {
    let q = Qg::new();
    q.add(&quads(0..6), "six");
    let r = q.run(&["export", "--graph", "http://ex/g1"]).ok();
    assert_eq!(r.stdout.lines().count(), 2);
    assert!(r.stdout.lines().all(|l| l.ends_with("<http://ex/g1> .")));
    let trig = q.run(&["export", "--format", "trig"]).ok().stdout;
    assert!(trig.contains("<http://ex/g2> {"), "{trig}");
    // TriG output parses back to the same quads
    let q2 = Qg::new();
    let f = q2.write("x.trig", &trig);
    q2.run(&["commit", "-m", "trig", "--add", f.to_str().unwrap()])
        .ok();
    assert_eq!(sorted_lines(&q2.export("main")), sorted_lines(&quads(0..6)));
}

#[test]
fn namespaces_are_isolated() {
    let q = Qg::new();
    q.run(&["ns", "create", "other"]).ok();
    q.run(&["ns", "create", "other"]).code(2);
    q.run(&["ns", "create", "bad name"]).code(2);
    q.run_stdin(
        &["--ns", "other", "commit", "-m", "x", "--add", "-"],
        &quads(0..3),
    )
    .ok();
    assert_eq!(q.export("main"), "");
    assert_eq!(
        q.run(&["--ns", "other", "export"])
            .ok()
            .stdout
            .lines()
            .count(),
        3
    );
    assert_eq!(
        q.run(&["ns", "list", "--json"]).ok().json(),
        serde_json::json!(["default", "other"])
    );
    q.run(&["ns", "rm", "other"]).ok();
    q.run(&["--ns", "other", "log"]).code(2);
    q.run(&["ns", "rm", "other"]).code(2);
    q.run(&["fsck"]).ok();
}

#[test]
fn config_file_sits_below_environment_and_flags() {
    let q = Qg::new();
    q.run(&["ns", "create", "fromfile"]).ok();
    q.run(&["ns", "create", "fromenv"]).ok();
    let conf = q.write("qg.toml", "ns = \"fromfile\"\n");
    q.run_stdin(
        &[
            "--config",
            conf.to_str().unwrap(),
            "commit",
            "-m",
            "x",
            "--add",
            "-",
        ],
        &quads(0..1),
    )
    .ok();
    assert_eq!(
        q.run(&["--ns", "fromfile", "export"])
            .ok()
            .stdout
            .lines()
            .count(),
        1
    );
    let out = q
        .cmd(&["--config", conf.to_str().unwrap(), "log", "--json"])
        .env("QG_NS", "fromenv")
        .output()
        .unwrap();
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        log.as_array().unwrap().len(),
        1,
        "the environment beats the file"
    );
    let r = q
        .run(&[
            "--config",
            conf.to_str().unwrap(),
            "--ns",
            "default",
            "log",
            "--json",
        ])
        .ok();
    assert_eq!(
        r.json().as_array().unwrap().len(),
        1,
        "the flag beats the file"
    );
    let secret = q.write("bad.toml", "master_key = \"00\"\n");
    let r = q
        .run(&["--config", secret.to_str().unwrap(), "log"])
        .code(2);
    assert!(
        r.stderr.contains("secret") && !r.stderr.contains("00\""),
        "{}",
        r.stderr
    );
    let broken = q.write("broken.toml", "ns = \n");
    let r = q
        .run(&["--config", broken.to_str().unwrap(), "log"])
        .code(2);
    assert!(
        r.stderr.contains("broken.toml") && r.stderr.contains("line 1"),
        "{}",
        r.stderr
    );
}

#[test]
fn completions_and_man_page() {
    let q = Qg::empty();
    assert!(q
        .run(&["completions", "bash"])
        .ok()
        .stdout
        .contains("_qg()"));
    assert!(q.run(&["man"]).ok().stdout.contains(".TH qg 1"));
}

#[test]
fn deleting_a_namespace_revokes_its_tokens_and_protections() {
    let q = Qg::new();
    q.run(&["ns", "create", "tmp"]).ok();
    q.run(&["--ns", "tmp", "branch", "protect", "main"]).ok();
    q.run(&[
        "token", "create", "--user", "u", "--role", "writer", "--ns", "tmp",
    ])
    .ok();
    q.run(&["ns", "rm", "tmp"]).ok();
    let db = q.sqlite();
    let protected: i64 = db
        .query_row(
            "SELECT count(*) FROM protected_branches WHERE ns='tmp'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let live: i64 = db
        .query_row(
            "SELECT count(*) FROM api_tokens WHERE ns='tmp' AND revoked IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!((protected, live), (0, 0));
}
