//! qg-rotate-keys end to end: the binary against real stores, with `kill -9`
//! at random moments during `encrypt` and `dek`, raw-file checks for leftover
//! plaintext, and the master-key and password rewraps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use qg_store::commands::{branch, commit, export, fsck};
use qg_store::crypto::MasterKey;
use qg_store::progress::NoProgress;
use qg_store::rdf::Source;
use qg_store::store::{Keyring, NamespaceOptions};
use qg_store::Store;

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const KEY2: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_qg-rotate-keys")
}

fn keyring(key: &str, password: Option<&str>) -> Keyring {
    Keyring {
        master: Some(MasterKey::parse(key).unwrap()),
        password: password.map(|p| zeroize::Zeroizing::new(p.to_string())),
        unlock_token: None,
    }
}

fn open(dir: &Path, key: &str, password: Option<&str>) -> Store {
    let mut s = Store::open(dir).unwrap();
    s.set_keyring(keyring(key, password));
    s
}

fn tool(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.env("QG_DATA", dir)
        .env("QUADGIT_MASTER_KEY", KEY)
        .env("QG_ACTOR", "rotator")
        .env_remove("QG_PASSWORD")
        .env_remove("QG_NEW_PASSWORD")
        .env_remove("QG_NS")
        .args(args)
        .stdin(Stdio::null());
    c
}

fn ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn text(range: std::ops::Range<usize>, tag: &str) -> String {
    range
        .map(|i| format!("<http://example.org/{tag}/s{i}> <http://example.org/p> \"Literal{tag}{i}\" <http://example.org/g{}> .\n", i % 4))
        .collect()
}

fn add(store: &Store, ns: &str, branch_name: &str, body: String, msg: &str) {
    commit::commit(
        store,
        &commit::CommitOptions {
            ns: ns.into(),
            branch: Some(branch_name.into()),
            message: msg.into(),
            add: vec![Source::Text {
                name: msg.into(),
                text: body,
            }],
            ..Default::default()
        },
    )
    .unwrap();
}

/// Every branch and tag of `ns` with its exported quads.
fn snapshot(store: &Store, ns: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let refs = branch::branches(store, ns)
        .unwrap()
        .into_iter()
        .chain(branch::tags(store, ns).unwrap())
        .map(|r| r.name);
    for name in refs {
        let mut buf = Vec::new();
        export::export(
            store,
            &export::ExportOptions {
                ns: ns.into(),
                reference: Some(name.clone()),
                ..Default::default()
            },
            &mut buf,
        )
        .unwrap();
        out.insert(name, String::from_utf8(buf).unwrap());
    }
    out
}

/// A store with namespace `data` holding history on two branches and a tag.
fn template(encrypted: bool) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut store = Store::init(&dir).unwrap();
    store.set_keyring(keyring(KEY, None));
    store
        .create_namespace_with(
            "data",
            &NamespaceOptions {
                encrypted,
                ..Default::default()
            },
        )
        .unwrap();
    for round in 0..4 {
        add(
            &store,
            "data",
            "main",
            text(round * 3000..(round + 1) * 3000, "m"),
            &format!("round {round}"),
        );
    }
    branch::create_branch(&store, "data", "side", Some("main~2")).unwrap();
    add(&store, "data", "side", text(0..500, "side"), "side work");
    branch::create_tag(&store, "data", "v1", Some("main~1")).unwrap();
    drop(store);
    (tmp, dir)
}

/// Create password namespace `ns` with cheap Argon2id parameters (tests only).
fn password_namespace(store: &Store, ns: &str, password: &str) {
    store
        .create_namespace_with(
            ns,
            &NamespaceOptions {
                password: Some(zeroize::Zeroizing::new(password.into())),
                kdf: Some(qg_store::crypto::KdfParams {
                    m_kib: 64,
                    t: 1,
                    p: 1,
                }),
                ..Default::default()
            },
        )
        .unwrap();
}

fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("hooks")).unwrap();
    std::fs::copy(from.join("qg.sqlite"), to.join("qg.sqlite")).unwrap();
}

/// The bytes of every file of the store's data directory (the database, its
/// WAL, and whatever else a job may have left there).
fn raw(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_file() {
            all.extend(std::fs::read(path).unwrap());
        }
    }
    all
}

/// The files of the store's data directory, by name.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn has(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn assert_clean(store: &Store) {
    let r = fsck::fsck(store, &fsck::FsckOptions::default(), &NoProgress).unwrap();
    assert!(r.is_clean(), "fsck: {:?}", r.problems);
    qg_store::audit::verify(store.db()).unwrap();
}

/// Kill `args` at spread-out moments, then re-run it to the end.
fn kill_and_resume(tpl: &Path, args: &[&str], check: impl Fn(&Path)) {
    let mut resumed = 0;
    for i in 0..10u64 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        copy_store(tpl, &dir);
        let mut child = tool(&dir, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + i * 23 % 170));
        let _ = child.kill();
        let _ = child.wait();
        if ok(&mut tool(&dir, args)).contains("resumed") {
            resumed += 1;
        }
        assert!(
            !files(&dir).contains(&qg_store::rotation::REBUILD_FILE.to_string()),
            "a partial file was left: {:?}",
            files(&dir)
        );
        check(&dir);
    }
    eprintln!("{args:?}: {resumed} of 10 re-runs resumed a killed job");
}

#[test]
fn encrypt_survives_kill_9_and_leaves_no_plaintext() {
    let (_t, tpl) = template(false);
    let before = snapshot(&open(&tpl, KEY, None), "data");
    assert!(
        has(&raw(&tpl), "Literalm"),
        "the template must hold plaintext for this test to mean anything"
    );
    kill_and_resume(&tpl, &["--ns", "data", "encrypt", "--batch", "7"], |dir| {
        let store = open(dir, KEY, None);
        assert_eq!(snapshot(&store, "data"), before);
        assert_clean(&store);
        let rec = store.crypto_record("data").unwrap().unwrap();
        assert!(rec.job.is_none() && rec.current == Some(1));
        let bytes = raw(dir);
        for needle in ["Literalm", "example.org/m/", "Literalside"] {
            assert!(
                !has(&bytes, needle),
                "plaintext `{needle}` left in the files"
            );
        }
        // a second run is a no-op that says so
        let out = ok(&mut tool(dir, &["--ns", "data", "encrypt", "--json"]));
        assert!(out.contains("\"already_done\": true"), "{out}");
    });
}

#[test]
fn dek_rotation_survives_kill_9_and_drops_the_old_key() {
    let (_t, tpl) = template(true);
    let before = snapshot(&open(&tpl, KEY, None), "data");
    kill_and_resume(&tpl, &["--ns", "data", "dek", "--batch", "7"], |dir| {
        let store = open(dir, KEY, None);
        assert_eq!(snapshot(&store, "data"), before);
        assert_clean(&store);
        let rec = store.crypto_record("data").unwrap().unwrap();
        assert!(rec.job.is_none());
        assert_eq!(
            rec.keys.len(),
            1,
            "old key versions must be gone: {:?}",
            rec.keys
        );
        assert!(rec.current.unwrap() >= 2);
        let usage = store.db().key_usage("data").unwrap();
        assert_eq!(usage.len(), 1, "{usage:?}");
    });
}

