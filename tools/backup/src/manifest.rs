//! A backup's manifest: the trailer record inside its stream, and the
//! `<id>.manifest.json` file beside it (FORMAT.md, "Manifest").
//!
//! Both are parsed strictly: every key the format version defines must be
//! there and no other, so a changed or damaged manifest is an error naming
//! the field, never a default. [`Manifest::differences`] names each field in
//! which a manifest file and the trailer it describes disagree, and
//! [`Manifest::check_times`] ties the times to each other and to the id.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::format::{readable, BackupKind};
use crate::keys::EncryptionInfo;

/// Where a record starts: byte offset and record index.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub offset: u64,
    pub record: u64,
}

/// What a backup holds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub namespaces: u64,
    pub refs: u64,
    pub reflog: u64,
    pub audit: u64,
    pub hooks: u64,
    pub objects: u64,
    /// Stored bytes of the objects (as framed in the store).
    pub object_bytes: u64,
    /// Objects of the parent chain that the store no longer has.
    pub deleted: u64,
    /// Rows of the store's other tables (API tokens, protected branches, ...).
    pub rows: u64,
    /// Delta records (format 2).
    #[serde(default)]
    pub deltas: u64,
    /// New tree nodes the delta records rebuild instead of carrying them.
    #[serde(default)]
    pub delta_nodes: u64,
    /// Stored bytes of those nodes (what the deltas replace).
    #[serde(default)]
    pub delta_node_bytes: u64,
    /// Reset records (format 2).
    #[serde(default)]
    pub resets: u64,
    /// Records before the trailer.
    pub records: u64,
}

impl Counts {
    /// The record tallies a reader saw, in the order the check reports them.
    pub fn tallies(&self) -> [u64; 10] {
        [
            self.namespaces,
            self.refs,
            self.reflog,
            self.audit,
            self.hooks,
            self.rows,
            self.objects,
            self.deleted,
            self.deltas,
            self.resets,
        ]
    }

    /// Fail, naming `backup`, when a stream's trailer (`self`) disagrees with
    /// the records read before it (`seen`).
    pub fn check_seen(&self, seen: [u64; 10], backup: &str) -> Result<()> {
        let said = self.tallies();
        if seen != said {
            return Err(Error::damaged(
                backup,
                format!("its trailer counts (namespaces, refs, reflog, audit, hooks, table rows, objects, deletions, deltas, resets) {said:?} but the stream holds {seen:?}"),
            ));
        }
        Ok(())
    }
}

/// A backup's manifest. The trailer record carries it with `stream`,
/// `bytes`, `sha256` and `mac` unset; the manifest file beside the stream
/// has them all (and `mac` when encrypted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u16,
    pub id: String,
    pub parent: Option<String>,
    pub kind: BackupKind,
    pub created: String,
    pub finished: String,
    pub store_id: String,
    pub counts: Counts,
    /// Newest audit entry included: seq and hash (hex).
    pub audit_seq: i64,
    pub audit_head: Option<String>,
    /// Newest reflog entry included.
    pub reflog_seq: i64,
    pub encryption: Option<EncryptionInfo>,
    /// Where the index section starts.
    pub index: Position,
    /// Where the trailer record starts.
    pub trailer: Position,
    /// SHA-256 of the stream's bytes before the trailer record.
    pub prefix_sha256: String,
    /// SHA-256 over the store's hook files (names, modes, contents) at the backup.
    pub hooks_sha256: String,
    pub tool: String,
    /// Name of the stream in its target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Length of the whole stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// SHA-256 of the whole stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// HMAC-SHA-256 of the manifest without `mac` (encrypted backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Manifest {
    /// The bytes the MAC covers: the manifest as compact JSON without `mac`.
    pub fn mac_input(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.mac = None;
        serde_json::to_vec(&m).expect("a manifest serializes")
    }

    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }
}

/// Where a manifest was read, which decides the keys it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The trailer record: no `stream`, `bytes`, `sha256` or `mac`.
    Trailer,
    /// `<id>.manifest.json`: also `stream`, `bytes`, `sha256`, and `mac` when encrypted.
    File,
}

