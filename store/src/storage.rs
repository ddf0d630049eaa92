//! SQLite storage: the one database file of a store, its schema and row-level access.
//!
//! Everything above this module speaks in objects, refs, reflog and audit rows;
//! only this module writes SQL. Layout is documented in `FORMAT.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::lock::StoreLock;
use crate::object::Kind;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "qg.sqlite";
/// Schema version written to `meta.format`.
pub const SCHEMA_VERSION: u32 = 1;
/// How long a writer waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Tables of `qg serve` (API tokens, protected branches). Also run on its own
/// (every statement is `IF NOT EXISTS`) to add them to stores created before
/// they existed: [`Db::ensure_server_tables`].
macro_rules! server_tables {
    () => {
        "
CREATE TABLE IF NOT EXISTS api_tokens(
    id TEXT PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    user TEXT NOT NULL,
    role TEXT NOT NULL,
    ns TEXT,
    created TEXT NOT NULL,
    expires TEXT,
    revoked TEXT
);
CREATE TABLE IF NOT EXISTS protected_branches(
    ns TEXT NOT NULL,
    branch TEXT NOT NULL,
    created TEXT NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY(ns, branch)
) WITHOUT ROWID;
"
    };
}

const SCHEMA: &str = concat!(
    "
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE namespaces(
    name TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    default_branch TEXT NOT NULL,
    crypto BLOB
);
CREATE TABLE objects(
    ns TEXT NOT NULL,
    id BLOB NOT NULL,
    kind INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY(ns, id)
);
CREATE TABLE refs(
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    target BLOB NOT NULL,
    PRIMARY KEY(ns, name)
) WITHOUT ROWID;
CREATE TABLE reflog(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    old BLOB,
    new BLOB,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX reflog_ref ON reflog(ns, name);
CREATE TABLE audit(
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    ns TEXT,
    target TEXT,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE key_usage(
    ns TEXT NOT NULL,
    version INTEGER NOT NULL,
    sealed INTEGER NOT NULL,
    PRIMARY KEY(ns, version)
) WITHOUT ROWID;
CREATE TABLE rekey_map(
    ns TEXT NOT NULL,
    old BLOB NOT NULL,
    new BLOB NOT NULL,
    PRIMARY KEY(ns, old)
) WITHOUT ROWID;
CREATE TABLE leases(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL,
    started TEXT NOT NULL,
    what TEXT NOT NULL
);
",
    server_tables!()
);

/// An error for a row whose content is not what the schema promises.
pub(crate) fn bad_row(table: &str, what: String) -> Error {
    Error::Other(format!("malformed row in table `{table}`: {what}"))
}

/// The object id stored in `column` of a row of `table`.
pub(crate) fn id_from(table: &str, column: &str, bytes: Vec<u8>) -> Result<ObjectId> {
    ObjectId::from_slice(&bytes).ok_or_else(|| {
        bad_row(
            table,
            format!("`{column}` holds {} bytes, not a 32-byte id", bytes.len()),
        )
    })
}

/// One row of `objects`, as [`Db::scan_objects`] reads it: rowid, id, kind,
/// stored bytes.
pub type StoredObject = (i64, ObjectId, u8, Vec<u8>);

/// An open database connection with the store's pragmas applied.
pub struct Db {
    pub(crate) conn: Connection,
    path: PathBuf,
    /// The store lock this handle holds (none for a file being rebuilt).
    lock: Option<StoreLock>,
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Keep the WAL file when the last connection closes: deleting it on every
    // exit and re-creating it in the next process costs each CLI command two
    // extra fsyncs. The close still checkpoints, so a closed store is whole
    // in qg.sqlite (what `cp` of a closed store expects).
    let mut persist: std::ffi::c_int = 1;
    // SAFETY: a file-control call on this open connection's main database with
    // a pointer to a live int, as SQLITE_FCNTL_PERSIST_WAL documents.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut persist as *mut std::ffi::c_int).cast(),
        );
    }
    // ...but not its size: a persisted WAL is cut back to this after checkpoints.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // WAL lets readers run beside the single writer; FULL sync makes an
    // acknowledged commit survive power loss, not only a process kill.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.pragma_update(None, "cache_size", -65536)?;
    Ok(())
}

