//! `qg-rotate-keys password`: change a namespace password.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use qg_store::crypto::KdfParams;
use qg_store::rotation::{change_password, PasswordChange};
use qg_store::{Result, Store};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PasswordOptions {
    pub ns: String,
    /// Argon2id parameters for the new password (default: keep the current ones).
    pub kdf: Option<KdfParams>,
    pub dry_run: bool,
}

/// The old password comes from the store's keyring (`QG_PASSWORD`).
pub fn run(
    store: &Store,
    opts: &PasswordOptions,
    new_password: &Zeroizing<String>,
) -> Result<PasswordChange> {
    change_password(store, &opts.ns, new_password, opts.kdf, opts.dry_run)
}
