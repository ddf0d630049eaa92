//! Key rotation: rewrapping keys (master key, password) and re-encrypting a
//! namespace's objects (new data key, or plaintext to encrypted).
//!
//! Re-encryption rebuilds the database file. With the store locked
//! exclusively (no other process may have it open: [`crate::lock`]), it
//! writes a new file beside the old one, without a journal: every table
//! copied as it is except the namespace's objects; then the namespace's
//! objects under the new key, which gives them new addresses: tree leaves
//! (nearly all of the bytes) in storage order, re-sealed as they are (a
//! sealed body carries its content hash, and a plaintext object's address
//! is its content hash, so no leaf is decompressed or re-hashed; every read
//! and `fsck` check them afterwards), then the commits and internal nodes
//! reachable from a ref or reflog entry, a level at a time from the bottom,
//! rewritten with their children's new ids; then
//! refs, reflog, key record, key counters and the audit entry of the new
//! state. A thread with a connection of its own (a memory map of the old
//! file) reads and re-keys a batch while the caller's writes the one before,
//! and the new file is written back to disk as it grows (a small page cache,
//! `sync_file_range`). The new file is synced and renamed over the old one,
//! whose WAL goes with it: nothing of the old objects, plaintext or sealed
//! by the old key, is left in the store's files, and no `VACUUM` is needed.
//!
//! A run killed before the rename leaves the store as it was (and a partial
//! file the next run deletes and rebuilds); after it, the job is done. The
//! cost is about one copy of the file, where rewriting the live database
//! (copy, switch, `VACUUM`, checkpoint, all through the WAL) wrote every
//! page about five times; the price is that the store is offline meanwhile.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender};

use serde::{Deserialize, Serialize};

use crate::audit::{self, Event};
use crate::commit::Commit;
use crate::crypto::{self, CryptoRecord, KdfParams, MasterKey};
use crate::error::{Error, Result};
use crate::id::{IdMap, IdSet, ObjectId};
use crate::object::{self, Kind, Resealed, Sealer};
use crate::objects;
use crate::progress::Progress;
use crate::storage::Db;
use crate::store::Store;
use crate::tree::Node;

/// Result of rewrapping under a new master key.
#[derive(Debug, Clone, Serialize)]
pub struct MasterRotation {
    pub old_kek_id: String,
    pub new_kek_id: String,
    /// Encrypted namespaces whose keys were rewrapped.
    pub namespaces: Vec<String>,
    pub dry_run: bool,
}

/// Rewrap the keys of every encrypted namespace under `new`, in one
/// transaction. Object data is not touched, so the time does not depend on
/// the size of the store.
pub fn rotate_master(store: &Store, new: &MasterKey, dry_run: bool) -> Result<MasterRotation> {
    let old = store.master_key()?;
    if old.id() == new.id() {
        return Err(Error::BadKey {
            what: "new master key".into(),
            reason: "it is the same as the current one".into(),
        });
    }
    let result = store.db().write(|db| {
        let mut done = Vec::new();
        for ns in store.namespaces()? {
            let Some(bytes) = db.crypto_record(&ns)? else {
                continue;
            };
            let rec = CryptoRecord::from_json(&ns, &bytes)?;
            let new_rec = crypto::rewrap_master(old, new, &ns, &rec)?;
            if !dry_run {
                db.set_crypto_record(&ns, Some(&new_rec.to_json()))?;
            }
            done.push(ns);
        }
        let report = MasterRotation {
            old_kek_id: old.id(),
            new_kek_id: new.id(),
            namespaces: done,
            dry_run,
        };
        if !dry_run {
            audit::append(
                db,
                &Event::new(store.actor(), "key.rotate.master")
                    .target(format!("kek:{}", new.id()))
                    .detail(serde_json::json!({
                        "old_kek_id": report.old_kek_id, "new_kek_id": report.new_kek_id,
                        "namespaces": report.namespaces,
                    })),
            )?;
        }
        Ok(report)
    })?;
    store.forget_keys();
    Ok(result)
}

/// Result of a password change.
#[derive(Debug, Clone, Serialize)]
pub struct PasswordChange {
    pub ns: String,
    pub key_versions: Vec<u32>,
    pub kdf: KdfParams,
    pub dry_run: bool,
}

