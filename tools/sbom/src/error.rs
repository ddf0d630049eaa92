//! Errors of `qg-sbom`. Each one names what went wrong and where; the binary
//! maps [`Error::kind`] to the exit code every QuadGit binary uses.

use qg_store::ErrorKind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Input that is not what it should be (malformed file, bad option value).
    #[error("{path}: {reason}")]
    BadInput { path: String, reason: String },
    /// A key that cannot be used: unreadable, wrong format, wrong password.
    #[error("{path}: {reason}")]
    BadKey { path: String, reason: String },
    /// A secret that must come from the environment is missing.
    #[error("{0}")]
    MissingSecret(String),
    /// An external program we rely on is not installed.
    #[error("{0}")]
    MissingTool(String),
    /// An external program ran and failed.
    #[error("{program} failed: {reason}")]
    Tool { program: String, reason: String },
    /// `cargo metadata` / the lockfile do not describe the workspace we expect.
    #[error("{0}")]
    Workspace(String),
    /// A check ran and found differences (stale SBOM).
    #[error("{0}")]
    CheckFailed(String),
    /// A signature or provenance does not verify.
    #[error("{0}")]
    VerificationFailed(String),
    /// The vulnerability gate found findings at or above the threshold.
    #[error("{0}")]
    GateFailed(String),
    /// Writing the audit event into the store failed.
    #[error(transparent)]
    Store(#[from] qg_store::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Which exit-code class this error belongs to (1 failed, 2 bad usage/input).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Read { .. }
            | Error::BadInput { .. }
            | Error::BadKey { .. }
            | Error::MissingSecret(_)
            | Error::MissingTool(_)
            | Error::Workspace(_) => ErrorKind::Usage,
            Error::Store(e) => e.kind(),
            Error::Write { .. }
            | Error::Tool { .. }
            | Error::CheckFailed(_)
            | Error::VerificationFailed(_)
            | Error::GateFailed(_)
            | Error::Io(_)
            | Error::Other(_) => ErrorKind::Failed,
        }
    }

    pub(crate) fn read(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Read {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn write(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Write {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn bad_input(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Error::BadInput {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_key(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Error::BadKey {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

/// Read a whole file, naming it on failure.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::read(path, e))
}

/// Write a whole file atomically (temp file in the same folder, then rename),
/// naming it on failure.
pub(crate) fn write_file(path: &std::path::Path, data: &[u8]) -> Result<()> {
    write_file_mode(path, data, None)
}

/// Like [`write_file`], with Unix permissions for the new file (keys: 0o600).
pub(crate) fn write_file_mode(
    path: &std::path::Path,
    data: &[u8],
    mode: Option<u32>,
) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode.unwrap_or(0o644));
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::write(path, e)
    })
}
