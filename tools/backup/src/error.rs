//! Errors of `qg-backup`. Every error names what failed and where (backup id,
//! target, file, record); [`Error::kind`] decides the exit code.

use qg_store::ErrorKind;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// SQLite errors of the restore's own scratch databases, as store errors.
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Store(e.into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed (opening, reading, writing, fsck, audit chain).
    #[error(transparent)]
    Store(#[from] qg_store::Error),
    /// Reading or writing a local file or directory failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A backup target (directory, S3 bucket, stdout) failed.
    #[error("backup target {target}: {reason}")]
    Target { target: String, reason: String },
    /// A backup is damaged: checksum, authentication or structure.
    #[error("backup {backup} is damaged: {reason}")]
    Damaged { backup: String, reason: String },
    /// A restore without `--id` found the newest backup damaged (its
    /// manifest, its chain or a stream) and restored nothing rather than an
    /// older point; `intact` is the newest older backup that looks whole (id,
    /// time), to restore on purpose.
    #[error("backup {backup} is damaged: {reason}. Nothing was restored: without --id, restore takes only the newest backup. {}", intact_hint(.intact))]
    NewestDamaged {
        backup: String,
        reason: String,
        intact: Option<(String, String)>,
    },
    /// A backup chain is incomplete or inconsistent.
    #[error("backup chain is broken: {0}")]
    Chain(String),
    /// A check found problems (verify, restore's final fsck).
    #[error("{0}")]
    CheckFailed(String),
    /// Bad usage or input: missing/wrong key, unknown backup, non-empty destination, bad target.
    #[error("{0}")]
    Usage(String),
}

fn intact_hint(intact: &Option<(String, String)>) -> String {
    match intact {
        Some((id, created)) => format!(
            "To restore the newest intact point instead (taken {created}), check it with `qg-backup verify --read-data --id {id}` and restore it with `--id {id}`"
        ),
        None => "No older backup has a complete chain either".to_string(),
    }
}

impl Error {
    /// Which exit-code class the error belongs to (see DESIGN.md).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
            Error::Usage(_) => ErrorKind::Usage,
            _ => ErrorKind::Failed,
        }
    }

    pub(crate) fn io(
        what: &'static str,
        path: impl std::fmt::Display,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            what,
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn damaged(backup: &str, reason: impl Into<String>) -> Self {
        Error::Damaged {
            backup: backup.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }
}