/// Turn off SQLite's memory statistics, for a process that runs connections
/// on several threads at once (a key rotation reads the old file on one
/// while it writes the new on another): the statistics take one
/// process-wide mutex on every allocation, and the two spent much of their
/// time waiting on it. Nothing here reads them. SQLite accepts this only
/// before it initialises (later it refuses, and nothing changes).
///
/// # Safety
/// No other thread may be using SQLite meanwhile (call it at the start of
/// `main`, before any connection is opened).
pub unsafe fn disable_sqlite_memory_statistics() {
    // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int argument; the caller
    // guarantees that no other thread uses SQLite during the call.
    unsafe {
        rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int);
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Remove the WAL and shared-memory files of the database at `path`.
fn remove_wal_files(path: &Path) -> std::io::Result<()> {
    for ext in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        remove_if_present(Path::new(&p))?;
    }
    Ok(())
}

impl Db {
    /// Create a new database at `dir/qg.sqlite`. The file appears complete or not at all.
    pub fn create(dir: &Path, store_id: &str, now: &str) -> Result<Db> {
        let final_path = dir.join(DB_FILE);
        if final_path.exists() {
            return Err(Error::AlreadyExists {
                path: dir.to_path_buf(),
            });
        }
        let tmp = dir.join(format!(".{DB_FILE}.init-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        {
            let conn = Connection::open(&tmp)?;
            conn.execute_batch("PRAGMA journal_mode=DELETE;")?;
            conn.execute_batch("BEGIN")?;
            conn.execute_batch(SCHEMA)?;
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('format', ?1), ('store_id', ?2), ('created', ?3)",
                params![SCHEMA_VERSION.to_string(), store_id, now],
            )?;
            conn.execute_batch("COMMIT")?;
        }
        // rename is atomic: a crash leaves either no store or a whole one.
        if final_path.exists() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::AlreadyExists {
                path: dir.to_path_buf(),
            });
        }
        std::fs::rename(&tmp, &final_path)?;
        Db::open(dir)
    }

    /// Open the database of the store in `dir`.
    pub fn open(dir: &Path) -> Result<Db> {
        if !dir.exists() {
            return Err(Error::NoStore {
                path: dir.to_path_buf(),
            });
        }
        if !dir.is_dir() {
            return Err(Error::NotAStore {
                path: dir.to_path_buf(),
                reason: "it is not a directory".into(),
            });
        }
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(Error::NotAStore {
                path: dir.to_path_buf(),
                reason: format!("it has no {DB_FILE}"),
            });
        }
        // before the database: a rebuild may be about to replace it
        let lock = StoreLock::shared(dir, BUSY_TIMEOUT)?;
        let conn = Self::connect(dir, &path)?;
        Ok(Db {
            conn,
            path,
            lock: Some(lock),
        })
    }

    /// Open and check the store database at `path` (in `dir`).
    fn connect(dir: &Path, path: &Path) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::NotAStore {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        configure(&conn).map_err(|e| Error::NotAStore {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let format: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key='format'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| Error::NotAStore {
                path: dir.to_path_buf(),
                reason: format!("{DB_FILE} is not a QuadGit database ({e})"),
            })?;
        match format {
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(Error::UnsupportedVersion {
                    path: dir.to_path_buf(),
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            None => {
                return Err(Error::NotAStore {
                    path: dir.to_path_buf(),
                    reason: "its database has no format marker".into(),
                })
            }
        }
        Ok(conn)
    }

    /// Another connection to this database, for a thread that reads all of
    /// it beside the one using this handle, under this handle's exclusive
    /// lock ([`Db::lock_exclusive`]): it takes no store lock of its own and
    /// must not outlive the lock. It reads through a memory map (no copy per
    /// page; SQLite maps at most its limit, 2 GiB, and reads the rest as
    /// usual), which is safe only because no other process may change the
    /// file meanwhile (a file cut short under a map faults the reader).
    pub(crate) fn exclusive_reader(&self) -> Result<Db> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let conn = Self::connect(dir, &self.path)?;
        conn.pragma_update(None, "mmap_size", 1i64 << 40)?;
        Ok(Db {
            conn,
            path: self.path.clone(),
            lock: None,
        })
    }

    /// Make this the only open handle of the store: fails while another
    /// process or handle has it open ([`Error::InUse`]). For jobs that
    /// replace the database file ([`Db::replace_with`]).
    pub fn lock_exclusive(&self) -> Result<()> {
        match &self.lock {
            Some(l) => l.exclusive(),
            None => Ok(()),
        }
    }

    /// Let other handles in again after [`Db::lock_exclusive`].
    pub fn unlock_exclusive(&self) -> Result<()> {
        match &self.lock {
            Some(l) => l.shared_again(),
            None => Ok(()),
        }
    }

    /// A new database file at `path` holding a copy of this one, for a job
    /// that rebuilds the store: the same schema and every row, except the
    /// objects of namespace `without_objects_of` (the job writes its own).
    /// The copy is written without a journal or syncs (a crash leaves a file
    /// that is simply discarded) until [`Db::replace_with`] syncs it.
    pub fn copy_into(&self, path: &Path, without_objects_of: Option<&str>) -> Result<Db> {
        remove_if_present(path)?;
        // a killed run's, if it died as the file was being closed
        remove_wal_files(path)?;
        let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "page_size", page_size)?;
        conn.pragma_update(None, "journal_mode", "OFF")?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.pragma_update(None, "cache_size", -65536)?;
        // tables first (by rowid, as created), then their indexes
        let schema: Vec<(String, String, String)> = {
            let mut stmt = self.conn.prepare(
                "SELECT type, name, sql FROM sqlite_master
                 WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'
                 ORDER BY type = 'index', rowid",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        conn.execute_batch("BEGIN")?;
        for (_, _, sql) in &schema {
            conn.execute_batch(sql)?;
        }
        conn.execute_batch("COMMIT")?;
        let src = self
            .path
            .to_str()
            .ok_or_else(|| Error::Other(format!("{} is not valid UTF-8", self.path.display())))?;
        conn.execute("ATTACH DATABASE ?1 AS src", [src])?;
        conn.execute_batch("BEGIN")?;
        for (kind, name, _) in &schema {
            if kind != "table" {
                continue;
            }
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            if let (true, Some(ns)) = (name == "objects", without_objects_of) {
                // The other namespaces' objects, in storage order (reads
                // and rebuilds rely on it: leaves before their parents),
                // found through the (ns, id) index rather than by reading
                // every object: the rowid list is sorted, so is the copy.
                conn.execute(
                    "INSERT INTO main.objects SELECT * FROM src.objects WHERE rowid IN (
                         SELECT rowid FROM src.objects WHERE ns < ?1
                         UNION ALL SELECT rowid FROM src.objects WHERE ns > ?1)
                     ORDER BY rowid",
                    [ns],
                )?;
            } else {
                conn.execute_batch(&format!(
                    "INSERT INTO main.{quoted} SELECT * FROM src.{quoted}"
                ))?;
            }
        }
        let has_sequence: bool = conn.query_row(
            "SELECT count(*) > 0 FROM src.sqlite_master WHERE name = 'sqlite_sequence'",
            [],
            |r| r.get(0),
        )?;
        if has_sequence {
            // AUTOINCREMENT counters go on where they were, not at the largest row
            conn.execute_batch(
                "DELETE FROM main.sqlite_sequence;
                 INSERT INTO main.sqlite_sequence SELECT * FROM src.sqlite_sequence;",
            )?;
        }
        conn.execute_batch("COMMIT; DETACH DATABASE src;")?;
        Ok(Db {
            conn,
            path: path.to_path_buf(),
            lock: None,
        })
    }

    /// Put `new` (a file from [`Db::copy_into`], finished) in place of this
    /// database, which must be locked exclusively: `new` is synced and
    /// renamed over the old file, which is gone with its WAL. A crash before
    /// the rename leaves the old file as it was, after it the new one.
    pub fn replace_with(&mut self, new: Db) -> Result<()> {
        let Db { conn, path, .. } = new;
        // in WAL mode already, as the store's files are: opening it under
        // its new name then needs no switch through a rollback journal
        // (closing the last connection removes its empty WAL again)
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.close().map_err(|(_, e)| e)?;
        std::fs::File::open(&path)?.sync_all()?;
        // everything of the old file into it, so its WAL holds nothing
        self.checkpoint_truncate()?;
        let old = std::mem::replace(&mut self.conn, Connection::open_in_memory()?);
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        // With a handle on the old file open, the rename does not free its
        // blocks (some milliseconds for a file of tens of megabytes): that
        // happens when the handle closes, on a thread, beside the reconnect.
        let old_file = std::fs::File::open(&self.path).ok();
        let swapped = (|| -> Result<()> {
            old.close().map_err(|(_, e)| e)?;
            remove_wal_files(&self.path)?;
            // the old WAL must be gone for good before the new file takes its
            // name, or a power cut could leave it to be replayed onto it
            crate::writeback::sync_dir(&dir)?;
            std::fs::rename(&path, &self.path)?;
            crate::writeback::sync_dir(&dir)?;
            Ok(())
        })();
        // (after a failed swap the handle is on the file about to be
        // reopened, and closing it would drop that connection's POSIX
        // locks: it is closed first, here)
        let freeing = match swapped {
            Ok(()) => old_file.map(|f| std::thread::spawn(move || drop(f))),
            Err(_) => {
                drop(old_file);
                None
            }
        };
        // this handle goes on with whichever file is in place: the new one,
        // or the old one when the swap failed before the rename
        let reconnected = Self::connect(&dir, &self.path);
        if let Some(freeing) = freeing {
            let _ = freeing.join(); // dropping a file handle does not fail
        }
        match (reconnected, swapped) {
            (Ok(conn), swapped) => {
                self.conn = conn;
                swapped
            }
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(swap)) => Err(Error::Other(format!(
                "{swap}; and reopening {} failed: {e}",
                self.path.display()
            ))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` in an IMMEDIATE transaction (takes the write lock up front), committing on Ok.
    pub fn write<T>(&self, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(v),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(e.into())
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Run `f` in a read transaction: one consistent snapshot of the store.
    pub fn read<T>(&self, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
        if !self.conn.is_autocommit() {
            return f(self);
        }
        self.conn.execute_batch("BEGIN DEFERRED")?;
        let out = f(self);
        let _ = self.conn.execute_batch("COMMIT");
        out
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key=?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value=excluded.value")?
            .execute([key, value])?;
        Ok(())
    }

    // ---- objects ----

    pub fn get_object(&self, ns: &str, id: &ObjectId) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT data FROM objects WHERE ns=?1 AND id=?2")?
            .query_row(params![ns, &id.0[..]], |r| r.get(0))
            .optional()?)
    }

    pub fn has_object(&self, ns: &str, id: &ObjectId) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM objects WHERE ns=?1 AND id=?2")?
            .query_row(params![ns, &id.0[..]], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Store an object; false when it was already there (content addressing).
    pub fn put_object(&self, ns: &str, id: &ObjectId, kind: Kind, data: &[u8]) -> Result<bool> {
        Ok(self.put_objects(ns, [(id, kind, data)])?.0 == 1)
    }

    /// Store framed objects, one statement for all. Returns (objects,
    /// bytes) written, counting only new ones.
    pub fn put_objects<'b>(
        &self,
        ns: &str,
        objects: impl IntoIterator<Item = (&'b ObjectId, Kind, &'b [u8])>,
    ) -> Result<(u64, u64)> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO objects(ns, id, kind, data) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut written = (0, 0);
        for (id, kind, data) in objects {
            if stmt.execute(params![ns, &id.0[..], kind as u8, data])? == 1 {
                written.0 += 1;
                written.1 += data.len() as u64;
            }
        }
        Ok(written)
    }

    pub fn delete_object(&self, ns: &str, id: &ObjectId) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM objects WHERE ns=?1 AND id=?2")?
            .execute(params![ns, &id.0[..]])?;
        Ok(())
    }

    /// Ids of every object of `ns` (with their kind byte), in id order.
    pub fn object_ids(&self, ns: &str) -> Result<Vec<(ObjectId, u8)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, kind FROM objects WHERE ns=?1 ORDER BY id")?;
        let rows = stmt.query_map([ns], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u8>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind) = row?;
            if let Some(id) = ObjectId::from_slice(&id) {
                out.push((id, kind));
            }
        }
        Ok(out)
    }

    /// Commit ids of `ns` whose hex form starts with `prefix` (at most `limit`).
    pub fn commits_with_prefix(
        &self,
        ns: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<ObjectId>> {
        // Compare on the hex text: SQLite's hex() of the id blob.
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM objects WHERE ns=?1 AND kind=?2 AND substr(lower(hex(id)), 1, ?3) = ?4 LIMIT ?5",
        )?;
        let rows = stmt.query_map(
            params![
                ns,
                Kind::Commit as u8,
                prefix.len() as i64,
                prefix,
                limit as i64
            ],
            |r| r.get::<_, Vec<u8>>(0),
        )?;
        let mut out = Vec::new();
        for row in rows {
            if let Some(id) = ObjectId::from_slice(&row?) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// How many objects `ns` has (cheaper than [`Db::object_stats`], which
    /// reads every object to add up their sizes).
    pub fn count_objects(&self, ns: &str) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM objects WHERE ns=?1", [ns], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// Up to `limit` objects of `ns` after rowid `after`, in storage order.
    /// Page on with the last rowid.
    pub fn scan_objects(&self, ns: &str, after: i64, limit: usize) -> Result<Vec<StoredObject>> {
        let mut stmt = self.conn.prepare_cached(
            // `+ns`, here and below: walk the table in rowid order, not the
            // (ns, id) index (which would find and sort every row of `ns`
            // for each page)
            "SELECT rowid, id, kind, data FROM objects WHERE rowid > ?1 AND +ns = ?2 ORDER BY rowid LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after, ns, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (rowid, id, kind, data) = row?;
            out.push((rowid, id_from("objects", "id", id)?, kind, data));
        }
        Ok(out)
    }

    /// [`Db::scan_objects`] without the bytes: (rowid, id).
    pub fn object_ids_after(
        &self,
        ns: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, ObjectId)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, id FROM objects WHERE rowid > ?1 AND +ns = ?2 ORDER BY rowid LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after, ns, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (rowid, id) = row?;
            out.push((rowid, id_from("objects", "id", id)?));
        }
        Ok(out)
    }

    /// (count, total stored bytes) of the objects of `ns`.
    pub fn object_stats(&self, ns: &str) -> Result<(u64, u64)> {
        Ok(self.conn.query_row(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM objects WHERE ns=?1",
            [ns],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    // ---- namespaces ----

    pub fn namespace_default_branch(&self, ns: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT default_branch FROM namespaces WHERE name=?1")?
            .query_row([ns], |r| r.get(0))
            .optional()?)
    }

    pub fn insert_namespace(&self, ns: &str, created: &str, default_branch: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO namespaces(name, created, default_branch) VALUES (?1, ?2, ?3)",
            params![ns, created, default_branch],
        )?;
        Ok(())
    }

    /// The namespace's `sys:crypto` record (None: plaintext namespace).
    pub fn crypto_record(&self, ns: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT crypto FROM namespaces WHERE name=?1")?
            .query_row([ns], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()?
            .flatten())
    }

    pub fn set_crypto_record(&self, ns: &str, record: Option<&[u8]>) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE namespaces SET crypto=?2 WHERE name=?1")?
            .execute(params![ns, record])?;
        Ok(())
    }

    /// Objects sealed so far under each key version of `ns`.
    pub fn key_usage(&self, ns: &str) -> Result<Vec<(u32, u64)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT version, sealed FROM key_usage WHERE ns=?1 ORDER BY version")?;
        let rows = stmt.query_map([ns], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Count `n` more objects sealed under `version`; returns the new total.
    pub fn add_key_usage(&self, ns: &str, version: u32, n: u64) -> Result<u64> {
        self.conn
            .prepare_cached("INSERT INTO key_usage(ns, version, sealed) VALUES (?1, ?2, ?3) ON CONFLICT(ns, version) DO UPDATE SET sealed = sealed + excluded.sealed")?
            .execute(params![ns, version, n as i64])?;
        Ok(self
            .conn
            .prepare_cached("SELECT sealed FROM key_usage WHERE ns=?1 AND version=?2")?
            .query_row(params![ns, version], |r| r.get::<_, i64>(0))? as u64)
    }

    pub fn delete_key_usage(&self, ns: &str, version: u32) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM key_usage WHERE ns=?1 AND version=?2")?
            .execute(params![ns, version])?;
        Ok(())
    }

    // ---- re-encryption bookkeeping ----

    pub fn clear_rekey_map(&self, ns: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM rekey_map WHERE ns=?1", [ns])?;
        Ok(())
    }

    /// Rewrite every ref and reflog target of `ns` through `map` (ids not in it stay).
    #[allow(clippy::type_complexity)]
    pub fn remap_refs(&self, ns: &str, map: &crate::id::IdMap<ObjectId>) -> Result<()> {
        for (name, target) in self.refs(ns, "")? {
            if let Some(new) = map.get(&target) {
                self.set_ref(ns, &name, new)?;
            }
        }
        let rows: Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT seq, old, new FROM reflog WHERE ns=?1")?;
            let rows = stmt.query_map([ns], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let remap = |v: Option<Vec<u8>>| -> Option<Vec<u8>> {
            v.map(
                |b| match ObjectId::from_slice(&b).and_then(|id| map.get(&id)) {
                    Some(n) => n.0.to_vec(),
                    None => b,
                },
            )
        };
        let mut upd = self
            .conn
            .prepare("UPDATE reflog SET old=?2, new=?3 WHERE seq=?1")?;
        for (seq, old, new) in rows {
            upd.execute(params![seq, remap(old), remap(new)])?;
        }
        Ok(())
    }

    /// Copy the WAL into the database and truncate it to zero bytes.
    pub fn checkpoint_truncate(&self) -> Result<()> {
        let (busy, _, _): (i64, i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        if busy != 0 {
            return Err(Error::Other(
                "the WAL could not be checkpointed because another connection is reading; retry when the store is idle".into(),
            ));
        }
        Ok(())
    }

    pub fn delete_namespace(&self, ns: &str) -> Result<()> {
        for sql in [
            "DELETE FROM key_usage WHERE ns=?1",
            "DELETE FROM rekey_map WHERE ns=?1",
            "DELETE FROM objects WHERE ns=?1",
            "DELETE FROM refs WHERE ns=?1",
            "DELETE FROM reflog WHERE ns=?1",
            "DELETE FROM protected_branches WHERE ns=?1",
            "DELETE FROM namespaces WHERE name=?1",
        ] {
            self.conn.execute(sql, [ns])?;
        }
        // tokens scoped to the namespace must not carry over to a namesake created later
        self.conn.execute(
            "UPDATE api_tokens SET revoked=?2 WHERE ns=?1 AND revoked IS NULL",
            params![ns, crate::clock::now()],
        )?;
        Ok(())
    }

    /// (name, created) of every namespace, by name.
    pub fn namespaces(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, created FROM namespaces ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- refs ----

    pub fn get_ref(&self, ns: &str, name: &str) -> Result<Option<ObjectId>> {
        let v: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT target FROM refs WHERE ns=?1 AND name=?2")?
            .query_row([ns, name], |r| r.get(0))
            .optional()?;
        Ok(v.and_then(|b| ObjectId::from_slice(&b)))
    }

    /// All refs of `ns` whose full name starts with `prefix`, by name.
    pub fn refs(&self, ns: &str, prefix: &str) -> Result<Vec<(String, ObjectId)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, target FROM refs WHERE ns=?1 AND substr(name, 1, ?2)=?3 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![ns, prefix.len() as i64, prefix], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, target) = row?;
            if let Some(id) = ObjectId::from_slice(&target) {
                out.push((name, id));
            }
        }
        Ok(out)
    }

    pub fn set_ref(&self, ns: &str, name: &str, target: &ObjectId) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO refs(ns, name, target) VALUES (?1, ?2, ?3) ON CONFLICT(ns, name) DO UPDATE SET target=excluded.target")?
            .execute(params![ns, name, &target.0[..]])?;
        Ok(())
    }

    pub fn delete_ref(&self, ns: &str, name: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM refs WHERE ns=?1 AND name=?2")?
            .execute([ns, name])?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn append_reflog(
        &self,
        ns: &str,
        name: &str,
        old: Option<&ObjectId>,
        new: Option<&ObjectId>,
        time: &str,
        actor: &str,
        message: &str,
    ) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO reflog(ns, name, old, new, time, actor, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
            .execute(params![
                ns,
                name,
                old.map(|o| o.0.to_vec()),
                new.map(|o| o.0.to_vec()),
                time,
                actor,
                message
            ])?;
        Ok(())
    }

    /// Every commit id any reflog entry of `ns` mentions.
    pub fn reflog_targets(&self, ns: &str) -> Result<Vec<ObjectId>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT old, new FROM reflog WHERE ns=?1")?;
        let rows = stmt.query_map([ns], |r| {
            Ok((
                r.get::<_, Option<Vec<u8>>>(0)?,
                r.get::<_, Option<Vec<u8>>>(1)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (a, b) = row?;
            out.extend(a.and_then(|v| ObjectId::from_slice(&v)));
            out.extend(b.and_then(|v| ObjectId::from_slice(&v)));
        }
        Ok(out)
    }

    /// Reflog of one ref, newest first.
    pub fn reflog(&self, ns: &str, name: &str) -> Result<Vec<ReflogEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, old, new, time, actor, message FROM reflog WHERE ns=?1 AND name=?2 ORDER BY seq DESC",
        )?;
        let rows = stmt.query_map([ns, name], |r| {
            Ok(ReflogEntry {
                seq: r.get(0)?,
                old: r
                    .get::<_, Option<Vec<u8>>>(1)?
                    .and_then(|v| ObjectId::from_slice(&v)),
                new: r
                    .get::<_, Option<Vec<u8>>>(2)?
                    .and_then(|v| ObjectId::from_slice(&v)),
                time: r.get(3)?,
                actor: r.get(4)?,
                message: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- leases: long writers announce themselves so `gc` keeps their objects ----

    pub fn take_lease(&self, what: &str, now: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO leases(pid, started, what) VALUES (?1, ?2, ?3)",
            params![std::process::id(), now, what],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn drop_lease(&self, id: i64) -> Result<()> {
        self.conn.execute("DELETE FROM leases WHERE id=?1", [id])?;
        Ok(())
    }

    /// Leases of live processes; leases of dead ones are removed.
    pub fn live_leases(&self) -> Result<Vec<(u32, String)>> {
        let rows: Vec<(i64, u32, String)> = {
            let mut stmt = self.conn.prepare("SELECT id, pid, what FROM leases")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut live = Vec::new();
        for (id, pid, what) in rows {
            if Path::new(&format!("/proc/{pid}")).exists() && pid != std::process::id() {
                live.push((pid, what));
            } else {
                self.drop_lease(id)?;
            }
        }
        Ok(live)
    }

    /// Limit this connection's page cache to `kib` KiB. A job that reads
    /// every page once gains nothing from the default 64 MiB, and would hold
    /// all of it.
    pub fn set_cache_kib(&self, kib: i64) -> Result<()> {
        Ok(self.conn.pragma_update(None, "cache_size", -kib)?)
    }

    /// SQLite's own integrity check ("ok" when sound).
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("PRAGMA quick_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- `qg serve`: API tokens, protected branches, statistics ----

    /// Add the server's tables to a store created before they existed (idempotent).
    pub fn ensure_server_tables(&self) -> Result<()> {
        let missing: i64 = self.conn.query_row(
            "SELECT 2 - count(*) FROM sqlite_master WHERE type='table' AND name IN ('api_tokens', 'protected_branches')",
            [],
            |r| r.get(0),
        )?;
        if missing > 0 {
            self.conn.execute_batch(server_tables!())?;
        }
        Ok(())
    }

    /// Whether the server's tables exist (the store is migrated for `qg serve`).
    pub fn has_server_tables(&self) -> Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN ('api_tokens', 'protected_branches')",
            [],
            |r| r.get(0),
        )?;
        Ok(n == 2)
    }

    pub fn insert_api_token(&self, t: &ApiTokenRow, hash: &[u8; 32]) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO api_tokens(id, hash, user, role, ns, created, expires, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?
            .execute(params![t.id, &hash[..], t.user, t.role, t.ns, t.created, t.expires, t.revoked])?;
        Ok(())
    }

    /// The token whose SHA-256 is `hash` (revoked and expired ones included).
    pub fn api_token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiTokenRow>> {
        Ok(self
            .conn
            .prepare_cached("SELECT id, user, role, ns, created, expires, revoked FROM api_tokens WHERE hash=?1")?
            .query_row([&hash[..]], ApiTokenRow::from_row)
            .optional()?)
    }

    /// Every token (never their hashes), oldest first.
    pub fn api_tokens(&self) -> Result<Vec<ApiTokenRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, user, role, ns, created, expires, revoked FROM api_tokens ORDER BY created, id",
        )?;
        let rows = stmt.query_map([], ApiTokenRow::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Mark a token revoked; false when there is no such live token.
    pub fn revoke_api_token(&self, id: &str, now: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("UPDATE api_tokens SET revoked=?2 WHERE id=?1 AND revoked IS NULL")?
            .execute([id, now])?
            > 0)
    }

    /// Protect a branch; false when it already was.
    pub fn protect_branch(&self, ns: &str, branch: &str, now: &str, actor: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO protected_branches(ns, branch, created, actor) VALUES (?1, ?2, ?3, ?4)")?
            .execute([ns, branch, now, actor])?
            > 0)
    }

    /// Lift a branch's protection; false when it was not protected.
    pub fn unprotect_branch(&self, ns: &str, branch: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM protected_branches WHERE ns=?1 AND branch=?2")?
            .execute([ns, branch])?
            > 0)
    }

    pub fn is_protected(&self, ns: &str, branch: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM protected_branches WHERE ns=?1 AND branch=?2")?
            .query_row([ns, branch], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Protected branch names of `ns`, by name.
    pub fn protected_branches(&self, ns: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT branch FROM protected_branches WHERE ns=?1 ORDER BY branch")?;
        let rows = stmt.query_map([ns], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of objects in every namespace.
    pub fn object_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM objects", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// SQLite page cache (hits, misses) of this connection since the last call
    /// with `reset` (or since it opened).
    pub fn cache_stats(&self, reset: bool) -> (u64, u64) {
        let mut out = [0u64; 2];
        for (i, op) in [
            rusqlite::ffi::SQLITE_DBSTATUS_CACHE_HIT,
            rusqlite::ffi::SQLITE_DBSTATUS_CACHE_MISS,
        ]
        .into_iter()
        .enumerate()
        {
            let (mut cur, mut high) = (0, 0);
            // SAFETY: the handle is valid for the connection's lifetime; sqlite3_db_status
            // only reads counters of this connection (which no other thread uses).
            let rc = unsafe {
                rusqlite::ffi::sqlite3_db_status(
                    self.conn.handle(),
                    op,
                    &mut cur,
                    &mut high,
                    reset as i32,
                )
            };
            if rc == rusqlite::ffi::SQLITE_OK {
                out[i] = cur.max(0) as u64;
            }
        }
        (out[0], out[1])
    }
}

/// One API token of `qg serve` as stored (the token itself is never stored,
/// only its SHA-256); also what the API lists.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = TokenInfo)]
pub struct ApiTokenRow {
    /// Public id: names the token in listings, audit entries and revocation.
    pub id: String,
    pub user: String,
    /// `reader`, `writer`, `maintainer` or `admin`.
    pub role: String,
    /// The namespace it is limited to (None: every namespace).
    pub ns: Option<String>,
    pub created: String,
    pub expires: Option<String>,
    pub revoked: Option<String>,
}

impl ApiTokenRow {
    fn from_row(r: &rusqlite::Row) -> rusqlite::Result<ApiTokenRow> {
        Ok(ApiTokenRow {
            id: r.get(0)?,
            user: r.get(1)?,
            role: r.get(2)?,
            ns: r.get(3)?,
            created: r.get(4)?,
            expires: r.get(5)?,
            revoked: r.get(6)?,
        })
    }
}

/// One move of a ref.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReflogEntry {
    pub seq: i64,
    pub old: Option<ObjectId>,
    pub new: Option<ObjectId>,
    pub time: String,
    pub actor: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> ObjectId {
        ObjectId([i; 32])
    }

    #[test]
    fn a_copy_without_one_namespaces_objects_replaces_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::create(dir.path(), "test", "now").unwrap();
        db.write(|db| {
            db.put_object("a", &id(1), Kind::Node, b"old a")?;
            db.put_object("b", &id(2), Kind::Node, b"b stays")?;
            // other namespaces keep their storage order, not id order
            db.put_object("c", &id(9), Kind::Node, b"c first")?;
            db.put_object("c", &id(8), Kind::Node, b"c second")?;
            db.put_object("0", &id(7), Kind::Node, b"0 stays")?;
            db.set_ref("b", "heads/main", &id(2))?;
            // an AUTOINCREMENT counter past the largest row
            let lease = db.take_lease("x", "now")?;
            db.take_lease("y", "now")?;
            db.drop_lease(lease + 1)
        })
        .unwrap();
        // another handle: no exclusive lock while it is open
        let other = Db::open(dir.path()).unwrap();
        assert!(matches!(db.lock_exclusive(), Err(Error::InUse { .. })));
        drop(other);
        db.lock_exclusive().unwrap();

        let scratch = dir.path().join("scratch.sqlite");
        let new = db.copy_into(&scratch, Some("a")).unwrap();
        new.write(|n| n.put_object("a", &id(3), Kind::Node, b"new a").map(|_| ()))
            .unwrap();
        // the live database is untouched until the swap
        assert!(db.get_object("a", &id(1)).unwrap().is_some());
        db.replace_with(new).unwrap();
        assert!(!scratch.exists());
        assert_eq!(db.get_object("a", &id(1)).unwrap(), None);
        assert_eq!(db.get_object("a", &id(3)).unwrap().unwrap(), b"new a");
        assert_eq!(db.get_object("b", &id(2)).unwrap().unwrap(), b"b stays");
        assert_eq!(db.get_object("0", &id(7)).unwrap().unwrap(), b"0 stays");
        let order: Vec<ObjectId> = db
            .object_ids_after("c", 0, 10)
            .unwrap()
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        assert_eq!(order, vec![id(9), id(8)]);
        assert_eq!(
            db.refs("b", "").unwrap(),
            vec![("heads/main".to_string(), id(2))]
        );
        assert_eq!(db.meta("store_id").unwrap().as_deref(), Some("test"));
        let next = db.write(|db| db.take_lease("z", "now")).unwrap();
        assert_eq!(next, 3, "the lease counter goes on where it was");
        db.unlock_exclusive().unwrap();
        // a new handle sees the new file
        let again = Db::open(dir.path()).unwrap();
        assert_eq!(again.get_object("a", &id(3)).unwrap().unwrap(), b"new a");
        assert!(again.integrity_check().unwrap() == vec!["ok".to_string()]);
    }
}
