//! The engine shared by `full` and `incremental`: stream one point in time of
//! a store to a target.

use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use qg_store::audit::{Event, Outcome};
use qg_store::progress::Progress;
use qg_store::snapshot::Snapshot;
use qg_store::{clock, Store};
use serde::Serialize;
use sha2::Digest;

use crate::catalog::{manifest_name, stream_name};
use crate::error::{Error, Result};
use crate::format::{
    BackupKind, Counts, Header, HookFile, IndexEntry, IndexOp, Manifest, Position, Record,
    StreamWriter, INDEX_RECORD_BYTES, VERSION,
};
use crate::index::{ChainSet, Spool};
use crate::keys::{EncryptionInfo, Master};
use crate::target::{Target, Upload};

/// Hook files larger than this are refused (hooks are scripts).
pub const MAX_HOOK_BYTES: u64 = 16 << 20;

/// What a backup run did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupResult {
    pub id: String,
    pub kind: BackupKind,
    pub parent: Option<String>,
    pub store_id: String,
    /// The target as given (no credentials).
    pub target: String,
    /// The stream's name in the target (`None` for standard output).
    pub stream: Option<String>,
    /// When the snapshot was taken.
    pub created: String,
    pub bytes: u64,
    pub sha256: String,
    pub counts: Counts,
    pub encrypted: bool,
    pub duration_ms: u64,
    /// The manifest as written (also in the stream's trailer).
    pub manifest: Manifest,
}

/// A new backup id: the UTC time (sortable) and 4 random bytes.
pub fn new_id(now: &str) -> String {
    let mut r = [0u8; 4];
    getrandom::fill(&mut r).expect("the OS random source works");
    let stamp: String = now.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{stamp}-{}", hex::encode(r))
}

/// Everything a run needs besides the store and the target.
pub(crate) struct Plan {
    pub kind: BackupKind,
    pub parent: Option<Manifest>,
    /// Objects of the parent chain (empty for a full backup).
    pub base: ChainSet,
    pub encryption: Option<(EncryptionInfo, Rc<Master>)>,
}

