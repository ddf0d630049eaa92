//! Helpers shared by the end-to-end tests: run the real `qg-sbom` binary and
//! the independent verifiers (openssl, Python). A missing verifier fails the
//! test with the install command; it never skips.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_qg-sbom"))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `qg-sbom` with a clean environment for our variables.
pub fn qg_sbom(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("QG_")
            || k.starts_with("GITHUB_")
            || k == "COSIGN_PASSWORD"
            || k == "SOURCE_DATE_EPOCH"
        {
            c.env_remove(k);
        }
    }
    c
}

#[path = "../../../../tests/support/run.rs"]
mod run;
pub use run::Run;

pub fn run(cmd: &mut Command) -> Run {
    cmd.output().expect("spawn").into()
}

/// Run and require exit `code`.
pub fn expect(cmd: &mut Command, code: i32) -> Run {
    let r = run(cmd);
    assert_eq!(r.code, code, "{cmd:?}\n{r:?}");
    r
}

/// Run a Python 3 script; the test fails (with the pip command) if a module is missing.
pub fn python(script: &str, args: &[&str], dir: &Path) -> Run {
    let r = run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(dir));
    assert!(
        !r.stderr.contains("ModuleNotFoundError"),
        "a Python verifier is missing; install it with\n  python3 -m pip install 'cyclonedx-python-lib[json-validation]' securesystemslib pynacl cryptography\n{r:?}"
    );
    r
}

/// openssl must exist: these tests are about interoperating with it.
pub fn openssl(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl is required for this test (apt-get install openssl): {e}")
        });
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn b64decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .expect("base64")
}
