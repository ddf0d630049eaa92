//! `qg-sbom keygen`: a cosign key pair, `PREFIX.key` (encrypted in cosign's
//! format under the caller's password) and `PREFIX.pub` (PEM public key).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cosign;
use crate::error::{write_file, write_file_mode, Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KeygenOptions {
    /// Writes `PREFIX.key` and `PREFIX.pub`.
    pub output_key_prefix: PathBuf,
    /// Replace existing files.
    pub force: bool,
}

impl Default for KeygenOptions {
    fn default() -> Self {
        KeygenOptions {
            output_key_prefix: PathBuf::from("cosign"),
            force: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KeygenResult {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    /// Hex SHA-256 of the DER public key.
    pub key_id: String,
}

fn with_ext(prefix: &std::path::Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Generate a key pair; `password` (from `COSIGN_PASSWORD`) seals the private key.
pub fn keygen(opts: &KeygenOptions, password: &Zeroizing<String>) -> Result<KeygenResult> {
    let private_key = with_ext(&opts.output_key_prefix, "key");
    let public_key = with_ext(&opts.output_key_prefix, "pub");
    if !opts.force {
        for p in [&private_key, &public_key] {
            if p.exists() {
                return Err(Error::bad_input(
                    p,
                    "already exists; refusing to overwrite a key (use --force to replace it)",
                ));
            }
        }
    }
    let key = cosign::generate_key()?;
    let pem = cosign::encrypt_private_key(&key, password.as_bytes())?;
    let public = cosign::public_key_pem(key.verifying_key())?;
    write_file_mode(&private_key, pem.as_bytes(), Some(0o600))?;
    write_file(&public_key, public.as_bytes())?;
    Ok(KeygenResult {
        private_key,
        public_key,
        key_id: cosign::key_id(key.verifying_key())?,
    })
}
