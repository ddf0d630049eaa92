//! `qg-rotate-keys master`: rewrap every data key under a new master key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use qg_store::crypto::MasterKey;
use qg_store::rotation::{rotate_master, MasterRotation};
use qg_store::{Result, Store};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MasterOptions {
    /// File holding the new master key (hex or base64).
    pub new_key_file: PathBuf,
    pub dry_run: bool,
}

/// The old key comes from the store's keyring (`QUADGIT_MASTER_KEY`).
pub fn run(store: &Store, opts: &MasterOptions) -> Result<MasterRotation> {
    let new = MasterKey::from_file(&opts.new_key_file)?;
    rotate_master(store, &new, opts.dry_run)
}
