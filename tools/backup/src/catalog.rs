//! The catalog of a target: every backup's manifest, and the chains they form
//! (a full backup followed by incrementals, each naming its parent).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::{readable, BackupKind, Manifest};
use crate::keys::Keyring;
use crate::target::{Target, MANIFEST_SUFFIX, STREAM_SUFFIX};

/// Streams younger than this without a manifest may still be uploading.
pub const INCOMPLETE_GRACE_SECS: u64 = 24 * 3600;

/// Every backup in a target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Catalog {
    /// Backups by id (ids sort by creation time).
    pub backups: BTreeMap<String, Manifest>,
    /// Manifest files that could not be read, with why.
    pub unreadable: Vec<(String, String)>,
    /// Stream files without a manifest: uploads that never finished (or are running).
    pub incomplete: Vec<String>,
}

/// Name of a backup's stream file.
pub fn stream_name(id: &str) -> String {
    format!("{id}{STREAM_SUFFIX}")
}

/// Name of a backup's manifest file.
pub fn manifest_name(id: &str) -> String {
    format!("{id}{MANIFEST_SUFFIX}")
}

impl Catalog {
    /// Read every manifest of `target`.
    pub fn load(target: &Target) -> Result<Catalog> {
        let names = target.list()?;
        let mut cat = Catalog::default();
        let manifests: HashSet<&str> = names
            .iter()
            .filter_map(|n| n.strip_suffix(MANIFEST_SUFFIX))
            .collect();
        for name in &names {
            if let Some(id) = name.strip_suffix(STREAM_SUFFIX) {
                if !manifests.contains(id) {
                    cat.incomplete.push(name.clone());
                }
                continue;
            }
            let Some(id) = name.strip_suffix(MANIFEST_SUFFIX) else {
                continue;
            };
            let parsed = target.read_all(name).and_then(|bytes| {
                serde_json::from_slice::<Manifest>(&bytes)
                    .map_err(|e| Error::damaged(id, format!("manifest {name} is not valid: {e}")))
            });
            match parsed {
                Ok(m) if m.id != id => cat.unreadable.push((
                    name.clone(),
                    format!("it describes backup {} instead", m.id),
                )),
                Ok(m) if !readable(m.format) => cat.unreadable.push((
                    name.clone(),
                    format!("format version {} is not supported", m.format),
                )),
                Ok(m) => {
                    cat.backups.insert(m.id.clone(), m);
                }
                Err(e) => cat.unreadable.push((name.clone(), e.to_string())),
            }
        }
        Ok(cat)
    }

    pub fn get(&self, id: &str) -> Result<&Manifest> {
        self.backups.get(id).ok_or_else(|| {
            Error::usage(format!(
                "no backup `{id}` in the target (see `qg-backup list`)"
            ))
        })
    }

    /// The chain that restores backup `id`: its full backup first, `id` last.
    /// Errors name the first missing or inconsistent link.
    pub fn chain(&self, id: &str) -> Result<Vec<&Manifest>> {
        let mut chain = vec![self.get(id)?];
        loop {
            let last = *chain.last().expect("non-empty");
            match (&last.kind, &last.parent) {
                (BackupKind::Full, None) => break,
                (BackupKind::Full, Some(_)) => {
                    return Err(Error::Chain(format!(
                        "full backup {} names a parent",
                        last.id
                    )))
                }
                (BackupKind::Incremental, None) => {
                    return Err(Error::Chain(format!(
                        "incremental backup {} names no parent",
                        last.id
                    )))
                }
                (BackupKind::Incremental, Some(p)) => {
                    let parent = self.backups.get(p).ok_or_else(|| {
                        Error::Chain(format!(
                            "backup {p}, the parent of {}, is missing (needed to restore {id})",
                            last.id
                        ))
                    })?;
                    if parent.store_id != last.store_id {
                        return Err(Error::Chain(format!(
                            "backup {} is of store {} but its parent {p} is of store {}",
                            last.id, last.store_id, parent.store_id
                        )));
                    }
                    if parent.created > last.created {
                        return Err(Error::Chain(format!(
                            "backup {} is older than its parent {p}",
                            last.id
                        )));
                    }
                    if chain.len() > self.backups.len() {
                        return Err(Error::Chain(format!("the chain of {id} loops")));
                    }
                    chain.push(parent);
                }
            }
        }
        chain.reverse();
        Ok(chain)
    }

    /// Store ids present.
    pub fn stores(&self) -> Vec<String> {
        let mut s: Vec<String> = self.backups.values().map(|m| m.store_id.clone()).collect();
        s.sort();
        s.dedup();
        s
    }

    /// The newest backup (of `store_id`, when given) created at or before `at`.
    pub fn latest(&self, store_id: Option<&str>, at: Option<&str>) -> Option<&Manifest> {
        self.backups
            .values()
            .filter(|m| store_id.map_or(true, |s| m.store_id == s))
            .filter(|m| at.map_or(true, |t| m.created.as_str() <= t))
            .max_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)))
    }
}

/// Check a manifest's MAC when it is encrypted. Without a secret, returns
/// `Ok(false)` (not authenticated); with the wrong one, an error.
pub fn authenticate(m: &Manifest, keys: &Keyring) -> Result<bool> {
    let Some(info) = &m.encryption else {
        return Ok(true);
    };
    if !keys.has_secret() {
        return Ok(false);
    }
    let master = keys.master(info, &m.id)?;
    let mac = m.mac.as_deref().ok_or_else(|| {
        Error::damaged(
            &m.id,
            "its manifest has no MAC although the backup is encrypted",
        )
    })?;
    if master.manifest_mac(info, &m.id, &m.mac_input()) != mac {
        return Err(Error::damaged(
            &m.id,
            "its manifest does not authenticate: it was changed after the backup",
        ));
    }
    Ok(true)
}
