//! The backup stream format (version 2; version 1 streams are still read),
//! specified in `FORMAT.md`: a prelude,
//! framed records each with a checksum (and, when encrypted, AES-256-GCM),
//! a trailer record carrying the manifest, and a fixed footer.

use std::io::{Read, Write};

use qg_store::snapshot::{
    AuditRow, KeyUsageRow, NamespaceRow, RefRow, ReflogRow, RekeyRow, SqlValue, TableRow,
};
use qg_store::ObjectId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::{Error, Result};
use crate::keys::{EncryptionInfo, FrameCipher, TAG_LEN};
use crate::manifest::{self, Manifest, Position};

/// First 8 bytes of every stream.
pub const MAGIC: &[u8; 8] = b"QGBACKUP";
/// Last 8 bytes of every stream.
pub const FOOTER_MAGIC: &[u8; 8] = b"QGBKEND1";
/// Stream format version written.
pub const VERSION: u16 = 2;
/// Oldest stream format version read (version 1 has no delta or reset
/// records and no tree or reset index entries; everything else is the same).
pub const MIN_VERSION: u16 = 1;

/// Whether this qg-backup reads stream format `v`.
pub fn readable(v: u16) -> bool {
    (MIN_VERSION..=VERSION).contains(&v)
}
/// Prelude: magic and version.
pub const PRELUDE_LEN: u64 = 10;
/// Footer: trailer offset and index, index-section offset and index, magic.
pub const FOOTER_LEN: u64 = 40;
/// Largest record body accepted (a tree node is at most a few hundred KiB).
pub const MAX_RECORD: u32 = 64 << 20;
/// Index records are cut at this many bytes.
pub const INDEX_RECORD_BYTES: usize = 1 << 20;

/// Record types, in the order their sections appear in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum RecordType {
    Header = 1,
    Meta = 2,
    Namespace = 3,
    KeyUsage = 4,
    Rekey = 5,
    Hook = 6,
    Ref = 7,
    Reflog = 8,
    Audit = 9,
    Object = 10,
    Delete = 11,
    Index = 12,
    Trailer = 13,
    /// A row of a store table without a dedicated record (API tokens, ...).
    Row = 14,
    /// A commit's tree as the change from its first parent's (format 2).
    Delta = 15,
    /// Every object of a namespace the chain held is gone (format 2).
    Reset = 16,
}

/// Sections in stream order; a record's rank is its section's place here.
pub const SECTIONS: [RecordType; 15] = [
    RecordType::Header,
    RecordType::Meta,
    RecordType::Namespace,
    RecordType::KeyUsage,
    RecordType::Rekey,
    RecordType::Hook,
    RecordType::Row,
    RecordType::Ref,
    RecordType::Reflog,
    RecordType::Audit,
    RecordType::Reset,
    RecordType::Object,
    RecordType::Delta,
    RecordType::Index,
    RecordType::Trailer,
];

/// The section of rank `rank` (1-based).
pub fn section(rank: u8) -> Option<RecordType> {
    SECTIONS.get((rank as usize).checked_sub(1)?).copied()
}

impl RecordType {
    pub fn from_u8(b: u8) -> Option<RecordType> {
        use RecordType::*;
        Some(match b {
            1 => Header,
            2 => Meta,
            3 => Namespace,
            4 => KeyUsage,
            5 => Rekey,
            6 => Hook,
            7 => Ref,
            8 => Reflog,
            9 => Audit,
            10 => Object,
            11 => Delete,
            12 => Index,
            13 => Trailer,
            14 => Row,
            15 => Delta,
            16 => Reset,
            _ => return None,
        })
    }

    /// Section rank: records must come in non-decreasing rank; objects and
    /// deletions share one section (they interleave in id order).
    pub fn rank(self) -> u8 {
        let t = match self {
            RecordType::Delete => RecordType::Object,
            t => t,
        };
        SECTIONS
            .iter()
            .position(|s| *s == t)
            .expect("every type has a section") as u8
            + 1
    }

    pub fn name(self) -> &'static str {
        use RecordType::*;
        match self {
            Header => "header",
            Meta => "meta",
            Namespace => "namespace",
            KeyUsage => "key usage",
            Rekey => "rekey",
            Hook => "hook",
            Ref => "ref",
            Reflog => "reflog",
            Audit => "audit",
            Object => "object",
            Delete => "deletion",
            Index => "index",
            Trailer => "trailer",
            Row => "table row",
            Delta => "delta",
            Reset => "reset",
        }
    }
}

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Full,
    Incremental,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
        }
    }
}

/// The plaintext header record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: u16,
    pub id: String,
    pub parent: Option<String>,
    pub kind: BackupKind,
    /// When the snapshot was taken (RFC 3339 UTC).
    pub created: String,
    pub store_id: String,
    pub encryption: Option<EncryptionInfo>,
    /// The hooks are the parent's: the stream has no hook records (incrementals only).
    #[serde(default)]
    pub hooks_unchanged: bool,
    /// `qg-backup <version>`.
    pub tool: String,
}

