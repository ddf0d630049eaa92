//! `qg-backup restore`: rebuild a store from a full backup and its
//! incrementals up to a chosen point, into a new directory.
//!
//! The store is built in a staging directory inside the destination, every
//! object is re-hashed as it is written (plaintext namespaces; sealed objects
//! of encrypted namespaces are kept byte for byte and checked structurally),
//! the audit chain is re-verified, the result is checked like `qg fsck`, and
//! only then is the database moved into place. A failed restore leaves the
//! destination as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use qg_store::audit::{Event, Outcome};
use qg_store::object::{self, Plain};
use qg_store::objects::ObjectSet;
use qg_store::progress::Progress;
use qg_store::snapshot::{NamespaceRow, RestoreWriter, Snapshot};
use qg_store::{clock, ObjectId, Store};
use serde::{Deserialize, Serialize};

use crate::catalog::{authenticate, Catalog};
use crate::check;
use crate::error::{Error, Result};
use crate::format::{
    BackupKind, Header, HookFile, IndexDigest, IndexEntry, Record, RecordType, StreamReader,
};
use crate::keys::{KeyOptions, Keyring};
use crate::manifest::Manifest;
use crate::target::{S3Options, Target};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreOptions {
    /// Directory, `file://DIR`, `s3://bucket/prefix`, or `-` for standard input
    /// (one stream, or a full backup followed by its incrementals, concatenated).
    pub from: String,
    /// Restore up to this backup (default: the newest).
    pub id: Option<String>,
    /// Restore the newest backup taken at or before this time (RFC 3339, a
    /// date, or an age such as `24h`).
    pub at: Option<String>,
    /// New data directory: must not exist or be empty.
    pub to: PathBuf,
    /// Restore only this namespace (with the whole audit log).
    pub ns: Option<String>,
    pub keys: KeyOptions,
    pub s3: S3Options,
    /// A live store to record this restore in as a restore test (`restore.test`),
    /// when it exists and is the store the backup was taken of.
    pub record_in: Option<PathBuf>,
    /// Tree nodes the final check keeps in memory before it moves them to a
    /// temporary database in the destination (default
    /// [`check::MEMORY_NODES`]): bounds the restore's memory. A commit-delta
    /// rebuild tracks the nodes it builds under the same limit.
    pub memory_nodes: Option<usize>,
}

/// The checks run on the restored store before it is moved into place.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreCheck {
    /// Objects re-hashed: as they were written (plaintext namespaces), and
    /// decrypted ones (encrypted namespaces the given keys open).
    pub objects_verified: u64,
    /// Commits and tree nodes reached from the refs and checked (as `qg fsck` does).
    pub commits: u64,
    pub tree_nodes: u64,
    pub refs: u64,
    /// Encrypted namespaces: restored byte for byte; their sealed objects were
    /// checked structurally and every ref target is present, but they were not
    /// decrypted (that needs the namespace keys).
    pub encrypted_namespaces: Vec<String>,
    /// Encrypted namespaces the given keys opened: every object decrypted and re-hashed.
    pub decrypted_namespaces: Vec<String>,
    /// Audit entries whose chain was re-verified.
    pub audit_entries: u64,
    /// Commit trees rebuilt from delta records, each ending at its commit's
    /// tree id, and the tree nodes they wrote (included in `objects_verified`).
    pub trees_rebuilt: u64,
    pub nodes_rebuilt: u64,
    /// The walk's tree nodes outgrew memory (`memory_nodes`) and were held in
    /// a temporary database instead.
    pub nodes_on_disk: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreResult {
    /// The backup restored to.
    pub id: String,
    /// The streams applied, full backup first.
    pub chain: Vec<String>,
    /// When the restored point's snapshot was taken.
    pub point_in_time: String,
    pub from: String,
    pub to: PathBuf,
    pub store_id: String,
    pub namespace: Option<String>,
    pub namespaces: Vec<String>,
    pub objects: u64,
    pub deleted: u64,
    pub refs: u64,
    pub hooks: u64,
    pub bytes_read: u64,
    pub check: RestoreCheck,
    pub duration_ms: u64,
    /// Things worth knowing that did not fail the restore.
    pub warnings: Vec<String>,
}

/// Restore a store; see the module documentation. Encrypted namespaces are
/// restored as ciphertext and checked structurally.
pub fn restore(opts: &RestoreOptions, progress: &dyn Progress) -> Result<RestoreResult> {
    restore_with_keys(opts, None, progress)
}

