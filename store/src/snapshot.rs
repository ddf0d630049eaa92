//! Raw, point-in-time access to a whole store, for backup and restore tools.
//!
//! Read side: [`Snapshot`] holds one SQLite read transaction, so everything
//! read through it (meta, namespaces with their `crypto` records, refs,
//! reflog, audit entries, and the stored bytes of every object) is one
//! consistent point in time, while writers keep committing (WAL mode). Object
//! bytes come out exactly as stored: framed, compressed and, for encrypted
//! namespaces, sealed; nothing is decoded here.
//!
//! Write side: [`RestoreWriter`] creates a fresh store database and inserts
//! rows verbatim (namespaces, objects, refs, reflog, audit entries with their
//! original hashes), so the audit chain of the restored store still verifies.
//! The restore tool then records its own audit event through [`crate::Store::record`].
//!
//! Tools use this module instead of SQL: it is the only place where backup and
//! restore touch tables.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};

use crate::audit;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::storage::{bad_row, id_from, Db, DB_FILE, SCHEMA_VERSION};

/// SQLite page cache (KiB) while a snapshot streams a whole store: a scan
/// touches every page once, so a big cache buys nothing and costs memory.
const SNAPSHOT_CACHE_KIB: i64 = 8 * 1024;
/// Page cache (KiB) while [`Snapshot::visit_objects_in_storage_order`] reads
/// the object table once from end to end.
const SCAN_CACHE_KIB: i64 = 1024;
/// Page cache (KiB) of the restore writer.
const RESTORE_CACHE_KIB: i64 = 8 * 1024;
/// Rows fetched per page by the streaming iterators.
const PAGE_ROWS: usize = 512;
/// Rows fetched per page by [`Snapshot::object_ids`] (ids only: small rows).
const ID_PAGE_ROWS: usize = 4096;
/// Stop filling a page of objects once it holds this many bytes.
const PAGE_BYTES: usize = 8 << 20;

/// One row of `namespaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRow {
    pub name: String,
    pub created: String,
    pub default_branch: String,
    /// The namespace's `sys:crypto` record; `None` for a plaintext namespace.
    pub crypto: Option<Vec<u8>>,
}

impl NamespaceRow {
    /// Whether the namespace's objects are sealed (it has a crypto record).
    pub fn encrypted(&self) -> bool {
        self.crypto.is_some()
    }
}

/// One row of `refs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefRow {
    pub ns: String,
    /// Full ref name: `heads/<branch>` or `tags/<tag>`.
    pub name: String,
    pub target: ObjectId,
}

/// One row of `reflog`, with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReflogRow {
    pub seq: i64,
    pub ns: String,
    pub name: String,
    pub old: Option<ObjectId>,
    pub new: Option<ObjectId>,
    pub time: String,
    pub actor: String,
    pub message: String,
}

/// One row of `audit`, exactly as stored (the strings enter the hash chain as they are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub ns: Option<String>,
    pub target: Option<String>,
    pub outcome: String,
    /// The detail JSON as the stored string.
    pub detail: String,
    pub prev: [u8; 32],
    pub hash: [u8; 32],
}

/// One row of `key_usage`: how many objects a namespace's key version has sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsageRow {
    pub ns: String,
    pub version: u32,
    pub sealed: u64,
}

/// One row of `rekey_map`: an object re-encrypted under a new id, kept while
/// a data-key rotation of the namespace is in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyRow {
    pub ns: String,
    pub old: ObjectId,
    pub new: ObjectId,
}

/// A SQL value, as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(i) => ValueRef::Integer(*i),
            SqlValue::Real(f) => ValueRef::Real(*f),
            SqlValue::Text(t) => ValueRef::Text(t.as_bytes()),
            SqlValue::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn sql_value(v: rusqlite::types::ValueRef<'_>) -> SqlValue {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(f) => SqlValue::Real(f),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

/// One row of a table the snapshot has no dedicated reader for (API tokens,
/// protected branches, and whatever the store adds later), column by column.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub table: String,
    pub columns: Vec<String>,
    pub values: Vec<SqlValue>,
}

/// Tables read one by one above, or that are not state to keep (`leases`:
/// processes of this machine).
const DEDICATED: &[&str] = &[
    "meta",
    "namespaces",
    "objects",
    "refs",
    "reflog",
    "audit",
    "key_usage",
    "rekey_map",
    "leases",
];

/// The store's other tables, by name.
fn other_tables(db: &Db) -> Result<Vec<String>> {
    let mut stmt = db.conn.prepare(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for n in names {
        let n = n?;
        if !DEDICATED.contains(&n.as_str()) {
            out.push(n);
        }
    }
    Ok(out)
}

/// Column names of `table` (which must exist).
fn columns(db: &Db, table: &str) -> Result<Vec<String>> {
    let mut stmt = db
        .conn
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let cols = stmt.query_map([table], |r| r.get::<_, String>(0))?;
    Ok(cols.collect::<Result<_, _>>()?)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// One stored object: id, kind byte and the stored (framed) bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawObject {
    pub id: ObjectId,
    pub kind: u8,
    pub data: Vec<u8>,
}

fn hash_from(seq: i64, column: &str, bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes.as_slice().try_into().map_err(|_| {
        bad_row(
            "audit",
            format!("entry #{seq}: `{column}` is not a 32-byte hash"),
        )
    })
}

/// A consistent, read-only view of a whole store: one read transaction, held
/// until the snapshot is dropped. Create it with [`Snapshot::begin`].
pub struct Snapshot<'a> {
    db: &'a Db,
    cache_kib: i64,
}