/// A namespace row in the stream (crypto record as hex).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NamespaceRec {
    name: String,
    created: String,
    default_branch: String,
    crypto: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetaRec {
    key: String,
    value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyUsageRec {
    ns: String,
    version: u32,
    sealed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RekeyRec {
    ns: String,
    old: ObjectId,
    new: ObjectId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefRec {
    ns: String,
    name: String,
    target: ObjectId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReflogRec {
    seq: i64,
    ns: String,
    name: String,
    old: Option<ObjectId>,
    new: Option<ObjectId>,
    time: String,
    actor: String,
    message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuditRec {
    seq: i64,
    time: String,
    actor: String,
    action: String,
    ns: Option<String>,
    target: Option<String>,
    outcome: String,
    detail: String,
    prev: String,
    hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ValueRec {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    /// hex
    Blob(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RowRec {
    table: String,
    columns: Vec<String>,
    values: Vec<ValueRec>,
}

/// An executable hook file of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFile {
    pub name: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// SHA-256 over hook files in name order, as the manifest's `hooks_sha256`
/// (u64 name length, name, u32 mode, u64 length, contents, per file).
#[derive(Clone, Default)]
pub struct HooksDigest {
    sha: Sha256,
    last: Option<String>,
}

impl HooksDigest {
    /// Add the next file; names must come in strictly increasing order.
    pub fn add(&mut self, f: &HookFile) -> std::result::Result<(), String> {
        if self.last.as_deref().is_some_and(|l| l >= f.name.as_str()) {
            return Err(format!("hook `{}` is out of name order", f.name));
        }
        self.sha.update((f.name.len() as u64).to_le_bytes());
        self.sha.update(f.name.as_bytes());
        self.sha.update(f.mode.to_le_bytes());
        self.sha.update((f.data.len() as u64).to_le_bytes());
        self.sha.update(&f.data);
        self.last = Some(f.name.clone());
        Ok(())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.sha.clone().finalize())
    }
}

/// The `hooks_sha256` of hook files sorted by name.
pub fn hooks_digest(files: &[HookFile]) -> String {
    let mut d = HooksDigest::default();
    for f in files {
        d.add(f).expect("hook files are sorted by name");
    }
    d.hex()
}

/// What an index entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum IndexOp {
    /// The chain holds this object (an object record).
    Add = 1,
    /// The chain no longer holds this object (a deletion record).
    Delete = 2,
    /// The chain holds every node of tree `id`; those of tree `base` it held
    /// already (a delta record; format 2).
    Tree = 3,
    /// The chain holds nothing of the namespace from before this backup (a
    /// reset record; format 2).
    Reset = 4,
}

/// One index entry: an object added to or deleted from the chain's set, a
/// tree a delta rebuilt, or a namespace reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub op: IndexOp,
    pub ns: String,
    /// The object (zero for a reset; the rebuilt tree for a tree entry).
    pub id: ObjectId,
    /// Tree entries: the delta's base tree (zero otherwise).
    pub base: ObjectId,
}

impl IndexEntry {
    pub fn add(ns: &str, id: ObjectId) -> IndexEntry {
        IndexEntry {
            op: IndexOp::Add,
            ns: ns.to_string(),
            id,
            base: ObjectId([0; 32]),
        }
    }

    pub fn delete(ns: &str, id: ObjectId) -> IndexEntry {
        IndexEntry {
            op: IndexOp::Delete,
            ..IndexEntry::add(ns, id)
        }
    }

    pub fn tree(ns: &str, tree: ObjectId, base: ObjectId) -> IndexEntry {
        IndexEntry {
            op: IndexOp::Tree,
            ns: ns.to_string(),
            id: tree,
            base,
        }
    }

    pub fn reset(ns: &str) -> IndexEntry {
        IndexEntry {
            op: IndexOp::Reset,
            ..IndexEntry::add(ns, ObjectId([0; 32]))
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.op as u8);
        put_str16(out, &self.ns);
        match self.op {
            IndexOp::Add | IndexOp::Delete => out.extend_from_slice(&self.id.0),
            IndexOp::Tree => {
                out.extend_from_slice(&self.id.0);
                out.extend_from_slice(&self.base.0);
            }
            IndexOp::Reset => {}
        }
    }

    fn op_of(b: u8) -> Option<IndexOp> {
        Some(match b {
            1 => IndexOp::Add,
            2 => IndexOp::Delete,
            3 => IndexOp::Tree,
            4 => IndexOp::Reset,
            _ => return None,
        })
    }

    /// Decode one entry from the front of `buf`, advancing it.
    pub fn decode(buf: &mut &[u8]) -> Option<IndexEntry> {
        let (&op, rest) = buf.split_first()?;
        let op = Self::op_of(op)?;
        *buf = rest;
        let ns = get_str16(buf)?;
        let zero = ObjectId([0; 32]);
        let (id, base) = match op {
            IndexOp::Add | IndexOp::Delete => (ObjectId::from_slice(take(buf, 32)?)?, zero),
            IndexOp::Tree => (
                ObjectId::from_slice(take(buf, 32)?)?,
                ObjectId::from_slice(take(buf, 32)?)?,
            ),
            IndexOp::Reset => (zero, zero),
        };
        Some(IndexEntry { op, ns, id, base })
    }

    /// Read one entry from a reader (spooled index files); `None` at clean EOF.
    pub fn read_from(r: &mut impl Read) -> std::io::Result<Option<IndexEntry>> {
        let mut op = [0u8; 1];
        if r.read(&mut op)? == 0 {
            return Ok(None);
        }
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad index entry");
        let op = Self::op_of(op[0]).ok_or_else(bad)?;
        let mut len = [0u8; 2];
        r.read_exact(&mut len)?;
        let mut ns = vec![0u8; u16::from_le_bytes(len) as usize];
        r.read_exact(&mut ns)?;
        let mut id = [0u8; 32];
        let mut base = [0u8; 32];
        if matches!(op, IndexOp::Add | IndexOp::Delete | IndexOp::Tree) {
            r.read_exact(&mut id)?;
        }
        if op == IndexOp::Tree {
            r.read_exact(&mut base)?;
        }
        Ok(Some(IndexEntry {
            op,
            ns: String::from_utf8(ns).map_err(|_| bad())?,
            id: ObjectId(id),
            base: ObjectId(base),
        }))
    }
}

/// A multiset of index entries, in any order: their number and the sum
/// (mod 2^128) of each entry's 128-bit xxh3. A stream's records and its index
/// must give the same digest (records may come in any order within their
/// section; the index is sorted). This checks consistency; authenticity is
/// the stream's SHA-256 and, when encrypted, every record's tag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexDigest {
    count: u64,
    sum: u128,
}

impl IndexDigest {
    pub fn add(&mut self, e: &IndexEntry) {
        let mut buf = Vec::with_capacity(e.ns.len() + 67);
        e.encode(&mut buf);
        self.count += 1;
        self.sum = self
            .sum
            .wrapping_add(xxhash_rust::xxh3::xxh3_128_with_seed(&buf, 0x5147_4944));
    }
}

/// A decoded record.
#[derive(Debug, Clone)]
pub enum Record {
    Meta(String, String),
    Namespace(NamespaceRow),
    KeyUsage(KeyUsageRow),
    Rekey(RekeyRow),
    Hook(HookFile),
    Row(TableRow),
    Ref(RefRow),
    Reflog(ReflogRow),
    Audit(AuditRow),
    Object {
        ns: String,
        id: ObjectId,
        kind: u8,
        data: Vec<u8>,
    },
    Delete {
        ns: String,
        id: ObjectId,
    },
    Index(Vec<IndexEntry>),
    Trailer(Box<Manifest>),
    Delta(Box<crate::delta::Delta>),
    Reset(String),
}

impl Record {
    pub fn record_type(&self) -> RecordType {
        match self {
            Record::Meta(..) => RecordType::Meta,
            Record::Namespace(_) => RecordType::Namespace,
            Record::KeyUsage(_) => RecordType::KeyUsage,
            Record::Rekey(_) => RecordType::Rekey,
            Record::Hook(_) => RecordType::Hook,
            Record::Row(_) => RecordType::Row,
            Record::Ref(_) => RecordType::Ref,
            Record::Reflog(_) => RecordType::Reflog,
            Record::Audit(_) => RecordType::Audit,
            Record::Object { .. } => RecordType::Object,
            Record::Delete { .. } => RecordType::Delete,
            Record::Index(_) => RecordType::Index,
            Record::Trailer(_) => RecordType::Trailer,
            Record::Delta(_) => RecordType::Delta,
            Record::Reset(_) => RecordType::Reset,
        }
    }

    /// The index entry this record must have (object, deletion, delta and reset records).
    pub fn index_entry(&self) -> Option<IndexEntry> {
        match self {
            Record::Object { ns, id, .. } => Some(IndexEntry::add(ns, *id)),
            Record::Delete { ns, id } => Some(IndexEntry::delete(ns, *id)),
            Record::Delta(d) => Some(IndexEntry::tree(&d.ns, d.tree, d.base)),
            Record::Reset(ns) => Some(IndexEntry::reset(ns)),
            _ => None,
        }
    }

    /// The record body (plaintext).
    pub fn encode(&self) -> Vec<u8> {
        let json = |v: &dyn erased::Json| v.to_json();
        match self {
            Record::Meta(key, value) => json(&MetaRec {
                key: key.clone(),
                value: value.clone(),
            }),
            Record::Namespace(n) => json(&NamespaceRec {
                name: n.name.clone(),
                created: n.created.clone(),
                default_branch: n.default_branch.clone(),
                crypto: n.crypto.as_ref().map(hex::encode),
            }),
            Record::KeyUsage(k) => json(&KeyUsageRec {
                ns: k.ns.clone(),
                version: k.version,
                sealed: k.sealed,
            }),
            Record::Rekey(r) => json(&RekeyRec {
                ns: r.ns.clone(),
                old: r.old,
                new: r.new,
            }),
            Record::Hook(h) => {
                let mut out = Vec::with_capacity(h.name.len() + h.data.len() + 6);
                put_str16(&mut out, &h.name);
                out.extend_from_slice(&h.mode.to_le_bytes());
                out.extend_from_slice(&h.data);
                out
            }
            Record::Row(r) => json(&RowRec {
                table: r.table.clone(),
                columns: r.columns.clone(),
                values: r
                    .values
                    .iter()
                    .map(|v| match v {
                        SqlValue::Null => ValueRec::Null,
                        SqlValue::Integer(i) => ValueRec::Int(*i),
                        SqlValue::Real(f) => ValueRec::Real(*f),
                        SqlValue::Text(t) => ValueRec::Text(t.clone()),
                        SqlValue::Blob(b) => ValueRec::Blob(hex::encode(b)),
                    })
                    .collect(),
            }),
            Record::Ref(r) => json(&RefRec {
                ns: r.ns.clone(),
                name: r.name.clone(),
                target: r.target,
            }),
            Record::Reflog(r) => json(&ReflogRec {
                seq: r.seq,
                ns: r.ns.clone(),
                name: r.name.clone(),
                old: r.old,
                new: r.new,
                time: r.time.clone(),
                actor: r.actor.clone(),
                message: r.message.clone(),
            }),
            Record::Audit(a) => json(&AuditRec {
                seq: a.seq,
                time: a.time.clone(),
                actor: a.actor.clone(),
                action: a.action.clone(),
                ns: a.ns.clone(),
                target: a.target.clone(),
                outcome: a.outcome.clone(),
                detail: a.detail.clone(),
                prev: hex::encode(a.prev),
                hash: hex::encode(a.hash),
            }),
            Record::Object { ns, id, kind, data } => {
                let mut out = Vec::with_capacity(ns.len() + data.len() + 35);
                put_str16(&mut out, ns);
                out.extend_from_slice(&id.0);
                out.push(*kind);
                out.extend_from_slice(data);
                out
            }
            Record::Delete { ns, id } => {
                let mut out = Vec::with_capacity(ns.len() + 34);
                put_str16(&mut out, ns);
                out.extend_from_slice(&id.0);
                out
            }
            Record::Index(entries) => {
                let mut out = Vec::new();
                for e in entries {
                    e.encode(&mut out);
                }
                out
            }
            Record::Trailer(m) => json(m.as_ref()),
            Record::Delta(d) => d.encode(),
            Record::Reset(ns) => {
                let mut out = Vec::with_capacity(ns.len() + 2);
                put_str16(&mut out, ns);
                out
            }
        }
    }

    /// Decode a record body; `Err` carries what is wrong.
    pub fn decode(t: RecordType, body: Vec<u8>) -> std::result::Result<Record, String> {
        fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> std::result::Result<T, String> {
            serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))
        }
        fn hash32(s: &str, what: &str) -> std::result::Result<[u8; 32], String> {
            let mut h = [0u8; 32];
            hex::decode_to_slice(s, &mut h).map_err(|_| format!("bad {what} hash"))?;
            Ok(h)
        }
        Ok(match t {
            RecordType::Header => return Err("a second header".into()),
            RecordType::Meta => {
                let m: MetaRec = parse(&body)?;
                Record::Meta(m.key, m.value)
            }
            RecordType::Namespace => {
                let n: NamespaceRec = parse(&body)?;
                Record::Namespace(NamespaceRow {
                    name: n.name,
                    created: n.created,
                    default_branch: n.default_branch,
                    crypto: n
                        .crypto
                        .map(|c| hex::decode(c).map_err(|_| "bad crypto record hex".to_string()))
                        .transpose()?,
                })
            }
            RecordType::KeyUsage => {
                let k: KeyUsageRec = parse(&body)?;
                Record::KeyUsage(KeyUsageRow {
                    ns: k.ns,
                    version: k.version,
                    sealed: k.sealed,
                })
            }
            RecordType::Rekey => {
                let r: RekeyRec = parse(&body)?;
                Record::Rekey(RekeyRow {
                    ns: r.ns,
                    old: r.old,
                    new: r.new,
                })
            }
            RecordType::Hook => {
                let mut b = &body[..];
                let name = get_str16(&mut b).ok_or("truncated hook record")?;
                let mode = take(&mut b, 4).ok_or("truncated hook record")?;
                let mode = u32::from_le_bytes(mode.try_into().expect("4 bytes"));
                Record::Hook(HookFile {
                    name,
                    mode,
                    data: b.to_vec(),
                })
            }
            RecordType::Row => {
                let r: RowRec = parse(&body)?;
                let mut values = Vec::with_capacity(r.values.len());
                for v in r.values {
                    values.push(match v {
                        ValueRec::Null => SqlValue::Null,
                        ValueRec::Int(i) => SqlValue::Integer(i),
                        ValueRec::Real(f) => SqlValue::Real(f),
                        ValueRec::Text(t) => SqlValue::Text(t),
                        ValueRec::Blob(b) => SqlValue::Blob(
                            hex::decode(b)
                                .map_err(|_| "bad blob hex in a table row".to_string())?,
                        ),
                    });
                }
                Record::Row(TableRow {
                    table: r.table,
                    columns: r.columns,
                    values,
                })
            }
            RecordType::Ref => {
                let r: RefRec = parse(&body)?;
                Record::Ref(RefRow {
                    ns: r.ns,
                    name: r.name,
                    target: r.target,
                })
            }
            RecordType::Reflog => {
                let r: ReflogRec = parse(&body)?;
                Record::Reflog(ReflogRow {
                    seq: r.seq,
                    ns: r.ns,
                    name: r.name,
                    old: r.old,
                    new: r.new,
                    time: r.time,
                    actor: r.actor,
                    message: r.message,
                })
            }
            RecordType::Audit => {
                let a: AuditRec = parse(&body)?;
                Record::Audit(AuditRow {
                    seq: a.seq,
                    prev: hash32(&a.prev, "prev")?,
                    hash: hash32(&a.hash, "entry")?,
                    time: a.time,
                    actor: a.actor,
                    action: a.action,
                    ns: a.ns,
                    target: a.target,
                    outcome: a.outcome,
                    detail: a.detail,
                })
            }
            RecordType::Object => {
                let mut b = &body[..];
                let ns = get_str16(&mut b).ok_or("truncated object record")?;
                let id = take(&mut b, 32)
                    .and_then(ObjectId::from_slice)
                    .ok_or("truncated object record")?;
                let kind = *take(&mut b, 1)
                    .ok_or("truncated object record")?
                    .first()
                    .expect("1 byte");
                Record::Object {
                    ns,
                    id,
                    kind,
                    data: b.to_vec(),
                }
            }
            RecordType::Delete => {
                let mut b = &body[..];
                let ns = get_str16(&mut b).ok_or("truncated deletion record")?;
                let id = take(&mut b, 32)
                    .and_then(ObjectId::from_slice)
                    .ok_or("truncated deletion record")?;
                Record::Delete { ns, id }
            }
            RecordType::Index => {
                let mut b = &body[..];
                let mut entries = Vec::new();
                while !b.is_empty() {
                    entries.push(IndexEntry::decode(&mut b).ok_or("bad index entry")?);
                }
                Record::Index(entries)
            }
            RecordType::Trailer => Record::Trailer(Box::new(
                Manifest::parse(&body, manifest::Source::Trailer)
                    .map_err(|e| format!("bad trailer: {e}"))?,
            )),
            RecordType::Delta => Record::Delta(Box::new(crate::delta::Delta::decode(&body)?)),
            RecordType::Reset => {
                let mut b = &body[..];
                let ns = get_str16(&mut b).ok_or("truncated reset record")?;
                if !b.is_empty() {
                    return Err("bytes after the namespace of a reset record".into());
                }
                Record::Reset(ns)
            }
        })
    }
}

mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("records serialize")
        }
    }
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn take<'b>(buf: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
    if buf.len() < n {
        return None;
    }
    let (a, b) = buf.split_at(n);
    *buf = b;
    Some(a)
}