/// Keys of every manifest.
const KEYS: &[&str] = &[
    "format",
    "id",
    "parent",
    "kind",
    "created",
    "finished",
    "store_id",
    "counts",
    "audit_seq",
    "audit_head",
    "reflog_seq",
    "encryption",
    "index",
    "trailer",
    "prefix_sha256",
    "hooks_sha256",
    "tool",
];
/// Keys only the manifest file has (the trailer cannot know them).
const FILE_KEYS: &[&str] = &["stream", "bytes", "sha256", "mac"];
const COUNT_KEYS_V1: &[&str] = &[
    "namespaces",
    "refs",
    "reflog",
    "audit",
    "hooks",
    "objects",
    "object_bytes",
    "deleted",
    "rows",
    "records",
];
const COUNT_KEYS_V2: &[&str] = &["deltas", "delta_nodes", "delta_node_bytes", "resets"];
const POSITION_KEYS: &[&str] = &["offset", "record"];
const ENCRYPTION_KEYS: &[&str] = &["cipher", "kdf", "salt", "key_id"];
const ARGON2_KEYS: &[&str] = &["m_kib", "t", "p"];

impl Manifest {
    /// Parse a manifest strictly (see the module documentation). The error
    /// names the field (`counts.objects`) or the JSON line and column.
    pub fn parse(bytes: &[u8], source: Source) -> Result<Manifest, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let obj = value.as_object().ok_or("not a JSON object".to_string())?;
        let format = obj
            .get("format")
            .and_then(Value::as_u64)
            .ok_or("missing or non-numeric field `format`".to_string())?;
        if !u16::try_from(format).is_ok_and(readable) {
            return Err(format!("format version {format} is not supported"));
        }
        let encrypted = obj.get("encryption").is_some_and(|e| !e.is_null());
        if encrypted {
            object(obj, "encryption")?;
        }
        let mut want: Vec<&str> = KEYS.to_vec();
        if source == Source::File {
            want.extend(&FILE_KEYS[..3]);
            if encrypted {
                want.push("mac");
            }
        }
        same_keys(obj, &want, "")?;
        let mut counts = COUNT_KEYS_V1.to_vec();
        if format >= 2 {
            counts.extend(COUNT_KEYS_V2);
        }
        same_keys(object(obj, "counts")?, &counts, "counts.")?;
        same_keys(object(obj, "index")?, POSITION_KEYS, "index.")?;
        same_keys(object(obj, "trailer")?, POSITION_KEYS, "trailer.")?;
        if encrypted {
            let enc = object(obj, "encryption")?;
            let mut keys = ENCRYPTION_KEYS.to_vec();
            if enc.get("kdf").and_then(Value::as_str) == Some("argon2id") {
                keys.push("argon2");
                same_keys(
                    enc.get("argon2")
                        .and_then(Value::as_object)
                        .ok_or("field `encryption.argon2` is not an object".to_string())?,
                    ARGON2_KEYS,
                    "encryption.argon2.",
                )?;
            }
            same_keys(enc, &keys, "encryption.")?;
        }
        serde_path_to_error::deserialize(value)
            .map_err(|e| format!("field `{}`: {}", e.path(), e.inner()))
    }

    /// `created` and `finished` are RFC 3339 times, `finished` not before
    /// `created`, and the id starts with `created` (ids are the snapshot time).
    pub fn check_times(&self) -> Result<(), String> {
        let created = qg_store::clock::parse(&self.created)
            .ok_or_else(|| format!("field `created` is not a time: {:?}", self.created))?;
        let finished = qg_store::clock::parse(&self.finished)
            .ok_or_else(|| format!("field `finished` is not a time: {:?}", self.finished))?;
        if finished < created {
            return Err(format!(
                "field `finished` ({}) is before `created` ({})",
                self.finished, self.created
            ));
        }
        let stamp: String = self
            .created
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        if self
            .id
            .strip_prefix(&stamp)
            .and_then(|r| r.strip_prefix('-'))
            .is_none()
        {
            return Err(format!(
                "field `created` ({}) is not the time in its id {}",
                self.created, self.id
            ));
        }
        Ok(())
    }

    /// The fields (as paths such as `counts.objects`) in which this manifest
    /// and `trailer` differ, each with both values; the file-only fields are
    /// not compared.
    pub fn differences(&self, trailer: &Manifest) -> Vec<String> {
        let plain = |m: &Manifest| {
            let mut v = serde_json::to_value(m).expect("a manifest serializes");
            if let Some(o) = v.as_object_mut() {
                for k in FILE_KEYS {
                    o.remove(*k);
                }
            }
            v
        };
        let mut out = Vec::new();
        diff("", &plain(self), &plain(trailer), &mut out);
        out
    }
}

fn object<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a Map<String, Value>, String> {
    obj.get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("field `{key}` is not an object"))
}