impl<'a> Snapshot<'a> {
    /// Start a read transaction on `db` and pin its point in time. Fails when
    /// `db` is already inside a transaction (a snapshot must own its own).
    pub fn begin(db: &'a Db) -> Result<Snapshot<'a>> {
        if !db.conn.is_autocommit() {
            return Err(Error::Other(
                "cannot take a snapshot inside another transaction".into(),
            ));
        }
        let cache_kib: i64 = db.conn.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
        db.conn
            .pragma_update(None, "cache_size", -SNAPSHOT_CACHE_KIB)?;
        db.conn.execute_batch("BEGIN DEFERRED")?;
        let snap = Snapshot { db, cache_kib };
        // A deferred transaction takes its snapshot at the first read.
        snap.db
            .conn
            .query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))?;
        Ok(snap)
    }

    /// The underlying database, for the store's own readers (`get_ref`, ...)
    /// inside this snapshot's transaction.
    pub fn db(&self) -> &Db {
        self.db
    }

    /// Every `meta` row, by key.
    pub fn meta(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .db
            .conn
            .prepare("SELECT key, value FROM meta ORDER BY key")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The store's id (`meta.store_id`).
    pub fn store_id(&self) -> Result<String> {
        Ok(self.db.meta("store_id")?.unwrap_or_default())
    }

    /// Every namespace with its crypto record, by name (bytewise).
    pub fn namespaces(&self) -> Result<Vec<NamespaceRow>> {
        let mut stmt = self.db.conn.prepare(
            "SELECT name, created, default_branch, crypto FROM namespaces ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(NamespaceRow {
                name: r.get(0)?,
                created: r.get(1)?,
                default_branch: r.get(2)?,
                crypto: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every ref of every namespace, by (namespace, name).
    pub fn refs(&self) -> Result<Vec<RefRow>> {
        let mut stmt = self
            .db
            .conn
            .prepare("SELECT ns, name, target FROM refs ORDER BY ns, name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (ns, name, target) = row?;
            let target = id_from("refs", "target", target)?;
            out.push(RefRow { ns, name, target });
        }
        Ok(out)
    }

    /// The highest reflog sequence number handed out so far (0 when none):
    /// entries up to it exist or were deleted with their namespace, and new
    /// ones get higher numbers (the reflog's AUTOINCREMENT counter).
    pub fn max_reflog_seq(&self) -> Result<i64> {
        Ok(self.db.conn.query_row(
            "SELECT max(coalesce((SELECT max(seq) FROM reflog), 0),
                        coalesce((SELECT seq FROM sqlite_sequence WHERE name='reflog'), 0))",
            [],
            |r| r.get(0),
        )?)
    }

    /// Reflog entries with `seq > after`, oldest first, fetched page by page.
    pub fn reflog_after(&self, after: i64) -> Pages<'_, 'a, ReflogRow> {
        Pages::new(self, after, fetch_reflog)
    }

    /// The newest audit entry's (seq, hash), if any.
    pub fn audit_head(&self) -> Result<Option<(i64, [u8; 32])>> {
        let row: Option<(i64, Vec<u8>)> = self
            .db
            .conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(seq, h)| Ok((seq, hash_from(seq, "hash", h)?)))
            .transpose()
    }

    /// The hash of audit entry `seq`, if it exists.
    pub fn audit_hash(&self, seq: i64) -> Result<Option<[u8; 32]>> {
        let h: Option<Vec<u8>> = self
            .db
            .conn
            .query_row("SELECT hash FROM audit WHERE seq=?1", [seq], |r| r.get(0))
            .optional()?;
        h.map(|h| hash_from(seq, "hash", h)).transpose()
    }

    /// Audit entries with `seq > after`, oldest first, fetched page by page.
    pub fn audit_after(&self, after: i64) -> Pages<'_, 'a, AuditRow> {
        Pages::new(self, after, fetch_audit)
    }

    fn has_table(&self, table: &str) -> Result<bool> {
        Ok(self
            .db
            .conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?1",
                [table],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Every `key_usage` row, by (namespace, version); empty when the store
    /// predates per-namespace encryption.
    pub fn key_usage(&self) -> Result<Vec<KeyUsageRow>> {
        if !self.has_table("key_usage")? {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .db
            .conn
            .prepare("SELECT ns, version, sealed FROM key_usage ORDER BY ns, version")?;
        let rows = stmt.query_map([], |r| {
            Ok(KeyUsageRow {
                ns: r.get(0)?,
                version: r.get(1)?,
                sealed: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every `rekey_map` row (normally none: rows exist only while a data-key
    /// rotation is in progress), by (namespace, old id), page by page.
    pub fn rekey_map(&self) -> Result<RekeyPages<'_, 'a>> {
        Ok(RekeyPages {
            snap: self,
            after: None,
            buf: VecDeque::new(),
            done: !self.has_table("rekey_map")?,
        })
    }

    /// The store's tables without a dedicated reader (API tokens, protected
    /// branches, tables added later), by name.
    pub fn other_tables(&self) -> Result<Vec<String>> {
        other_tables(self.db)
    }

    /// Every row of one of [`Snapshot::other_tables`]. These are small
    /// configuration tables, read whole.
    pub fn table_rows(&self, table: &str) -> Result<Vec<TableRow>> {
        if !other_tables(self.db)?.iter().any(|t| t == table) {
            return Err(Error::Other(format!("no table `{table}` to back up")));
        }
        let cols = columns(self.db, table)?;
        let sql = format!(
            "SELECT {} FROM {}",
            cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", "),
            quote(table)
        );
        let mut stmt = self.db.conn.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(cols.len());
            for i in 0..cols.len() {
                values.push(sql_value(r.get_ref(i)?));
            }
            out.push(TableRow {
                table: table.to_string(),
                columns: cols.clone(),
                values,
            });
        }
        Ok(out)
    }

    /// (count, stored bytes) of the objects of `ns`, or of every namespace.
    pub fn object_stats(&self, ns: Option<&str>) -> Result<(u64, u64)> {
        Ok(self.db.conn.query_row(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM objects WHERE ?1 IS NULL OR ns=?1",
            [ns],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    /// The id of every object of `ns` in id order, page by page, read from
    /// the primary key's index alone (no object is read).
    pub fn object_ids(&self, ns: &str) -> ObjectIds<'_, 'a> {
        ObjectIds {
            snap: self,
            ns: ns.to_string(),
            after: Vec::new(),
            buf: VecDeque::new(),
            done: false,
        }
    }

    /// Kind and stored length of object `id` of `ns`, if the store has it.
    pub fn object_meta(&self, ns: &str, id: &ObjectId) -> Result<Option<(u8, u64)>> {
        Ok(self
            .db
            .conn
            .prepare_cached("SELECT kind, length(data) FROM objects WHERE ns=?1 AND id=?2")?
            .query_row(params![ns, &id.0[..]], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
            })
            .optional()?)
    }

    /// One stored object of `ns`, if the store has it.
    pub fn object(&self, ns: &str, id: &ObjectId) -> Result<Option<RawObject>> {
        let row: Option<(u8, Vec<u8>)> = self
            .db
            .conn
            .prepare_cached("SELECT kind, data FROM objects WHERE ns=?1 AND id=?2")?
            .query_row(params![ns, &id.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map(|(kind, data)| RawObject {
            id: *id,
            kind,
            data,
        }))
    }

    /// Number of objects of `ns`, or of every namespace (from the primary
    /// key's index: no object is read).
    pub fn object_count(&self, ns: Option<&str>) -> Result<u64> {
        Ok(self.db.conn.query_row(
            "SELECT count(*) FROM objects WHERE ?1 IS NULL OR ns=?1",
            [ns],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Call `f(ns, id, kind, stored bytes)` for every stored object of every
    /// namespace, in the order the database keeps them: one sequential pass
    /// over the table, the bytes lent straight from SQLite (no copy). Stops at
    /// the first error `f` returns.
    pub fn visit_objects_in_storage_order<E: From<Error>>(
        &self,
        mut f: impl FnMut(&str, &ObjectId, u8, &[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        // every page is read once: a small cache is reused instead of growing
        let cache: i64 = self
            .db
            .conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .map_err(Error::from)?;
        self.db
            .conn
            .pragma_update(None, "cache_size", -SCAN_CACHE_KIB)
            .map_err(Error::from)?;
        let result = self.visit_all(&mut f);
        self.db
            .conn
            .pragma_update(None, "cache_size", cache)
            .map_err(Error::from)?;
        result
    }

    fn visit_all<E: From<Error>>(
        &self,
        f: &mut impl FnMut(&str, &ObjectId, u8, &[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut stmt = self
            .db
            .conn
            .prepare("SELECT ns, id, kind, data FROM objects")
            .map_err(Error::from)?;
        let mut rows = stmt.query([]).map_err(Error::from)?;
        while let Some(r) = rows.next().map_err(Error::from)? {
            let col = |i: usize| -> Result<rusqlite::types::ValueRef<'_>> { Ok(r.get_ref(i)?) };
            let bad = |what: &str| bad_row("objects", format!("`{what}` has the wrong type"));
            let ns = col(0)?.as_str().map_err(|_| bad("ns"))?;
            let id = col(1)?.as_blob().map_err(|_| bad("id"))?;
            let id = ObjectId::from_slice(id).ok_or_else(|| {
                bad_row(
                    "objects",
                    format!("`id` holds {} bytes, not a 32-byte id", id.len()),
                )
            })?;
            let kind: u8 = r.get(2).map_err(Error::from)?;
            let data = col(3)?.as_blob().map_err(|_| bad("data"))?;
            f(ns, &id, kind, data)?;
        }
        Ok(())
    }

    /// The stored objects of `ns` in id order (bytewise), streamed page by
    /// page so memory stays bounded whatever the namespace's size.
    pub fn objects(&self, ns: &str) -> Objects<'_, 'a> {
        Objects {
            snap: self,
            ns: ns.to_string(),
            after: Vec::new(),
            buf: VecDeque::new(),
            done: false,
        }
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        let _ = self.db.conn.execute_batch("COMMIT");
        let _ = self
            .db
            .conn
            .pragma_update(None, "cache_size", self.cache_kib);
    }
}

type Fetch<T> = fn(&Db, i64) -> Result<Vec<(i64, T)>>;

/// Rows with increasing `seq`, read page by page inside a snapshot.
pub struct Pages<'s, 'a, T> {
    snap: &'s Snapshot<'a>,
    after: i64,
    fetch: Fetch<T>,
    buf: VecDeque<T>,
    done: bool,
}

impl<'s, 'a, T> Pages<'s, 'a, T> {
    fn new(snap: &'s Snapshot<'a>, after: i64, fetch: Fetch<T>) -> Self {
        Pages {
            snap,
            after,
            fetch,
            buf: VecDeque::new(),
            done: false,
        }
    }
}

/// A reader that fetches rows a page at a time into a buffer.
trait Paged {
    type Row;
    fn buffer(&mut self) -> (&mut VecDeque<Self::Row>, &mut bool);
    /// Append the next page to the buffer; set the done flag after the last.
    fn fill(&mut self) -> Result<()>;
}

/// The `next` every paged reader shares: refill when the buffer runs dry,
/// report an error once and stop.
fn next_row<P: Paged>(p: &mut P) -> Option<Result<P::Row>> {
    let (buf, done) = p.buffer();
    if buf.is_empty() && !*done {
        if let Err(e) = p.fill() {
            *p.buffer().1 = true;
            return Some(Err(e));
        }
    }
    p.buffer().0.pop_front().map(Ok)
}

impl<T> Paged for Pages<'_, '_, T> {
    type Row = T;

    fn buffer(&mut self) -> (&mut VecDeque<T>, &mut bool) {
        (&mut self.buf, &mut self.done)
    }

    fn fill(&mut self) -> Result<()> {
        let rows = (self.fetch)(self.snap.db, self.after)?;
        self.done = rows.len() < PAGE_ROWS;
        for (seq, row) in rows {
            self.after = seq;
            self.buf.push_back(row);
        }
        Ok(())
    }
}

impl<T> Iterator for Pages<'_, '_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        next_row(self)
    }
}

fn fetch_reflog(db: &Db, after: i64) -> Result<Vec<(i64, ReflogRow)>> {
    let mut stmt = db.conn.prepare_cached(
        "SELECT seq, ns, name, old, new, time, actor, message FROM reflog WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![after, PAGE_ROWS as i64])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let id = |col: usize, name: &str| -> Result<Option<ObjectId>> {
            r.get::<_, Option<Vec<u8>>>(col)?
                .map(|b| id_from("reflog", name, b))
                .transpose()
        };
        out.push((
            seq,
            ReflogRow {
                seq,
                ns: r.get(1)?,
                name: r.get(2)?,
                old: id(3, "old")?,
                new: id(4, "new")?,
                time: r.get(5)?,
                actor: r.get(6)?,
                message: r.get(7)?,
            },
        ));
    }
    Ok(out)
}

fn fetch_audit(db: &Db, after: i64) -> Result<Vec<(i64, AuditRow)>> {
    let mut stmt = db.conn.prepare_cached(
        "SELECT seq, time, actor, action, ns, target, outcome, detail, prev, hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![after, PAGE_ROWS as i64])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        out.push((
            seq,
            AuditRow {
                seq,
                time: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                ns: r.get(4)?,
                target: r.get(5)?,
                outcome: r.get(6)?,
                detail: r.get(7)?,
                prev: hash_from(seq, "prev", r.get(8)?)?,
                hash: hash_from(seq, "hash", r.get(9)?)?,
            },
        ));
    }
    Ok(out)
}

/// `rekey_map` rows; see [`Snapshot::rekey_map`].
pub struct RekeyPages<'s, 'a> {
    snap: &'s Snapshot<'a>,
    after: Option<(String, Vec<u8>)>,
    buf: VecDeque<RekeyRow>,
    done: bool,
}

impl Paged for RekeyPages<'_, '_> {
    type Row = RekeyRow;

    fn buffer(&mut self) -> (&mut VecDeque<RekeyRow>, &mut bool) {
        (&mut self.buf, &mut self.done)
    }

    fn fill(&mut self) -> Result<()> {
        let mut stmt = self.snap.db.conn.prepare_cached(
            "SELECT ns, old, new FROM rekey_map WHERE ?1 IS NULL OR ns > ?1 OR (ns = ?1 AND old > ?2)
             ORDER BY ns, old LIMIT ?3",
        )?;
        let (ns, old) = match &self.after {
            Some((ns, old)) => (Some(ns.clone()), old.clone()),
            None => (None, Vec::new()),
        };
        let mut rows = stmt.query(params![ns, old, PAGE_ROWS as i64])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let ns: String = r.get(0)?;
            let old: Vec<u8> = r.get(1)?;
            self.after = Some((ns.clone(), old.clone()));
            self.buf.push_back(RekeyRow {
                ns,
                old: id_from("rekey_map", "old", old)?,
                new: id_from("rekey_map", "new", r.get(2)?)?,
            });
            n += 1;
        }
        self.done = n < PAGE_ROWS;
        Ok(())
    }
}

impl Iterator for RekeyPages<'_, '_> {
    type Item = Result<RekeyRow>;

    fn next(&mut self) -> Option<Result<RekeyRow>> {
        next_row(self)
    }
}

/// The stored objects of one namespace in id order; see [`Snapshot::objects`].
pub struct Objects<'s, 'a> {
    snap: &'s Snapshot<'a>,
    ns: String,
    /// Id of the last object fetched (empty before the first page).
    after: Vec<u8>,
    buf: VecDeque<RawObject>,
    done: bool,
}

impl Paged for Objects<'_, '_> {
    type Row = RawObject;

    fn buffer(&mut self) -> (&mut VecDeque<RawObject>, &mut bool) {
        (&mut self.buf, &mut self.done)
    }

    fn fill(&mut self) -> Result<()> {
        let mut stmt = self.snap.db.conn.prepare_cached(
            "SELECT id, kind, data FROM objects WHERE ns=?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![self.ns, self.after, PAGE_ROWS as i64])?;
        let (mut n, mut bytes) = (0usize, 0usize);
        let mut short = true;
        while let Some(r) = rows.next()? {
            let id = id_from("objects", "id", r.get(0)?)?;
            let data: Vec<u8> = r.get(2)?;
            n += 1;
            bytes += data.len();
            self.after = id.0.to_vec();
            self.buf.push_back(RawObject {
                id,
                kind: r.get(1)?,
                data,
            });
            if n == PAGE_ROWS || bytes >= PAGE_BYTES {
                short = false;
                break;
            }
        }
        self.done = short;
        Ok(())
    }
}

impl Iterator for Objects<'_, '_> {
    type Item = Result<RawObject>;

    fn next(&mut self) -> Option<Result<RawObject>> {
        next_row(self)
    }
}

/// Ids of one namespace's objects in id order; see [`Snapshot::object_ids`].
pub struct ObjectIds<'s, 'a> {
    snap: &'s Snapshot<'a>,
    ns: String,
    after: Vec<u8>,
    buf: VecDeque<ObjectId>,
    done: bool,
}

impl Paged for ObjectIds<'_, '_> {
    type Row = ObjectId;

    fn buffer(&mut self) -> (&mut VecDeque<ObjectId>, &mut bool) {
        (&mut self.buf, &mut self.done)
    }

    fn fill(&mut self) -> Result<()> {
        let mut stmt = self.snap.db.conn.prepare_cached(
            "SELECT id FROM objects WHERE ns=?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let page = ID_PAGE_ROWS;
        let mut rows = stmt.query(params![self.ns, self.after, page as i64])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let id = id_from("objects", "id", r.get(0)?)?;
            self.after = id.0.to_vec();
            self.buf.push_back(id);
            n += 1;
        }
        self.done = n < page;
        Ok(())
    }
}

impl Iterator for ObjectIds<'_, '_> {
    type Item = Result<ObjectId>;

    fn next(&mut self) -> Option<Result<ObjectId>> {
        next_row(self)
    }
}

/// Fold the WAL into the database file of `db` and truncate it, so the file
/// alone holds every committed change (before a restored store is moved into
/// place). Fails when another connection is reading.
pub fn checkpoint(db: &Db) -> Result<()> {
    let busy: i64 = db
        .conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        return Err(Error::Other(
            "the WAL could not be checkpointed: another connection is reading".into(),
        ));
    }
    Ok(())
}

/// Builds a store from raw rows: creates a fresh database and inserts
/// namespaces, objects, refs, reflog and audit entries verbatim, all in one
/// transaction, with fast but non-durable settings until [`RestoreWriter::finish`]
/// (a failed restore throws the whole database away).
pub struct RestoreWriter {
    /// `None` only after `finish`.
    db: Option<Db>,
    dir: PathBuf,
    /// (seq, hash) of the newest audit entry inserted.
    audit_last: Option<(i64, [u8; 32])>,
}

impl RestoreWriter {
    fn db(&self) -> &Db {
        self.db.as_ref().expect("the writer is open until finish")
    }

    /// Create a new store database in `dir` (which must not hold one yet)
    /// with the given store id and creation time, and open its write transaction.
    pub fn create(dir: &Path, store_id: &str, created: &str) -> Result<RestoreWriter> {
        std::fs::create_dir_all(dir)?;
        let db = Db::create(dir, store_id, created)?;
        // The database is thrown away if the restore fails, so no journal and
        // no fsync until `finish`, which switches to WAL + FULL and syncs.
        db.conn.pragma_update(None, "journal_mode", "OFF")?;
        db.conn.pragma_update(None, "synchronous", "OFF")?;
        db.conn
            .pragma_update(None, "cache_size", -RESTORE_CACHE_KIB)?;
        db.conn.execute_batch("BEGIN")?;
        Ok(RestoreWriter {
            db: Some(db),
            dir: dir.to_path_buf(),
            audit_last: None,
        })
    }

    /// Set a `meta` row. `format` must equal this store's schema version and
    /// `audit_head` is derived from the audit rows, so both are checked or skipped.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        match key {
            "format" if value != SCHEMA_VERSION.to_string() => Err(Error::UnsupportedVersion {
                path: self.dir.clone(),
                found: value.to_string(),
                supported: SCHEMA_VERSION,
            }),
            "format" | "audit_head" => Ok(()),
            _ => self.db().set_meta(key, value),
        }
    }

    /// Every namespace row inserted so far, by name.
    pub fn namespaces(&self) -> Result<Vec<NamespaceRow>> {
        let mut stmt = self.db().conn.prepare(
            "SELECT name, created, default_branch, crypto FROM namespaces ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(NamespaceRow {
                name: r.get(0)?,
                created: r.get(1)?,
                default_branch: r.get(2)?,
                crypto: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Insert or replace a namespace row (with its crypto record as it is).
    pub fn put_namespace(&self, row: &NamespaceRow) -> Result<()> {
        self.db().conn.execute(
            "INSERT INTO namespaces(name, created, default_branch, crypto) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET created=excluded.created,
               default_branch=excluded.default_branch, crypto=excluded.crypto",
            params![row.name, row.created, row.default_branch, row.crypto],
        )?;
        Ok(())
    }

    /// Remove a namespace with its objects, refs and reflog.
    pub fn drop_namespace(&self, ns: &str) -> Result<()> {
        self.db().delete_namespace(ns)
    }

    /// Remove the reflog of `ns` (used when a namespace was deleted and
    /// created again between two backups).
    pub fn clear_reflog(&self, ns: &str) -> Result<()> {
        self.db()
            .conn
            .execute("DELETE FROM reflog WHERE ns=?1", [ns])?;
        Ok(())
    }

    /// Insert an object's stored bytes as they are (replacing a row with the same id).
    pub fn put_object(&self, ns: &str, id: &ObjectId, kind: u8, data: &[u8]) -> Result<()> {
        self.db()
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO objects(ns, id, kind, data) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![ns, &id.0[..], kind, data])?;
        Ok(())
    }

    /// Remove an object (it was deleted from the store between two backups).
    pub fn delete_object(&self, ns: &str, id: &ObjectId) -> Result<()> {
        self.db().delete_object(ns, id)
    }

    /// Remove every object of `ns` (the backup chain no longer vouches for them).
    pub fn delete_objects(&self, ns: &str) -> Result<u64> {
        Ok(self
            .db()
            .conn
            .execute("DELETE FROM objects WHERE ns=?1", [ns])? as u64)
    }

    /// A mark for [`RestoreWriter::objects_since`]: where the objects inserted
    /// from now on begin.
    pub fn object_mark(&self) -> Result<i64> {
        Ok(self
            .db()
            .conn
            .query_row("SELECT coalesce(max(rowid), 0) FROM objects", [], |r| {
                r.get(0)
            })?)
    }

    /// Up to `limit` (rowid, id) of the objects of `ns` inserted after
    /// `mark` (and not deleted), in insertion order; page on with the last
    /// rowid as the next mark. Exact as long as nothing was deleted in
    /// between: SQLite gives a new row the largest rowid so far plus one.
    pub fn objects_since(&self, ns: &str, mark: i64, limit: usize) -> Result<Vec<(i64, ObjectId)>> {
        self.db().object_ids_after(ns, mark, limit)
    }

    /// The objects of plaintext namespace `ns` in the store being built, read
    /// (and, when flushed, written) through the store's own object code: a
    /// restore rebuilds trees with it.
    pub fn objects(&self, ns: &str) -> crate::objects::ObjectSet<'_> {
        crate::objects::ObjectSet::new(self.db(), ns)
    }

    /// Remove every ref of `ns`, or of every namespace.
    pub fn clear_refs(&self, ns: Option<&str>) -> Result<()> {
        self.db()
            .conn
            .execute("DELETE FROM refs WHERE ?1 IS NULL OR ns=?1", [ns])?;
        Ok(())
    }

    /// Insert or move a ref.
    pub fn put_ref(&self, row: &RefRow) -> Result<()> {
        self.db().set_ref(&row.ns, &row.name, &row.target)
    }

    /// Remove every `key_usage` and `rekey_map` row of `ns`, or of every namespace.
    pub fn clear_key_state(&self, ns: Option<&str>) -> Result<()> {
        for sql in [
            "DELETE FROM key_usage WHERE ?1 IS NULL OR ns=?1",
            "DELETE FROM rekey_map WHERE ?1 IS NULL OR ns=?1",
        ] {
            self.db().conn.execute(sql, [ns])?;
        }
        Ok(())
    }

    /// Insert a `key_usage` row as it is.
    pub fn put_key_usage(&self, row: &KeyUsageRow) -> Result<()> {
        self.db()
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO key_usage(ns, version, sealed) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![row.ns, row.version, row.sealed as i64])?;
        Ok(())
    }

    /// Insert a `rekey_map` row as it is.
    pub fn put_rekey(&self, row: &RekeyRow) -> Result<()> {
        self.db()
            .conn
            .prepare_cached("INSERT OR REPLACE INTO rekey_map(ns, old, new) VALUES (?1, ?2, ?3)")?
            .execute(params![row.ns, &row.old.0[..], &row.new.0[..]])?;
        Ok(())
    }

    /// The fresh store's tables without a dedicated writer, by name.
    pub fn other_tables(&self) -> Result<Vec<String>> {
        other_tables(self.db())
    }

    /// Remove every row of one of [`RestoreWriter::other_tables`].
    pub fn clear_table(&self, table: &str) -> Result<()> {
        if !other_tables(self.db())?.iter().any(|t| t == table) {
            return Err(Error::Other(format!("no table `{table}` to clear")));
        }
        self.db()
            .conn
            .execute(&format!("DELETE FROM {}", quote(table)), [])?;
        Ok(())
    }

    /// Insert a row read by [`Snapshot::table_rows`]. The table and every
    /// column must exist in this store (a backup from a newer store may hold
    /// tables this one does not know: that is an error naming them).
    pub fn put_row(&self, row: &TableRow) -> Result<()> {
        let known = other_tables(self.db())?;
        if !known.contains(&row.table) {
            return Err(Error::Other(format!(
                "the backup holds table `{}`, which this store does not have (restore with a newer version)",
                row.table
            )));
        }
        let cols = columns(self.db(), &row.table)?;
        if let Some(c) = row.columns.iter().find(|c| !cols.contains(c)) {
            return Err(Error::Other(format!(
                "the backup holds column `{c}` of table `{}`, which this store does not have (restore with a newer version)",
                row.table
            )));
        }
        if row.columns.len() != row.values.len() {
            return Err(Error::Other(format!(
                "a row of table `{}` has {} columns and {} values",
                row.table,
                row.columns.len(),
                row.values.len()
            )));
        }
        let sql = format!(
            "INSERT OR REPLACE INTO {}({}) VALUES ({})",
            quote(&row.table),
            row.columns
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", "),
            (1..=row.values.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.db()
            .conn
            .prepare_cached(&sql)?
            .execute(rusqlite::params_from_iter(row.values.iter()))?;
        Ok(())
    }

    /// Insert a reflog entry with its original sequence number.
    pub fn put_reflog(&self, row: &ReflogRow) -> Result<()> {
        self.db()
            .conn
            .prepare_cached("INSERT INTO reflog(seq, ns, name, old, new, time, actor, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?
            .execute(params![
                row.seq,
                row.ns,
                row.name,
                row.old.map(|o| o.0.to_vec()),
                row.new.map(|o| o.0.to_vec()),
                row.time,
                row.actor,
                row.message
            ])
            .map_err(|e| Error::Other(format!("cannot restore reflog entry #{}: {e}", row.seq)))?;
        Ok(())
    }

    /// Make new reflog entries of the restored store number after `seq` (the
    /// backed-up store's counter), even when its newest entries were deleted.
    pub fn reserve_reflog_seq(&self, seq: i64) -> Result<()> {
        let db = self.db();
        let n = db.conn.execute(
            "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name='reflog'",
            [seq],
        )?;
        if n == 0 && seq > 0 {
            db.conn.execute(
                "INSERT INTO sqlite_sequence(name, seq) VALUES ('reflog', ?1)",
                [seq],
            )?;
        }
        Ok(())
    }

    /// The newest audit entry inserted so far: (seq, hash).
    pub fn audit_last(&self) -> Option<(i64, [u8; 32])> {
        self.audit_last
    }

    /// Append an audit entry verbatim. It must continue the chain: its `seq`
    /// follows the previous entry's and its `prev` is that entry's hash (the
    /// first entry has seq 1 and 32 zero bytes).
    pub fn put_audit(&mut self, row: &AuditRow) -> Result<()> {
        let (want_seq, want_prev) = match self.audit_last {
            Some((s, h)) => (s + 1, h),
            None => (1, [0u8; 32]),
        };
        if row.seq != want_seq {
            return Err(Error::AuditBroken {
                seq: row.seq,
                reason: format!("restored out of order: expected entry #{want_seq} next"),
            });
        }
        if row.prev != want_prev {
            return Err(Error::AuditBroken {
                seq: row.seq,
                reason: "its link to the previous restored entry does not match".into(),
            });
        }
        self.db()
            .conn
            .prepare_cached("INSERT INTO audit(seq, time, actor, action, ns, target, outcome, detail, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")?
            .execute(params![
                row.seq,
                row.time,
                row.actor,
                row.action,
                row.ns,
                row.target,
                row.outcome,
                row.detail,
                &row.prev[..],
                &row.hash[..]
            ])?;
        self.audit_last = Some((row.seq, row.hash));
        Ok(())
    }

    /// Commit everything, check the audit chain (recomputing every hash),
    /// and switch the database to WAL with full sync. Returns the path of the
    /// database file, which is durable once the caller syncs it
    /// ([`crate::writeback`]): a restore checks the store while it syncs.
    pub fn finish(mut self) -> Result<PathBuf> {
        if let Some((seq, hash)) = self.audit_last {
            self.db()
                .set_meta("audit_head", &format!("{seq}:{}", hex::encode(hash)))?;
        }
        self.db().conn.execute_batch("COMMIT")?;
        audit::verify(self.db())?;
        self.db().conn.pragma_update(None, "journal_mode", "WAL")?;
        self.db().conn.pragma_update(None, "synchronous", "FULL")?;
        self.db()
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let path = self.dir.join(DB_FILE);
        drop(self.db.take());
        Ok(path)
    }
}

impl Drop for RestoreWriter {
    fn drop(&mut self) {
        // Only reached without `finish` (which consumes the writer) when the
        // restore failed: leave nothing half-written committed.
        if let Some(db) = &self.db {
            if !db.conn.is_autocommit() {
                let _ = db.conn.execute_batch("ROLLBACK");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn paged_readers_cross_page_boundaries_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("a")).unwrap();
        let n = PAGE_ROWS * 2 + 7;
        let objs = store.objects("default").unwrap();
        for i in 0..n {
            objs.put(
                crate::object::Kind::Commit,
                format!("{{\"n\":{i}}}").as_bytes(),
            )
            .unwrap();
        }
        store.db().write(|_| objs.flush()).unwrap();
        for i in 0..n {
            crate::commands::branch::create_branch(&store, "default", &format!("b{i}"), None)
                .unwrap();
        }
        let snap = Snapshot::begin(store.db()).unwrap();
        let ids: Vec<ObjectId> = snap.objects("default").map(|o| o.unwrap().id).collect();
        assert_eq!(
            ids.len() as u64,
            store.db().object_stats("default").unwrap().0
        );
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "each object once, in id order"
        );
        let seqs: Vec<i64> = snap.reflog_after(0).map(|r| r.unwrap().seq).collect();
        assert_eq!(
            seqs.len(),
            n + 1,
            "every branch creation plus the namespace's root"
        );
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        let audit: Vec<i64> = snap.audit_after(0).map(|r| r.unwrap().seq).collect();
        assert_eq!(audit, (1..=audit.len() as i64).collect::<Vec<_>>());
        assert!(audit.len() > 2 * PAGE_ROWS);
    }

    #[test]
    fn object_ids_match_the_objects_across_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("a")).unwrap();
        let objs = store.objects("default").unwrap();
        for i in 0..ID_PAGE_ROWS * 2 + 3 {
            objs.put(
                crate::object::Kind::Commit,
                format!("{{\"n\":{i}}}").as_bytes(),
            )
            .unwrap();
        }
        store.db().write(|_| objs.flush()).unwrap();
        let snap = Snapshot::begin(store.db()).unwrap();
        let full: Vec<(ObjectId, u8, u64)> = snap
            .objects("default")
            .map(|o| o.map(|o| (o.id, o.kind, o.data.len() as u64)).unwrap())
            .collect();
        let ids: Vec<(ObjectId, u8, u64)> = snap
            .object_ids("default")
            .map(|id| {
                let id = id.unwrap();
                let (kind, len) = snap.object_meta("default", &id).unwrap().unwrap();
                (id, kind, len)
            })
            .collect();
        assert!(full.len() > ID_PAGE_ROWS * 2);
        assert_eq!(ids, full);
        assert!(snap.object_meta("other", &full[0].0).unwrap().is_none());
        let one = snap.object("default", &full[7].0).unwrap().unwrap();
        assert_eq!((one.id, one.kind, one.data.len() as u64), full[7]);
        assert!(snap.object("other", &full[7].0).unwrap().is_none());
        assert_eq!(
            snap.object_count(Some("default")).unwrap(),
            full.len() as u64
        );
        assert_eq!(snap.object_count(None).unwrap(), full.len() as u64);
        let mut visited = Vec::new();
        snap.visit_objects_in_storage_order(|ns, id, kind, data| {
            assert_eq!(ns, "default");
            visited.push((*id, kind, data.len() as u64));
            Ok::<(), Error>(())
        })
        .unwrap();
        visited.sort();
        assert_eq!(visited, full);
    }

    #[test]
    fn snapshot_reads_everything_and_restore_writer_rebuilds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("a")).unwrap();
        store.create_namespace("other").unwrap();
        let snap = Snapshot::begin(store.db()).unwrap();
        let namespaces = snap.namespaces().unwrap();
        assert_eq!(namespaces.len(), 2);
        let refs = snap.refs().unwrap();
        let reflog: Vec<_> = snap.reflog_after(0).collect::<Result<_>>().unwrap();
        let audit: Vec<_> = snap.audit_after(0).collect::<Result<_>>().unwrap();
        assert_eq!(reflog.len(), 2);
        assert_eq!(audit.len(), 3);
        assert_eq!(snap.audit_head().unwrap().unwrap().0, 3);
        let mut objects = Vec::new();
        for ns in &namespaces {
            for o in snap.objects(&ns.name) {
                objects.push((ns.name.clone(), o.unwrap()));
            }
        }
        assert_eq!(objects.len() as u64, snap.object_stats(None).unwrap().0);
        let store_id = snap.store_id().unwrap();
        drop(snap);

        let target = dir.path().join("b");
        let mut w = RestoreWriter::create(&target, &store_id, "2026-01-01T00:00:00.000Z").unwrap();
        for ns in &namespaces {
            w.put_namespace(ns).unwrap();
        }
        for (ns, o) in &objects {
            w.put_object(ns, &o.id, o.kind, &o.data).unwrap();
        }
        for r in &refs {
            w.put_ref(r).unwrap();
        }
        for r in &reflog {
            w.put_reflog(r).unwrap();
        }
        // out of order is refused
        assert!(w.put_audit(&audit[1]).is_err());
        for a in &audit {
            w.put_audit(a).unwrap();
        }
        w.finish().unwrap();
        let restored = Store::open(&target).unwrap();
        assert_eq!(restored.id().unwrap(), store_id);
        assert_eq!(audit::verify(restored.db()).unwrap(), 3);
        let report = crate::commands::fsck::fsck(
            &restored,
            &Default::default(),
            &crate::progress::NoProgress,
        )
        .unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.objects, objects.len() as u64);
    }

    #[test]
    fn other_tables_round_trip_and_unknown_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("a")).unwrap();
        let snap = Snapshot::begin(store.db()).unwrap();
        let tables = snap.other_tables().unwrap();
        assert!(!tables.iter().any(|t| DEDICATED.contains(&t.as_str())));
        drop(snap);
        let w =
            RestoreWriter::create(&dir.path().join("b"), "x", "2026-01-01T00:00:00.000Z").unwrap();
        assert_eq!(w.other_tables().unwrap(), tables);
        let bad = TableRow {
            table: "no_such_table".into(),
            columns: vec!["a".into()],
            values: vec![SqlValue::Integer(1)],
        };
        assert!(w
            .put_row(&bad)
            .unwrap_err()
            .to_string()
            .contains("no_such_table"));
        if let Some(t) = tables.first() {
            let cols = columns(w.db(), t).unwrap();
            let row = TableRow {
                table: t.clone(),
                columns: vec![cols[0].clone(), "\"; DROP TABLE meta; --".into()],
                values: vec![SqlValue::Text("x".into()), SqlValue::Null],
            };
            assert!(w.put_row(&row).is_err(), "unknown columns are refused");
        }
    }

    #[test]
    fn snapshot_does_not_see_later_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(dir.path()).unwrap();
        let other = Store::open(dir.path()).unwrap();
        let snap = Snapshot::begin(store.db()).unwrap();
        let before = snap.namespaces().unwrap().len();
        other.create_namespace("late").unwrap();
        assert_eq!(snap.namespaces().unwrap().len(), before);
        assert_eq!(snap.audit_head().unwrap().unwrap().0, 2);
        drop(snap);
        assert_eq!(
            Snapshot::begin(store.db())
                .unwrap()
                .namespaces()
                .unwrap()
                .len(),
            before + 1
        );
    }
}
