//! Helpers for qg-slo's tests: the real binaries, the repository's files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "../../../../tests/support/run.rs"]
mod run;
pub use run::Run;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn qg_slo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qg-slo"));
    c.env_remove("QG_DATA")
        .env_remove("QG_CONFIG")
        .stdin(Stdio::null());
    c
}

/// Run qg-slo with `args` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Run {
    qg_slo()
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
        .into()
}

/// Run a program that must be installed (promtool, prometheus, chromium).
pub fn tool(program: &str, args: &[&str], dir: &Path) -> Run {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} not found ({e}): install it as .ci/run does (Debian packages prometheus, chromium)")
        })
        .into()
}

#[path = "../../../../tests/support/chromium.rs"]
pub mod chromium;
#[path = "../../../../tests/support/prometheus.rs"]
pub mod prometheus;
#[path = "../../../../tests/support/serve.rs"]
pub mod serve;