/// Rewrap the keys of password namespace `ns` under a new password.
pub fn change_password(
    store: &Store,
    ns: &str,
    new_password: &str,
    kdf: Option<KdfParams>,
    dry_run: bool,
) -> Result<PasswordChange> {
    if new_password.is_empty() {
        return Err(Error::BadKey {
            what: "new password".into(),
            reason: "it is empty".into(),
        });
    }
    let rec = store
        .crypto_record(ns)?
        .ok_or_else(|| Error::NotEncrypted {
            ns: ns.to_string(),
            hint: "it has no password; encrypt it first with `qg-rotate-keys encrypt`".into(),
        })?;
    let Some(prec) = rec.password.clone() else {
        return Err(Error::NotEncrypted {
            ns: ns.to_string(),
            hint: "it is encrypted but not password-protected, so there is no password to change"
                .into(),
        });
    };
    let kek = store.master_key()?;
    let old_key = store.password_key(ns, &rec)?;
    if crypto::unwrap_keys(kek, ns, &rec, Some(&old_key)).is_err() {
        store.record(
            &Event::new(store.actor(), "ns.unlock")
                .ns(ns)
                .target(ns)
                .outcome(audit::Outcome::Denied)
                .detail(serde_json::json!({"reason": "wrong password (password change)"})),
        )?;
        return Err(Error::Locked {
            ns: ns.to_string(),
            reason: "wrong password".into(),
        });
    }
    let params = kdf.unwrap_or(prec.params);
    let new_rec = crypto::rewrap_password(kek, ns, &rec, &old_key, new_password, params)?;
    let report = PasswordChange {
        ns: ns.to_string(),
        key_versions: rec.keys.iter().map(|k| k.version).collect(),
        kdf: params,
        dry_run,
    };
    if !dry_run {
        store.db().write(|db| {
            let current = db.crypto_record(ns)?;
            if current.as_deref() != Some(&rec.to_json()[..]) {
                return Err(Error::Other(format!(
                    "the keys of namespace `{ns}` changed while the password was being changed; retry"
                )));
            }
            db.set_crypto_record(ns, Some(&new_rec.to_json()))?;
            audit::append(
                db,
                &Event::new(store.actor(), "key.rotate.password")
                    .ns(ns)
                    .target(ns)
                    .detail(serde_json::json!({"key_versions": report.key_versions, "kdf": params})),
            )
        })?;
        store.forget_keys();
    }
    Ok(report)
}

/// Which re-encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RekeyKind {
    /// A new data key for an encrypted namespace.
    Dek,
    /// First encryption of a plaintext namespace.
    Encrypt,
}

