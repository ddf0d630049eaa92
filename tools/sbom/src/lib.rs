//! # qg-sbom
//!
//! Release tooling for the QuadGit workspace, as a library with one module
//! per command (see [`commands`]): each takes typed `*Options` and returns a
//! typed result; nothing here prints or exits. The `qg-sbom` binary is a thin
//! shell over it.
//!
//! - [`commands::generate`] / [`commands::check`]: a deterministic CycloneDX
//!   JSON SBOM of a Cargo workspace (from `cargo metadata` and `Cargo.lock`),
//!   and a check that a committed SBOM is still current.
//! - [`commands::keygen`], [`commands::sign`], [`commands::verify`]: cosign's
//!   encrypted key format and `sign-blob` signatures (ECDSA P-256, SHA-256,
//!   base64 of DER), offline; see `FORMAT.md`.
//! - [`commands::provenance`]: an in-toto Statement v1 with a SLSA
//!   provenance v1 predicate in a signed DSSE envelope, and its verification.
//! - [`commands::scan`]: a vulnerability gate over `trivy sbom` JSON reports
//!   with an expiring ignore list.
//!
//! Key material is zeroized when dropped; passwords are only ever passed in
//! by the caller (the binary reads `COSIGN_PASSWORD` from the environment).

pub mod audit;
pub mod commands;
pub mod cosign;
pub mod dsse;
pub mod error;
pub mod lockfile;
pub mod workspace;

pub use error::{Error, Result};

/// SHA-256 of a file, streamed (release binaries can be large).
pub fn sha256_file(path: &std::path::Path) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::read(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::read(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// RFC 3339 UTC timestamp (seconds precision) for `unix` seconds.
pub fn rfc3339(unix: i64) -> Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| Error::Other(format!("timestamp {unix} is out of range: {e}")))?;
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
