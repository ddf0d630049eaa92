//! `qg-backup verify`: check a target's catalog and chains, and with
//! `--read-data` every record, checksum, authentication tag and object hash.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use qg_store::audit::Outcome;
use qg_store::progress::Progress;
use serde::{Deserialize, Serialize};

use crate::catalog::{authenticate, Catalog, INCOMPLETE_GRACE_SECS};
use crate::error::{Error, Result};
use crate::format::{BackupKind, Header, IndexDigest, IndexEntry, Record, StreamEnd, StreamReader};
use crate::keys::{KeyOptions, Keyring};
use crate::manifest::Manifest;
use crate::restore::verify_object;
use crate::target::{S3Options, Target};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyOptions {
    /// Directory, `file://DIR`, `s3://bucket/prefix`, or `-` (streams on standard input).
    pub from: String,
    /// Only this backup and the chain it needs (default: every backup).
    pub id: Option<String>,
    /// Read every stream: every frame's checksum, authentication and object hash.
    pub read_data: bool,
    pub keys: KeyOptions,
    pub s3: S3Options,
    /// A store to record the verification in (`verify.backup`), when it exists.
    pub record_in: Option<PathBuf>,
}

/// One thing found damaged or missing.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub backup: Option<String>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backup {
            Some(b) => write!(f, "backup {b}: {}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub target: String,
    /// Backups in the catalog (or streams on standard input).
    pub backups: u64,
    /// Backups whose streams were read in full.
    pub read: Vec<String>,
    pub bytes_read: u64,
    pub objects_checked: u64,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    pub duration_ms: u64,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, backup: Option<&str>, what: impl Into<String>) {
        self.problems.push(Problem {
            backup: backup.map(str::to_string),
            what: what.into(),
        });
    }
}

/// What reading a stream found.
pub(crate) struct StreamCheck {
    pub end: StreamEnd,
    pub objects: u64,
}

/// Read one stream completely, checking everything that can be checked
/// without a store: frames, order, objects, counts, index, trailer, footer.
pub(crate) fn check_stream<R: Read>(
    mut reader: StreamReader<R>,
    header: &Header,
    keys: &Keyring,
    progress: &dyn Progress,
) -> Result<(StreamCheck, R)> {
    let id = header.id.clone();
    if let Some(info) = &header.encryption {
        let master = keys.master(info, &id)?;
        reader.set_cipher(Some(master.frames(info, &id)));
    }
    let mut encrypted: BTreeMap<String, bool> = BTreeMap::new();
    let (mut rows, mut deltas, mut resets) = (0u64, 0u64, 0u64);
    let (mut objects, mut deleted, mut refs, mut reflog, mut audit, mut hooks, mut namespaces) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut records_hash, mut index_hash) = (IndexDigest::default(), IndexDigest::default());
    let mut audit_prev: Option<(i64, [u8; 32])> = None;
    while let Some(rec) = reader.next_record()? {
        match rec {
            Record::Namespace(n) => {
                namespaces += 1;
                encrypted.insert(n.name.clone(), n.encrypted());
            }
            Record::Object {
                ns,
                id: oid,
                kind,
                data,
            } => {
                objects += 1;
                progress.inc(1);
                records_hash.add(&IndexEntry::add(&ns, oid));
                let enc = *encrypted.get(&ns).ok_or_else(|| {
                    Error::damaged(&id, format!("object {oid} belongs to namespace `{ns}`, which the backup does not have"))
                })?;
                let _ = verify_object(&id, &ns, &oid, kind, &data, enc)?;
            }
            Record::Delete { ns, id: oid } => {
                deleted += 1;
                records_hash.add(&IndexEntry::delete(&ns, oid));
            }
            Record::Reset(ns) => {
                resets += 1;
                records_hash.add(&IndexEntry::reset(&ns));
            }
            Record::Delta(d) => {
                deltas += 1;
                records_hash.add(&IndexEntry::tree(&d.ns, d.tree, d.base));
                if encrypted.get(&d.ns) != Some(&false) {
                    return Err(Error::damaged(
                        &id,
                        format!(
                            "{} is not for a plaintext namespace of the backup",
                            d.what()
                        ),
                    ));
                }
                // every change decodes, in order, inside its base, matching its digest
                d.check()
                    .map_err(|e| Error::damaged(&id, format!("{}: {e}", d.what())))?;
                progress.inc(1);
            }
            Record::Index(entries) => {
                for e in entries {
                    index_hash.add(&e);
                }
            }
            Record::Ref(_) => refs += 1,
            Record::Reflog(_) => reflog += 1,
            Record::Hook(_) => hooks += 1,
            Record::Row(_) => rows += 1,
            Record::Audit(a) => {
                audit += 1;
                if let Some((seq, h)) = audit_prev {
                    if a.seq != seq + 1 || a.prev != h {
                        return Err(Error::damaged(
                            &id,
                            format!("audit entry #{} does not follow entry #{seq}", a.seq),
                        ));
                    }
                }
                audit_prev = Some((a.seq, a.hash));
            }
            Record::Trailer(m) => {
                let c = &m.counts;
                c.check_seen(
                    [
                        namespaces, refs, reflog, audit, hooks, rows, objects, deleted, deltas,
                        resets,
                    ],
                    &id,
                )?;
                if audit_prev.map(|(s, _)| s).unwrap_or(m.audit_seq) != m.audit_seq {
                    return Err(Error::damaged(
                        &id,
                        "its last audit entry is not the one its trailer names",
                    ));
                }
            }
            Record::Meta(..) | Record::KeyUsage(_) | Record::Rekey(_) => {}
        }
    }
    if records_hash != index_hash {
        return Err(Error::damaged(
            &id,
            "its index does not list exactly its object, deletion, delta and reset records",
        ));
    }
    let (end, rest) = reader.finish()?;
    Ok((StreamCheck { end, objects }, rest))
}