impl RekeyKind {
    fn name(self) -> &'static str {
        match self {
            RekeyKind::Dek => "dek",
            RekeyKind::Encrypt => "encrypt",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RekeyOptions {
    /// Report what would change without changing anything.
    pub dry_run: bool,
    /// Objects read, re-keyed and written per batch: one is read while the
    /// one before is written, two more may wait between them. The commits
    /// and internal nodes (a few percent of the objects) are kept until the
    /// end. (All are written in one transaction: the new file has no
    /// journal.)
    pub batch_objects: usize,
}

impl Default for RekeyOptions {
    fn default() -> Self {
        RekeyOptions {
            dry_run: false,
            batch_objects: 2000,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RekeyReport {
    pub ns: String,
    pub kind: String,
    /// Key version before (None: plaintext) and after.
    pub from_version: Option<u32>,
    pub to_version: u32,
    pub kek_id: String,
    /// A killed run had started this job (its partial file, or the job
    /// record of an earlier version, was found); this run redid it.
    pub resumed: bool,
    /// Objects currently stored in the namespace (before).
    pub objects_before: u64,
    pub bytes_before: u64,
    /// Objects written under the new key by this run.
    pub objects_rewritten: u64,
    /// Old objects gone with the old file (unreachable ones included).
    pub objects_deleted: u64,
    /// The namespace was already encrypted; nothing was done (`encrypt` only).
    pub already_done: bool,
    /// Only the final rewrite of the file was left by a killed run of an
    /// earlier version (which rewrote the live database), and done.
    pub erase_only: bool,
    pub dry_run: bool,
}

/// Re-encrypt every object of `ns` (see the module docs).
pub fn rekey(
    store: &mut Store,
    ns: &str,
    kind: RekeyKind,
    opts: &RekeyOptions,
    progress: &dyn Progress,
) -> Result<RekeyReport> {
    let kek = store.master_key()?;
    let db = store.db();
    store.default_branch(ns)?;
    // adding up the sizes reads every object, and a rebuild counts them
    // itself, beside its reader
    let (objects_before, bytes_before) = match opts.dry_run {
        true => db.object_stats(ns)?,
        false => (0, 0),
    };
    let mut report = RekeyReport {
        ns: ns.to_string(),
        kind: kind.name().into(),
        kek_id: kek.id(),
        objects_before,
        bytes_before,
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let existing = store.crypto_record(ns)?;
    let existing_raw = db.crypto_record(ns)?;
    // the key record to copy under (with the new key in it), and the key
    // versions objects move from (None: plaintext) and to
    let (rec, from, to) = match (kind, existing) {
        (_, Some(rec)) if rec.erase_pending && rec.job.is_none() => {
            // a run of an earlier version, which rewrote the live database,
            // was killed after its switch: only its final rewrite is left
            report.resumed = true;
            report.erase_only = true;
            report.objects_before = db.count_objects(ns)?;
            report.to_version = rec.current.unwrap_or(0);
            if !opts.dry_run {
                exclusively(store, |store| finish_erase(store, ns))?;
            }
            return Ok(report);
        }
        (_, Some(rec)) if rec.job.is_some() => {
            let job = rec.job.clone().expect("checked");
            if job.kind != kind.name() {
                return Err(Error::Other(format!(
                    "namespace `{ns}` has an unfinished `{}` job; finish it with `qg-rotate-keys {} --ns {ns}` first",
                    job.kind, job.kind
                )));
            }
            // a run of an earlier version was killed while copying: its
            // copies are left behind with the rest of the old file
            report.resumed = true;
            (rec, job.from, job.to)
        }
        (RekeyKind::Encrypt, Some(rec)) => {
            report.already_done = true;
            report.objects_before = db.count_objects(ns)?;
            report.to_version = rec.current.unwrap_or(0);
            report.from_version = rec.current;
            return Ok(report);
        }
        (RekeyKind::Dek, None) => {
            return Err(Error::NotEncrypted {
                ns: ns.to_string(),
                hint: "it has no data key to rotate; use `qg-rotate-keys encrypt` first".into(),
            })
        }
        (RekeyKind::Encrypt, None) => {
            let nk = crypto::new_key(kek, ns, 1, None);
            let rec = CryptoRecord {
                format: 1,
                kek_id: kek.id(),
                current: None,
                keys: vec![nk.wrapped],
                password: None,
                job: None,
                erase_pending: false,
            };
            (rec, None, 1)
        }
        (RekeyKind::Dek, Some(mut rec)) => {
            let to = rec.newest_version() + 1;
            let pw_key = match rec.password {
                Some(_) => Some(store.password_key(ns, &rec)?),
                None => None,
            };
            // proves the keyring opens the namespace before anything is written
            store.namespace_keys(ns, &rec)?;
            let nk = crypto::new_key(kek, ns, to, pw_key.as_ref());
            rec.keys.push(nk.wrapped);
            let from = rec.current;
            (rec, from, to)
        }
    };
    report.from_version = from;
    report.to_version = to;
    if opts.dry_run {
        return Ok(report);
    }
    // a partial file is what a killed run leaves; it is rebuilt from scratch
    report.resumed |= store.dir().join(REBUILD_FILE).exists();
    exclusively(store, |store| {
        // what was read before the lock must still hold: nobody changes it now
        if store.db().crypto_record(ns)? != existing_raw {
            return Err(Error::Other(format!(
                "the keys of namespace `{ns}` changed while the job was starting; retry"
            )));
        }
        rebuild(store, kind, &rec, (from, to), opts, progress, report)
    })
}

/// Run `job` with the store locked exclusively ([`Db::lock_exclusive`]);
/// when it fails, the partial file it may have left goes.
fn exclusively<T>(store: &mut Store, job: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
    store.db().lock_exclusive()?;
    let done = job(store);
    if done.is_err() {
        let _ = std::fs::remove_file(store.dir().join(REBUILD_FILE));
    }
    let unlocked = store.db().unlock_exclusive();
    let value = done?;
    unlocked?;
    Ok(value)
}

/// The new database file a rebuild writes before it takes the old one's place.
pub const REBUILD_FILE: &str = ".qg.sqlite.rebuild";

/// Write the store's database anew into [`REBUILD_FILE`] with the objects of
/// the namespace moved from key version `from` (None: plaintext) to `to`,
/// and put it in place (see the module docs). The namespace and master key
/// id are in `report`.
fn rebuild(
    store: &mut Store,
    kind: RekeyKind,
    rec: &CryptoRecord,
    (from, to): (Option<u32>, u32),
    opts: &RekeyOptions,
    progress: &dyn Progress,
    mut report: RekeyReport,
) -> Result<RekeyReport> {
    let ns = report.ns.clone();
    let ns = ns.as_str();
    let old_file = store.db().exclusive_reader()?;
    // the writer's keys come from the job's record, the reader's from the
    // store's: neither may find the other's in the key cache
    store.forget_keys();
    let to_sealer = store.sealer_for(ns, rec, to)?;
    store.forget_keys();
    let reader = store.objects(ns)?;
    // One read transaction on the old file (not a lock per object read) and
    // one write transaction on the new one (no journal, so a large
    // transaction costs nothing). A thread with a connection of its own
    // reads and re-keys the objects, a batch at a time, while this one
    // writes the batch before; it starts first, while this one makes the
    // new file.
    let rekeyer = Rekeyer {
        ns,
        from: reader.sealer(),
        to: &to_sealer,
        from_plaintext: from.is_none(),
        map: IdMap::default(),
        upper: IdMap::default(),
        waiting: Vec::new(),
        framed_ahead: IdMap::default(),
    };
    let batch = opts.batch_objects.max(1);
    let (new_db, new_file, map, written, read_bytes) = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let feeder = scope.spawn(move || rekeyer.run(old_file, batch, tx, scope));
        // (on an error here, `rx` goes and the reader stops at its next batch)
        let new_db = store
            .db()
            .copy_into(&store.dir().join(REBUILD_FILE), Some(ns))?;
        new_db.set_cache_kib(REBUILD_CACHE_KIB)?;
        let new_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(new_db.path())?;
        // about the old file's size, to be written in place of it
        let old_len = std::fs::metadata(store.db().path())?.len();
        crate::writeback::preallocate(&new_file, old_len + old_len / 8);
        report.objects_before = store.db().count_objects(ns)?;
        progress.start(&format!("re-encrypting {ns}"), Some(report.objects_before));
        let (map, written, read) = new_db.write(|_| {
            let (written, read) = write_batches(&new_db, (ns, to), rx, &new_file, progress)?;
            match feeder.join() {
                Ok(map) => Ok((map?, written, read)),
                // an error, not an unwinding panic: the caller still
                // unlocks the store and removes the partial file
                Err(panic) => Err(Error::Other(format!(
                    "the thread re-keying `{ns}` failed: {}",
                    panic
                        .downcast_ref::<&str>()
                        .copied()
                        .or(panic.downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("it panicked")
                ))),
            }
        })?;
        Ok::<_, Error>((new_db, new_file, map, written, read))
    })?;
    drop(reader);
    progress.finish();
    report.bytes_before = read_bytes;
    new_db.write(|db| {
        db.remap_refs(ns, &map)?;
        let mut rec = rec.clone();
        rec.current = Some(to);
        rec.job = None;
        rec.erase_pending = false;
        if let Some(old) = from {
            rec.keys.retain(|k| k.version != old);
            db.delete_key_usage(ns, old)?;
        }
        db.set_crypto_record(ns, Some(&rec.to_json()))?;
        // rows a job started by an earlier version may have left
        db.clear_rekey_map(ns)?;
        audit::append(
            db,
            &Event::new(store.actor(), &format!("key.rotate.{}", kind.name()))
                .ns(ns)
                .target(ns)
                .detail(serde_json::json!({
                    "phase": "done", "from_version": from, "to_version": to,
                    "kek_id": report.kek_id, "objects_rewritten": written,
                    "objects_deleted": report.objects_before,
                })),
        )
    })?;
    crate::writeback::release_unused(&new_file)?;
    drop(new_file);
    store.replace_database(new_db)?;
    report.objects_rewritten = written;
    report.objects_deleted = report.objects_before;
    Ok(report)
}

/// Finish the job of an earlier version that was killed before its final
/// rewrite: copy the file as it is, minus free pages, and clear the mark.
fn finish_erase(store: &mut Store, ns: &str) -> Result<()> {
    let scratch = store.dir().join(REBUILD_FILE);
    let new_db = store.db().copy_into(&scratch, None)?;
    new_db.write(|db| {
        if let Some(raw) = db.crypto_record(ns)? {
            let mut rec = CryptoRecord::from_json(ns, &raw)?;
            rec.erase_pending = false;
            db.set_crypto_record(ns, Some(&rec.to_json()))?;
        }
        Ok(())
    })?;
    store.replace_database(new_db)
}

fn root_ids(db: &Db, ns: &str) -> Result<Vec<ObjectId>> {
    let mut out: Vec<ObjectId> = db.refs(ns, "")?.into_iter().map(|(_, id)| id).collect();
    out.extend(db.reflog_targets(ns)?);
    out.sort();
    out.dedup();
    Ok(out)
}

/// Page cache of the new file while it is written: small, so that pages go
/// out (and are written back) as the copy runs, not all at the end.
const REBUILD_CACHE_KIB: i64 = 2 * 1024;

/// Objects in the first batch [`Rekeyer::leaves`] reads (each next one is
/// twice as large, up to the batch size), so that the writer starts at once.
const FIRST_BATCH: usize = 64;

/// Objects under the new key, framed, and the stored bytes they were read from.
struct Batch {
    framed: Vec<(ObjectId, Kind, Vec<u8>)>,
    read_bytes: u64,
}

impl Batch {
    fn with_capacity(objects: usize) -> Batch {
        Batch {
            framed: Vec::with_capacity(objects),
            read_bytes: 0,
        }
    }
}

/// Write the batches a [`Rekeyer`] sends for namespace `ns`, sealed under
/// key version `to`, to `db` (in the caller's transaction), starting the new
/// file's write-back after each. Returns (objects written, bytes read).
fn write_batches(
    db: &Db,
    (ns, to): (&str, u32),
    batches: Receiver<Batch>,
    file: &std::fs::File,
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    let (mut written, mut read) = (0, 0);
    for batch in batches {
        written += objects::write_framed(db, ns, Some(to), &batch.framed)?.0;
        read += batch.read_bytes;
        progress.inc(batch.framed.len() as u64);
        crate::writeback::start(file, 0);
    }
    Ok((written, read))
}

/// Moves the objects of namespace `ns` from sealer `from` to sealer `to`:
/// the tree leaves (nearly all of the objects and bytes) re-sealed as they
/// are, then the commits and internal nodes rewritten with their children's
/// new ids. Remembers old → new ids.
struct Rekeyer<'a> {
    ns: &'a str,
    from: &'a dyn Sealer,
    to: &'a dyn Sealer,
    /// The namespace is plaintext (`encrypt`), not sealed (`dek`).
    from_plaintext: bool,
    map: IdMap<ObjectId>,
    /// The objects that are not leaves, decoded, until [`Rekeyer::upper`]
    /// rewrites them.
    upper: IdMap<Upper>,
    /// Nodes just above the leaves, in `upper`, that some leaf of has no
    /// new id yet.
    waiting: Vec<ObjectId>,
    /// Nodes framed by [`Rekeyer::frame_ahead`]: new id and stored bytes.
    framed_ahead: IdMap<(ObjectId, Vec<u8>)>,
}

impl Rekeyer<'_> {
    /// Re-key every object of the namespace in `db` (see [`Rekeyer::leaves`]
    /// and [`Rekeyer::upper`]), `batch` at a time, sending the new objects
    /// to `out`; `db` is closed on a thread of `scope` once it is read.
    /// Returns the old → new ids; stops at the first error, or when the
    /// receiver is gone (the writer failed: it reports why).
    fn run<'scope>(
        mut self,
        db: Db,
        batch: usize,
        out: SyncSender<Batch>,
        scope: &'scope std::thread::Scope<'scope, '_>,
    ) -> Result<IdMap<ObjectId>> {
        let send = |b: Batch| {
            out.send(b)
                .map_err(|_| Error::Other("the writer of the new file stopped".into()))
        };
        let roots = db.read(|db| {
            let roots = root_ids(db, self.ns)?;
            let leaves = match self.from_plaintext {
                true => self.plain_trees(db, &roots)?,
                false => IdSet::default(),
            };
            self.leaves(db, batch, &leaves, &send)?;
            Ok(roots)
        })?;
        // Everything is read: the old file's connection and its map of the
        // file (unmapping takes a while) go on a thread beside the rest of
        // the work. The caller's scope waits for it.
        scope.spawn(move || drop(db));
        self.upper(&roots, &send)?;
        Ok(self.map)
    }

    /// Read every object in storage order, `batch` at a time, and send the
    /// tree leaves re-sealed as they are, without decompressing them; keep
    /// the others, decoded, for [`Rekeyer::upper`]. Both on every core.
    /// Leaves no ref reaches are copied too (`gc` removes them as it would
    /// have).
    fn leaves(
        &mut self,
        db: &Db,
        batch: usize,
        plain_leaves: &IdSet,
        send: &dyn Fn(Batch) -> Result<()>,
    ) -> Result<()> {
        let (ns, from, to) = (self.ns, self.from, self.to);
        let mut after = 0;
        let mut size = batch.min(FIRST_BATCH);
        loop {
            let rows = db.scan_objects(ns, after, size)?;
            size = (size * 2).min(batch);
            let Some(&(last, ..)) = rows.last() else {
                return Ok(());
            };
            after = last;
            let (upper, ahead) = (&self.upper, &self.framed_ahead);
            let objects = crate::parallel::map(&rows, |(_, id, _, bytes)| -> Result<Read> {
                // decoded (or framed) before its row came: by the tree walk
                if upper.contains_key(id) || ahead.contains_key(id) {
                    return Ok(Read::Known);
                }
                if plain_leaves.contains(id) {
                    return Ok(Read::Leaf(object::reseal_plain_leaf(to, ns, id, bytes)?));
                }
                match object::reseal(from, to, ns, id, bytes, |kind, level| {
                    kind == Kind::Node && level == 0
                })? {
                    Some(new) => Ok(Read::Leaf(new)),
                    None => Ok(Read::Upper(Upper::decode(from, ns, id, bytes)?)),
                }
            });
            let mut out = Batch::with_capacity(rows.len());
            for ((_, id, _, bytes), object) in rows.iter().zip(objects) {
                out.read_bytes += bytes.len() as u64;
                match object? {
                    Read::Leaf(new) => {
                        self.map.insert(*id, new.id);
                        out.framed.push((new.id, new.kind, new.bytes));
                    }
                    Read::Upper(upper) => self.keep(*id, upper),
                    Read::Known => {}
                }
            }
            send(out)?;
            self.frame_ahead()?;
        }
    }

    /// Keep decoded object `id` for [`Rekeyer::upper`]; a node just above
    /// the leaves waits for [`Rekeyer::frame_ahead`].
    fn keep(&mut self, id: ObjectId, upper: Upper) {
        if let Upper::Node(Node { level: 1, .. }) = upper {
            self.waiting.push(id);
        }
        self.upper.insert(id, upper);
    }

    /// Frame the waiting nodes just above the leaves whose leaves all have
    /// their new ids now, while the next batch is read, instead of in
    /// [`Rekeyer::upper`] after the last. They are kept until it knows
    /// which of them a ref reaches.
    fn frame_ahead(&mut self) -> Result<()> {
        let mut ready = Vec::new();
        let mut waiting = std::mem::take(&mut self.waiting);
        waiting.retain(|id| {
            let Some(Upper::Node(n)) = self.upper.get_mut(id) else {
                return false;
            };
            if !rename_children(&self.map, n) {
                return true;
            }
            let Some(Upper::Node(n)) = self.upper.remove(id) else {
                unreachable!("just found");
            };
            ready.push((*id, n));
            false
        });
        self.waiting = waiting;
        for ((old, _), f) in ready.iter().zip(frame_nodes(self.to, &ready)) {
            self.framed_ahead.insert(*old, f?);
        }
        Ok(())
    }

    /// For a plaintext namespace: decode the commits and internal nodes
    /// reachable from `roots` (into `self.upper`), a level at a time, on
    /// every core, and return the ids of the leaves they name. A plaintext
    /// object carries no tag saying whether it is a leaf; knowing it from
    /// its parent spares [`Rekeyer::leaves`] decompressing and hashing
    /// every leaf ([`object::reseal_plain_leaf`]).
    fn plain_trees(&mut self, db: &Db, roots: &[ObjectId]) -> Result<IdSet> {
        let (ns, from) = (self.ns, self.from);
        let mut leaves = IdSet::default();
        let mut seen = IdSet::default();
        let mut frontier: Vec<ObjectId> = roots.to_vec();
        while !frontier.is_empty() {
            let mut fetched = Vec::with_capacity(frontier.len());
            for id in frontier.drain(..) {
                if !seen.insert(id) {
                    continue;
                }
                match db.get_object(ns, &id)? {
                    Some(bytes) => fetched.push((id, bytes)),
                    // [`Rekeyer::reachable`] reports it, with what names it
                    None => continue,
                }
            }
            let decoded =
                crate::parallel::map(&fetched, |(id, bytes)| Upper::decode(from, ns, id, bytes));
            for ((id, _), upper) in fetched.iter().zip(decoded) {
                let upper = upper?;
                match &upper {
                    Upper::Commit(c) => {
                        frontier.push(c.tree);
                        frontier.extend(&c.parents);
                    }
                    Upper::Node(n) if n.level == 1 => {
                        leaves.extend(n.children.iter().map(|c| c.id))
                    }
                    Upper::Node(n) => frontier.extend(n.children.iter().map(|c| c.id)),
                }
                self.keep(*id, upper);
            }
        }
        Ok(leaves)
    }

    /// After [`Rekeyer::leaves`], rewrite the commits and internal nodes
    /// reachable from `roots` with their children's new ids and send them:
    /// the nodes a level at a time from the bottom, each level encoded and
    /// sealed on every core, then the commits, parents first. Unreachable
    /// ones are left behind (`gc` would remove them).
    fn upper(&mut self, roots: &[ObjectId], send: &dyn Fn(Batch) -> Result<()>) -> Result<()> {
        let (ns, to) = (self.ns, self.to);
        let Reachable {
            ahead,
            levels,
            commits,
        } = self.reachable(roots)?;
        let mut out = Batch::with_capacity(ahead.len());
        for (old, (new, bytes)) in ahead {
            self.map.insert(old, new);
            out.framed.push((new, Kind::Node, bytes));
        }
        send(out)?;
        for (mut nodes, others) in levels.into_values() {
            // (the named ones' children are leaves, renamed when reached)
            for (id, mut node) in others {
                for c in &mut node.children {
                    // a child at this level or above: no tree is built so
                    c.id = *self.map.get(&c.id).ok_or_else(|| Error::CorruptObject {
                        ns: ns.to_string(),
                        id,
                        reason: format!("child {} is not a tree node of a lower level", c.id),
                    })?;
                }
                nodes.push((id, node));
            }
            let mut out = Batch::with_capacity(nodes.len());
            for ((old, _), f) in nodes.iter().zip(frame_nodes(to, &nodes)) {
                let (new, bytes) = f?;
                self.map.insert(*old, new);
                out.framed.push((new, Kind::Node, bytes));
            }
            send(out)?;
        }
        let mut out = Batch::with_capacity(commits.len());
        for (old, mut c) in commits {
            c.tree = self.map[&c.tree];
            for p in &mut c.parents {
                *p = self.map[p];
            }
            let payload = serde_json::to_vec(&c).map_err(|e| Error::Other(e.to_string()))?;
            let (new, bytes) = object::encode(to, Kind::Commit, &payload)?;
            self.map.insert(old, new);
            out.framed.push((new, Kind::Commit, bytes));
        }
        send(out)
    }

    /// The commits and internal nodes reachable from `roots` (taken out of
    /// `self.upper` and `self.framed_ahead`). Checks that each object is of
    /// the kind that names it.
    fn reachable(&mut self, roots: &[ObjectId]) -> Result<Reachable> {
        let ns = self.ns;
        let mut levels = Levels::new();
        let mut commits = Vec::new();
        let mut ahead = Vec::new();
        // the kind each object was met as: met again, it must be the same
        let mut seen: IdMap<Kind> = IdMap::default();
        // (id, kind expected, the commit once its parents are pushed): a
        // commit is listed after its parents
        let mut stack: Vec<(ObjectId, Kind, Option<Commit>)> =
            roots.iter().map(|r| (*r, Kind::Commit, None)).collect();
        while let Some((id, kind, expanded)) = stack.pop() {
            if let Some(c) = expanded {
                commits.push((id, c));
                continue;
            }
            if kind == Kind::Node && self.map.contains_key(&id) {
                continue; // a leaf, copied already
            }
            let wrong = |found: Kind| Error::CorruptObject {
                ns: ns.to_string(),
                id,
                reason: format!("expected a {}, found a {}", kind.name(), found.name()),
            };
            if let Some(met) = seen.insert(id, kind) {
                match met == kind {
                    true => continue,
                    false => return Err(wrong(met)),
                }
            }
            if let Some(framed) = self.framed_ahead.remove(&id) {
                if kind != Kind::Node {
                    return Err(wrong(Kind::Node));
                }
                ahead.push((id, framed));
                continue;
            }
            let Some(object) = self.upper.remove(&id) else {
                return Err(if self.map.contains_key(&id) {
                    wrong(Kind::Node)
                } else {
                    Error::MissingObject {
                        ns: ns.to_string(),
                        id,
                    }
                });
            };
            if object.kind() != kind {
                return Err(wrong(object.kind()));
            }
            match object {
                Upper::Commit(c) => {
                    let children: Vec<_> = std::iter::once((c.tree, Kind::Node))
                        .chain(c.parents.iter().map(|p| (*p, Kind::Commit)))
                        .map(|(id, kind)| (id, kind, None))
                        .collect();
                    stack.push((id, Kind::Commit, Some(c)));
                    stack.extend(children);
                }
                Upper::Node(mut n) => {
                    // children that are leaves have their new ids already:
                    // when all are, they are renamed here (one lookup each)
                    let (named, others) = levels.entry(n.level).or_default();
                    if rename_children(&self.map, &mut n) {
                        named.push((id, n));
                    } else {
                        stack.extend(
                            n.children
                                .iter()
                                .filter(|c| !self.map.contains_key(&c.id))
                                .map(|c| (c.id, Kind::Node, None)),
                        );
                        others.push((id, n));
                    }
                }
            }
        }
        Ok(Reachable {
            ahead,
            levels,
            commits,
        })
    }
}

/// Internal nodes by level: those that name their children by their new
/// ids already, and the others.
type Levels = BTreeMap<u8, (Vec<(ObjectId, Node)>, Vec<(ObjectId, Node)>)>;

/// Give `node`'s children their new ids from `map`, if all have one; whether
/// they had.
fn rename_children(map: &IdMap<ObjectId>, node: &mut Node) -> bool {
    let Some(new) = node
        .children
        .iter()
        .map(|c| map.get(&c.id).copied())
        .collect::<Option<Vec<_>>>()
    else {
        return false;
    };
    node.children
        .iter_mut()
        .zip(new)
        .for_each(|(c, id)| c.id = id);
    true
}

/// `nodes` encoded and framed under `to`, on every core: (new id, stored
/// bytes) each.
fn frame_nodes(to: &dyn Sealer, nodes: &[(ObjectId, Node)]) -> Vec<Result<(ObjectId, Vec<u8>)>> {
    crate::parallel::map(nodes, |(_, node)| {
        object::encode(to, Kind::Node, &node.encode())
    })
}

/// What [`Rekeyer::upper`] rewrites, as [`Rekeyer::reachable`] finds it.
struct Reachable {
    /// Nodes framed ahead: old id, then new id and stored bytes.
    ahead: Vec<(ObjectId, (ObjectId, Vec<u8>))>,
    /// The other internal nodes, by level.
    levels: Levels,
    /// Commits, parents first.
    commits: Vec<(ObjectId, Commit)>,
}

/// An object as [`Rekeyer::leaves`] reads it.
enum Read {
    /// A tree leaf, re-sealed.
    Leaf(Resealed),
    /// Anything else, decoded.
    Upper(Upper),
    /// Decoded before ([`Rekeyer::plain_trees`]).
    Known,
}

/// A commit or internal node, decoded to find what it names and then
/// written with the new ids of those.
enum Upper {
    Commit(Commit),
    Node(Node),
}

impl Upper {
    /// Open, check and parse stored object `id` of `ns`.
    fn decode(sealer: &dyn Sealer, ns: &str, id: &ObjectId, bytes: &[u8]) -> Result<Upper> {
        let corrupt = |reason: String| Error::CorruptObject {
            ns: ns.to_string(),
            id: *id,
            reason,
        };
        let (kind, payload) = object::decode(sealer, ns, id, bytes)?;
        Ok(match kind {
            Kind::Commit => Upper::Commit(
                serde_json::from_slice(&payload)
                    .map_err(|e| corrupt(format!("bad commit: {e}")))?,
            ),
            Kind::Node => Upper::Node(Node::decode(&payload).map_err(corrupt)?),
        })
    }

    fn kind(&self) -> Kind {
        match self {
            Upper::Commit(_) => Kind::Commit,
            Upper::Node(_) => Kind::Node,
        }
    }
}
