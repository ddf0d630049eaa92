//! Helpers for end-to-end tests: run the real `qg` binary against a temp store.
#![allow(dead_code, clippy::new_without_default)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Qg {
    pub dir: tempfile::TempDir,
}

#[path = "../../../tests/support/run.rs"]
mod run;
pub use run::Run;

#[path = "../../../tests/support/prometheus.rs"]
pub mod prometheus;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_qg")
}

impl Qg {
    /// A fresh, initialised store.
    pub fn new() -> Qg {
        let q = Qg::empty();
        q.run(&["init"]).ok();
        q
    }

    /// A temp dir with no store yet.
    pub fn empty() -> Qg {
        Qg {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.env("QG_DATA", self.data())
            .env_remove("QG_NS")
            .env("QG_ACTOR", "tester")
            .current_dir(self.dir.path())
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.cmd(args).stdin(Stdio::null()).output().unwrap().into()
    }

    pub fn run_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // qg may refuse before reading its input (e.g. a stale --expected-parent)
        match child.stdin.take().unwrap().write_all(input.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
        child.wait_with_output().unwrap().into()
    }

    /// Commit `text` (N-Quads) as additions; returns the new commit id.
    pub fn add(&self, text: &str, msg: &str) -> String {
        let r = self
            .run_stdin(&["commit", "-m", msg, "--add", "-", "--json"], text)
            .ok();
        r.json()["commit"].as_str().unwrap().to_string()
    }

    pub fn head(&self, branch: &str) -> String {
        let r = self.run(&["show", branch, "--json"]).ok();
        r.json()["id"].as_str().unwrap().to_string()
    }

    pub fn export(&self, reference: &str) -> String {
        self.run(&["export", reference]).ok().stdout
    }

    pub fn install_hook(&self, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.data().join("hooks").join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    pub fn sqlite(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.data().join("qg.sqlite")).unwrap()
    }
}

/// `n` quads `<http://ex/s{i}> <http://ex/p> "v{i}" <http://ex/g{i%3}> .`
pub fn quads(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            format!(
                "<http://ex/s{i}> <http://ex/p> \"v{i}\" <http://ex/g{}> .\n",
                i % 3
            )
        })
        .collect()
}

pub fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