fn hooks(dir: &Path) -> Result<Vec<HookFile>> {
    use std::os::unix::fs::PermissionsExt;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list hooks in", dir.display(), e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list hooks in", dir.display(), e))?;
        let path = entry.path();
        let meta = entry
            .metadata()
            .map_err(|e| Error::io("stat", path.display(), e))?;
        if !meta.is_file() {
            continue;
        }
        if meta.len() > MAX_HOOK_BYTES {
            return Err(Error::usage(format!(
                "hook {} is {} bytes; hooks over {MAX_HOOK_BYTES} bytes are not backed up",
                path.display(),
                meta.len()
            )));
        }
        let data = std::fs::read(&path).map_err(|e| Error::io("read", path.display(), e))?;
        out.push(HookFile {
            name: entry.file_name().to_string_lossy().into_owned(),
            mode: meta.permissions().mode() & 0o7777,
            data,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn write_err(target: &Target) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Target {
        target: target.display(),
        reason: format!("cannot write the backup stream: {e}"),
    }
}

/// Run one backup of `store` to `target`, then record its audit event.
pub(crate) fn run(
    store: &Store,
    target: &Target,
    plan: Plan,
    progress: &dyn Progress,
) -> Result<BackupResult> {
    let started = Instant::now();
    let kind = plan.kind;
    let parent = plan.parent.as_ref().map(|p| p.id.clone());
    let result = write_backup(store, target, plan, progress, started);
    let action = format!("backup.{}", kind.as_str());
    match &result {
        Ok(r) => {
            store.record(
                &Event::new(store.actor(), &action)
                    .target(target.display())
                    .detail(serde_json::json!({
                        "backup_id": r.id,
                        "kind": kind.as_str(),
                        "parent": r.parent,
                        "target": r.target,
                        "bytes": r.bytes,
                        "objects": r.counts.objects,
                        "deleted": r.counts.deleted,
                        "sha256": r.sha256,
                        "encrypted": r.encrypted,
                        "duration_ms": r.duration_ms,
                    })),
            )?;
        }
        Err(e) => {
            // best effort: the failure itself is what the operator must see
            let _ = store.record(
                &Event::new(store.actor(), &action)
                    .target(target.display())
                    .outcome(Outcome::Failure)
                    .detail(serde_json::json!({
                        "kind": kind.as_str(),
                        "parent": parent,
                        "target": target.display(),
                        "error": e.to_string(),
                        "duration_ms": started.elapsed().as_millis() as u64,
                    })),
            );
        }
    }
    result
}

fn write_backup(
    store: &Store,
    target: &Target,
    plan: Plan,
    progress: &dyn Progress,
    started: Instant,
) -> Result<BackupResult> {
    let Plan {
        kind,
        parent,
        mut base,
        encryption,
    } = plan;
    let hook_files = hooks(store.hooks().dir())?;
    let hooks_sha256 = {
        let mut h = sha2::Sha256::new();
        for f in &hook_files {
            h.update((f.name.len() as u64).to_le_bytes());
            h.update(f.name.as_bytes());
            h.update(f.mode.to_le_bytes());
            h.update((f.data.len() as u64).to_le_bytes());
            h.update(&f.data);
        }
        hex::encode(h.finalize())
    };
    // incrementals repeat the hooks only when they changed
    let hooks_unchanged = parent
        .as_ref()
        .is_some_and(|p| p.hooks_sha256 == hooks_sha256);
    let hook_files = if hooks_unchanged {
        Vec::new()
    } else {
        hook_files
    };
    let snap = Snapshot::begin(store.db())?;
    let created = clock::now();
    let id = new_id(&created);
    let store_id = snap.store_id()?;
    let audit_head = snap.audit_head()?;
    let reflog_seq = snap.max_reflog_seq()?;
    let (audit_after, reflog_after) = match &parent {
        None => (0, 0),
        Some(p) => {
            if p.store_id != store_id {
                return Err(Error::usage(format!(
                    "backup {} is of store {}, not of this store ({store_id}): take a full backup",
                    p.id, p.store_id
                )));
            }
            let at = snap.audit_hash(p.audit_seq)?.map(hex::encode);
            if p.audit_seq > 0 && at.as_ref() != p.audit_head.as_ref() {
                return Err(Error::usage(format!(
                    "this store's history has diverged from backup {} (its audit entry #{} differs); take a full backup",
                    p.id, p.audit_seq
                )));
            }
            if reflog_seq < p.reflog_seq {
                return Err(Error::usage(format!(
                    "this store's reflog is older than backup {}; take a full backup",
                    p.id
                )));
            }
            (p.audit_seq, p.reflog_seq)
        }
    };
    let header = Header {
        format: VERSION,
        id: id.clone(),
        parent: parent.as_ref().map(|p| p.id.clone()),
        kind,
        created: created.clone(),
        store_id: store_id.clone(),
        encryption: encryption.as_ref().map(|(i, _)| i.clone()),
        hooks_unchanged,
        tool: tool(),
    };
    let cipher = encryption.as_ref().map(|(info, m)| m.frames(info, &id));
    let stream = (!target.is_stdio()).then(|| stream_name(&id));
    let upload: Box<dyn Upload> = target.create(stream.as_deref().unwrap_or("-"))?;
    let werr = write_err(target);
    let mut w = StreamWriter::start(upload, &header, cipher).map_err(&werr)?;
    let mut counts = Counts::default();

    let outcome = (|| -> Result<(Position, Spool)> {
        for (k, v) in snap.meta()? {
            if k != "audit_head" {
                w.record(&Record::Meta(k, v)).map_err(&werr)?;
            }
        }
        let namespaces = snap.namespaces()?;
        for n in &namespaces {
            counts.namespaces += 1;
            w.record(&Record::Namespace(n.clone())).map_err(&werr)?;
        }
        for k in snap.key_usage()? {
            w.record(&Record::KeyUsage(k)).map_err(&werr)?;
        }
        for r in snap.rekey_map()? {
            w.record(&Record::Rekey(r?)).map_err(&werr)?;
        }
        for h in hook_files {
            counts.hooks += 1;
            w.record(&Record::Hook(h)).map_err(&werr)?;
        }
        for t in snap.other_tables()? {
            for row in snap.table_rows(&t)? {
                counts.rows += 1;
                w.record(&Record::Row(row)).map_err(&werr)?;
            }
        }
        for r in snap.refs()? {
            counts.refs += 1;
            w.record(&Record::Ref(r)).map_err(&werr)?;
        }
        for r in snap.reflog_after(reflog_after) {
            counts.reflog += 1;
            w.record(&Record::Reflog(r?)).map_err(&werr)?;
        }
        for a in snap.audit_after(audit_after) {
            counts.audit += 1;
            w.record(&Record::Audit(a?)).map_err(&werr)?;
        }

        // Objects: the store's, beside the base chain's, both in (ns, id) order.
        let (total, _) = snap.object_stats(None)?;
        progress.start("objects", Some(total));
        let mut spool = Spool::new()?;
        let mut pending = base.next_present()?;
        let delete = |w: &mut StreamWriter<Box<dyn Upload>>,
                      spool: &mut Spool,
                      counts: &mut Counts,
                      ns: String,
                      id: qg_store::ObjectId|
         -> Result<()> {
            counts.deleted += 1;
            w.record(&Record::Delete { ns: ns.clone(), id })
                .map_err(&werr)?;
            spool.push(&IndexEntry {
                op: IndexOp::Delete,
                ns,
                id,
            })
        };
        for n in &namespaces {
            for o in snap.objects(&n.name) {
                let o = o?;
                progress.inc(1);
                let key = (n.name.as_str(), &o.id);
                while let Some((pns, pid)) = pending.take() {
                    if (pns.as_str(), &pid) < key {
                        delete(&mut w, &mut spool, &mut counts, pns, pid)?;
                        pending = base.next_present()?;
                    } else {
                        pending = Some((pns, pid));
                        break;
                    }
                }
                if pending
                    .as_ref()
                    .is_some_and(|(pns, pid)| (pns.as_str(), pid) == key)
                {
                    pending = base.next_present()?;
                    continue;
                }
                counts.objects += 1;
                counts.object_bytes += o.data.len() as u64;
                w.object(&n.name, &o.id, o.kind, &o.data).map_err(&werr)?;
                spool.push(&IndexEntry {
                    op: IndexOp::Add,
                    ns: n.name.clone(),
                    id: o.id,
                })?;
            }
        }
        while let Some((pns, pid)) = pending {
            delete(&mut w, &mut spool, &mut counts, pns, pid)?;
            pending = base.next_present()?;
        }
        progress.finish();
        Ok((w.position(), spool))
    })();
    drop(snap);
    let (index_pos, spool) = match outcome {
        Ok(v) => v,
        Err(e) => {
            abort(w);
            return Err(e);
        }
    };

    // The index section: the entries just written, in batches.
    let write_index = |w: &mut StreamWriter<Box<dyn Upload>>| -> Result<()> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for e in spool.reader()? {
            let e = e?;
            bytes += e.ns.len() + 35;
            batch.push(e);
            if bytes >= INDEX_RECORD_BYTES {
                w.record(&Record::Index(std::mem::take(&mut batch)))
                    .map_err(&werr)?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            w.record(&Record::Index(batch)).map_err(&werr)?;
        }
        Ok(())
    };
    if let Err(e) = write_index(&mut w) {
        abort(w);
        return Err(e);
    }
    let trailer = Manifest {
        format: VERSION,
        id: id.clone(),
        parent: header.parent.clone(),
        kind,
        created: created.clone(),
        finished: clock::now(),
        store_id: store_id.clone(),
        counts,
        audit_seq: audit_head.map(|(s, _)| s).unwrap_or(0),
        audit_head: audit_head.map(|(_, h)| hex::encode(h)),
        reflog_seq,
        encryption: header.encryption.clone(),
        index: index_pos,
        trailer: Position::default(),
        prefix_sha256: String::new(),
        hooks_sha256,
        tool: tool(),
        stream: None,
        bytes: None,
        sha256: None,
        mac: None,
    };
    let (upload, trailer, bytes, sha256) = w.finish(trailer).map_err(&werr)?;
    upload.finish()?;
    let mut manifest = trailer;
    manifest.stream = stream.clone();
    manifest.bytes = Some(bytes);
    manifest.sha256 = Some(sha256.clone());
    if let Some((info, master)) = &encryption {
        manifest.mac = Some(master.manifest_mac(info, &id, &manifest.mac_input()));
    }
    if stream.is_some() {
        let mut json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        json.push(b'\n');
        target.put_small(&manifest_name(&id), &json)?;
    }
    Ok(BackupResult {
        id,
        kind,
        parent: manifest.parent.clone(),
        store_id,
        target: target.display(),
        stream,
        created,
        bytes,
        sha256,
        counts: manifest.counts,
        encrypted: encryption.is_some(),
        duration_ms: started.elapsed().as_millis() as u64,
        manifest,
    })
}

fn abort(w: StreamWriter<Box<dyn Upload>>) {
    // The stream is incomplete: make sure it never appears in the target.
    w.into_inner().abort();
}

/// `qg-backup <version>`.
pub fn tool() -> String {
    format!("qg-backup {}", env!("CARGO_PKG_VERSION"))
}