fn get_str16(buf: &mut &[u8]) -> Option<String> {
    let len = u16::from_le_bytes(take(buf, 2)?.try_into().ok()?) as usize;
    String::from_utf8(take(buf, len)?.to_vec()).ok()
}

fn checksum(kind: u8, len: u32, body: &[u8], index: u64) -> u64 {
    // xxh3 over type, length and body, seeded with the record index, so a
    // dropped or reordered record fails the next check.
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&len.to_le_bytes());
    xxh3_64_with_seed(&head, index) ^ xxh3_64_with_seed(body, body_seed(index))
}

fn body_seed(index: u64) -> u64 {
    index.rotate_left(17) ^ 0x5147_424b
}

/// Bytes handed to the output thread at a time.
const STAGE_BYTES: usize = 1 << 20;

enum OutMsg {
    Bytes(Vec<u8>),
    /// Reply with the SHA-256 of everything sent so far.
    Digest(std::sync::mpsc::Sender<[u8; 32]>),
}

/// The writing end of a stream on a thread of its own: it writes staged
/// bytes to the output and hashes them (SHA-256) while the producer goes on
/// reading the store (writing and hashing cost as much as the rest of a
/// backup's work).
struct Output<W: Write + Send + 'static> {
    tx: Option<std::sync::mpsc::SyncSender<OutMsg>>,
    /// Buffers coming back for reuse.
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<(W, std::io::Result<[u8; 32]>)>>,
}