#[test]
fn dek_and_encrypt_refuse_while_the_store_is_open_elsewhere() {
    let (_t, dir) = template(true);
    let before = std::fs::read(dir.join("qg.sqlite")).unwrap();
    let held = open(&dir, KEY, None);
    let record = held.crypto_record("data").unwrap().unwrap().to_json();
    for args in [["--ns", "data", "dek"], ["--ns", "default", "encrypt"]] {
        let o = tool(&dir, &args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("is in use") && err.contains("qg serve"),
            "{args:?}: {err}"
        );
    }
    // nothing changed, nothing left behind
    assert_eq!(
        held.crypto_record("data").unwrap().unwrap().to_json(),
        record
    );
    assert!(held.crypto_record("default").unwrap().is_none());
    assert!(
        !files(&dir).contains(&qg_store::rotation::REBUILD_FILE.to_string()),
        "{:?}",
        files(&dir)
    );
    drop(held);
    assert!(std::fs::read(dir.join("qg.sqlite")).unwrap() == before);
    // once it is closed, the rotation runs
    let out = ok(&mut tool(&dir, &["--ns", "data", "dek"]));
    assert!(out.contains("-> key v2"), "{out}");
}

#[test]
fn a_commit_with_a_damaged_kind_byte_stops_dek_and_changes_nothing() {
    let (_t, dir) = template(true);
    let head = {
        let store = open(&dir, KEY, None);
        let refs = store.db().refs("data", "heads/main").unwrap();
        let head = refs[0].1;
        let mut bytes = store.db().get_object("data", &head).unwrap().unwrap();
        bytes[4] = 1; // says "tree node"; the kind byte is outside the sealed body
        store
            .db()
            .write(|db| {
                db.delete_object("data", &head)?;
                db.put_object("data", &head, qg_store::object::Kind::Commit, &bytes)
                    .map(|_| ())
            })
            .unwrap();
        head
    };
    let before = std::fs::read(dir.join("qg.sqlite")).unwrap();
    let o = tool(&dir, &["--ns", "data", "dek"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&head.to_hex()) && err.contains("sealed as a commit"),
        "{err}"
    );
    assert!(std::fs::read(dir.join("qg.sqlite")).unwrap() == before);
    assert!(
        !files(&dir).contains(&qg_store::rotation::REBUILD_FILE.to_string()),
        "{:?}",
        files(&dir)
    );
}

