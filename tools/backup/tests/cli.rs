//! The `qg-backup` binary end to end: exit codes, damage of every kind,
//! pipes through stdout/stdin, retention, and S3 against a real S3 API server
//! (moto) on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn data_arg(fx: &Fx) -> String {
    fx.data.display().to_string()
}

/// A store with two namespaces and some history.
fn populated() -> Fx {
    let fx = Fx::new();
    fx.commit("default", None, &quads("a", 200), "");
    fx.branch("default", "dev");
    fx.commit("default", Some("dev"), &quads("d", 20), "");
    fx.tag("default", "v1");
    fx.ns("other");
    fx.commit("other", None, &quads("o", 60), "");
    fx
}

fn backup(
    fx: &Fx,
    kind: &str,
    to: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> serde_json::Value {
    let data = data_arg(fx);
    let mut args = vec![kind, "--to", to, "--data", &data, "--json"];
    args.extend_from_slice(extra);
    run(&args, env).ok().json()
}

#[test]
fn help_usage_errors_and_global_flags() {
    let h = run(&["--help"], &[]).ok();
    assert!(
        h.stdout.contains("Exit codes:") && h.stdout.contains("QG_BACKUP_KEY"),
        "{}",
        h.stdout
    );
    run(&["full", "--bogus"], &[]).code(2);
    run(&["full"], &[]).code(2); // --to missing
    let fx = populated();
    let target = fx.target("bk");
    let data = data_arg(&fx);
    // global flags after the subcommand, and before it
    let r = run(&["full", "--to", &target, "--data", &data, "--json"], &[]).ok();
    assert_eq!(r.json()["kind"], "full");
    let r = run(
        &["--json", "--data", &data, "incremental", "--to", &target],
        &[],
    )
    .ok();
    assert_eq!(r.json()["kind"], "incremental");
    // human output: one summary line
    let r = run(&["incremental", "--to", &target, "--data", &data], &[]).ok();
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    assert!(r.stdout.starts_with("incremental backup "), "{}", r.stdout);
    // --ns is for restore only
    let r = run(
        &["full", "--to", &target, "--data", &data, "--ns", "other"],
        &[],
    )
    .code(2);
    assert!(r.stderr.contains("every namespace"), "{}", r.stderr);
    // no store
    let r = run(
        &["full", "--to", &target, "--data", &fx.target("nothing")],
        &[],
    )
    .code(2);
    assert!(r.stderr.contains("no QuadGit store"), "{}", r.stderr);
    // --encrypt without a key
    let r = run(
        &["full", "--to", &target, "--data", &data, "--encrypt"],
        &[],
    )
    .code(2);
    assert!(r.stderr.contains("QG_BACKUP_KEY"), "{}", r.stderr);
    // a key given as a flag is not a thing
    run(
        &[
            "full", "--to", &target, "--data", &data, "--key", BACKUP_KEY,
        ],
        &[],
    )
    .code(2);
    // prune needs a policy
    let r = run(&["prune", "--from", &target], &[]).code(2);
    assert!(r.stderr.contains("--keep"), "{}", r.stderr);
    // completions and man page
    assert!(run(&["completions", "bash"], &[])
        .ok()
        .stdout
        .contains("qg-backup"));
    assert!(run(&["man"], &[]).ok().stdout.contains(".TH"));
    // a passphrase in the config file is refused
    let cfg = fx.path("qg.toml");
    std::fs::write(&cfg, "backup-passphrase = \"hunter2\"\n").unwrap();
    let r = run(
        &["list", "--from", &target, "--config", cfg.to_str().unwrap()],
        &[],
    )
    .code(2);
    assert!(r.stderr.contains("secret"), "{}", r.stderr);
}

#[test]
fn list_verify_and_prune() {
    let fx = populated();
    let target = fx.target("bk");
    let full1 = backup(&fx, "full", &target, &[], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    fx.commit("default", None, &quads("b", 5), "");
    let inc1 = backup(&fx, "incremental", &target, &[], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    fx.commit("default", None, &quads("c", 5), "");
    let full2 = backup(&fx, "full", &target, &[], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let inc2 = backup(&fx, "incremental", &target, &[], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();

    let l = run(&["list", "--from", &target, "--json"], &[]).ok().json();
    let ids: Vec<&str> = l["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![full1.as_str(), &inc1, &full2, &inc2]);
    assert_eq!(l["backups"][1]["parent"], full1.as_str());
    let human = run(&["list", "--from", &target], &[]).ok();
    assert_eq!(human.stdout.lines().count(), 5, "{}", human.stdout);

    let v = run(
        &[
            "verify",
            "--from",
            &target,
            "--read-data",
            "--json",
            "--data",
            &data_arg(&fx),
        ],
        &[],
    )
    .ok()
    .json();
    assert_eq!(v["read"].as_array().unwrap().len(), 4);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    // the verification is recorded in the store
    let last = qg_store::audit::list(Store_open(&fx).db(), None)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.action, "verify.backup");

    // keep the last one: its full backup stays too
    let p = run(
        &[
            "prune",
            "--from",
            &target,
            "--keep-last",
            "1",
            "--dry-run",
            "--json",
        ],
        &[],
    )
    .ok()
    .json();
    let removed: Vec<&str> = p["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(removed, vec![inc1.as_str(), &full1]);
    assert_eq!(files(&fx.path("bk")).len(), 8, "a dry run removes nothing");
    let p = run(&["prune", "--from", &target, "--keep-last", "1"], &[]).ok();
    assert!(
        p.stdout
            .contains(&format!("keep   {full2} (needed by {inc2})")),
        "{}",
        p.stdout
    );
    let l = run(&["list", "--from", &target, "--json"], &[]).ok().json();
    let ids: Vec<&str> = l["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![full2.as_str(), &inc2]);
    assert_eq!(files(&fx.path("bk")).len(), 4);
    // and what is left still restores
    run(
        &["restore", "--from", &target, "--to", &fx.target("r")],
        &[],
    )
    .ok();
}

#[allow(non_snake_case)]
fn Store_open(fx: &Fx) -> qg_store::Store {
    qg_store::Store::open(&fx.data).unwrap()
}

/// Restore must fail with `code`, name `needle`, and leave `dest` as it was (absent).
#[track_caller]
fn restore_fails(from: &str, dest: &Path, code: i32, needle: &str, env: &[(&str, &str)]) {
    let r = run(
        &["restore", "--from", from, "--to", dest.to_str().unwrap()],
        env,
    )
    .code(code);
    assert!(
        r.stderr.contains(needle),
        "expected `{needle}` in: {}",
        r.stderr
    );
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    assert!(
        !dest.exists(),
        "a failed restore left {} behind: {:?}",
        dest.display(),
        files(dest)
    );
}

#[test]
fn damage_truncated_stream() {
    let fx = populated();
    let target = fx.target("bk");
    let id = backup(&fx, "full", &target, &[], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let stream = streams(&fx.path("bk"))[0].clone();
    let bytes = std::fs::read(&stream).unwrap();
    // through stdin: the stream just stops
    std::fs::write(fx.path("cut.qgb"), &bytes[..bytes.len() / 2]).unwrap();
    let r = sh(
        &format!(
            "qg-backup restore --from - --to {} < {}",
            fx.target("r1"),
            fx.target("cut.qgb")
        ),
        &[],
    )
    .code(1);
    assert!(
        r.stderr.contains("truncated") && r.stderr.contains(&id),
        "{}",
        r.stderr
    );
    assert!(!fx.path("r1").exists());
    // the stream in the target is cut short: size differs from the manifest
    std::fs::write(&stream, &bytes[..bytes.len() - 100]).unwrap();
    restore_fails(&target, &fx.path("r2"), 1, "truncated", &[]);
    let v = run(&["verify", "--from", &target], &[]).code(1);
    assert!(
        v.stdout.contains(&format!("DAMAGED backup {id}")),
        "{}",
        v.stdout
    );
}

#[test]
fn damage_flipped_byte_in_a_frame() {
    for encrypted in [false, true] {
        let fx = populated();
        let target = fx.target("bk");
        let env: &[(&str, &str)] = if encrypted {
            &[("QG_BACKUP_KEY", BACKUP_KEY)]
        } else {
            &[]
        };
        let extra: &[&str] = if encrypted { &["--encrypt"] } else { &[] };
        let id = backup(&fx, "full", &target, env, extra)["id"]
            .as_str()
            .unwrap()
            .to_string();
        let stream = streams(&fx.path("bk"))[0].clone();
        let mut bytes = std::fs::read(&stream).unwrap();
        let at = bytes.len() * 2 / 3;
        bytes[at] ^= 0x01;
        std::fs::write(&stream, &bytes).unwrap();
        // a catalog check alone does not read the data; --read-data does
        run(&["verify", "--from", &target], env).ok();
        let v = run(&["verify", "--from", &target, "--read-data"], env).code(1);
        assert!(
            v.stdout.contains(&format!("DAMAGED backup {id}"))
                && v.stdout.contains("checksum mismatch"),
            "{}",
            v.stdout
        );
        restore_fails(&target, &fx.path("r"), 1, "checksum mismatch", env);
    }
}

#[test]
fn damage_changed_manifest_or_forged_record() {
    let fx = populated();
    let target = fx.target("bk");
    let env = [("QG_BACKUP_KEY", BACKUP_KEY)];
    let id = backup(&fx, "full", &target, &env, &["--encrypt"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = fx.path("bk").join(format!("{id}.manifest.json"));
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    m["counts"]["objects"] = 1.into();
    std::fs::write(&manifest, serde_json::to_string(&m).unwrap()).unwrap();
    restore_fails(&target, &fx.path("r"), 1, "does not authenticate", &env);
    let v = run(&["verify", "--from", &target], &env).code(1);
    assert!(v.stdout.contains("does not authenticate"), "{}", v.stdout);
    std::fs::write(&manifest, text).unwrap();
    run(&["verify", "--from", &target, "--read-data"], &env).ok();

    // an unencrypted stream whose record is rewritten with a valid checksum is
    // still caught by the stream's SHA-256
    let fx = populated();
    let target = fx.target("bk");
    backup(&fx, "full", &target, &[], &[]);
    let stream = streams(&fx.path("bk"))[0].clone();
    let bytes = std::fs::read(&stream).unwrap();
    let needle = b"heads/dev";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut forged = bytes.clone();
    forged[at..at + needle.len()].copy_from_slice(b"heads/xyz");
    std::fs::write(&stream, &forged).unwrap();
    restore_fails(&target, &fx.path("r2"), 1, "damaged", &[]);
}

#[test]
fn damage_missing_middle_incremental() {
    let fx = populated();
    let target = fx.target("bk");
    let full = backup(&fx, "full", &target, &[], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    fx.commit("default", None, &quads("m1", 10), "");
    let mid = backup(&fx, "incremental", &target, &[], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    fx.commit("default", None, &quads("m2", 10), "");
    let last = backup(&fx, "incremental", &target, &[], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(fx.path("bk").join(format!("{mid}.qgb"))).unwrap();
    std::fs::remove_file(fx.path("bk").join(format!("{mid}.manifest.json"))).unwrap();
    restore_fails(
        &target,
        &fx.path("r"),
        1,
        &format!("backup {mid}, the parent of {last}, is missing"),
        &[],
    );
    let v = run(&["verify", "--from", &target], &[]).code(1);
    assert!(v.stdout.contains(&mid), "{}", v.stdout);
    let l = run(&["list", "--from", &target], &[]).ok();
    assert!(l.stdout.contains("BROKEN"), "{}", l.stdout);
    // the full backup alone still restores (here with the final check's
    // nodes in a temporary database after the second one)
    let r = run(
        &[
            "--json",
            "restore",
            "--from",
            &target,
            "--id",
            &full,
            "--to",
            &fx.target("r-full"),
            "--memory-nodes",
            "2",
        ],
        &[],
    )
    .ok();
    assert!(r.stdout.contains("\"nodes_on_disk\": true"), "{}", r.stdout);
    // through stdin the gap is just as clear
    let r = sh(
        &format!(
            "cat {}/{full}.qgb {}/{last}.qgb | qg-backup restore --from - --to {}",
            target,
            target,
            fx.target("r-stdin")
        ),
        &[],
    )
    .code(1);
    assert!(
        r.stderr
            .contains(&format!("backup {last} does not follow {full}")),
        "{}",
        r.stderr
    );
    assert!(!fx.path("r-stdin").exists());
}

#[test]
fn wrong_or_missing_key() {
    let fx = populated();
    let target = fx.target("bk");
    backup(
        &fx,
        "full",
        &target,
        &[("QG_BACKUP_KEY", BACKUP_KEY)],
        &["--encrypt"],
    );
    restore_fails(
        &target,
        &fx.path("r1"),
        2,
        "wrong key",
        &[("QG_BACKUP_KEY", OTHER_KEY)],
    );
    restore_fails(&target, &fx.path("r2"), 2, "is encrypted", &[]);
    restore_fails(
        &target,
        &fx.path("r3"),
        2,
        "passphrase",
        &[("QG_BACKUP_PASSPHRASE", "guess")],
    );
    let r = run(
        &["verify", "--from", &target, "--read-data"],
        &[("QG_BACKUP_KEY", OTHER_KEY)],
    )
    .code(2);
    assert!(r.stderr.contains("wrong key"), "{}", r.stderr);
    // a key file works as the environment does
    let key_file = fx.path("key");
    std::fs::write(&key_file, BACKUP_KEY).unwrap();
    run(
        &[
            "restore",
            "--from",
            &target,
            "--to",
            &fx.target("r4"),
            "--key-file",
            key_file.to_str().unwrap(),
        ],
        &[],
    )
    .ok();
    let r = run(
        &[
            "restore",
            "--from",
            &target,
            "--to",
            &fx.target("r5"),
            "--key-file",
            "/nonexistent/key",
        ],
        &[],
    )
    .code(2);
    assert!(r.stderr.contains("/nonexistent/key"), "{}", r.stderr);
    // the key never shows up in output or in the audit log
    let log = qg_store::audit::list(Store_open(&fx).db(), None).unwrap();
    assert!(!serde_json::to_string(&log).unwrap().contains(BACKUP_KEY));
}

#[test]
fn restore_refuses_a_non_empty_destination() {
    let fx = populated();
    let target = fx.target("bk");
    backup(&fx, "full", &target, &[], &[]);
    let dest = fx.path("busy");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("precious.txt"), "keep me").unwrap();
    let r = run(
        &["restore", "--from", &target, "--to", dest.to_str().unwrap()],
        &[],
    )
    .code(2);
    assert!(r.stderr.contains("not empty"), "{}", r.stderr);
    assert_eq!(files(&dest), vec!["precious.txt"]);
    // restoring over the live store is refused the same way
    let r = run(&["restore", "--from", &target, "--to", &data_arg(&fx)], &[]).code(2);
    assert!(r.stderr.contains("not empty"), "{}", r.stderr);
    // an empty existing directory is fine
    let empty = fx.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let r = run(
        &[
            "restore",
            "--from",
            &target,
            "--to",
            empty.to_str().unwrap(),
            "--json",
        ],
        &[],
    )
    .ok();
    let got = files(&empty);
    assert!(
        got.contains(&"hooks".to_string()) && got.contains(&"qg.sqlite".to_string()),
        "{got:?}"
    );
    assert!(
        got.iter().all(|f| [
            "hooks",
            "qg.lock",
            "qg.sqlite",
            "qg.sqlite-shm",
            "qg.sqlite-wal"
        ]
        .contains(&f.as_str())),
        "{got:?}"
    );
    assert_eq!(
        std::fs::metadata(empty.join("qg.sqlite-wal"))
            .map(|m| m.len())
            .unwrap_or(0),
        0,
        "the WAL is folded in"
    );
    assert!(r.json()["check"]["objects_verified"].as_u64().unwrap() > 0);
}

#[test]
fn failed_backup_is_audited_and_leaves_no_partial_stream() {
    let fx = populated();
    let not_a_dir = fx.path("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let r = run(
        &[
            "full",
            "--to",
            not_a_dir.to_str().unwrap(),
            "--data",
            &data_arg(&fx),
        ],
        &[],
    )
    .code(1);
    assert!(
        r.stderr.contains(not_a_dir.to_str().unwrap()),
        "{}",
        r.stderr
    );
    let last = qg_store::audit::list(Store_open(&fx).db(), None)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.action, "backup.full");
    assert_eq!(last.outcome, qg_store::audit::Outcome::Failure);
    assert!(last.detail["error"].as_str().unwrap().contains("file"));
}

#[test]
fn pipes_through_stdout_and_stdin() {
    let fx = populated();
    let data = data_arg(&fx);
    let want = state(&fx.store);
    // full to stdout, restored from stdin; the JSON summary goes to stderr
    let r = sh(
        &format!(
            "qg-backup full --data {data} --to - --json | qg-backup restore --from - --to {}",
            fx.target("r1")
        ),
        &[],
    )
    .ok();
    assert!(r.stderr.contains("\"kind\": \"full\""), "{}", r.stderr);
    assert_same(&want, &state(&open(&fx.path("r1"))), "stdout | stdin");

    // a chain: full and incrementals concatenated on stdin, encrypted
    let target = fx.target("bk");
    let env = [("QG_BACKUP_KEY", BACKUP_KEY)];
    backup(&fx, "full", &target, &env, &["--encrypt"]);
    fx.commit("other", None, &quads("p", 7), "");
    // an incremental to stdout builds on the chain in --base
    sh(
        &format!(
            "qg-backup incremental --data {data} --to - --base {target} > {}",
            fx.target("inc.qgb")
        ),
        &env,
    )
    .ok();
    let want = state(&fx.store);
    let r = sh(
        &format!(
            "cat {target}/*.qgb {} | qg-backup restore --from - --to {} --json",
            fx.target("inc.qgb"),
            fx.target("r2")
        ),
        &env,
    )
    .ok();
    assert_eq!(r.json()["chain"].as_array().unwrap().len(), 2);
    assert_same(
        &want,
        &state(&open(&fx.path("r2"))),
        "concatenated chain on stdin",
    );
    let v = sh(
        &format!(
            "cat {target}/*.qgb {} | qg-backup verify --from -",
            fx.target("inc.qgb")
        ),
        &env,
    )
    .ok();
    assert!(v.stdout.starts_with("OK: 2 backups"), "{}", v.stdout);
    // without --base, an incremental to stdout is a usage error
    run(&["incremental", "--data", &data, "--to", "-"], &env).code(2);
}

// ---- S3, against moto_server on loopback ----

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let exe = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&exe)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {exe} ({e}): the S3 tests need a real S3 API server; install it with `pip install \"moto[server]\"` (.ci/run does)")
        });
    let mut moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = moto.child.try_wait() {
            panic!("{exe} exited at start ({status})");
        }
        assert!(
            Instant::now() < deadline,
            "{exe} did not listen on port {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    moto.port = port;
    moto
}

/// Create a bucket with a plain (unsigned) request; moto accepts it.
fn create_bucket(port: u16, bucket: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[test]
fn s3_round_trip_with_multipart_upload() {
    let moto = start_moto();
    create_bucket(moto.port, "qg-backups");
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("QG_S3_ENDPOINT", endpoint.as_str()),
        ("QG_BACKUP_KEY", BACKUP_KEY),
    ];
    let fx = populated();
    // 12 MiB that does not compress, so the stream needs a multipart upload (8 MiB parts)
    let mut blob = vec![0u8; 12 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in blob.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(fx.data.join("hooks").join("blob.bin"), &blob).unwrap();
    let target = "s3://qg-backups/nightly/store-a";
    let data = data_arg(&fx);
    let b0 = run(
        &[
            "full",
            "--data",
            &data,
            "--to",
            target,
            "--json",
            "--encrypt",
        ],
        &env,
    )
    .ok()
    .json();
    assert!(b0["bytes"].as_u64().unwrap() > 12 << 20);
    fx.commit("default", None, &quads("s3", 30), "");
    let want = state(&fx.store);
    // --s3-endpoint as a flag works like QG_S3_ENDPOINT
    let env_no_ep: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "QG_S3_ENDPOINT")
        .collect();
    let b1 = run(
        &[
            "incremental",
            "--data",
            &data,
            "--to",
            target,
            "--json",
            "--s3-endpoint",
            &endpoint,
        ],
        &env_no_ep,
    )
    .ok()
    .json();
    assert_eq!(b1["parent"], b0["id"]);
    assert!(
        b1["bytes"].as_u64().unwrap() < 1 << 20,
        "the incremental does not repeat the blob"
    );

    let l = run(&["list", "--from", target, "--json"], &env).ok().json();
    assert_eq!(l["backups"].as_array().unwrap().len(), 2);
    assert_eq!(l["target"], target);
    // a different prefix in the same bucket is another, empty, target
    let other = run(
        &["list", "--from", "s3://qg-backups/nightly", "--json"],
        &env,
    )
    .ok()
    .json();
    assert_eq!(other["backups"].as_array().unwrap().len(), 0);

    let v = run(&["verify", "--from", target, "--read-data", "--json"], &env)
        .ok()
        .json();
    assert_eq!(v["read"].as_array().unwrap().len(), 2, "{v}");

    let dest = fx.path("restored");
    run(
        &["restore", "--from", target, "--to", dest.to_str().unwrap()],
        &env,
    )
    .ok();
    assert_same(&want, &state(&open(&dest)), "S3 restore");
    assert!(std::fs::read(dest.join("hooks").join("blob.bin")).unwrap() == blob);

    // streaming: a full backup from stdout into S3 is not a thing, but S3 into a pipe is
    let r = sh(
        &format!(
            "qg-backup verify --from {target} --id {}",
            b1["id"].as_str().unwrap()
        ),
        &env,
    )
    .ok();
    assert!(r.stdout.starts_with("OK: 2 backups"), "{}", r.stdout);

    let p = run(
        &["prune", "--from", target, "--keep-last", "1", "--json"],
        &env,
    )
    .ok()
    .json();
    assert_eq!(
        p["removed"].as_array().unwrap().len(),
        0,
        "the full backup is needed by the kept incremental"
    );

    // wrong credentials or a missing bucket are clear errors, not hangs
    let r = run(&["list", "--from", "s3://no-such-bucket/x"], &env).code(1);
    assert!(r.stderr.contains("s3://no-such-bucket/x"), "{}", r.stderr);
}

// ---- the runbook and its systemd units ----

#[test]
fn runbook_shows_the_shipped_systemd_units_verbatim() {
    let runbooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks");
    let md = std::fs::read_to_string(runbooks.join("backup-restore.md")).unwrap();
    let mut shown = std::collections::BTreeMap::new();
    let mut lines = md.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line
            .strip_prefix("cat > systemd/")
            .and_then(|r| r.strip_suffix(" <<'EOF'"))
        {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "EOF").collect();
            shown.insert(name.to_string(), body.join("\n") + "\n");
        }
    }
    let mut shipped = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(runbooks.join("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".service") || name.ends_with(".timer") {
            shipped.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    assert_eq!(
        shown.keys().collect::<Vec<_>>(),
        shipped.keys().collect::<Vec<_>>()
    );
    for (name, text) in &shipped {
        assert!(
            shown[name] == *text,
            "runbooks/systemd/{name} differs from the copy in backup-restore.md"
        );
        // every command a unit runs is a real qg-backup command line
        for cmd in text.lines().filter_map(|l| {
            l.strip_prefix("ExecStart=")
                .or_else(|| l.strip_prefix("ExecStartPost="))
        }) {
            let args: Vec<&str> = cmd.split_whitespace().collect();
            assert_eq!(args[0], "qg-backup", "{name}: {cmd}");
            let help = run(&[args[1], "--help"], &[]).ok();
            for flag in args.iter().filter(|a| a.starts_with("--")) {
                assert!(
                    help.stdout.contains(flag),
                    "{name}: `qg-backup {}` has no {flag}",
                    args[1]
                );
            }
        }
    }
    let readme = std::fs::read_to_string(runbooks.join("README.md")).unwrap();
    assert!(readme.contains("](backup-restore.md)"));
}

#[test]
fn a_damaged_newest_backup_is_refused_listed_and_restorable_on_purpose() {
    let fx = populated();
    let target = fx.target("bk");
    let full = backup(&fx, "full", &target, &[], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let at_full = state(&fx.store);
    fx.commit("default", None, &quads("new", 300), "");
    fx.branch("default", "late");
    let newest = backup(&fx, "incremental", &target, &[], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = fx.path("bk").join(format!("{newest}.manifest.json"));
    let good = std::fs::read(&manifest).unwrap();
    // a zeroed block in the newest manifest
    let mut bad = good.clone();
    bad[100..164].fill(0);
    std::fs::write(&manifest, &bad).unwrap();

    // restore without --id refuses, names the damage and the exact --id to pass
    restore_fails(&target, &fx.path("r1"), 1, &newest, &[]);
    let r = run(
        &[
            "restore",
            "--from",
            &target,
            "--to",
            fx.target("r1").as_str(),
        ],
        &[],
    )
    .code(1);
    assert!(
        r.stderr.contains("unreadable") && r.stderr.contains(&format!("--id {full}")),
        "{}",
        r.stderr
    );
    // list shows it as damaged, in its place; verify fails on it
    let l = run(&["list", "--from", &target], &[]).ok();
    let row = l
        .stdout
        .lines()
        .find(|l| l.starts_with(&newest))
        .unwrap_or_else(|| panic!("{newest} not listed:\n{}", l.stdout));
    assert!(row.contains("DAMAGED"), "{row}");
    let j = run(&["list", "--from", &target, "--json"], &[]).ok().json();
    assert_eq!(j["damaged"][0]["id"], newest.as_str());
    let v = run(&["verify", "--from", &target, "--read-data"], &[]).code(1);
    assert!(
        v.stdout.contains(&format!("DAMAGED backup {newest}")),
        "{}",
        v.stdout
    );
    // --at later than the damaged backup refuses too; --id restores the older point on purpose
    let r = run(
        &[
            "restore",
            "--from",
            &target,
            "--to",
            fx.target("r2").as_str(),
            "--at",
            "2099-01-01",
        ],
        &[],
    )
    .code(1);
    assert!(r.stderr.contains(&newest), "{}", r.stderr);
    run(
        &[
            "restore",
            "--from",
            &target,
            "--to",
            fx.target("r3").as_str(),
            "--id",
            &full,
        ],
        &[],
    )
    .ok();
    assert_same(
        &at_full,
        &state(&open(&fx.path("r3"))),
        "restore --id of the older point",
    );

    // a truncated newest stream (manifest intact) is refused the same way
    std::fs::write(&manifest, &good).unwrap();
    let stream = fx.path("bk").join(format!("{newest}.qgb"));
    let bytes = std::fs::read(&stream).unwrap();
    std::fs::write(&stream, &bytes[..bytes.len() / 2]).unwrap();
    restore_fails(&target, &fx.path("r4"), 1, "truncated", &[]);
    let l = run(&["list", "--from", &target], &[]).ok();
    assert!(
        l.stdout
            .lines()
            .any(|l| l.starts_with(&newest) && l.contains("BROKEN") && l.contains("truncated")),
        "{}",
        l.stdout
    );
    // a flipped byte inside the stream: restore reads it, finds it and still refuses
    let mut flipped = bytes.clone();
    let at = bytes.len() / 2;
    flipped[at] ^= 0x10;
    std::fs::write(&stream, &flipped).unwrap();
    restore_fails(&target, &fx.path("r5"), 1, &format!("--id {full}"), &[]);
    // repaired, the newest point restores again
    std::fs::write(&stream, &bytes).unwrap();
    run(
        &[
            "restore",
            "--from",
            &target,
            "--to",
            fx.target("r6").as_str(),
        ],
        &[],
    )
    .ok();
    assert_same(
        &state(&fx.store),
        &state(&open(&fx.path("r6"))),
        "restore of the repaired newest point",
    );
}
