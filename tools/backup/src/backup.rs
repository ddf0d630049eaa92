//! The engine shared by `full` and `incremental`: stream one point in time of
//! a store to a target.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use qg_store::audit::{Event, Outcome};
use qg_store::object::Kind;
use qg_store::progress::Progress;
use qg_store::snapshot::{NamespaceRow, Snapshot};
use qg_store::{clock, ObjectId, Store};
use serde::Serialize;

use crate::catalog::{manifest_name, stream_name};
use crate::delta::{self, NewObject, NsPlan};
use crate::error::{Error, Result};
use crate::format::{
    BackupKind, Header, HookFile, IndexEntry, Record, RecordType, StreamWriter, INDEX_RECORD_BYTES,
    VERSION,
};
use crate::index::{ChainSet, EntryReader, MemberIndex, SortedSpool, Spool};
use crate::keys::{EncryptionInfo, Master};
use crate::manifest::{Counts, Manifest, Position};
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
    /// Things worth knowing that did not fail the backup.
    pub warnings: Vec<String>,
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
    /// The indexes of the parent chain, oldest first (`None` for a full backup).
    pub base: Option<Vec<MemberIndex>>,
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
                        "deltas": r.counts.deltas,
                        "resets": r.counts.resets,
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
        base,
        encryption,
    } = plan;
    let hook_files = hooks(store.hooks().dir())?;
    let hooks_sha256 = crate::format::hooks_digest(&hook_files);
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

    let mut warnings = Vec::new();
    let outcome = (|| -> Result<(Position, IndexSections)> {
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

        let sections = match base {
            None => full_objects(&snap, &mut w, &mut counts, progress, &werr)?,
            Some(members) => incremental_objects(
                &snap,
                &namespaces,
                members,
                &mut w,
                &mut counts,
                progress,
                &werr,
                &mut warnings,
            )?,
        };
        Ok((w.position(), sections))
    })();
    drop(snap);
    let (index_pos, sections) = match outcome {
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
        let IndexSections {
            resets,
            entries,
            trees,
        } = sections;
        let entries = resets
            .into_iter()
            .map(Ok)
            .chain(entries)
            .chain(trees.into_iter().map(Ok));
        for e in entries {
            let e = e?;
            bytes += e.ns.len() + 67;
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
        warnings,
    })
}

/// The index section's entries: resets, then object additions and deletions
/// in (namespace, id) order, then the trees of the delta records.
struct IndexSections {
    resets: Vec<IndexEntry>,
    entries: EntryReader,
    trees: Vec<IndexEntry>,
}

type Writer = StreamWriter<Box<dyn Upload>>;
type WriteErr<'t> = dyn Fn(std::io::Error) -> Error + 't;

/// A full backup's objects: every object of every namespace, in the order
/// the database stores them (one sequential pass); the index comes out
/// sorted all the same.
fn full_objects(
    snap: &Snapshot,
    w: &mut Writer,
    counts: &mut Counts,
    progress: &dyn Progress,
    werr: &WriteErr,
) -> Result<IndexSections> {
    progress.start("objects", Some(snap.object_count(None)?));
    let mut sorted = SortedSpool::new();
    snap.visit_objects_in_storage_order(|ns, id, kind, data| -> Result<()> {
        progress.inc(1);
        counts.objects += 1;
        counts.object_bytes += data.len() as u64;
        w.object(ns, id, kind, data).map_err(werr)?;
        sorted.push(ns, *id)
    })?;
    progress.finish();
    Ok(IndexSections {
        resets: Vec::new(),
        entries: sorted.reader()?,
        trees: Vec::new(),
    })
}

/// New objects beyond this many in one namespace are sent as they are,
/// without looking for deltas (bounds the memory of planning).
const MAX_PLANNED: usize = 262_144;