impl<W: Write + Send + 'static> Output<W> {
    fn new(mut out: W) -> Output<W> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<OutMsg>(4);
        let (back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("qg-backup-out".into())
            .spawn(move || {
                let mut sha = Sha256::new();
                for m in rx {
                    match m {
                        OutMsg::Bytes(mut b) => {
                            if let Err(e) = out.write_all(&b) {
                                return (out, Err(e));
                            }
                            sha.update(&b);
                            b.clear();
                            let _ = back.send(b);
                        }
                        OutMsg::Digest(reply) => {
                            let _ = reply.send(sha.clone().finalize().into());
                        }
                    }
                }
                let flushed = out.flush().map(|_| sha.finalize().into());
                (out, flushed)
            })
            .expect("a thread can be started");
        Output {
            tx: Some(tx),
            spare,
            thread: Some(thread),
        }
    }

    /// The output thread stopped (a write failed): its error.
    fn failed(&mut self) -> std::io::Error {
        drop(self.tx.take());
        match self.thread.take().map(|t| t.join()) {
            Some(Ok((_, Err(e)))) => e,
            _ => std::io::Error::other("the stream's output thread stopped"),
        }
    }

    fn send(&mut self, m: OutMsg) -> std::io::Result<()> {
        let sent = self.tx.as_ref().map(|tx| tx.send(m).is_ok());
        if sent == Some(true) {
            Ok(())
        } else {
            Err(self.failed())
        }
    }

    fn buffer(&self) -> Vec<u8> {
        self.spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(STAGE_BYTES + 64 * 1024))
    }

    fn digest(&mut self) -> std::io::Result<[u8; 32]> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(OutMsg::Digest(tx))?;
        match rx.recv() {
            Ok(d) => Ok(d),
            Err(_) => Err(self.failed()),
        }
    }

    /// Wait for everything to be written; the output and the SHA-256 of it all.
    fn finish(mut self) -> (Option<W>, std::io::Result<[u8; 32]>) {
        drop(self.tx.take());
        match self.thread.take().expect("joined once").join() {
            Ok((w, r)) => (Some(w), r),
            Err(_) => (
                None,
                Err(std::io::Error::other("the stream's output thread panicked")),
            ),
        }
    }
}

