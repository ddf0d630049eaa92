//! Helpers for qg-backup's tests: stores built with the qg-store library,
//! their state captured ref by ref as `qg export` prints it, and the real
//! `qg-backup` binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use qg_store::commands::{branch, commit, export};
use qg_store::crypto::MasterKey;
use qg_store::rdf::Source;
use qg_store::store::{Keyring, NamespaceOptions};
use qg_store::Store;

/// The store master key used for encrypted namespaces in tests.
pub const MASTER_KEY: &str = "4f1c2a7d9e3b5a6c8d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e";
/// A backup key (QG_BACKUP_KEY form).
pub const BACKUP_KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff00";
pub const OTHER_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

pub fn keyring() -> Keyring {
    Keyring {
        master: Some(MasterKey::parse(MASTER_KEY).unwrap()),
        ..Default::default()
    }
}

/// Open a store with the test master key.
pub fn open(path: &Path) -> Store {
    let mut s = Store::open(path).unwrap();
    s.set_keyring(keyring());
    s
}

/// N-Quads text of `n` quads, distinct per `seed`.
pub fn quads(seed: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "<http://ex.org/s{i}> <http://ex.org/p{}> \"value {seed} {i}\" <http://ex.org/g{}> .\n",
                i % 5,
                i % 3
            )
        })
        .collect()
}

pub struct Fx {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub store: Store,
}

impl Fx {
    /// A fresh store (namespace `default`) opened with the test master key.
    pub fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Store::init(&data).unwrap();
        Fx {
            store: open(&data),
            data,
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A directory target as a string.
    pub fn target(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    pub fn commit(&self, ns: &str, branch: Option<&str>, add: &str, remove: &str) {
        let text = |t: &str| Source::Text {
            name: "test".into(),
            text: t.into(),
        };
        commit::commit(
            &self.store,
            &commit::CommitOptions {
                ns: ns.into(),
                branch: branch.map(str::to_string),
                message: format!("change on {ns}"),
                add: if add.is_empty() {
                    vec![]
                } else {
                    vec![text(add)]
                },
                remove: if remove.is_empty() {
                    vec![]
                } else {
                    vec![text(remove)]
                },
                ..Default::default()
            },
        )
        .unwrap();
    }

    pub fn branch(&self, ns: &str, name: &str) {
        branch::create_branch(&self.store, ns, name, None).unwrap();
    }

    pub fn tag(&self, ns: &str, name: &str) {
        branch::create_tag(&self.store, ns, name, None).unwrap();
    }

    pub fn ns(&self, name: &str) {
        self.store.create_namespace(name).unwrap();
    }

    pub fn encrypted_ns(&self, name: &str) {
        self.store
            .create_namespace_with(
                name,
                &NamespaceOptions {
                    encrypted: true,
                    ..Default::default()
                },
            )
            .unwrap();
    }
}

/// What a store holds, as `qg export` shows it: per namespace, per ref
/// (branches and tags), the commit id and the exported N-Quads.
pub type State = BTreeMap<(String, String), (String, String)>;

pub fn state(store: &Store) -> State {
    let mut out = State::new();
    for ns in store.namespaces().unwrap() {
        let refs = branch::branches(store, &ns)
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .chain(
                branch::tags(store, &ns)
                    .unwrap()
                    .into_iter()
                    .map(|t| t.name),
            );
        for r in refs {
            let mut text = Vec::new();
            let e = export::export(
                store,
                &export::ExportOptions {
                    ns: ns.clone(),
                    reference: Some(r.clone()),
                    ..Default::default()
                },
                &mut text,
            )
            .unwrap();
            out.insert(
                (ns.clone(), r),
                (e.commit.to_hex(), String::from_utf8(text).unwrap()),
            );
        }
    }
    out
}

/// Assert two states are equal, naming the first difference.
#[track_caller]
pub fn assert_same(want: &State, got: &State, what: &str) {
    let wk: Vec<_> = want.keys().collect();
    let gk: Vec<_> = got.keys().collect();
    assert_eq!(wk, gk, "{what}: the refs differ");
    for (k, v) in want {
        assert_eq!(v.0, got[k].0, "{what}: ref {k:?} points elsewhere");
        assert!(v.1 == got[k].1, "{what}: export of {k:?} differs");
    }
}

// ---- the binary ----

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_qg-backup")
}

#[path = "../../../../tests/support/run.rs"]
mod run;
pub use run::Run;

/// `qg-backup` with a clean environment (no QG_*, no AWS_*) plus `env`.
pub fn cmd(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("QG_") || k.starts_with("QUADGIT_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

pub fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    cmd(args, env).output().unwrap().into()
}

/// Run a shell pipeline with `qg-backup` first on PATH.
pub fn sh(script: &str, env: &[(&str, &str)]) -> Run {
    let dir = Path::new(bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("bash");
    c.args(["-o", "pipefail", "-c", script])
        .stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("QG_") || k.starts_with("QUADGIT_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.env("PATH", path);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap().into()
}

/// Files of a directory (names), sorted; empty when it does not exist.
pub fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The stream files (`*.qgb`) of a directory target, oldest first.
pub fn streams(dir: &Path) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|f| f.ends_with(".qgb"))
        .map(|f| dir.join(f))
        .collect()
}

/// A full backup of `fx` to `to` through the library (`keys`: encrypted).
pub fn full_to(
    fx: &Fx,
    to: &str,
    keys: Option<&qg_backup::keys::KeyOptions>,
) -> qg_backup::backup::BackupResult {
    qg_backup::full::full(
        &qg_backup::full::FullOptions {
            data: fx.data.clone(),
            to: to.into(),
            encrypt: keys.is_some(),
            keys: keys.cloned().unwrap_or_default(),
            ..Default::default()
        },
        &qg_store::progress::NoProgress,
    )
    .unwrap()
}

/// An incremental backup of `fx` to `to` through the library.
pub fn inc_to(
    fx: &Fx,
    to: &str,
    keys: Option<&qg_backup::keys::KeyOptions>,
) -> qg_backup::backup::BackupResult {
    qg_backup::incremental::incremental(
        &qg_backup::incremental::IncrementalOptions {
            data: fx.data.clone(),
            to: to.into(),
            keys: keys.cloned().unwrap_or_default(),
            ..Default::default()
        },
        &qg_store::progress::NoProgress,
    )
    .unwrap()
}

/// `qg-backup verify --read-data` of every backup in `target`.
pub fn verify_data(target: &str) -> qg_backup::verify::VerifyReport {
    qg_backup::verify::verify(
        &qg_backup::verify::VerifyOptions {
            from: target.to_string(),
            read_data: true,
            ..Default::default()
        },
        &qg_store::progress::NoProgress,
    )
    .unwrap()
}