/// An incremental's objects: resets, then the objects the chain lacks and
/// deletions of those the store dropped, in (ns, id) order, except the tree
/// nodes that delta records rebuild; then the delta records.
#[allow(clippy::too_many_arguments)]
fn incremental_objects(
    snap: &Snapshot,
    namespaces: &[NamespaceRow],
    members: Vec<MemberIndex>,
    w: &mut Writer,
    counts: &mut Counts,
    progress: &dyn Progress,
    werr: &WriteErr,
    warnings: &mut Vec<String>,
) -> Result<IndexSections> {
    let plaintext: BTreeSet<String> = namespaces
        .iter()
        .filter(|n| !n.encrypted())
        .map(|n| n.name.clone())
        .collect();
    let (mut chain, expansion) = ChainSet::build(members, snap, &plaintext)?;
    let mut resets = Vec::new();
    for (ns, why) in &expansion.resets {
        warnings.push(format!(
            "namespace `{ns}`: {why}; this backup resets it (holds all its objects again)"
        ));
        counts.resets += 1;
        w.record(&Record::Reset(ns.clone())).map_err(werr)?;
        resets.push(IndexEntry::reset(ns));
    }

    // Pass 1: which objects are new and which are gone (ids only).
    progress.start("compare", Some(snap.object_count(None)?));
    let mut events = Events::new()?;
    let mut news: BTreeMap<String, Vec<NewObject>> = BTreeMap::new();
    let mut pending = chain.next_present()?;
    for n in namespaces {
        let mut list = plaintext.contains(&n.name).then(Vec::new);
        for id in snap.object_ids(&n.name) {
            let id = id?;
            progress.inc(1);
            let key = (n.name.as_str(), &id);
            while let Some((pns, pid)) = pending.take() {
                if (pns.as_str(), &pid) < key {
                    events.push(Change::Delete, &pns, &pid)?;
                    pending = chain.next_present()?;
                } else {
                    pending = Some((pns, pid));
                    break;
                }
            }
            if pending
                .as_ref()
                .is_some_and(|(pns, pid)| (pns.as_str(), pid) == key)
            {
                pending = chain.next_present()?;
                continue;
            }
            events.push(Change::New, &n.name, &id)?;
            if let Some(l) = &mut list {
                if l.len() < MAX_PLANNED {
                    let (kind, len) = snap.object_meta(&n.name, &id)?.ok_or_else(|| {
                        Error::Store(qg_store::Error::MissingObject {
                            ns: n.name.clone(),
                            id,
                        })
                    })?;
                    l.push(NewObject { id, kind, len });
                } else {
                    list = None;
                }
            }
        }
        if let Some(l) = list.filter(|l| l.iter().any(|o| o.kind == Kind::Commit as u8)) {
            news.insert(n.name.clone(), l);
        }
    }
    while let Some((pns, pid)) = pending {
        events.push(Change::Delete, &pns, &pid)?;
        pending = chain.next_present()?;
    }
    progress.finish();

    // Deltas for new commits of plaintext namespaces.
    let mut plans: BTreeMap<String, NsPlan> = BTreeMap::new();
    let mut bodies = DeltaBodies::new()?;
    for (ns, list) in news {
        let p = delta::plan(snap.db(), &ns, &list, &mut |d| bodies.push(d))?;
        if !p.trees.is_empty() {
            plans.insert(ns, p);
        }
    }

    // Pass 2: the object and deletion records.
    progress.start("objects", Some(events.count));
    let mut spool = Spool::new()?;
    for ev in events.reader()? {
        let (op, ns, id) = ev?;
        progress.inc(1);
        match op {
            Change::New => {
                if plans.get(&ns).is_some_and(|p| p.covered.contains(&id)) {
                    continue;
                }
                let o = snap.object(&ns, &id)?.ok_or_else(|| {
                    Error::Store(qg_store::Error::MissingObject { ns: ns.clone(), id })
                })?;
                counts.objects += 1;
                counts.object_bytes += o.data.len() as u64;
                w.object(&ns, &id, o.kind, &o.data).map_err(werr)?;
                spool.push(&IndexEntry::add(&ns, id))?;
            }
            Change::Delete => {
                counts.deleted += 1;
                w.record(&Record::Delete { ns: ns.clone(), id })
                    .map_err(werr)?;
                spool.push(&IndexEntry::delete(&ns, id))?;
            }
        }
    }
    progress.finish();

    // The delta section, namespace by namespace, parents first.
    let mut trees = Vec::new();
    let mut bodies = bodies.reader()?;
    for p in plans.values() {
        counts.delta_nodes += p.covered.len() as u64;
        counts.delta_node_bytes += p.covered_bytes;
        for t in &p.trees {
            let body = bodies.next_body()?;
            counts.deltas += 1;
            w.raw_record(RecordType::Delta, &body).map_err(werr)?;
            trees.push(t.clone());
        }
    }
    Ok(IndexSections {
        resets,
        entries: Box::new(spool.reader()?),
        trees,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    New = 1,
    Delete = 2,
}

/// Pass 1's findings, spooled to a temporary file: (op, ns, id).
struct Events {
    out: BufWriter<std::fs::File>,
    count: u64,
}

fn tmp_err(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::io(what, "a temporary file", e)
}

impl Events {
    fn new() -> Result<Events> {
        let f = tempfile::tempfile().map_err(tmp_err("create"))?;
        Ok(Events {
            out: BufWriter::with_capacity(256 << 10, f),
            count: 0,
        })
    }

    fn push(&mut self, op: Change, ns: &str, id: &ObjectId) -> Result<()> {
        let mut buf = Vec::with_capacity(ns.len() + 35);
        buf.push(op as u8);
        buf.extend_from_slice(&(ns.len() as u16).to_le_bytes());
        buf.extend_from_slice(ns.as_bytes());
        buf.extend_from_slice(&id.0);
        self.out.write_all(&buf).map_err(tmp_err("write"))?;
        self.count += 1;
        Ok(())
    }

    fn reader(self) -> Result<impl Iterator<Item = Result<(Change, String, ObjectId)>>> {
        let mut f = self
            .out
            .into_inner()
            .map_err(|e| Error::io("write", "a temporary file", e.into_error()))?;
        f.rewind().map_err(tmp_err("rewind"))?;
        let mut inp = BufReader::with_capacity(64 << 10, f);
        Ok(std::iter::from_fn(move || {
            let mut op = [0u8; 1];
            match inp.read(&mut op) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(tmp_err("read")(e))),
            }
            let mut read = || -> std::io::Result<(String, ObjectId)> {
                let mut len = [0u8; 2];
                inp.read_exact(&mut len)?;
                let mut ns = vec![0u8; u16::from_le_bytes(len) as usize];
                inp.read_exact(&mut ns)?;
                let mut id = [0u8; 32];
                inp.read_exact(&mut id)?;
                Ok((String::from_utf8_lossy(&ns).into_owned(), ObjectId(id)))
            };
            Some(
                read()
                    .map(|(ns, id)| {
                        let op = if op[0] == Change::New as u8 {
                            Change::New
                        } else {
                            Change::Delete
                        };
                        (op, ns, id)
                    })
                    .map_err(tmp_err("read")),
            )
        }))
    }
}