impl<W: Write + Send + 'static> Drop for Output<W> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SHA-256 of the bytes a reader consumes, computed on a thread of its own
/// (an output thread writing nowhere).
struct ReadHash {
    stage: Vec<u8>,
    out: Option<Output<std::io::Sink>>,
}

impl ReadHash {
    fn new() -> ReadHash {
        let out = Output::new(std::io::sink());
        ReadHash {
            stage: out.buffer(),
            out: Some(out),
        }
    }

    fn out(&mut self) -> &mut Output<std::io::Sink> {
        self.out.as_mut().expect("open until finished")
    }

    fn update(&mut self, bytes: &[u8]) {
        self.stage.extend_from_slice(bytes);
        if self.stage.len() >= STAGE_BYTES {
            self.hand_off();
        }
    }

    fn hand_off(&mut self) {
        let next = self.out().buffer();
        let full = std::mem::replace(&mut self.stage, next);
        // a sink never fails: only a panicked thread could refuse
        self.out()
            .send(OutMsg::Bytes(full))
            .expect("the hashing thread runs");
    }

    /// The hash of everything so far.
    fn digest(&mut self) -> [u8; 32] {
        self.hand_off();
        self.out().digest().expect("the hashing thread runs")
    }

    fn finish(mut self) -> [u8; 32] {
        self.hand_off();
        let out = self.out.take().expect("finished once");
        out.finish().1.expect("the hashing thread runs")
    }
}

/// Writes one backup stream.
pub struct StreamWriter<W: Write + Send + 'static> {
    pos: u64,
    /// Bytes framed since the last hand-off to `out`.
    stage: Vec<u8>,
    out: Output<W>,
    index: u64,
    cipher: Option<FrameCipher>,
}

