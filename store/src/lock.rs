//! The store lock: who has a store open, so that a job that replaces the
//! database file (a data-key rotation rebuilds it) runs alone.
//!
//! Every open store holds a shared lock on `qg.lock` in the data directory
//! for as long as it is open; a rebuild upgrades its own to an exclusive
//! lock, which fails while any other handle (another process, or another
//! handle in this one) has the store open. The locks are open-file-
//! description locks (`F_OFD_SETLK`: per handle, like `flock`, but a refused
//! upgrade keeps the shared lock, where `flock` drops it first); `flock`
//! elsewhere than Linux. The lock is a separate
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
    /// The data directory, for errors.
    dir: PathBuf,
}

#[derive(Clone, Copy)]
enum Mode {
    Shared,
    Exclusive,
}

/// Take or convert this handle's lock without waiting.
#[cfg(target_os = "linux")]
fn lock(file: &File, mode: Mode) -> std::io::Result<()> {
    // SAFETY: an all-zero `flock` struct is valid; the fields that matter are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match mode {
        Mode::Shared => libc::F_RDLCK,
        Mode::Exclusive => libc::F_WRLCK,
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // l_start = l_len = 0: the whole file; l_pid must be 0 for OFD locks
    // SAFETY: fcntl on a descriptor this `File` owns, with a live `flock`.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn lock(file: &File, mode: Mode) -> std::io::Result<()> {
    let op = match mode {
        Mode::Shared => libc::LOCK_SH,
        Mode::Exclusive => libc::LOCK_EX,
    };
    // SAFETY: flock on a file descriptor this `File` owns.
    if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if matches!(mode, Mode::Exclusive) {
        // a refused flock upgrade dropped the shared lock: take it back
        // SAFETY: as above.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    }
    Err(err)
}

/// A conflicting lock (fcntl says EAGAIN or EACCES, flock EWOULDBLOCK,
/// which is EAGAIN on Linux).
fn would_block(e: &std::io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(libc::EWOULDBLOCK) || code == Some(libc::EAGAIN) || code == Some(libc::EACCES)
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
            match lock(&file, Mode::Shared) {
                Ok(()) => {
                    return Ok(StoreLock {
                        file,
                        dir: dir.to_path_buf(),
                    })
                }
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
        lock(&self.file, Mode::Exclusive).map_err(|e| {
            if would_block(&e) {
                Error::InUse {
                    path: self.dir.clone(),
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
        Ok(lock(&self.file, Mode::Shared)?)
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
        // the refused upgrade kept a's shared lock: b cannot go exclusive
        assert!(b.exclusive().is_err());
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