pub fn verify(opts: &VerifyOptions, progress: &dyn Progress) -> Result<VerifyReport> {
    let started = Instant::now();
    let mut result = run(opts, progress).map(|mut r| {
        r.duration_ms = started.elapsed().as_millis() as u64;
        r
    });
    if let Some(path) = &opts.record_in {
        let warning = crate::audit::record_run(path, "verify.backup", &opts.from, &result, |r| {
            (
                if r.is_clean() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                },
                serde_json::json!({
                    "target": r.target, "id": opts.id, "read_data": opts.read_data,
                    "backups": r.backups, "read": r.read.len(), "bytes": r.bytes_read,
                    "problems": r.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                    "duration_ms": r.duration_ms,
                }),
            )
        });
        // a failed verify's error is what the operator must see
        if let (Ok(r), Some(w)) = (&mut result, warning) {
            r.warnings.push(w);
        }
    }
    result
}

fn run(opts: &VerifyOptions, progress: &dyn Progress) -> Result<VerifyReport> {
    let keys = Keyring::from_options(&opts.keys)?;
    let target = Target::parse(&opts.from, &opts.s3)?;
    let mut report = VerifyReport {
        target: target.display(),
        ..Default::default()
    };
    if target.is_stdio() {
        return verify_stdin(&target, opts, &keys, progress, report);
    }
    let catalog = Catalog::load(&target)?;
    report.backups = catalog.backups.len() as u64;
    for d in &catalog.damaged {
        report.problem(Some(&d.id), d.problem.clone());
    }
    for name in &catalog.incomplete {
        match target.age_secs(name) {
            Some(age) if age < INCOMPLETE_GRACE_SECS => report.warnings.push(format!(
                "{name} has no manifest yet (a backup may be running)"
            )),
            _ => report.warnings.push(format!(
                "{name} has no manifest: an interrupted backup (`qg-backup prune` removes it)"
            )),
        }
    }
    let selected: Vec<&Manifest> = match &opts.id {
        Some(id) => match catalog.chain(id) {
            Ok(chain) => chain,
            Err(Error::Chain(why)) => {
                report.problem(Some(id), why);
                catalog.get(id).map(|m| vec![m])?
            }
            Err(e) => return Err(e),
        },
        None => catalog.backups.values().collect(),
    };
    if opts.id.is_none() {
        for m in &selected {
            if let Err(Error::Chain(why)) = catalog.chain(&m.id) {
                report.problem(Some(&m.id), why);
            }
        }
    }
    for m in &selected {
        if let Some(why) = crate::catalog::stream_problem(&target, m)? {
            report.problem(Some(&m.id), why);
            continue;
        }
        match authenticate(m, &keys) {
            Ok(true) => {}
            Ok(false) => {
                if opts.read_data {
                    return Err(Error::usage(format!(
                        "backup {} is encrypted: --read-data needs its key ({} or --key-file, or {} or --passphrase-file)",
                        m.id,
                        crate::keys::KEY_ENV,
                        crate::keys::PASSPHRASE_ENV
                    )));
                }
                report.warnings.push(format!(
                    "backup {} is encrypted and no key was given: its manifest was not authenticated",
                    m.id
                ));
            }
            Err(e @ Error::Usage(_)) => return Err(e),
            Err(e) => {
                report.problem(Some(&m.id), e.to_string());
                continue;
            }
        }
        if !opts.read_data {
            continue;
        }
        progress.start(&format!("verify {}", m.id), Some(m.counts.objects));
        let checked = crate::catalog::open_stream(&target, m).and_then(|(reader, header)| {
            let (c, _) = check_stream(reader, &header, &keys, progress)?;
            crate::restore::check_against_manifest(m, &c.end)?;
            let parent = m.parent.as_ref().and_then(|p| catalog.backups.get(p));
            crate::restore::check_hooks_unchanged(m, &header, parent)?;
            Ok(c)
        });
        progress.finish();
        match checked {
            Ok(c) => {
                report.read.push(m.id.clone());
                report.bytes_read += c.end.bytes;
                report.objects_checked += c.objects;
            }
            Err(e @ Error::Usage(_)) => return Err(e),
            Err(Error::Damaged { backup, reason }) => report.problem(Some(&backup), reason),
            Err(e) => report.problem(Some(&m.id), e.to_string()),
        }
    }
    Ok(report)
}