impl<W: Write + Send + 'static> StreamWriter<W> {
    /// Write the prelude and the (plaintext) header record.
    pub fn start(out: W, header: &Header, cipher: Option<FrameCipher>) -> std::io::Result<Self> {
        let out = Output::new(out);
        let mut w = StreamWriter {
            pos: 0,
            stage: out.buffer(),
            out,
            index: 0,
            cipher,
        };
        let mut prelude = MAGIC.to_vec();
        prelude.extend_from_slice(&VERSION.to_le_bytes());
        w.raw(&prelude)?;
        let body = serde_json::to_vec(header).expect("header serializes");
        w.frame(RecordType::Header, &[&body], false)?;
        Ok(w)
    }

    fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stage.extend_from_slice(bytes);
        self.pos += bytes.len() as u64;
        if self.stage.len() >= STAGE_BYTES {
            self.hand_off()?;
        }
        Ok(())
    }

    /// Pass the staged bytes to the output thread.
    fn hand_off(&mut self) -> std::io::Result<()> {
        if self.stage.is_empty() {
            return Ok(());
        }
        let next = self.out.buffer();
        let full = std::mem::replace(&mut self.stage, next);
        self.out.send(OutMsg::Bytes(full))
    }

    /// Frame a record whose body is the concatenation of `parts`.
    fn frame(&mut self, t: RecordType, parts: &[&[u8]], seal: bool) -> std::io::Result<()> {
        let sealed;
        let joined: [&[u8]; 1];
        let parts = match (&self.cipher, seal) {
            (Some(c), true) => {
                sealed = c.seal(t as u8, self.index, &parts.concat());
                joined = [&sealed[..]];
                &joined[..]
            }
            _ => parts,
        };
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(total)
            .ok()
            .filter(|l| *l <= MAX_RECORD)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("a {} record of {total} bytes is too large", t.name()),
                )
            })?;
        let mut head = [0u8; 5];
        head[0] = t as u8;
        head[1..].copy_from_slice(&len.to_le_bytes());
        self.raw(&head)?;
        let mut body_sum = xxhash_rust::xxh3::Xxh3::with_seed(body_seed(self.index));
        for p in parts {
            body_sum.update(p);
            self.raw(p)?;
        }
        let sum = xxh3_64_with_seed(&head, self.index) ^ body_sum.digest();
        self.raw(&sum.to_le_bytes())?;
        self.index += 1;
        Ok(())
    }

    /// Where the next record starts.
    pub fn position(&self) -> Position {
        Position {
            offset: self.pos,
            record: self.index,
        }
    }

    /// Write one record.
    pub fn record(&mut self, r: &Record) -> std::io::Result<()> {
        let body = r.encode();
        self.frame(r.record_type(), &[&body], true)
    }

    /// Write a record whose body is already encoded.
    pub fn raw_record(&mut self, t: RecordType, body: &[u8]) -> std::io::Result<()> {
        self.frame(t, &[body], true)
    }

    /// Write an object record without building a [`Record`] (no copy of the data).
    pub fn object(
        &mut self,
        ns: &str,
        id: &ObjectId,
        kind: u8,
        data: &[u8],
    ) -> std::io::Result<()> {
        let mut head = Vec::with_capacity(ns.len() + 35);
        put_str16(&mut head, ns);
        head.extend_from_slice(&id.0);
        head.push(kind);
        self.frame(RecordType::Object, &[&head, data], true)
    }

    /// The output, abandoning the stream (the caller aborts the upload).
    /// `None` only if the output thread panicked.
    pub fn into_inner(self) -> Option<W> {
        self.out.finish().0
    }

    /// Write the trailer (the manifest, with its own position and the hash of
    /// everything before it filled in) and the footer. Returns the output,
    /// the completed trailer manifest, the stream length and its SHA-256.
    pub fn finish(mut self, mut trailer: Manifest) -> std::io::Result<(W, Manifest, u64, String)> {
        trailer.trailer = self.position();
        self.hand_off()?;
        trailer.prefix_sha256 = hex::encode(self.out.digest()?);
        trailer.counts.records = self.index;
        let body = serde_json::to_vec(&trailer).expect("manifest serializes");
        self.frame(RecordType::Trailer, &[&body], true)?;
        let mut footer = Vec::with_capacity(FOOTER_LEN as usize);
        footer.extend_from_slice(&trailer.trailer.offset.to_le_bytes());
        footer.extend_from_slice(&trailer.trailer.record.to_le_bytes());
        footer.extend_from_slice(&trailer.index.offset.to_le_bytes());
        footer.extend_from_slice(&trailer.index.record.to_le_bytes());
        footer.extend_from_slice(FOOTER_MAGIC);
        self.raw(&footer)?;
        self.hand_off()?;
        let pos = self.pos;
        match self.out.finish() {
            (Some(out), Ok(sha)) => Ok((out, trailer, pos, hex::encode(sha))),
            (_, Err(e)) => Err(e),
            (None, Ok(_)) => Err(std::io::Error::other("the stream's output is gone")),
        }
    }
}

/// Reads one backup stream, checking every record's checksum (and
/// authenticating it when encrypted), section order, the trailer and footer.
pub struct StreamReader<R: Read> {
    inp: R,
    /// Names the backup in errors.
    name: String,
    pos: u64,
    sha: Option<ReadHash>,
    index: u64,
    cipher: Option<FrameCipher>,
    rank: u8,
    header: Option<Header>,
    trailer: Option<Manifest>,
    prefix_sha: Option<String>,
    /// Digest of the hook records read so far, for the trailer's `hooks_sha256`.
    hooks: HooksDigest,
    /// The stream's format version.
    version: u16,
}

/// What a stream's end showed: the trailer, total length and SHA-256.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    pub trailer: Manifest,
    pub bytes: u64,
    pub sha256: String,
}