/// Delta record bodies, spooled to a temporary file as planning makes them.
struct DeltaBodies {
    out: BufWriter<std::fs::File>,
    lens: Vec<u64>,
}

impl DeltaBodies {
    fn new() -> Result<DeltaBodies> {
        let f = tempfile::tempfile().map_err(tmp_err("create"))?;
        Ok(DeltaBodies {
            out: BufWriter::new(f),
            lens: Vec::new(),
        })
    }

    fn push(&mut self, body: &[u8]) -> Result<()> {
        self.out.write_all(body).map_err(tmp_err("write"))?;
        self.lens.push(body.len() as u64);
        Ok(())
    }

    fn reader(self) -> Result<DeltaBodyReader> {
        let mut f = self
            .out
            .into_inner()
            .map_err(|e| Error::io("write", "a temporary file", e.into_error()))?;
        f.rewind().map_err(tmp_err("rewind"))?;
        Ok(DeltaBodyReader {
            inp: BufReader::new(f),
            lens: self.lens.into_iter(),
        })
    }
}

struct DeltaBodyReader {
    inp: BufReader<std::fs::File>,
    lens: std::vec::IntoIter<u64>,
}

impl DeltaBodyReader {
    fn next_body(&mut self) -> Result<Vec<u8>> {
        let len = self.lens.next().expect("one body per planned delta");
        let mut body = vec![0u8; len as usize];
        self.inp.read_exact(&mut body).map_err(tmp_err("read"))?;
        Ok(body)
    }
}

fn abort(w: StreamWriter<Box<dyn Upload>>) {
    // The stream is incomplete: make sure it never appears in the target.
    if let Some(upload) = w.into_inner() {
        upload.abort();
    }
}

/// `qg-backup <version>`.
pub fn tool() -> String {
    format!("qg-backup {}", env!("CARGO_PKG_VERSION"))
}