/// [`restore`], also decrypting and re-hashing every object of the encrypted
/// namespaces that `keyring` (the store's master key, passwords) opens.
pub fn restore_with_keys(
    opts: &RestoreOptions,
    keyring: Option<qg_store::store::Keyring>,
    progress: &dyn Progress,
) -> Result<RestoreResult> {
    let started = Instant::now();
    let dest = &opts.to;
    let created_dest = prepare_destination(dest)?;
    let staging = dest.join(format!(".qg-restore-{}", std::process::id()));
    let result = restore_into(opts, keyring, &staging, progress, started);
    let result = result.and_then(|r| {
        move_into_place(&staging, dest)?;
        Ok(r)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        if created_dest {
            let _ = std::fs::remove_dir(dest);
        }
    }
    let mut result = match result {
        Ok(r) => r,
        Err(e) => {
            record_test(opts, None, Some(&e), started);
            return Err(e);
        }
    };
    if let Some(w) = record_test(opts, Some(&result), None, started) {
        result.warnings.push(w);
    }
    Ok(result)
}

/// Refuse a non-empty destination; create a missing one. Returns whether it was created.
fn prepare_destination(dest: &Path) -> Result<bool> {
    match std::fs::read_dir(dest) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::usage(format!(
                    "restore destination {} is not empty: restore only into a new or empty directory",
                    dest.display()
                )));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dest)
                .map_err(|e| Error::io("create the restore destination", dest.display(), e))?;
            Ok(true)
        }
        Err(_) if dest.exists() && !dest.is_dir() => Err(Error::usage(format!(
            "restore destination {} is not a directory",
            dest.display()
        ))),
        Err(e) => Err(Error::io("read the restore destination", dest.display(), e)),
    }
}

fn move_into_place(staging: &Path, dest: &Path) -> Result<()> {
    let db = qg_store::storage::DB_FILE;
    for suffix in ["-wal", "-shm"] {
        let f = staging.join(format!("{db}{suffix}"));
        if f.exists() {
            std::fs::rename(&f, dest.join(format!("{db}{suffix}")))
                .map_err(|e| Error::io("move into place", f.display(), e))?;
        }
    }
    // the staged store's lock file stays behind (no one holds it by now):
    // the destination's own is made by whoever opens the store there
    let lock = staging.join(qg_store::lock::LOCK_FILE);
    match std::fs::remove_file(&lock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", lock.display(), e)),
    }
    let hooks = staging.join("hooks");
    if hooks.exists() {
        std::fs::rename(&hooks, dest.join("hooks"))
            .map_err(|e| Error::io("move into place", hooks.display(), e))?;
    }
    std::fs::rename(staging.join(db), dest.join(db))
        .map_err(|e| Error::io("move into place", dest.join(db).display(), e))?;
    std::fs::remove_dir(staging).map_err(|e| Error::io("remove", staging.display(), e))?;
    qg_store::writeback::sync_dir(dest).map_err(|e| Error::io("sync directory", dest.display(), e))
}

