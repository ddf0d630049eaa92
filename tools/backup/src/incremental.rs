//! `qg-backup incremental`: the objects the store gained (and lost) since the
//! backup it is based on, plus refs, reflog, namespace records and audit
//! entries since then. New commits of plaintext namespaces go as commit
//! deltas when smaller than their new tree nodes (see [`crate::delta`]).

use std::path::PathBuf;
use std::rc::Rc;

use qg_store::progress::Progress;
use qg_store::Store;
use serde::{Deserialize, Serialize};

use crate::backup::{self, BackupResult, Plan};
use crate::catalog::{authenticate, Catalog};
use crate::error::{Error, Result};
use crate::format::BackupKind;
use crate::index;
use crate::keys::{KeyOptions, Keyring, Master};
use crate::target::{S3Options, Target};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IncrementalOptions {
    /// Data directory of the store.
    pub data: PathBuf,
    /// Directory, `file://DIR`, `s3://bucket/prefix`, or `-` for standard output.
    pub to: String,
    /// Base on this backup (default: the newest backup of this store in the catalog).
    pub since: Option<String>,
    /// Where the base chain's catalog is when `to` is `-` (a directory or s3:// target).
    pub base: Option<String>,
    /// Require encryption (an incremental is encrypted exactly when its chain is).
    pub encrypt: bool,
    pub keys: KeyOptions,
    pub s3: S3Options,
}

pub fn incremental(opts: &IncrementalOptions, progress: &dyn Progress) -> Result<BackupResult> {
    let store = Store::open(&opts.data)?;
    incremental_of(&store, opts, progress)
}

/// Back up what an open store changed since the base backup (`opts.data` is ignored).
pub fn incremental_of(
    store: &Store,
    opts: &IncrementalOptions,
    progress: &dyn Progress,
) -> Result<BackupResult> {
    let target = Target::parse(&opts.to, &opts.s3)?;
    let catalog_target = match (&opts.base, target.is_stdio()) {
        (Some(b), _) => Target::parse(b, &opts.s3)?,
        (None, false) => Target::parse(&opts.to, &opts.s3)?,
        (None, true) => {
            return Err(Error::usage(
                "an incremental backup to standard output needs --base TARGET: the directory or s3:// target holding the chain it builds on",
            ))
        }
    };
    if catalog_target.is_stdio() {
        return Err(Error::usage("--base must be a directory or s3:// target"));
    }
    let catalog = Catalog::load(&catalog_target)?;
    let store_id = store.id()?;
    let parent = match &opts.since {
        Some(id) => catalog.get(id)?,
        None => catalog.latest(Some(&store_id), None).ok_or_else(|| {
            Error::usage(format!(
                "{} holds no backup of this store ({store_id}) to base an incremental on: run `qg-backup full` first",
                catalog_target.display()
            ))
        })?,
    };
    let chain = catalog.chain(&parent.id)?;
    let keys = Keyring::from_options(&opts.keys)?;
    let encryption = match &chain[0].encryption {
        None if opts.encrypt => {
            return Err(Error::usage(format!(
                "the chain of {} is not encrypted; start an encrypted chain with `qg-backup full --encrypt`",
                parent.id
            )))
        }
        None => None,
        Some(info) => {
            let secret = keys.secret().ok_or_else(|| {
                Error::usage(format!(
                    "the chain of {} is encrypted: set {} or {} (or --key-file / --passphrase-file)",
                    parent.id,
                    crate::keys::KEY_ENV,
                    crate::keys::PASSPHRASE_ENV
                ))
            })?;
            // the same secret as the chain, with a fresh salt for this backup
            keys.master(info, &chain[0].id)?;
            let (info, master) = Master::new_backup(secret)?;
            Some((info, Rc::new(master)))
        }
    };
    let mut spools = Vec::with_capacity(chain.len());
    for m in &chain {
        if m.encryption.is_some() != encryption.is_some() {
            return Err(Error::Chain(format!(
                "backup {} is {}encrypted but its chain's full backup is {}",
                m.id,
                if m.encryption.is_some() { "" } else { "not " },
                if encryption.is_some() {
                    "encrypted"
                } else {
                    "not"
                }
            )));
        }
        if !authenticate(m, &keys)? {
            return Err(Error::usage(format!(
                "backup {} is encrypted: a key is needed",
                m.id
            )));
        }
        spools.push(index::fetch(&catalog_target, m, &keys)?);
    }
    let parent = parent.clone();
    backup::run(
        store,
        &target,
        Plan {
            kind: BackupKind::Incremental,
            parent: Some(parent),
            base: Some(spools),
            encryption,
        },
        progress,
    )
}