/// `obj` has exactly the keys `want`: the error names the first unknown or missing one.
fn same_keys(obj: &Map<String, Value>, want: &[&str], path: &str) -> Result<(), String> {
    if let Some(k) = obj.keys().find(|k| !want.contains(&k.as_str())) {
        return Err(format!("unknown field `{path}{k}`"));
    }
    if let Some(k) = want.iter().find(|k| !obj.contains_key(**k)) {
        return Err(format!("missing field `{path}{k}`"));
    }
    Ok(())
}

fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("`{path}` (manifest: {a}, stream: {b})")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "format": 2, "id": "20260101T000000.000Z-01020304", "parent": null, "kind": "full",
            "created": "2026-01-01T00:00:00.000Z", "finished": "2026-01-01T00:00:01.000Z",
            "store_id": "s",
            "counts": {"namespaces": 1, "refs": 1, "reflog": 1, "audit": 1, "hooks": 0,
                "objects": 3, "object_bytes": 10, "deleted": 0, "rows": 0, "records": 9,
                "deltas": 0, "delta_nodes": 0, "delta_node_bytes": 0, "resets": 0},
            "audit_seq": 1, "audit_head": "ab", "reflog_seq": 1, "encryption": null,
            "index": {"offset": 1, "record": 2}, "trailer": {"offset": 3, "record": 4},
            "prefix_sha256": "00", "hooks_sha256": "11", "tool": "qg-backup 0.1.0",
            "stream": "20260101T000000.000Z-01020304.qgb", "bytes": 100, "sha256": "22"
        })
    }

    fn parse(v: &Value, source: Source) -> Result<Manifest, String> {
        Manifest::parse(&serde_json::to_vec(v).unwrap(), source)
    }

    #[test]
    fn a_complete_manifest_parses_and_its_times_agree() {
        let m = parse(&sample(), Source::File).unwrap();
        m.check_times().unwrap();
        assert!(m.differences(&m.clone()).is_empty());
    }

    #[test]
    fn unknown_missing_and_misplaced_keys_are_named() {
        let mut v = sample();
        v["extra"] = 1.into();
        assert_eq!(
            parse(&v, Source::File).unwrap_err(),
            "unknown field `extra`"
        );
        let mut v = sample();
        v["counts"].as_object_mut().unwrap().remove("resets");
        assert_eq!(
            parse(&v, Source::File).unwrap_err(),
            "missing field `counts.resets`"
        );
        // a version-1 manifest has no delta counts, and may not
        let mut v = sample();
        v["format"] = 1.into();
        assert_eq!(
            parse(&v, Source::File).unwrap_err(),
            "unknown field `counts.delta_node_bytes`"
        );
        for k in COUNT_KEYS_V2 {
            v["counts"].as_object_mut().unwrap().remove(*k);
        }
        parse(&v, Source::File).unwrap();
        // `parent: null` must be written out, not left away
        let mut v = sample();
        v.as_object_mut().unwrap().remove("parent");
        assert_eq!(
            parse(&v, Source::File).unwrap_err(),
            "missing field `parent`"
        );
        // the trailer never carries the file-only fields
        assert_eq!(
            parse(&sample(), Source::Trailer).unwrap_err(),
            "unknown field `bytes`"
        );
        let mut v = sample();
        v["index"]["extra"] = 1.into();
        assert_eq!(
            parse(&v, Source::File).unwrap_err(),
            "unknown field `index.extra`"
        );
        let mut v = sample();
        v["format"] = 9.into();
        assert!(parse(&v, Source::File).unwrap_err().contains("version 9"));
    }

    #[test]
    fn differences_name_each_field() {
        let a = parse(&sample(), Source::File).unwrap();
        let mut b = a.clone();
        b.counts.objects = 4;
        b.tool = "other".into();
        b.bytes = None; // file-only: not compared
        let d = a.differences(&b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].starts_with("`counts.objects` (manifest: 3, stream: 4)"),
            "{d:?}"
        );
        assert!(d[1].starts_with("`tool`"), "{d:?}");
    }

    #[test]
    fn times_must_agree_with_each_other_and_the_id() {
        let m = parse(&sample(), Source::File).unwrap();
        let mut bad = m.clone();
        bad.created = "2026-01-01T00:00:00.001Z".into();
        assert!(bad
            .check_times()
            .unwrap_err()
            .contains("not the time in its id"));
        let mut bad = m.clone();
        bad.finished = "2025-12-31T23:59:59.000Z".into();
        assert!(bad.check_times().unwrap_err().contains("before `created`"));
        let mut bad = m;
        bad.finished = "yesterday".into();
        assert!(bad
            .check_times()
            .unwrap_err()
            .contains("`finished` is not a time"));
    }
}
