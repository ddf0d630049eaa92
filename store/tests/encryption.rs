//! Encryption at rest end to end: no plaintext in the database files, locked
//! namespaces refuse cleanly, passwords, unlock tokens and their expiry.

mod common;
use common::*;

const KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn enc(q: &Qg, args: &[&str]) -> std::process::Command {
    let mut c = q.cmd(args);
    c.env("QUADGIT_MASTER_KEY", KEY)
        .env_remove("QG_PASSWORD")
        .env_remove("QG_UNLOCK_TOKEN");
    c
}

fn run(mut c: impl std::borrow::BorrowMut<std::process::Command>) -> Run {
    c.borrow_mut()
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
        .into()
}

fn raw_files(q: &Qg) -> Vec<u8> {
    let mut all = Vec::new();
    for f in ["qg.sqlite", "qg.sqlite-wal"] {
        if let Ok(b) = std::fs::read(q.data().join(f)) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn committed_iris_and_literals_never_reach_the_files() {
    let q = Qg::new();
    run(enc(&q, &["ns", "create", "vault", "--encrypted"])).ok();
    // hold a connection so the WAL stays on disk and gets inspected too
    let hold = q.sqlite();
    let _: i64 = hold
        .query_row("SELECT count(*) FROM meta", [], |r| r.get(0))
        .unwrap();
    let data: String = (0..300)
        .map(|i| format!("<http://secret.example/Patient{i}> <http://secret.example/diagnosis> \"ConfidentialDiagnosis{i}\" .\n"))
        .collect();
    let f = q.write("secret.nq", &data);
    run(enc(
        &q,
        &[
            "--ns",
            "vault",
            "commit",
            "-m",
            "records",
            "--add",
            f.to_str().unwrap(),
        ],
    ))
    .ok();
    run(enc(
        &q,
        &[
            "--ns",
            "vault",
            "bulk-load",
            f.to_str().unwrap(),
            "-m",
            "again",
            "--branch",
            "main",
        ],
    ))
    .code(1);
    assert!(std::fs::metadata(q.data().join("qg.sqlite-wal"))
        .map(|m| m.len() > 0)
        .unwrap_or(false));
    let raw = raw_files(&q);
    for needle in ["secret.example", "ConfidentialDiagnosis", "Patient1"] {
        assert!(
            !contains(&raw, needle),
            "`{needle}` found in the raw database files"
        );
    }
    drop(hold);
    let out = run(enc(&q, &["--ns", "vault", "export"])).ok().stdout;
    assert_eq!(sorted_lines(&out), sorted_lines(&data));
    // a plaintext namespace next to it is plain (the check above can fail)
    q.run_stdin(
        &["commit", "-m", "plain", "--add", "-"],
        "<http://plain.example/a> <http://p> \"VisibleLiteral\" .\n",
    )
    .ok();
    let hold = q.sqlite();
    let _: i64 = hold
        .query_row("SELECT count(*) FROM meta", [], |r| r.get(0))
        .unwrap();
    assert!(
        contains(&raw_files(&q), "plain.example") || contains(&raw_files(&q), "VisibleLiteral")
    );
    drop(hold);
}

#[test]
fn locked_namespaces_fail_clearly_with_exit_2() {
    let q = Qg::new();
    run(enc(&q, &["ns", "create", "vault", "--encrypted"])).ok();
    run(
        enc(&q, &["--ns", "vault", "commit", "-m", "x", "--add", "-"])
            .stdin(std::process::Stdio::null()),
    );
    let head = run(enc(&q, &["--ns", "vault", "show", "main", "--json"]))
        .ok()
        .json()["id"]
        .clone();
    // no key
    let r = q.run(&["--ns", "vault", "export"]).code(2);
    assert!(
        r.stderr.contains("namespace `vault` is locked") && r.stderr.contains("QUADGIT_MASTER_KEY"),
        "{}",
        r.stderr
    );
    q.run_stdin(
        &["--ns", "vault", "commit", "-m", "x", "--add", "-"],
        &quads(0..1),
    )
    .code(2);
    // wrong key
    let other = "7".repeat(64);
    let r = run(q
        .cmd(&["--ns", "vault", "log"])
        .env("QUADGIT_MASTER_KEY", &other))
    .code(2);
    assert!(r.stderr.contains("wrapped by master key"), "{}", r.stderr);
    assert!(
        !r.stderr.contains(&other) && !r.stderr.contains(KEY),
        "a key leaked into an error"
    );
    // malformed key
    let r = run(q
        .cmd(&["--ns", "vault", "log"])
        .env("QUADGIT_MASTER_KEY", "not-a-key"))
    .code(2);
    assert!(r.stderr.contains("QUADGIT_MASTER_KEY"), "{}", r.stderr);
    // plaintext namespaces keep working without any key; the branch did not move
    q.run(&["log"]).ok();
    assert_eq!(
        run(enc(&q, &["--ns", "vault", "show", "main", "--json"]))
            .ok()
            .json()["id"],
        head
    );
    // encrypted namespace without a master key cannot be created
    let r = q.run(&["ns", "create", "nokey", "--encrypted"]).code(2);
    assert!(
        r.stderr.contains("QUADGIT_MASTER_KEY is not set"),
        "{}",
        r.stderr
    );
}

#[test]
fn passwords_tokens_expiry_and_rate_limit() {
    let q = Qg::new();
    let kdf = [
        "--kdf-memory-mib",
        "1",
        "--kdf-iterations",
        "1",
        "--kdf-parallelism",
        "1",
    ];
    let mut args = vec!["ns", "create", "pw", "--password"];
    args.extend(kdf);
    run(enc(&q, &args).env("QG_PASSWORD", "s3cret pass")).ok();
    run(enc(&q, &["--ns", "pw", "log"]).env("QG_PASSWORD", "s3cret pass")).ok();
    // master key alone is not enough
    let r = run(enc(&q, &["--ns", "pw", "log"])).code(2);
    assert!(r.stderr.contains("password-protected"), "{}", r.stderr);
    // wrong password: exit 2, audited as denied
    let r = run(enc(&q, &["--ns", "pw", "log"]).env("QG_PASSWORD", "guess")).code(2);
    assert!(
        r.stderr.contains("wrong password") && !r.stderr.contains("guess"),
        "{}",
        r.stderr
    );
    // unlock token
    let token = run(enc(&q, &["ns", "unlock", "pw"]).env("QG_PASSWORD", "s3cret pass"))
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    run(enc(&q, &["--ns", "pw", "log"]).env("QG_UNLOCK_TOKEN", &token)).ok();
    // a token does not open another namespace, nor without the master key
    run(enc(
        &q,
        &[
            "ns",
            "create",
            "pw2",
            "--password",
            "--kdf-memory-mib",
            "1",
            "--kdf-iterations",
            "1",
            "--kdf-parallelism",
            "1",
        ],
    )
    .env("QG_PASSWORD", "other"))
    .ok();
    run(enc(&q, &["--ns", "pw2", "log"]).env("QG_UNLOCK_TOKEN", &token)).code(2);
    run(q.cmd(&["--ns", "pw", "log"]).env("QG_UNLOCK_TOKEN", &token)).code(2);
    // expiry
    let short =
        run(enc(&q, &["ns", "unlock", "pw", "--ttl", "1s"]).env("QG_PASSWORD", "s3cret pass"))
            .ok()
            .stdout;
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = run(enc(&q, &["--ns", "pw", "log"]).env("QG_UNLOCK_TOKEN", short.trim())).code(2);
    assert!(r.stderr.contains("expired"), "{}", r.stderr);
    // failed unlocks are rate-limited (one already failed above)
    for _ in 0..4 {
        run(enc(&q, &["ns", "unlock", "pw"]).env("QG_PASSWORD", "nope")).code(2);
    }
    let r = run(enc(&q, &["ns", "unlock", "pw"]).env("QG_PASSWORD", "s3cret pass")).code(2);
    assert!(
        r.stderr.contains("too many failed unlock attempts"),
        "{}",
        r.stderr
    );
    // a wrong master key is audited as a failed authentication
    run(q
        .cmd(&["--ns", "pw", "log"])
        .env("QUADGIT_MASTER_KEY", "7".repeat(64)))
    .code(2);
    let audit = q.run(&["audit", "log", "--json"]).ok().json();
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "auth.master_key" && e["outcome"] == "denied"));
    let audit = q.run(&["audit", "log", "--json"]).ok().json();
    let denied = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "ns.unlock" && e["outcome"] == "denied")
        .count();
    assert_eq!(denied, 5);
    q.run(&["audit", "verify"]).ok();
}

