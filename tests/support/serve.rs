//! A running `qg serve` (the real binary) on an ephemeral loopback port,
//! for tests outside the store crate (`#[path]` include). Stopped when
//! dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The `qg` binary cargo built beside this test (`cargo test --workspace`
/// builds it; alone: `cargo build -p qg-store --bin qg`).
pub fn qg_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let qg = dir.join("qg");
    assert!(
        qg.exists(),
        "{} is missing: build it with `cargo build -p qg-store --bin qg` (cargo test --workspace does)",
        qg.display()
    );
    qg
}

/// `qg` with `--data data` and a test actor.
pub fn qg(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(qg_bin())
        .env_remove("QG_NS")
        .env("QG_ACTOR", "tester")
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl Serve {
    /// Start `qg serve` on the store at `data` (created if missing).
    pub fn start(data: &Path, log: &Path) -> Serve {
        if !data.join("qg.sqlite").exists() {
            let o = qg(data, &["init"]);
            assert!(
                o.status.success(),
                "qg init: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let mut child = Command::new(qg_bin())
            .env_remove("QG_NS")
            .arg("--data")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line.trim().strip_prefix("Listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "qg serve did not start: {line:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        };
        Serve {
            url: url.to_string(),
            child,
        }
    }

    /// `host:port`, as a scrape target.
    pub fn target(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid, then reaping it.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
