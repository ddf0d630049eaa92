//! The hash-chained audit log.
//!
//! Each entry's hash covers the previous entry's hash and all of its own
//! fields, and the newest hash is also kept in `meta.audit_head`, so editing,
//! deleting or reordering entries (even the last one) is detected by
//! [`verify`]. Entries are written in the same transaction as the change they
//! record. Hash input: `FORMAT.md`.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock;
use crate::error::{Error, Result};
use crate::storage::Db;

/// How an audited operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }

    fn parse(s: &str) -> Outcome {
        match s {
            "success" => Outcome::Success,
            "denied" => Outcome::Denied,
            _ => Outcome::Failure,
        }
    }
}

/// An event to record. Tools build these and pass them to the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub actor: String,
    /// Dotted verb: `commit`, `ref.update`, `ns.create`, `backup.full`, ...
    pub action: String,
    pub ns: Option<String>,
    pub target: Option<String>,
    pub outcome: Outcome,
    /// Free-form JSON object with the specifics.
    pub detail: serde_json::Value,
}

impl Event {
    pub fn new(actor: &str, action: &str) -> Self {
        Event {
            actor: actor.to_string(),
            action: action.to_string(),
            ns: None,
            target: None,
            outcome: Outcome::Success,
            detail: serde_json::json!({}),
        }
    }

    pub fn ns(mut self, ns: &str) -> Self {
        self.ns = Some(ns.to_string());
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A stored audit entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub ns: Option<String>,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub detail: serde_json::Value,
    /// Hex hash of the previous entry (64 zeros for the first).
    pub prev: String,
    /// Hex hash of this entry.
    pub hash: String,
}

const GENESIS: [u8; 32] = [0; 32];

fn entry_hash(prev: &[u8], seq: i64, time: &str, e: &Event, detail: &str) -> [u8; 32] {
    let body = serde_json::json!([
        seq,
        time,
        e.actor,
        e.action,
        e.ns,
        e.target,
        e.outcome.as_str(),
        detail
    ]);
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body.to_string().as_bytes());
    h.finalize().into()
}

/// Append `event`. Call inside the write transaction of the change it records.
pub fn append(db: &Db, event: &Event) -> Result<i64> {
    let last: Option<(i64, Vec<u8>)> = db
        .conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_vec()),
    };
    let time = clock::now();
    let detail = event.detail.to_string();
    let hash = entry_hash(&prev, seq, &time, event, &detail);
    db.conn
        .prepare_cached("INSERT INTO audit(seq, time, actor, action, ns, target, outcome, detail, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")?
        .execute(params![
            seq,
            time,
            event.actor,
            event.action,
            event.ns,
            event.target,
            event.outcome.as_str(),
            detail,
            prev,
            &hash[..]
        ])?;
    db.set_meta("audit_head", &format!("{seq}:{}", hex::encode(hash)))?;
    Ok(seq)
}

/// Append `event` in its own transaction (for failures and denials, which
/// change nothing else).
pub fn record(db: &Db, event: &Event) -> Result<i64> {
    db.write(|db| append(db, event))
}

fn row_to_entry(r: &rusqlite::Row) -> rusqlite::Result<(Entry, String)> {
    let detail: String = r.get(7)?;
    Ok((
        Entry {
            seq: r.get(0)?,
            time: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            ns: r.get(4)?,
            target: r.get(5)?,
            outcome: Outcome::parse(&r.get::<_, String>(6)?),
            detail: serde_json::from_str(&detail)
                .unwrap_or(serde_json::Value::String(detail.clone())),
            prev: hex::encode(r.get::<_, Vec<u8>>(8)?),
            hash: hex::encode(r.get::<_, Vec<u8>>(9)?),
        },
        detail,
    ))
}

const COLUMNS: &str = "seq, time, actor, action, ns, target, outcome, detail, prev, hash";

/// Entries with `time >= since` (all when None), oldest first.
pub fn list(db: &Db, since: Option<&str>) -> Result<Vec<Entry>> {
    let sql = format!("SELECT {COLUMNS} FROM audit WHERE ?1 IS NULL OR time >= ?1 ORDER BY seq");
    let mut stmt = db.conn.prepare(&sql)?;
    let rows = stmt.query_map([since], |r| row_to_entry(r).map(|(e, _)| e))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest entry with this action (and outcome), e.g. the last successful backup.
pub fn last(db: &Db, action_prefix: &str, outcome: Outcome) -> Result<Option<Entry>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM audit WHERE substr(action, 1, ?1) = ?2 AND outcome = ?3 ORDER BY seq DESC LIMIT 1"
    );
    Ok(db
        .conn
        .query_row(
            &sql,
            params![action_prefix.len() as i64, action_prefix, outcome.as_str()],
            |r| row_to_entry(r).map(|(e, _)| e),
        )
        .optional()?)
}

/// Re-check the whole chain; returns the number of entries.
pub fn verify(db: &Db) -> Result<u64> {
    db.read(|db| {
        let mut stmt = db.conn.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        let mut prev = GENESIS.to_vec();
        let mut expect_seq = 1i64;
        let mut n = 0u64;
        while let Some(r) = rows.next()? {
            let (e, detail) = row_to_entry(r)?;
            let broken = |reason: String| Err(Error::AuditBroken { seq: e.seq, reason });
            if e.seq != expect_seq {
                return broken(format!("expected entry #{expect_seq} here: entries were deleted"));
            }
            if hex::decode(&e.prev).unwrap_or_default() != prev {
                return broken("its link to the previous entry does not match".into());
            }
            let ev = Event {
                actor: e.actor.clone(),
                action: e.action.clone(),
                ns: e.ns.clone(),
                target: e.target.clone(),
                outcome: e.outcome,
                detail: serde_json::Value::Null,
            };
            let h = entry_hash(&prev, e.seq, &e.time, &ev, &detail);
            if hex::encode(h) != e.hash {
                return broken("its content does not match its hash: the entry was edited".into());
            }
            prev = h.to_vec();
            expect_seq += 1;
            n += 1;
        }
        let head = db.meta("audit_head")?;
        let expected_head = (n > 0).then(|| format!("{}:{}", n, hex::encode(&prev)));
        if head != expected_head {
            return Err(Error::AuditBroken {
                seq: n as i64 + 1,
                reason: format!(
                    "the log ends at entry #{n} but the recorded head is {}: entries were removed from the end",
                    head.unwrap_or_else(|| "missing".into())
                ),
            });
        }
        Ok(n)
    })
}

/// Entries with this action and outcome (and namespace) at or after `since`.
pub fn count(
    db: &Db,
    action: &str,
    outcome: Outcome,
    ns: Option<&str>,
    since: &str,
) -> Result<u64> {
    Ok(db.conn.query_row(
        "SELECT count(*) FROM audit WHERE action = ?1 AND outcome = ?2 AND (?3 IS NULL OR ns = ?3) AND time >= ?4",
        params![action, outcome.as_str(), ns, since],
        |r| r.get::<_, i64>(0),
    )? as u64)
}
