//! `qg-backup full`: every object, ref, reflog and audit entry of a store at
//! one point in time.

use std::path::PathBuf;
use std::rc::Rc;

use qg_store::progress::Progress;
use qg_store::Store;
use serde::{Deserialize, Serialize};

use crate::backup::{self, BackupResult, Plan};
use crate::error::{Error, Result};
use crate::format::BackupKind;
use crate::keys::{KeyOptions, Keyring, Master};
use crate::target::{S3Options, Target};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FullOptions {
    /// Data directory of the store.
    pub data: PathBuf,
    /// Directory, `file://DIR`, `s3://bucket/prefix`, or `-` for standard output.
    pub to: String,
    /// Encrypt the backup (AES-256-GCM) with the configured key or passphrase.
    pub encrypt: bool,
    pub keys: KeyOptions,
    pub s3: S3Options,
}

/// Back up the store in `opts.data`.
pub fn full(opts: &FullOptions, progress: &dyn Progress) -> Result<BackupResult> {
    let store = Store::open(&opts.data)?;
    full_of(&store, opts, progress)
}

/// Back up an open store (`opts.data` is ignored).
pub fn full_of(store: &Store, opts: &FullOptions, progress: &dyn Progress) -> Result<BackupResult> {
    let target = Target::parse(&opts.to, &opts.s3)?;
    let encryption = if opts.encrypt {
        let keys = Keyring::from_options(&opts.keys)?;
        let secret = keys.secret().ok_or_else(|| {
            Error::usage(format!(
                "--encrypt needs a key: set {} (64 hex digits) or {}, or give --key-file / --passphrase-file",
                crate::keys::KEY_ENV,
                crate::keys::PASSPHRASE_ENV
            ))
        })?;
        let (info, master) = Master::new_backup(secret)?;
        Some((info, Rc::new(master)))
    } else {
        None
    };
    backup::run(
        store,
        &target,
        Plan {
            kind: BackupKind::Full,
            parent: None,
            base: None,
            encryption,
        },
        progress,
    )
}