impl<R: Read> StreamReader<R> {
    /// Read the prelude and header from the start of a stream. `None` at a
    /// clean end of input (no more streams in a concatenation).
    pub fn open(mut inp: R, name: &str) -> Result<Option<(StreamReader<R>, Header)>> {
        let mut prelude = [0u8; PRELUDE_LEN as usize];
        let mut got = 0;
        while got < prelude.len() {
            let n = inp
                .read(&mut prelude[got..])
                .map_err(|e| Error::io("read backup stream", name, e))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        if got == 0 {
            return Ok(None);
        }
        if got < prelude.len() || &prelude[..8] != MAGIC {
            return Err(Error::damaged(
                name,
                "it does not start with a qg-backup stream header (bad magic)",
            ));
        }
        let version = u16::from_le_bytes([prelude[8], prelude[9]]);
        if !readable(version) {
            return Err(Error::usage(format!(
                "backup {name} has stream format version {version}; this qg-backup reads versions {MIN_VERSION} to {VERSION}"
            )));
        }
        let mut sha = ReadHash::new();
        sha.update(&prelude);
        let mut r = StreamReader {
            inp,
            name: name.to_string(),
            pos: PRELUDE_LEN,
            sha: Some(sha),
            index: 0,
            cipher: None,
            rank: 0,
            header: None,
            trailer: None,
            prefix_sha: None,
            hooks: HooksDigest::default(),
            version,
        };
        let (t, body) = r.frame()?;
        if t != RecordType::Header {
            return Err(r.bad("the first record is not a header"));
        }
        let header: Header =
            serde_json::from_slice(&body).map_err(|e| r.bad(&format!("bad header: {e}")))?;
        if header.format != version {
            return Err(r.bad(&format!(
                "header says format {} in a version {version} stream",
                header.format
            )));
        }
        r.version = version;
        r.name = header.id.clone();
        r.rank = RecordType::Header.rank();
        r.header = Some(header.clone());
        Ok(Some((r, header)))
    }

    /// Read records from the middle of a stream (the index section), at
    /// `pos` with `inp` already positioned there. No whole-stream hash.
    pub fn resume(
        inp: R,
        name: &str,
        pos: Position,
        cipher: Option<FrameCipher>,
    ) -> StreamReader<R> {
        StreamReader {
            inp,
            name: name.to_string(),
            pos: pos.offset,
            sha: None,
            index: pos.record,
            cipher,
            rank: RecordType::Object.rank(),
            header: None,
            trailer: None,
            prefix_sha: None,
            hooks: HooksDigest::default(),
            version: VERSION,
        }
    }

    /// Use this cipher for the records after the header.
    pub fn set_cipher(&mut self, cipher: Option<FrameCipher>) {
        self.cipher = cipher;
    }

    fn bad(&self, reason: &str) -> Error {
        Error::damaged(
            &self.name,
            format!("record #{} at byte {}: {reason}", self.index, self.pos),
        )
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let mut got = 0;
        while got < buf.len() {
            let n = self
                .inp
                .read(&mut buf[got..])
                .map_err(|e| Error::io("read backup stream", &self.name, e))?;
            if n == 0 {
                return Err(Error::damaged(
                    &self.name,
                    format!(
                        "the stream is truncated at byte {} (inside {what}, record #{}): {} more bytes expected",
                        self.pos + got as u64,
                        self.index,
                        buf.len() - got
                    ),
                ));
            }
            got += n;
        }
        if let Some(sha) = &mut self.sha {
            sha.update(&buf[..]);
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// One raw frame: (type, plaintext body).
    fn frame(&mut self) -> Result<(RecordType, Vec<u8>)> {
        let start = self.pos;
        let mut head = [0u8; 5];
        // the trailer's first byte ends the part of the stream its hash covers
        let sha = self.sha.take();
        let filled = self.fill(&mut head, "a record header");
        self.sha = sha;
        filled?;
        if head[0] == RecordType::Trailer as u8 {
            if let Some(sha) = &mut self.sha {
                self.prefix_sha = Some(hex::encode(sha.digest()));
            }
        }
        if let Some(sha) = &mut self.sha {
            sha.update(&head);
        }
        let t = RecordType::from_u8(head[0]).ok_or_else(|| {
            Error::damaged(
                &self.name,
                format!(
                    "record #{} at byte {start}: unknown record type {}",
                    self.index, head[0]
                ),
            )
        })?;
        let len = u32::from_le_bytes(head[1..].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            return Err(Error::damaged(
                &self.name,
                format!(
                    "record #{} at byte {start}: length {len} is impossible",
                    self.index
                ),
            ));
        }
        let mut body = vec![0u8; len as usize];
        self.fill(&mut body, t.name())?;
        let mut sum = [0u8; 8];
        self.fill(&mut sum, "a checksum")?;
        if u64::from_le_bytes(sum) != checksum(head[0], len, &body, self.index) {
            return Err(Error::damaged(
                &self.name,
                format!(
                    "record #{} ({}) at byte {start}: checksum mismatch",
                    self.index,
                    t.name()
                ),
            ));
        }
        let body = match (&self.cipher, t) {
            (Some(c), t) if t != RecordType::Header => {
                if body.len() < TAG_LEN {
                    return Err(Error::damaged(
                        &self.name,
                        format!(
                            "record #{} at byte {start}: too short to be sealed",
                            self.index
                        ),
                    ));
                }
                c.open(t as u8, self.index, &body).ok_or_else(|| {
                    Error::damaged(
                        &self.name,
                        format!(
                            "record #{} ({}) at byte {start} does not authenticate (tampered, or sealed under another key)",
                            self.index,
                            t.name()
                        ),
                    )
                })?
            }
            _ => body,
        };
        self.index += 1;
        Ok((t, body))
    }

    /// The next record; the trailer is the last one (`None` after it).
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if self.trailer.is_some() {
            return Ok(None);
        }
        let at = self.position();
        let (t, body) = self.frame()?;
        if t.rank() < self.rank {
            return Err(Error::damaged(
                &self.name,
                format!(
                    "record #{} at byte {}: a {} record after the {} section",
                    at.record,
                    at.offset,
                    t.name(),
                    section_name(self.rank)
                ),
            ));
        }
        if self.version < 2 && matches!(t, RecordType::Delta | RecordType::Reset) {
            return Err(Error::damaged(
                &self.name,
                format!(
                    "record #{} at byte {}: a {} record in a version {} stream",
                    at.record,
                    at.offset,
                    t.name(),
                    self.version
                ),
            ));
        }
        self.rank = t.rank();
        let rec = Record::decode(t, body).map_err(|reason| {
            Error::damaged(
                &self.name,
                format!(
                    "record #{} ({}) at byte {}: {reason}",
                    at.record,
                    t.name(),
                    at.offset
                ),
            )
        })?;
        if let Record::Hook(h) = &rec {
            self.hooks.add(h).map_err(|reason| {
                Error::damaged(
                    &self.name,
                    format!(
                        "record #{} (hook) at byte {}: {reason}",
                        at.record, at.offset
                    ),
                )
            })?;
        }
        if let Record::Trailer(m) = &rec {
            if m.trailer != at {
                return Err(Error::damaged(
                    &self.name,
                    format!(
                        "the trailer says it starts at byte {} (record #{}) but it is at byte {} (record #{})",
                        m.trailer.offset, m.trailer.record, at.offset, at.record
                    ),
                ));
            }
            if let (Some(h), Some(p)) = (&self.header, &self.prefix_sha) {
                let differ = [
                    ("format", m.format != h.format),
                    ("id", m.id != h.id),
                    ("parent", m.parent != h.parent),
                    ("kind", m.kind != h.kind),
                    ("created", m.created != h.created),
                    ("store_id", m.store_id != h.store_id),
                    ("encryption", m.encryption != h.encryption),
                    ("tool", m.tool != h.tool),
                ];
                if let Some((field, _)) = differ.iter().find(|(_, d)| *d) {
                    return Err(Error::damaged(
                        &self.name,
                        format!("the trailer's `{field}` does not match the header's"),
                    ));
                }
                m.check_times()
                    .map_err(|e| Error::damaged(&self.name, format!("its trailer's {e}")))?;
                if !h.hooks_unchanged && m.hooks_sha256 != self.hooks.hex() {
                    return Err(Error::damaged(
                        &self.name,
                        "the trailer's `hooks_sha256` is not the digest of the stream's hook records",
                    ));
                }
                if &m.prefix_sha256 != p {
                    return Err(Error::damaged(
                        &self.name,
                        "the stream's SHA-256 does not match its trailer: bytes were changed",
                    ));
                }
            }
            self.trailer = Some((**m).clone());
        }
        Ok(Some(rec))
    }

    /// After the trailer: read and check the footer; returns the trailer,
    /// the stream length and (when read from the start) its SHA-256.
    pub fn finish(mut self) -> Result<(StreamEnd, R)> {
        let trailer = self
            .trailer
            .clone()
            .ok_or_else(|| Error::damaged(&self.name, "the stream ends without a trailer"))?;
        let mut footer = [0u8; FOOTER_LEN as usize];
        self.fill(&mut footer, "the footer")?;
        let word =
            |i: usize| u64::from_le_bytes(footer[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        if &footer[32..] != FOOTER_MAGIC
            || word(0) != trailer.trailer.offset
            || word(1) != trailer.trailer.record
            || word(2) != trailer.index.offset
            || word(3) != trailer.index.record
        {
            return Err(Error::damaged(
                &self.name,
                "the footer does not match the trailer",
            ));
        }
        let sha256 = self
            .sha
            .take()
            .map(|s| hex::encode(s.finish()))
            .unwrap_or_default();
        Ok((
            StreamEnd {
                trailer,
                bytes: self.pos,
                sha256,
            },
            self.inp,
        ))
    }

    pub fn position(&self) -> Position {
        Position {
            offset: self.pos,
            record: self.index,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream's format version.
    pub fn version(&self) -> u16 {
        self.version
    }
}

fn section_name(rank: u8) -> &'static str {
    section(rank).map(RecordType::name).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Master, Secret};
    use crate::manifest::Counts;

    /// A backup id whose time is the test header's `created`.
    const B1: &str = "20260101T000000.000Z-00000001";

    #[test]
    fn trailer_counts_must_match_the_records_read() {
        let c = Counts {
            namespaces: 2,
            refs: 3,
            objects: 10,
            ..Default::default()
        };
        c.check_seen(c.tallies(), "b1").unwrap();
        let mut seen = c.tallies();
        seen[6] -= 1; // one object record lost
        let err = c.check_seen(seen, "b1").unwrap_err().to_string();
        assert!(
            err.contains("b1") && err.contains("trailer counts"),
            "{err}"
        );
    }

    fn header(id: &str, enc: Option<EncryptionInfo>) -> Header {
        Header {
            format: VERSION,
            id: id.into(),
            parent: None,
            kind: BackupKind::Full,
            created: "2026-01-01T00:00:00.000Z".into(),
            store_id: "s".into(),
            encryption: enc,
            hooks_unchanged: false,
            tool: "t".into(),
        }
    }

    fn manifest(h: &Header) -> Manifest {
        Manifest {
            format: VERSION,
            id: h.id.clone(),
            parent: None,
            kind: h.kind,
            created: h.created.clone(),
            finished: h.created.clone(),
            store_id: h.store_id.clone(),
            counts: Counts::default(),
            audit_seq: 0,
            audit_head: None,
            reflog_seq: 0,
            encryption: h.encryption.clone(),
            index: Position::default(),
            trailer: Position::default(),
            prefix_sha256: String::new(),
            hooks_sha256: hooks_digest(&[]),
            tool: "t".into(),
            stream: None,
            bytes: None,
            sha256: None,
            mac: None,
        }
    }

    fn sample(cipher: Option<(EncryptionInfo, Master)>) -> Vec<u8> {
        let enc = cipher.as_ref().map(|(i, _)| i.clone());
        let h = header(B1, enc);
        let c = cipher.as_ref().map(|(i, m)| m.frames(i, B1));
        let mut w = StreamWriter::start(Vec::new(), &h, c).unwrap();
        w.record(&Record::Meta("k".into(), "v".into())).unwrap();
        w.object("default", &ObjectId([3; 32]), 1, b"payload")
            .unwrap();
        let mut m = manifest(&h);
        m.index = w.position();
        w.record(&Record::Index(vec![IndexEntry::add(
            "default",
            ObjectId([3; 32]),
        )]))
        .unwrap();
        let (out, _, len, _) = w.finish(m).unwrap();
        assert_eq!(len, out.len() as u64);
        out
    }

    fn read_all(bytes: &[u8], cipher: Option<&(EncryptionInfo, Master)>) -> Result<Vec<Record>> {
        let (mut r, h) =
            StreamReader::open(bytes, "test")?.ok_or_else(|| Error::usage("empty input"))?;
        if let Some((i, m)) = cipher {
            r.set_cipher(Some(m.frames(i, &h.id)));
        }
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn round_trip_plain_and_sealed() {
        let plain = sample(None);
        let recs = read_all(&plain, None).unwrap();
        assert_eq!(recs.len(), 4);
        assert!(matches!(&recs[1], Record::Object { data, .. } if data == b"payload"));
        let key = Master::new_backup(&Secret::Key(zeroize::Zeroizing::new([9; 32]))).unwrap();
        let sealed = sample(Some(key));
        let key = (
            sealed_info(&sealed),
            Master::open(
                &Secret::Key(zeroize::Zeroizing::new([9; 32])),
                &sealed_info(&sealed),
                B1,
            )
            .unwrap(),
        );
        assert!(
            !sealed.windows(7).any(|w| w == b"payload"),
            "object bytes are sealed"
        );
        assert_eq!(read_all(&sealed, Some(&key)).unwrap().len(), 4);
    }

    fn sealed_info(bytes: &[u8]) -> EncryptionInfo {
        StreamReader::open(bytes, "x")
            .unwrap()
            .unwrap()
            .1
            .encryption
            .unwrap()
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_detected() {
        let good = sample(None);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(read_all(&bad, None).is_err(), "flip at {i} not detected");
            assert!(
                read_all(&good[..i], None).is_err(),
                "truncation at {i} not detected"
            );
        }
    }
}
