//! Errors of `qg-slo`. Each names what went wrong and where (file, line and
//! field for a spec); the binary maps [`Error::kind`] to the exit code every
//! QuadGit binary uses.

use std::path::Path;

use qg_store::ErrorKind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A spec that is malformed or asks for something unsupported.
    #[error("{file}:{line}: {field}: {reason}")]
    Spec {
        file: String,
        line: usize,
        field: String,
        reason: String,
    },
    /// A bad option value (window, time, URL).
    #[error("{0}")]
    BadInput(String),
    /// Prometheus (or the scraped server) could not be asked, or answered an error.
    #[error("{url}: {reason}")]
    Source { url: String, reason: String },
    /// Rendering a report failed.
    #[error("cannot render the report: {0}")]
    Render(String),
    /// Writing the audit event into the store failed.
    #[error(transparent)]
    Store(#[from] qg_store::Error),
}

impl Error {
    /// Which exit-code class this error belongs to (1 failed, 2 bad usage/input).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Read { .. } | Error::Spec { .. } | Error::BadInput(_) => ErrorKind::Usage,
            Error::Store(e) => e.kind(),
            Error::Write { .. } | Error::Source { .. } | Error::Render(_) => ErrorKind::Failed,
        }
    }

    pub(crate) fn read(path: &Path, source: std::io::Error) -> Self {
        Error::Read {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn write(path: &Path, source: std::io::Error) -> Self {
        Error::Write {
            path: path.display().to_string(),
            source,
        }
    }
}