fn verify_stdin(
    target: &Target,
    opts: &VerifyOptions,
    keys: &Keyring,
    progress: &dyn Progress,
    mut report: VerifyReport,
) -> Result<VerifyReport> {
    let mut inp: Box<dyn Read> = target.open_read("-", 0)?;
    let mut prev: Option<String> = None;
    loop {
        let opened = match StreamReader::open(inp, "on standard input") {
            Ok(Some(v)) => v,
            Ok(None) => break,
            Err(e @ Error::Usage(_)) => return Err(e),
            Err(e) => {
                report.problem(prev.as_deref(), format!("after this backup: {e}"));
                break;
            }
        };
        let (reader, header) = opened;
        report.backups += 1;
        match (&prev, header.kind, &header.parent) {
            (None, BackupKind::Incremental, p) => report.problem(
                Some(&header.id),
                format!(
                    "it is incremental and its parent {} is not on standard input before it",
                    p.as_deref().unwrap_or("?")
                ),
            ),
            (Some(pr), BackupKind::Incremental, Some(p)) if p != pr => report.problem(
                Some(&header.id),
                format!("its parent is {p}, but the stream before it is {pr}"),
            ),
            _ => {}
        }
        progress.start(&format!("verify {}", header.id), None);
        let checked = check_stream(reader, &header, keys, progress);
        progress.finish();
        match checked {
            Ok((c, rest)) => {
                report.read.push(header.id.clone());
                report.bytes_read += c.end.bytes;
                report.objects_checked += c.objects;
                prev = Some(header.id.clone());
                inp = rest;
                if opts.id.as_deref() == Some(header.id.as_str()) {
                    break;
                }
            }
            Err(e @ Error::Usage(_)) => return Err(e),
            Err(Error::Damaged { backup, reason }) => {
                report.problem(Some(&backup), reason);
                break;
            }
            Err(e) => {
                report.problem(Some(&header.id), e.to_string());
                break;
            }
        }
    }
    if report.backups == 0 {
        return Err(Error::usage("no backup stream on standard input"));
    }
    Ok(report)
}
