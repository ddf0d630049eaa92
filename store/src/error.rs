//! The store's typed errors. The binary maps [`Error::kind`] to an exit code.

use std::path::PathBuf;

use crate::id::ObjectId;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How an error should be reported: the exit-code contract of every binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The operation ran and failed, or a check found problems (exit 1).
    Failed,
    /// The caller asked for something malformed or missing (exit 2).
    Usage,
}

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no QuadGit store at {path}: run `qg init` first")]
    NoStore { path: PathBuf },
    #[error("{path} is not a QuadGit store: {reason}")]
    NotAStore { path: PathBuf, reason: String },
    #[error("a QuadGit store already exists at {path}")]
    AlreadyExists { path: PathBuf },
    #[error("store at {path} has format version {found}, this qg supports {supported}")]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        supported: u32,
    },
    #[error("the store at {path} is in use: {reason}")]
    InUse { path: PathBuf, reason: String },
    #[error("namespace `{0}` does not exist")]
    NoNamespace(String),
    #[error("namespace `{0}` already exists")]
    NamespaceExists(String),
    #[error("invalid {what} `{name}`: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("unknown ref `{reference}` in namespace `{ns}`")]
    UnknownRef { ns: String, reference: String },
    #[error("ref `{reference}` is ambiguous in namespace `{ns}`: it matches {candidates}")]
    AmbiguousRef {
        ns: String,
        reference: String,
        candidates: String,
    },
    #[error("branch `{0}` already exists")]
    BranchExists(String),
    #[error("tag `{0}` already exists")]
    TagExists(String),
    #[error("cannot delete branch `{0}`: it is the namespace's default branch")]
    DeleteDefaultBranch(String),
    #[error(
        "branch `{branch}` in namespace `{ns}` moved to {actual} while this operation was based on {expected}; nothing was written, retry"
    )]
    Conflict {
        ns: String,
        branch: String,
        expected: String,
        actual: String,
    },
    #[error("merge of `{source_ref}` into `{target}` has {} conflict(s); nothing was changed", conflicts.len())]
    MergeConflict {
        source_ref: String,
        target: String,
        conflicts: Vec<crate::merge::MergeConflict>,
    },
    #[error("{path}:{line}:{column}: malformed {format}: {message}")]
    Syntax {
        path: String,
        format: &'static str,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("cannot tell the RDF format of {0}: use --format nquads|ntriples|trig|turtle")]
    UnknownFormat(String),
    #[error("bad quad pattern `{pattern}`: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("bad time `{value}`: {reason}")]
    BadTime { value: String, reason: String },
    #[error("bad configuration file {path}: {reason}")]
    BadConfig { path: String, reason: String },
    #[error("nothing to commit: the change adds and removes no quads on `{0}`")]
    EmptyCommit(String),
    #[error("object {id} in namespace `{ns}` is missing")]
    MissingObject { ns: String, id: ObjectId },
    #[error("object {id} in namespace `{ns}` is corrupt: {reason}")]
    CorruptObject {
        ns: String,
        id: ObjectId,
        reason: String,
    },
    #[error("namespace `{ns}` is locked: {reason}")]
    Locked { ns: String, reason: String },
    #[error("namespace `{ns}` is not encrypted: {hint}")]
    NotEncrypted { ns: String, hint: String },
    #[error("bad {what}: {reason}")]
    BadKey { what: String, reason: String },
    #[error("namespace `{ns}`: key version {version} has sealed {sealed} objects, close to the AES-GCM limit of 2^32; rotate it with `qg-rotate-keys dek --ns {ns}`")]
    KeyExhausted {
        ns: String,
        version: u32,
        sealed: u64,
    },
    #[error("too many failed unlock attempts for namespace `{ns}`; try again in {wait_secs} s")]
    RateLimited { ns: String, wait_secs: u64 },
    #[error("branch `{branch}` in namespace `{ns}` is protected: only maintainers and admins may move it")]
    Protected { ns: String, branch: String },
    #[error("no live API token with id `{0}`")]
    UnknownToken(String),
    #[error("{hook} hook rejected the {operation}: {stderr}")]
    HookRejected {
        hook: String,
        operation: &'static str,
        stderr: String,
    },
    #[error("{hook} hook could not run: {reason}")]
    HookFailed { hook: String, reason: String },
    #[error("audit log entry #{seq} is broken: {reason}")]
    AuditBroken { seq: i64, reason: String },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Which exit-code class this error belongs to.
    pub fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            NoStore { .. }
            | NotAStore { .. }
            | AlreadyExists { .. }
            | UnsupportedVersion { .. }
            | NoNamespace(_)
            | NamespaceExists(_)
            | InvalidName { .. }
            | UnknownRef { .. }
            | AmbiguousRef { .. }
            | BranchExists(_)
            | TagExists(_)
            | DeleteDefaultBranch(_)
            | Syntax { .. }
            | UnknownFormat(_)
            | BadPattern { .. }
            | BadTime { .. }
            | BadConfig { .. }
            | Locked { .. }
            | RateLimited { .. }
            | BadKey { .. }
            | NotEncrypted { .. }
            | ReadFile { .. }
            | UnknownToken(_) => ErrorKind::Usage,
            _ => ErrorKind::Failed,
        }
    }
}