/// Record the restore in the live store as a restore test, when asked and
/// when that store is the one backed up. Returns a warning when it could not.
fn record_test(
    opts: &RestoreOptions,
    ok: Option<&RestoreResult>,
    err: Option<&Error>,
    started: Instant,
) -> Option<String> {
    let path = opts.record_in.as_ref()?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if same(path, &opts.to) {
        return None;
    }
    crate::audit::record_if_present(path, |store| {
        let store_id = store.id().ok()?;
        if let Some(r) = ok {
            if r.store_id != store_id {
                return None;
            }
        }
        let mut detail = serde_json::json!({
            "from": opts.from,
            "to": opts.to,
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        let mut event = Event::new(store.actor(), "restore.test").target(opts.from.clone());
        match (ok, err) {
            (Some(r), _) => {
                detail["backup_id"] = r.id.clone().into();
                detail["chain"] = serde_json::json!(r.chain);
                detail["objects"] = r.objects.into();
                detail["bytes"] = r.bytes_read.into();
                detail["point_in_time"] = r.point_in_time.clone().into();
            }
            (None, Some(e)) => {
                detail["error"] = e.to_string().into();
                event = event.outcome(Outcome::Failure);
            }
            _ => {}
        }
        Some(event.detail(detail))
    })
}

/// Which streams to apply.
enum Source {
    Catalog {
        target: Target,
        catalog: Box<Catalog>,
        chain: Vec<Manifest>,
        /// The restore chose the newest backup itself (no `--id`).
        guessed: bool,
    },
    Stdin,
}

fn resolve_at(at: &str) -> Result<String> {
    Ok(clock::format(clock::parse_since(at)?))
}

fn restore_into(
    opts: &RestoreOptions,
    keyring: Option<qg_store::store::Keyring>,
    staging: &Path,
    progress: &dyn Progress,
    started: Instant,
) -> Result<RestoreResult> {
    if opts.id.is_some() && opts.at.is_some() {
        return Err(Error::usage("give --id or --at, not both"));
    }
    let keys = Keyring::from_options(&opts.keys)?;
    let target = Target::parse(&opts.from, &opts.s3)?;
    let at = opts.at.as_deref().map(resolve_at).transpose()?;
    let mut warnings = Vec::new();
    let source = if target.is_stdio() {
        Source::Stdin
    } else {
        let catalog = Catalog::load(&target)?;
        let chosen = match (&opts.id, &at) {
            (Some(id), _) => catalog.get(id)?.id.clone(),
            (None, at) => {
                // a damaged newest backup first: a changed store_id is damage too
                let newest = catalog.newest(&target, at.as_deref())?.id.clone();
                let stores = catalog.stores();
                if stores.len() > 1 {
                    return Err(Error::usage(format!(
                        "{} holds backups of {} stores ({}): choose one with --id",
                        target.display(),
                        stores.len(),
                        stores.join(", ")
                    )));
                }
                newest
            }
        };
        if opts.id.is_none() {
            for name in &catalog.incomplete {
                let id = name
                    .strip_suffix(crate::target::STREAM_SUFFIX)
                    .unwrap_or(name);
                if id > chosen.as_str()
                    && at
                        .as_deref()
                        .map_or(true, |t| crate::catalog::id_time(id).as_str() <= t)
                {
                    warnings.push(format!(
                        "{name} is newer than the restored backup {chosen} but has no manifest (an interrupted or running backup): it was not restored"
                    ));
                }
            }
        }
        let chain: Vec<Manifest> = catalog.chain(&chosen)?.into_iter().cloned().collect();
        for m in &chain {
            if !authenticate(m, &keys)? {
                return Err(Error::usage(format!(
                    "backup {} is encrypted: set {} (or --key-file) or {} (or --passphrase-file)",
                    m.id,
                    crate::keys::KEY_ENV,
                    crate::keys::PASSPHRASE_ENV
                )));
            }
        }
        Source::Catalog {
            target,
            catalog: Box::new(catalog),
            chain,
            guessed: opts.id.is_none(),
        }
    };

    let mut a = Applier::new(
        staging,
        opts.ns.clone(),
        opts.memory_nodes.unwrap_or(check::MEMORY_NODES),
    );
    match &source {
        Source::Catalog {
            target,
            catalog,
            chain,
            guessed,
        } => {
            let mut parent: Option<&Manifest> = None;
            for m in chain {
                progress.start(&format!("restore {}", short(&m.id)), Some(m.counts.objects));
                let applied =
                    crate::catalog::open_stream(target, m).and_then(|(reader, header)| {
                        let end = a.apply(reader, &header, &keys, progress)?;
                        check_against_manifest(m, &end)?;
                        check_hooks_unchanged(m, &header, parent)
                    });
                progress.finish();
                match applied {
                    // the newest point is damaged: restore nothing rather than an older one
                    Err(Error::Damaged { backup, reason }) if *guessed => {
                        let wanted = &chain.last().expect("a chain is never empty").id;
                        return Err(catalog.newest_damaged(
                            target,
                            wanted,
                            &backup,
                            reason,
                            at.as_deref(),
                        ));
                    }
                    other => other?,
                }
                parent = Some(m);
            }
        }
        Source::Stdin => {
            let mut inp: Box<dyn Read> = Target::Stdio.open_read("-", 0)?;
            let mut n = 0;
            loop {
                let Some((reader, header)) = StreamReader::open(inp, "on standard input")? else {
                    break;
                };
                n += 1;
                if let Some(t) = &at {
                    if header.created.as_str() > t.as_str() {
                        if n == 1 {
                            return Err(Error::usage(format!(
                                "the first backup on standard input ({}) was taken after {t}",
                                header.id
                            )));
                        }
                        break;
                    }
                }
                progress.start(&format!("restore {}", short(&header.id)), None);
                let (_, rest) = a.apply_returning(reader, &header, &keys, progress)?;
                progress.finish();
                inp = rest;
                if opts.id.as_deref() == Some(header.id.as_str()) {
                    break;
                }
            }
            if n == 0 {
                return Err(Error::usage("no backup stream on standard input"));
            }
            if let Some(id) = &opts.id {
                if a.applied.last() != Some(id) {
                    return Err(Error::usage(format!(
                        "backup {id} is not in the streams on standard input"
                    )));
                }
            }
        }
    }
    let mut result = a.finish(opts, keyring, progress, started)?;
    result.warnings.extend(warnings);
    Ok(result)
}

/// An incremental that carries no hooks (`hooks_unchanged`) has its parent's:
/// its manifest's `hooks_sha256` must be the parent's.
pub(crate) fn check_hooks_unchanged(
    m: &Manifest,
    header: &Header,
    parent: Option<&Manifest>,
) -> Result<()> {
    match parent {
        Some(p) if header.hooks_unchanged && p.hooks_sha256 != m.hooks_sha256 => {
            Err(Error::damaged(
                &m.id,
                format!(
                    "its manifest's `hooks_sha256` says the hooks changed but its stream says they are those of {}",
                    p.id
                ),
            ))
        }
        None if header.hooks_unchanged && m.parent.is_none() => Err(Error::damaged(
            &m.id,
            "its stream says its hooks are its parent's, but it has no parent",
        )),
        _ => Ok(()),
    }
}

fn short(id: &str) -> &str {
    id.rsplit('-').next().unwrap_or(id)
}

pub(crate) fn check_against_manifest(m: &Manifest, end: &crate::format::StreamEnd) -> Result<()> {
    if m.bytes != Some(end.bytes) {
        return Err(Error::damaged(
            &m.id,
            format!(
                "its stream is {} bytes but its manifest says {}",
                end.bytes,
                m.bytes
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "nothing".into())
            ),
        ));
    }
    if m.sha256.as_deref() != Some(end.sha256.as_str()) {
        return Err(Error::damaged(
            &m.id,
            "the SHA-256 of its stream does not match its manifest's `sha256`",
        ));
    }
    let differ = m.differences(&end.trailer);
    if !differ.is_empty() {
        return Err(Error::damaged(
            &m.id,
            format!(
                "its manifest does not match the trailer inside its stream: {}",
                differ.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Applies streams, in chain order, to the staging store.
struct Applier {
    staging: PathBuf,
    filter: Option<String>,
    w: Option<RestoreWriter>,
    store_id: String,
    point: String,
    applied: Vec<String>,
    hooks: BTreeMap<String, HookFile>,
    /// Namespace name -> encrypted, as of the latest stream.
    namespaces: BTreeMap<String, bool>,
    objects: u64,
    /// Objects re-hashed as they were written.
    verified: u64,
    /// Tree nodes of plaintext namespaces as decoded when written, for the final check.
    nodes: check::NodeIndex,
    deleted: u64,
    refs: u64,
    bytes: u64,
    /// Delta records applied, and the tree nodes they rebuilt.
    trees_rebuilt: u64,
    nodes_rebuilt: u64,
}

#[derive(Default)]
struct StreamState {
    rank: u8,
    existing: HashMap<String, NamespaceRow>,
    seen: BTreeSet<String>,
    objects: u64,
    deleted: u64,
    refs: u64,
    kept_refs: u64,
    reflog: u64,
    audit: u64,
    hooks: u64,
    rows: u64,
    namespaces: u64,
    deltas: u64,
    resets: u64,
    /// Hash of the index entries of the object, deletion, delta and reset records, and of the index.
    records_hash: IndexDigest,
    index_hash: IndexDigest,
}

impl Applier {
    fn new(staging: &Path, filter: Option<String>, memory_nodes: usize) -> Applier {
        Applier {
            staging: staging.to_path_buf(),
            filter,
            w: None,
            store_id: String::new(),
            point: String::new(),
            applied: Vec::new(),
            hooks: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            objects: 0,
            verified: 0,
            nodes: check::NodeIndex::new(memory_nodes, staging),
            deleted: 0,
            refs: 0,
            bytes: 0,
            trees_rebuilt: 0,
            nodes_rebuilt: 0,
        }
    }

    fn wants(&self, ns: &str) -> bool {
        self.filter.as_deref().map_or(true, |f| f == ns)
    }

    fn apply<R: Read>(
        &mut self,
        reader: StreamReader<R>,
        header: &Header,
        keys: &Keyring,
        progress: &dyn Progress,
    ) -> Result<crate::format::StreamEnd> {
        self.apply_returning(reader, header, keys, progress)
            .map(|(end, _)| end)
    }

    fn apply_returning<R: Read>(
        &mut self,
        mut reader: StreamReader<R>,
        header: &Header,
        keys: &Keyring,
        progress: &dyn Progress,
    ) -> Result<(crate::format::StreamEnd, R)> {
        let id = header.id.clone();
        match (self.applied.last(), header.kind, &header.parent) {
            (None, BackupKind::Full, _) => {}
            (None, BackupKind::Incremental, _) => {
                return Err(Error::Chain(format!(
                    "backup {id} is incremental: restore needs its full backup first (its parent is {})",
                    header.parent.as_deref().unwrap_or("unnamed")
                )))
            }
            (Some(prev), BackupKind::Incremental, Some(p)) if p == prev => {}
            (Some(prev), _, p) => {
                return Err(Error::Chain(format!(
                    "backup {id} does not follow {prev} (its parent is {})",
                    p.as_deref().unwrap_or("none: it is a full backup")
                )))
            }
        }
        if !self.store_id.is_empty() && header.store_id != self.store_id && self.filter.is_none() {
            return Err(Error::Chain(format!(
                "backup {id} is of store {}, not {}",
                header.store_id, self.store_id
            )));
        }
        if let Some(info) = &header.encryption {
            let master = keys.master(info, &id)?;
            reader.set_cipher(Some(master.frames(info, &id)));
        }
        if self.w.is_none() {
            self.store_id = if self.filter.is_some() {
                let mut r = [0u8; 16];
                getrandom::fill(&mut r).expect("the OS random source works");
                hex::encode(r)
            } else {
                header.store_id.clone()
            };
            self.w = Some(RestoreWriter::create(
                &self.staging,
                &self.store_id,
                &header.created,
            )?);
        }
        if !header.hooks_unchanged {
            self.hooks.clear();
        }
        let mut st = StreamState {
            rank: RecordType::Header.rank(),
            ..Default::default()
        };
        let mut batch = ObjectBatch::default();
        // the batch being checked on other threads while this one writes the
        // batch before it
        let mut checking: Option<Checking> = None;
        while let Some(rec) = reader.next_record()? {
            let object = matches!(rec, Record::Object { .. });
            if !object || batch.is_full() {
                let next = self.start_checks(std::mem::take(&mut batch), &mut st, &id, progress)?;
                if let Some(prev) = checking.take() {
                    self.write_checked(prev)?;
                }
                checking = next;
            }
            if !object {
                // everything after the objects may need them
                if let Some(prev) = checking.take() {
                    self.write_checked(prev)?;
                }
            }
            let rank = rec.record_type().rank();
            while st.rank < rank {
                st.rank += 1;
                self.enter(st.rank, &mut st)?;
            }
            match rec {
                Record::Object { ns, id, kind, data } => batch.push(ns, id, kind, data),
                rec => self.record(rec, &mut st, &id, progress)?,
            }
        }
        let last = self.start_checks(batch, &mut st, &id, progress)?;
        for c in [checking, last].into_iter().flatten() {
            self.write_checked(c)?;
        }
        let (end, rest) = reader.finish()?;
        self.bytes += end.bytes;
        self.point = header.created.clone();
        self.applied.push(id);
        Ok((end, rest))
    }

    fn w(&mut self) -> &mut RestoreWriter {
        self.w.as_mut().expect("created at the first header")
    }

    /// Start of a section: what the stream's complete sets replace.
    fn enter(&mut self, rank: u8, st: &mut StreamState) -> Result<()> {
        let filter = self.filter.clone();
        match crate::format::section(rank) {
            Some(RecordType::Namespace) => {
                st.existing = self
                    .w()
                    .namespaces()?
                    .into_iter()
                    .map(|n| (n.name.clone(), n))
                    .collect();
                self.namespaces.clear();
            }
            Some(RecordType::KeyUsage) => {
                // the namespace section is over: drop namespaces the stream no longer has
                for name in st.existing.keys() {
                    if !st.seen.contains(name) {
                        self.w.as_ref().expect("open").drop_namespace(name)?;
                        self.nodes.remove_ns(name)?;
                    }
                }
                self.w().clear_key_state(filter.as_deref())?;
            }
            Some(RecordType::Row) if filter.is_none() => {
                // the stream's rows replace the tables' contents
                for t in self.w().other_tables()? {
                    self.w().clear_table(&t)?;
                }
            }
            Some(RecordType::Ref) => self.w().clear_refs(filter.as_deref())?,
            _ => {}
        }
        Ok(())
    }

    fn record(
        &mut self,
        rec: Record,
        st: &mut StreamState,
        backup: &str,
        progress: &dyn Progress,
    ) -> Result<()> {
        match rec {
            Record::Meta(k, v) => {
                // the store id was set when the staging store was created
                if k != "store_id" {
                    self.w().set_meta(&k, &v)?;
                }
            }
            Record::Namespace(row) => {
                st.namespaces += 1;
                if !self.wants(&row.name) {
                    return Ok(());
                }
                if let Some(old) = st.existing.get(&row.name) {
                    if old.created != row.created {
                        // deleted and created again since the previous backup
                        self.w().clear_reflog(&row.name)?;
                    }
                }
                st.seen.insert(row.name.clone());
                self.namespaces.insert(row.name.clone(), row.encrypted());
                self.w().put_namespace(&row)?;
            }
            Record::KeyUsage(k) => {
                if self.wants(&k.ns) {
                    self.w().put_key_usage(&k)?;
                }
            }
            Record::Rekey(r) => {
                if self.wants(&r.ns) {
                    self.w().put_rekey(&r)?;
                }
            }
            Record::Hook(h) => {
                st.hooks += 1;
                self.hooks.insert(h.name.clone(), h);
            }
            Record::Row(row) => {
                st.rows += 1;
                // a partial restore is a new store: no tokens or settings of the old one
                if self.filter.is_none() {
                    self.w()
                        .put_row(&row)
                        .map_err(|e| Error::usage(format!("backup {backup}: {e}")))?;
                }
            }
            Record::Ref(r) => {
                st.refs += 1;
                if self.wants(&r.ns) {
                    st.kept_refs += 1;
                    self.w().put_ref(&r)?;
                }
            }
            Record::Reflog(r) => {
                st.reflog += 1;
                if self.wants(&r.ns) {
                    self.w().put_reflog(&r)?;
                }
            }
            Record::Audit(a) => {
                st.audit += 1;
                self.w()
                    .put_audit(&a)
                    .map_err(|e| Error::damaged(backup, e.to_string()))?;
            }
            Record::Object { ns, id, kind, data } => {
                let mut one = ObjectBatch::default();
                one.push(ns, id, kind, data);
                if let Some(c) = self.start_checks(one, st, backup, progress)? {
                    self.write_checked(c)?;
                }
            }
            Record::Delete { ns, id } => {
                st.deleted += 1;
                st.records_hash.add(&IndexEntry::delete(&ns, id));
                if self.wants(&ns) {
                    self.w().delete_object(&ns, &id)?;
                    self.nodes.remove(&ns, &id)?;
                    self.deleted += 1;
                }
            }
            Record::Reset(ns) => {
                st.resets += 1;
                st.records_hash.add(&IndexEntry::reset(&ns));
                if self.wants(&ns) {
                    // the chain no longer vouches for what it held of `ns`
                    self.deleted += self.w().delete_objects(&ns)?;
                    self.nodes.remove_ns(&ns)?;
                }
            }
            Record::Delta(d) => {
                st.deltas += 1;
                st.records_hash
                    .add(&IndexEntry::tree(&d.ns, d.tree, d.base));
                if !self.wants(&d.ns) {
                    return Ok(());
                }
                match self.namespaces.get(&d.ns) {
                    Some(false) => {}
                    Some(true) => {
                        return Err(Error::damaged(
                            backup,
                            format!("{} is for an encrypted namespace", d.what()),
                        ))
                    }
                    None => {
                        return Err(Error::damaged(
                            backup,
                            format!("{}: the backup does not have that namespace", d.what()),
                        ))
                    }
                }
                let w = self.w.as_ref().expect("created at the first header");
                let rebuilt = crate::delta::rebuild(w, &d, backup, &mut self.nodes)?;
                self.trees_rebuilt += 1;
                self.nodes_rebuilt += rebuilt.nodes;
                self.verified += rebuilt.nodes;
                self.objects += rebuilt.nodes;
            }
            Record::Index(entries) => {
                for e in entries {
                    st.index_hash.add(&e);
                }
            }
            Record::Trailer(m) => {
                let c = &m.counts;
                c.check_seen(
                    [
                        st.namespaces,
                        st.refs,
                        st.reflog,
                        st.audit,
                        st.hooks,
                        st.rows,
                        st.objects,
                        st.deleted,
                        st.deltas,
                        st.resets,
                    ],
                    backup,
                )?;
                let (a, b) = (st.records_hash, st.index_hash);
                if a != b {
                    return Err(Error::damaged(
                        backup,
                        "its index does not list exactly its object, deletion, delta and reset records",
                    ));
                }
                self.refs = st.kept_refs;
                self.w().reserve_reflog_seq(m.reflog_seq)?;
            }
        }
        Ok(())
    }

    /// Start checking a run of object records (decoding and re-hashing is
    /// most of a restore's work) on other threads, spread over every core,
    /// so that this one can write the run before it meanwhile. None for an
    /// empty run.
    fn start_checks(
        &mut self,
        batch: ObjectBatch,
        st: &mut StreamState,
        backup: &str,
        progress: &dyn Progress,
    ) -> Result<Option<Checking>> {
        if batch.records.is_empty() {
            return Ok(None);
        }
        // per record: whether its namespace is encrypted, None if not restored
        let mut wanted = Vec::with_capacity(batch.records.len());
        for (ns, id, _, _) in &batch.records {
            st.objects += 1;
            st.records_hash.add(&IndexEntry::add(ns, *id));
            progress.inc(1);
            if !self.wants(ns) {
                wanted.push(None);
                continue;
            }
            let encrypted = *self.namespaces.get(ns).ok_or_else(|| {
                Error::damaged(
                    backup,
                    format!(
                        "object {id} belongs to namespace `{ns}`, which the backup does not have"
                    ),
                )
            })?;
            wanted.push(Some(encrypted));
        }
        let backup = backup.to_string();
        let records = batch.records;
        Ok(Some(Checking(std::thread::spawn(move || {
            let work: Vec<_> = records.iter().zip(&wanted).collect();
            let checks = qg_store::parallel::map(&work, |((ns, id, kind, data), wanted)| {
                wanted.map(|encrypted| verify_object(&backup, ns, id, *kind, data, encrypted))
            });
            drop(work);
            (records, checks)
        }))))
    }

    /// Wait for a run's checks and write its objects, in stream order.
    fn write_checked(&mut self, checking: Checking) -> Result<()> {
        let (records, checks) = checking
            .0
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        for ((ns, id, kind, data), check) in records.into_iter().zip(checks) {
            let Some(check) = check else { continue };
            match check? {
                Verified::Rehashed => self.verified += 1,
                Verified::Node(info) => {
                    self.verified += 1;
                    self.nodes.insert(&ns, id, *info)?;
                }
                Verified::Structural => {}
            }
            self.w().put_object(&ns, &id, kind, &data)?;
            self.objects += 1;
        }
        Ok(())
    }

    fn finish(
        mut self,
        opts: &RestoreOptions,
        keyring: Option<qg_store::store::Keyring>,
        progress: &dyn Progress,
        started: Instant,
    ) -> Result<RestoreResult> {
        if let Some(ns) = &self.filter {
            if !self.namespaces.contains_key(ns) {
                return Err(Error::usage(format!(
                    "namespace `{ns}` is not in backup {}",
                    self.applied.last().map(String::as_str).unwrap_or("?")
                )));
            }
        }
        let w = self
            .w
            .take()
            .ok_or_else(|| Error::usage("nothing to restore"))?;
        // hooks
        let hooks_dir = self.staging.join("hooks");
        std::fs::create_dir_all(&hooks_dir)
            .map_err(|e| Error::io("create", hooks_dir.display(), e))?;
        for h in self.hooks.values() {
            use std::os::unix::fs::PermissionsExt;
            if h.name.contains('/') || h.name == ".." || h.name == "." {
                return Err(Error::damaged(
                    self.applied.last().expect("applied"),
                    format!("bad hook name `{}`", h.name),
                ));
            }
            let p = hooks_dir.join(&h.name);
            std::fs::write(&p, &h.data).map_err(|e| Error::io("write", p.display(), e))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(h.mode & 0o7777))
                .map_err(|e| Error::io("set permissions of", p.display(), e))?;
        }
        let db_path = w.finish()?;
        let syncing = qg_store::writeback::sync_in_background(&db_path);

        // Check the restored store as `qg fsck` would, then record the restore in it.
        let mut store = Store::open(&self.staging)?;
        // the check reads every page once: a small cache keeps memory bounded
        store.db().set_cache_kib(CHECK_CACHE_KIB)?;
        if let Some(k) = keyring {
            store.set_keyring(k);
        }
        let mut check = RestoreCheck {
            audit_entries: qg_store::audit::verify(store.db())?,
            ..Default::default()
        };
        let mut problems = check::integrity(&store)?;
        let mut walk = check::Walk::default();
        for (ns, encrypted) in &self.namespaces {
            if !*encrypted {
                let objs = ObjectSet::new(store.db(), ns);
                check::walk_known(&store, ns, &objs, &mut self.nodes, progress, &mut walk)?;
                continue;
            }
            match store.objects(ns) {
                Ok(objs) => {
                    check.decrypted_namespaces.push(ns.clone());
                    check::walk(&store, ns, &objs, true, progress, &mut walk)?;
                }
                Err(_) => {
                    // no key for it here: kept sealed, its refs' targets checked
                    check.encrypted_namespaces.push(ns.clone());
                    let snap = Snapshot::begin(store.db())?;
                    for r in snap.refs()?.into_iter().filter(|r| &r.ns == ns) {
                        walk.refs += 1;
                        if !snap.db().has_object(ns, &r.target)? {
                            problems.push(format!(
                                "{ns}: ref {} points at missing object {}",
                                r.name, r.target
                            ));
                        }
                    }
                }
            }
        }
        problems.extend(walk.problems);
        check.objects_verified = self.verified + walk.decrypted;
        check.commits = walk.commits;
        check.tree_nodes = walk.nodes;
        check.trees_rebuilt = self.trees_rebuilt;
        check.nodes_rebuilt = self.nodes_rebuilt;
        check.nodes_on_disk = self.nodes.on_disk();
        check.refs = walk.refs;
        if !problems.is_empty() {
            return Err(Error::CheckFailed(format!(
                "the restored store failed its check ({} problem(s)), so nothing was restored: {}",
                problems.len(),
                problems.join("; ")
            )));
        }
        let id = self.applied.last().expect("applied").clone();
        let duration_ms = started.elapsed().as_millis() as u64;
        store.record(
            &Event::new(store.actor(), "restore")
                .target(opts.to.display().to_string())
                .detail(serde_json::json!({
                    "backup_id": id,
                    "chain": self.applied,
                    "from": opts.from,
                    "point_in_time": self.point,
                    "namespace": self.filter,
                    "objects": self.objects,
                    "bytes": self.bytes,
                    "duration_ms": duration_ms,
                })),
        )?;
        qg_store::snapshot::checkpoint(store.db())?;
        drop(store);
        syncing
            .wait()
            .and_then(|()| qg_store::writeback::sync_file_and_dir(&db_path))
            .map_err(|e| Error::io("sync", db_path.display(), e))?;
        Ok(RestoreResult {
            id,
            chain: self.applied.clone(),
            point_in_time: self.point.clone(),
            from: opts.from.clone(),
            to: opts.to.clone(),
            store_id: self.store_id.clone(),
            namespace: self.filter.clone(),
            namespaces: self.namespaces.keys().cloned().collect(),
            objects: self.objects,
            deleted: self.deleted,
            refs: self.refs,
            hooks: self.hooks.len() as u64,
            bytes_read: self.bytes,
            check,
            duration_ms,
            warnings: Vec::new(),
        })
    }
}

/// Check an object before it is written: plaintext objects are decoded and
/// re-hashed (tree nodes also parsed); sealed ones (encrypted namespaces) are
/// checked structurally.
pub(crate) fn verify_object(
    backup: &str,
    ns: &str,
    id: &ObjectId,
    kind: u8,
    data: &[u8],
    encrypted: bool,
) -> Result<Verified> {
    let bad = |reason: String| {
        Error::damaged(backup, format!("object {id} of namespace `{ns}`: {reason}"))
    };
    let (k, payload) = if encrypted {
        let k = object::check_header(ns, id, data).map_err(|e| bad(e.to_string()))?;
        (k, None)
    } else {
        let (k, payload) = object::decode(&Plain, ns, id, data).map_err(|e| bad(e.to_string()))?;
        (k, Some(payload))
    };
    if k as u8 != kind {
        return Err(bad(format!(
            "recorded as kind {kind} but it is a {}",
            k.name()
        )));
    }
    Ok(match payload {
        None => Verified::Structural,
        Some(payload) if k == object::Kind::Node => Verified::Node(Box::new(
            check::NodeInfo::of_payload(&payload)
                .map_err(|e| bad(format!("bad tree node: {e}")))?,
        )),
        Some(_) => Verified::Rehashed,
    })
}

/// Page cache (KiB) of the final check's connection to the restored store.
const CHECK_CACHE_KIB: i64 = 4 * 1024;

/// A run of object records being checked on other threads: the records, and
/// for each the check's result (None: not restored).
struct Checking(std::thread::JoinHandle<CheckedRun>);

type CheckedRun = (Vec<ObjectRecord>, Vec<Option<Result<Verified>>>);
type ObjectRecord = (String, ObjectId, u8, Vec<u8>);

/// Object records waiting to be checked together.
#[derive(Default)]
struct ObjectBatch {
    records: Vec<ObjectRecord>,
    bytes: usize,
}

impl ObjectBatch {
    /// Records per batch: enough to keep every core busy between writes.
    const RECORDS: usize = 256;
    /// Bytes per batch: bounds the memory of a run of large objects.
    const BYTES: usize = 4 << 20;

    fn push(&mut self, ns: String, id: ObjectId, kind: u8, data: Vec<u8>) {
        self.bytes += data.len();
        self.records.push((ns, id, kind, data));
    }

    fn is_full(&self) -> bool {
        self.records.len() >= Self::RECORDS || self.bytes >= Self::BYTES
    }
}

/// How an object was checked before it was written.
pub(crate) enum Verified {
    /// Decoded and re-hashed (a commit).
    Rehashed,
    /// Decoded, re-hashed and parsed: a tree node.
    Node(Box<check::NodeInfo>),
    /// Sealed: its frame was checked.
    Structural,
}

#[cfg(test)]
mod tests {
    use super::*;
    use qg_store::crypto::{NsSealer, Secret};
    use qg_store::object::Kind;

    #[test]
    fn sealed_objects_are_checked_by_their_frame_and_kind() {
        let deks: std::collections::BTreeMap<u32, Secret> =
            [(1, zeroize::Zeroizing::new([9u8; 32]))].into();
        let sealer = NsSealer::new("vault", &deks, Some(1), false);
        let (id, bytes) = object::encode(&sealer, Kind::Commit, b"{}").unwrap();
        let check = |kind: u8, data: &[u8]| verify_object("b1", "vault", &id, kind, data, true);
        assert!(matches!(check(2, &bytes), Ok(Verified::Structural)));
        let err = |r: Result<Verified>| r.err().expect("refused").to_string();
        let wrong_kind = err(check(1, &bytes));
        assert!(
            wrong_kind.contains("recorded as kind 1 but it is a commit"),
            "{wrong_kind}"
        );
        assert!(
            wrong_kind.contains(&id.to_hex()) && wrong_kind.contains("b1"),
            "{wrong_kind}"
        );
        assert!(err(check(2, &bytes[..5])).contains("bad header magic"));
        let mut flags = bytes.clone();
        flags[5] |= 0x40;
        assert!(err(check(2, &flags)).contains("unknown header flags"));
        let mut no_nonce = bytes.clone();
        no_nonce[10] = 0;
        assert!(err(check(2, &no_nonce)).contains("sealed without a nonce"));
    }
}
