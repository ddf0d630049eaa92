//! The store lock: who has a store open, so that a job that replaces the
//! database file (a data-key rotation rebuilds it) runs alone.
//!
//! Every open store holds a shared `flock` on `qg.lock` in the data
//! directory for as long as it is open; a rebuild upgrades its own to an
//! exclusive lock, which fails while any other handle (another process, or
//! another handle in this one) has the store open. The lock is a separate
//! file because the database file is renamed over: a process that waited on
//! the database file itself would go on with the old, replaced one. The
//! kernel drops the locks of a killed process.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// File name of the lock inside the data directory.
pub const LOCK_FILE: &str = "qg.lock";

/// A lock on a store's data directory (shared unless upgraded).
pub struct StoreLock {
    file: File,
    path: PathBuf,
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a file descriptor this `File` owns.
    if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn would_block(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EWOULDBLOCK)
}

impl StoreLock {
    /// Take a shared lock on the store in `dir`, waiting up to `wait` while a
    /// rebuild holds it exclusively.
    pub fn shared(dir: &Path, wait: Duration) -> Result<StoreLock> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::NotAStore {
                path: dir.to_path_buf(),
                reason: format!("cannot open its lock file {}: {e}", path.display()),
            })?;
        let start = Instant::now();
        loop {
            match flock(&file, libc::LOCK_SH) {
                Ok(()) => return Ok(StoreLock { file, path }),
                Err(e) if would_block(&e) && start.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if would_block(&e) => {
                    return Err(Error::InUse {
                        path: dir.to_path_buf(),
                        reason: format!(
                            "a job that rewrites the database (`qg-rotate-keys dek` or `encrypt`) \
                             holds {} and did not finish within {} s; try again when it has",
                            path.display(),
                            wait.as_secs()
                        ),
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Upgrade to an exclusive lock; fails at once while any other handle
    /// has the store open.
    pub fn exclusive(&self) -> Result<()> {
        flock(&self.file, libc::LOCK_EX).map_err(|e| {
            if would_block(&e) {
                Error::InUse {
                    path: self.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                    reason: "another process (or handle) has the store open; stop `qg serve` \
                             and other jobs on it, then run this again"
                        .into(),
                }
            } else {
                e.into()
            }
        })
    }

    /// Back to a shared lock.
    pub fn shared_again(&self) -> Result<()> {
        Ok(flock(&self.file, libc::LOCK_SH)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_only_when_no_other_handle_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let a = StoreLock::shared(dir.path(), Duration::ZERO).unwrap();
        let b = StoreLock::shared(dir.path(), Duration::ZERO).unwrap();
        let err = a.exclusive().unwrap_err();
        assert!(matches!(err, Error::InUse { .. }), "{err}");
        drop(b);
        a.exclusive().unwrap();
        // while it is exclusive, nobody else gets in
        let err = StoreLock::shared(dir.path(), Duration::from_millis(50))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("rewrites the database"), "{err}");
        a.shared_again().unwrap();
        StoreLock::shared(dir.path(), Duration::ZERO).unwrap();
    }
}
