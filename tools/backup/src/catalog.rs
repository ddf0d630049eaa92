//! The catalog of a target: every backup's manifest, and the chains they form
//! (a full backup followed by incrementals, each naming its parent).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::{BackupKind, Header, StreamReader};
use crate::keys::Keyring;
use crate::manifest::{Manifest, Source};
use crate::target::{Target, MANIFEST_SUFFIX, STREAM_SUFFIX};

/// Streams younger than this without a manifest may still be uploading.
pub const INCOMPLETE_GRACE_SECS: u64 = 24 * 3600;

/// Every backup in a target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Catalog {
    /// Backups by id (ids sort by creation time).
    pub backups: BTreeMap<String, Manifest>,
    /// Manifest files that could not be read or do not hold together, by id.
    pub damaged: Vec<DamagedManifest>,
    /// Stream files without a manifest: uploads that never finished (or are running).
    pub incomplete: Vec<String>,
}

/// A manifest file that could not be read, or that does not hold together.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedManifest {
    /// The backup id its file name gives.
    pub id: String,
    /// The manifest file.
    pub file: String,
    pub problem: String,
}

/// Parse a manifest file of backup `id` and check what it can say about itself.
fn check_manifest(id: &str, bytes: &[u8]) -> std::result::Result<Manifest, String> {
    let m = Manifest::parse(bytes, Source::File)
        .map_err(|e| format!("its manifest {} is unreadable: {e}", manifest_name(id)))?;
    let bad = |why: String| format!("its manifest {} is not valid: {why}", manifest_name(id));
    if m.id != id {
        return Err(bad(format!(
            "field `id` is {}, not the id its file name gives",
            m.id
        )));
    }
    m.check_times().map_err(bad)?;
    if m.stream.as_deref() != Some(stream_name(id).as_str()) {
        return Err(bad(format!(
            "field `stream` is {:?}, not {}",
            m.stream.as_deref().unwrap_or(""),
            stream_name(id)
        )));
    }
    if m.kind == BackupKind::Full && m.parent.is_some() {
        return Err(bad("it is a full backup that names a parent".into()));
    }
    if m.kind == BackupKind::Incremental && m.parent.is_none() {
        return Err(bad(
            "it is an incremental backup that names no parent".into()
        ));
    }
    Ok(m)
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
    /// Read every manifest of `target`, strictly ([`Manifest::parse`]): one
    /// that does not parse, names another backup, has times that disagree
    /// with its id, or names another stream is [`Catalog::damaged`].
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
            match target
                .read_all(name)
                .and_then(|bytes| check_manifest(id, &bytes).map_err(|e| Error::damaged(id, e)))
            {
                Ok(m) => {
                    cat.backups.insert(m.id.clone(), m);
                }
                Err(e) => cat.damaged.push(DamagedManifest {
                    id: id.to_string(),
                    file: name.clone(),
                    problem: match e {
                        Error::Damaged { reason, .. } => reason,
                        e => e.to_string(),
                    },
                }),
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
                        let what = match self.damaged.iter().find(|d| d.id == *p) {
                            Some(d) => format!("is damaged ({})", d.problem),
                            None => "is missing".to_string(),
                        };
                        Error::Chain(format!(
                            "backup {p}, the parent of {}, {what} (needed to restore {id})",
                            last.id
                        ))
                    })?;
                    if parent.store_id != last.store_id {
                        return Err(Error::Chain(format!(
                            "backup {} has `store_id` {} but its parent {p} has {}",
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

    /// The backup a restore without `--id` restores: the newest one (taken
    /// at or before `at`, when given). It refuses to guess
    /// ([`Error::NewestDamaged`]) when a newer manifest is damaged, or when
    /// that newest backup's chain is broken or one of its streams is missing
    /// or not the length its manifest says; the error names the newest older
    /// backup that passes the same checks.
    pub fn newest(&self, target: &Target, at: Option<&str>) -> Result<&Manifest> {
        let newest = self.latest(None, at).ok_or_else(|| match at {
            Some(t) => Error::usage(format!(
                "{} holds no backup taken at or before {t}",
                target.display()
            )),
            None => Error::usage(format!("{} holds no backups", target.display())),
        })?;
        let newer_damaged = self
            .damaged
            .iter()
            .filter(|d| d.id > newest.id && at.map_or(true, |t| id_time(&d.id).as_str() <= t))
            .max_by(|a, b| a.id.cmp(&b.id));
        if let Some(d) = newer_damaged {
            return Err(self.newest_damaged(target, &d.id, &d.id, d.problem.clone(), at));
        }
        if let Err((backup, reason)) = self.chain_present(target, &newest.id) {
            return Err(self.newest_damaged(target, &newest.id, &backup, reason, at));
        }
        Ok(newest)
    }

    /// The error of a restore that will not guess: `damaged` is what failed,
    /// `wanted` the backup the restore would have taken.
    pub fn newest_damaged(
        &self,
        target: &Target,
        wanted: &str,
        damaged: &str,
        reason: String,
        at: Option<&str>,
    ) -> Error {
        let intact = self
            .backups
            .values()
            .rev()
            .filter(|m| m.id.as_str() < wanted && at.map_or(true, |t| m.created.as_str() <= t))
            .find(|m| {
                self.chain(&m.id)
                    .is_ok_and(|c| c.iter().all(|b| b.id != damaged))
                    && self.chain_present(target, &m.id).is_ok()
            });
        Error::NewestDamaged {
            backup: damaged.to_string(),
            reason,
            intact: intact.map(|m| (m.id.clone(), m.created.clone())),
        }
    }

    /// Backup `id`'s chain is complete and each member's stream is there with
    /// the length its manifest records; otherwise the first member at fault and why.
    fn chain_present(
        &self,
        target: &Target,
        id: &str,
    ) -> std::result::Result<(), (String, String)> {
        let chain = self
            .chain(id)
            .map_err(|e| (id.to_string(), e.to_string()))?;
        for m in chain {
            match stream_problem(target, m) {
                Ok(None) => {}
                Ok(Some(why)) => return Err((m.id.clone(), why)),
                Err(e) => return Err((m.id.clone(), e.to_string())),
            }
        }
        Ok(())
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

/// The snapshot time a backup id starts with, as RFC 3339
/// (`20261126T043101.290Z-…` is `2026-11-26T04:31:01.290Z`), for ids whose
/// manifest cannot be read.
pub fn id_time(id: &str) -> String {
    let s = id.split('-').next().unwrap_or(id);
    match (
        s.get(0..4),
        s.get(4..6),
        s.get(6..8),
        s.get(9..11),
        s.get(11..13),
        s.get(13..),
    ) {
        (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(rest)) => {
            format!("{y}-{mo}-{d}T{h}:{mi}:{rest}")
        }
        _ => s.to_string(),
    }
}

/// What is wrong with backup `m`'s stream file as a listing sees it: missing,
/// or not the length its manifest records (cut short, or with bytes added).
pub fn stream_problem(target: &Target, m: &Manifest) -> Result<Option<String>> {
    let stream = stream_name(&m.id);
    let want = m.bytes.unwrap_or(0);
    Ok(match target.size(&stream)? {
        None => Some(format!("its stream {stream} is missing")),
        Some(n) if n == want => None,
        Some(n) => Some(format!(
            "its stream {stream} is {n} bytes but its manifest says {want} ({})",
            if n < want {
                "truncated"
            } else {
                "bytes were added"
            }
        )),
    })
}

/// Open the stream of backup `m` from `target` and read its header, which
/// must be `m`'s. A stream whose version this qg-backup cannot read, beside a
/// manifest it can, is damaged (not a newer format).
pub fn open_stream(
    target: &Target,
    m: &Manifest,
) -> Result<(StreamReader<Box<dyn std::io::Read>>, Header)> {
    let inp = target.open_read(&stream_name(&m.id), 0)?;
    let (reader, header) = match StreamReader::open(inp, &m.id) {
        Ok(Some(opened)) => opened,
        Ok(None) => return Err(Error::damaged(&m.id, "its stream is empty")),
        Err(Error::Usage(why)) => return Err(Error::damaged(&m.id, why)),
        Err(e) => return Err(e),
    };
    if header.id != m.id {
        return Err(Error::damaged(
            &m.id,
            format!("its stream holds backup {} instead", header.id),
        ));
    }
    Ok((reader, header))
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