#[test]
fn a_commit_naming_a_tree_node_as_parent_stops_dek_and_encrypt_and_changes_nothing() {
    // `dek` meets the node as a leaf it has copied, `encrypt` as one it has
    // decoded from the tree walk: both must refuse it as a parent
    for (encrypted, job) in [(true, "dek"), (false, "encrypt")] {
        let (_t, dir) = template(encrypted);
        let leaf = {
            let store = open(&dir, KEY, None);
            let objs = store.objects("data").unwrap();
            let head = store.db().refs("data", "heads/main").unwrap()[0].1;
            let c = qg_store::commit::Commit::load(&objs, &head).unwrap();
            let mut leaf = c.tree;
            loop {
                let node = objs.node(&leaf).unwrap();
                if node.level == 0 {
                    break;
                }
                leaf = node.children[0].id;
            }
            let bad = qg_store::commit::Commit {
                parents: vec![leaf],
                message: "a node for a parent".into(),
                ..c
            };
            let id = bad.store(&objs).unwrap();
            store
                .db()
                .write(|db| {
                    objs.flush()?;
                    db.set_ref("data", "heads/bad", &id)
                })
                .unwrap();
            leaf
        };
        let before = std::fs::read(dir.join("qg.sqlite")).unwrap();
        let o = tool(&dir, &["--ns", "data", job]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{job}: {err}");
        assert!(
            err.contains(&leaf.to_hex()) && err.contains("expected a commit, found a tree node"),
            "{job}: {err}"
        );
        assert!(
            std::fs::read(dir.join("qg.sqlite")).unwrap() == before,
            "{job}"
        );
        assert!(
            !files(&dir).contains(&qg_store::rotation::REBUILD_FILE.to_string()),
            "{job}: {:?}",
            files(&dir)
        );
    }
}

#[test]
fn a_tree_node_naming_a_node_above_it_stops_dek_and_changes_nothing() {
    use qg_store::tree::{Child, Keys, Node};
    let (_t, dir) = template(true);
    let above = {
        let store = open(&dir, KEY, None);
        let objs = store.objects("data").unwrap();
        let head = store.db().refs("data", "heads/main").unwrap()[0].1;
        let c = qg_store::commit::Commit::load(&objs, &head).unwrap();
        let mut level1 = c.tree;
        let first_key = loop {
            let node = objs.node(&level1).unwrap();
            assert!(node.level >= 1, "the test needs an internal node");
            if node.level == 1 {
                break node.keys.first().unwrap().to_vec();
            }
            level1 = node.children[0].id;
        };
        // a level-2 node over a real level-1 node, named by a level-1 node
        let node = |level, child| {
            let mut keys = Keys::new();
            keys.push(&first_key);
            Node {
                level,
                keys,
                children: vec![Child {
                    id: child,
                    count: 1,
                }],
            }
        };
        let above = objs.put_node(node(2, level1)).unwrap();
        let below = objs.put_node(node(1, above)).unwrap();
        let bad = qg_store::commit::Commit {
            tree: below,
            parents: vec![head],
            message: "a node naming one above it".into(),
            ..c
        };
        let id = bad.store(&objs).unwrap();
        store
            .db()
            .write(|db| {
                objs.flush()?;
                db.set_ref("data", "heads/bad", &id)
            })
            .unwrap();
        above
    };
    let before = std::fs::read(dir.join("qg.sqlite")).unwrap();
    let o = tool(&dir, &["--ns", "data", "dek"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&above.to_hex()) && err.contains("is not a tree node of a lower level"),
        "{err}"
    );
    assert!(std::fs::read(dir.join("qg.sqlite")).unwrap() == before);
    assert!(!files(&dir).contains(&qg_store::rotation::REBUILD_FILE.to_string()));
}

#[test]
fn encrypt_seals_a_damaged_leaf_as_it_is_and_fsck_names_it_after() {
    let (_t, dir) = template(false);
    // the objects fsck finds damaged (each once, however many trees share it)
    let fsck_problems = |store: &Store| {
        let mut bad: Vec<_> = fsck::fsck(store, &fsck::FsckOptions::default(), &NoProgress)
            .unwrap()
            .problems
            .into_iter()
            .filter_map(|p| p.object)
            .collect();
        bad.sort_unstable();
        bad.dedup();
        bad
    };
    {
        // damage the last byte of one tree leaf's stored body
        let store = open(&dir, KEY, None);
        let db = store.db();
        let leaf = db
            .object_ids("data")
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .find(|id| {
                let bytes = db.get_object("data", id).unwrap().unwrap();
                let (kind, payload) =
                    qg_store::object::decode(&qg_store::object::Plain, "data", id, &bytes).unwrap();
                kind == qg_store::object::Kind::Node && payload[0] == 0 && payload.len() > 1000
            })
            .expect("a leaf");
        let mut bytes = db.get_object("data", &leaf).unwrap().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x5a;
        db.write(|db| {
            db.delete_object("data", &leaf)?;
            db.put_object("data", &leaf, qg_store::object::Kind::Node, &bytes)
                .map(|_| ())
        })
        .unwrap();
        assert_eq!(
            fsck_problems(&store),
            vec![leaf],
            "fsck sees the damage first"
        );
    }
    // the leaf is sealed unopened, as the runbook warns; it is not repaired
    // or hidden: fsck names its new address
    ok(&mut tool(&dir, &["--ns", "data", "encrypt"]));
    let store = open(&dir, KEY, None);
    assert!(store.crypto_record("data").unwrap().is_some());
    let after = fsck_problems(&store);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(store.db().get_object("data", &after[0]).unwrap().is_some());
}

#[test]
fn dry_runs_change_nothing() {
    let (_t, dir) = template(false);
    let before = std::fs::read(dir.join("qg.sqlite")).unwrap();
    let out = ok(&mut tool(&dir, &["--ns", "data", "encrypt", "--dry-run"]));
    assert!(out.starts_with("would re-encrypt"), "{out}");
    let key2 = dir.parent().unwrap().join("new.key");
    std::fs::write(&key2, KEY2).unwrap();
    ok(&mut tool(
        &dir,
        &[
            "master",
            "--new-key-file",
            key2.to_str().unwrap(),
            "--dry-run",
        ],
    ));
    assert!(std::fs::read(dir.join("qg.sqlite")).unwrap() == before);
}

#[test]
fn master_rotation_rewraps_without_touching_objects() {
    let (_t, dir) = template(true);
    let store = open(&dir, KEY, None);
    password_namespace(&store, "pw", "hunter2");
    let before = snapshot(&store, "data");
    let objects_before = store.db().object_ids("data").unwrap();
    drop(store);
    let key2 = dir.parent().unwrap().join("new.key");
    std::fs::write(&key2, KEY2).unwrap();
    let out = ok(&mut tool(
        &dir,
        &["master", "--new-key-file", key2.to_str().unwrap(), "--json"],
    ));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["namespaces"], serde_json::json!(["data", "pw"]));
    // the old key no longer opens anything; the new one opens everything
    let old = open(&dir, KEY, None);
    assert!(matches!(
        old.objects("data"),
        Err(qg_store::Error::Locked { .. })
    ));
    let new = open(&dir, KEY2, None);
    assert_eq!(snapshot(&new, "data"), before);
    assert_eq!(
        new.db().object_ids("data").unwrap(),
        objects_before,
        "object data must not change"
    );
    let new = open(&dir, KEY2, Some("hunter2"));
    new.objects("pw").unwrap();
    assert_clean(&new);
    // a wrong old key is refused with exit 2 and changes nothing
    let o = tool(&dir, &["master", "--new-key-file", key2.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn password_change_old_fails_new_works() {
    let (_t, dir) = template(false);
    let store = open(&dir, KEY, None);
    password_namespace(&store, "pw", "old pass");
    drop(store);
    let o = tool(&dir, &["--ns", "pw", "password"])
        .env("QG_PASSWORD", "wrong")
        .env("QG_NEW_PASSWORD", "new pass")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let old_token = {
        let s = open(&dir, KEY, Some("old pass"));
        s.unlock("pw", Duration::from_secs(600)).unwrap()
    };
    ok(tool(&dir, &["--ns", "pw", "password"])
        .env("QG_PASSWORD", "old pass")
        .env("QG_NEW_PASSWORD", "new pass"));
    let mut stale = Store::open(&dir).unwrap();
    stale.set_keyring(Keyring {
        master: Some(MasterKey::parse(KEY).unwrap()),
        password: None,
        unlock_token: Some(zeroize::Zeroizing::new(old_token)),
    });
    let err = stale
        .objects("pw")
        .err()
        .expect("a token from before the change must not open")
        .to_string();
    assert!(err.contains("password changed"), "{err}");
    assert!(open(&dir, KEY, Some("old pass")).objects("pw").is_err());
    open(&dir, KEY, Some("new pass")).objects("pw").unwrap();
    let status = ok(&mut tool(&dir, &["status", "--json"]));
    let j: serde_json::Value = serde_json::from_str(&status).unwrap();
    let pw = j["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "pw")
        .unwrap()
        .clone();
    assert_eq!(pw["password"], true);
    assert_eq!(pw["encrypted"], true);
}

#[test]
fn missing_master_key_is_exit_2() {
    let (_t, dir) = template(false);
    let o = tool(&dir, &["--ns", "data", "encrypt"])
        .env_remove("QUADGIT_MASTER_KEY")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("QUADGIT_MASTER_KEY"));
    let o = tool(&dir, &["--ns", "data", "dek"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "dek on a plaintext namespace");
}

#[test]
fn a_job_an_earlier_version_left_unfinished_is_done_by_the_next_run() {
    let (_t, dir) = template(true);
    let before = snapshot(&open(&dir, KEY, None), "data");
    // the state an earlier version's `dek` left when killed mid-copy: the
    // job marked in the key record, with its new key version already in it
    {
        let store = open(&dir, KEY, None);
        let kek = MasterKey::parse(KEY).unwrap();
        store
            .db()
            .write(|db| {
                let raw = db.crypto_record("data")?.expect("encrypted");
                let mut rec = qg_store::crypto::CryptoRecord::from_json("data", &raw)?;
                rec.keys
                    .push(qg_store::crypto::new_key(&kek, "data", 2, None).wrapped);
                rec.job = Some(qg_store::crypto::RekeyJob {
                    kind: "dek".into(),
                    from: Some(1),
                    to: 2,
                    started: "2026-01-01T00:00:00Z".into(),
                });
                db.set_crypto_record("data", Some(&rec.to_json()))
            })
            .unwrap();
    }
    let status = ok(&mut tool(&dir, &["status"]));
    assert!(status.contains("UNFINISHED `dek` job"), "{status}");
    // `encrypt` may not take over another kind of job
    let o = tool(&dir, &["--ns", "data", "encrypt"]).output().unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unfinished `dek` job"));

    let out = ok(&mut tool(&dir, &["--ns", "data", "dek"]));
    assert!(
        out.contains("key v1 -> key v2") && out.contains("resumed"),
        "{out}"
    );
    let store = open(&dir, KEY, None);
    assert_eq!(snapshot(&store, "data"), before);
    assert_clean(&store);
    let rec = store.crypto_record("data").unwrap().unwrap();
    assert!(rec.job.is_none() && rec.current == Some(2));
    assert_eq!(
        rec.keys.iter().map(|k| k.version).collect::<Vec<_>>(),
        vec![2]
    );
}

#[test]
fn a_run_killed_before_its_erase_leaves_the_rest_to_the_next_run() {
    let (_t, dir) = template(false);
    ok(&mut tool(&dir, &["--ns", "data", "encrypt"]));
    // Make the state a run killed between its switch and its VACUUM leaves:
    // the mark set, and deleted bytes still in free pages.
    let marker = "LeftoverPlaintextMarker";
    {
        let store = open(&dir, KEY, None);
        store
            .db()
            .write(|db| {
                let raw = db.crypto_record("data")?.expect("encrypted");
                let mut rec = qg_store::crypto::CryptoRecord::from_json("data", &raw)?;
                rec.erase_pending = true;
                db.set_crypto_record("data", Some(&rec.to_json()))?;
                let junk = qg_store::ObjectId::hash(1, marker.as_bytes());
                db.put_object(
                    "data",
                    &junk,
                    qg_store::object::Kind::Node,
                    marker.repeat(100).as_bytes(),
                )?;
                db.delete_object("data", &junk)
            })
            .unwrap();
    }
    assert!(
        has(&raw(&dir), marker),
        "the deleted bytes must still be in the files for this test to mean anything"
    );
    let status = ok(&mut tool(&dir, &["status"]));
    assert!(status.contains("UNFINISHED final rewrite"), "{status}");

    // `dek` (or `encrypt`) finishes the erase and does not start a rotation
    let out = ok(&mut tool(&dir, &["--ns", "data", "dek"]));
    assert!(out.contains("finished the final rewrite"), "{out}");
    assert!(!has(&raw(&dir), marker), "deleted bytes left in the files");
    let store = open(&dir, KEY, None);
    let rec = store.crypto_record("data").unwrap().unwrap();
    assert!(!rec.erase_pending && rec.job.is_none() && rec.current == Some(1));
    assert_clean(&store);
    let status = ok(&mut tool(&dir, &["status"]));
    assert!(!status.contains("UNFINISHED"), "{status}");
}