#[test]
fn encrypted_namespace_supports_the_whole_cli() {
    let q = Qg::new();
    run(enc(&q, &["ns", "create", "vault", "--encrypted"])).ok();
    let f = q.write("a.nq", &quads(0..200));
    run(enc(
        &q,
        &[
            "--ns",
            "vault",
            "commit",
            "-m",
            "a",
            "--add",
            f.to_str().unwrap(),
        ],
    ))
    .ok();
    run(enc(&q, &["--ns", "vault", "branch", "dev"])).ok();
    let g = q.write("b.nq", &quads(200..210));
    run(enc(
        &q,
        &[
            "--ns",
            "vault",
            "commit",
            "-m",
            "b",
            "--branch",
            "dev",
            "--add",
            g.to_str().unwrap(),
        ],
    ))
    .ok();
    let d = run(enc(&q, &["--ns", "vault", "diff", "main", "dev", "--stat"])).ok();
    assert_eq!(d.stdout, "10 added, 0 removed\n");
    run(enc(&q, &["--ns", "vault", "merge", "dev"])).ok();
    let r = run(enc(
        &q,
        &["--ns", "vault", "query", "<http://ex/s205> ?p ?o"],
    ))
    .ok();
    assert_eq!(r.stdout.lines().count(), 1);
    run(enc(&q, &["fsck"])).ok();
    run(enc(&q, &["gc"])).ok();
    // the commit message stays inside the sealed commit: not in reflog or audit
    let audit = q.run(&["audit", "log", "--json"]).ok().stdout;
    assert!(!audit.contains("\"message\":\"a\""), "{audit}");
    // fsck without the key cannot vouch for the namespace
    let r = q.run(&["fsck"]).code(1);
    assert!(r.stdout.contains("vault: not verified"), "{}", r.stdout);
}
