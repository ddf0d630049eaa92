//! Hints to the kernel about large files, so that work on them happens
//! while other work goes on rather than in the fsync or rename at the end.
//!
//! A backup stream is written for tens of milliseconds and then synced:
//! [`start`] asks the kernel to write it out as it grows. A restored database
//! is written all at once and then checked: [`sync_in_background`] syncs it
//! during the check. A rebuilt database reserves its space first
//! ([`preallocate`], [`release_unused`]). Durability still comes from the
//! caller's final fsync.

use std::fs::File;
use std::path::Path;

/// Ask the kernel to start writing `f` back to disk from byte `from` to its
/// end, without waiting. Any descriptor of the file will do: write-back is per
/// file, not per descriptor.
#[cfg(target_os = "linux")]
pub fn start(f: &File, from: u64) {
    use std::os::fd::AsRawFd;
    // The result is deliberately ignored: a failure here only loses the
    // head start, and the caller's fsync reports real I/O errors.
    // SAFETY: a valid open descriptor; the call only schedules I/O.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            from as libc::off64_t,
            0,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Elsewhere the hint does nothing.
#[cfg(not(target_os = "linux"))]
pub fn start(_: &File, _: u64) {}

/// Reserve disk space for the first `len` bytes of `f` without changing its
/// size, so that writing it later skips the file system's block-by-block
/// delayed allocation (about a sixth of the cost of each page written here).
/// Give back what was not used with [`release_unused`]. A hint: failures
/// (no support on this file system) only lose the head start.
#[cfg(target_os = "linux")]
pub fn preallocate(f: &File, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; KEEP_SIZE leaves the file's contents
    // and size as they are.
    unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            0,
            len as libc::off_t,
        );
    }
}

/// Elsewhere the hint does nothing.
#[cfg(not(target_os = "linux"))]
pub fn preallocate(_: &File, _: u64) {}

/// Give back the space [`preallocate`] reserved beyond the end of `f`
/// (cutting a file to its own size frees what lies past it).
pub fn release_unused(f: &File) -> std::io::Result<()> {
    f.set_len(f.metadata()?.len())
}

/// An fsync running on a thread of its own.
pub struct BackgroundSync(std::thread::JoinHandle<std::io::Result<()>>);

/// Start syncing the file at `path` on another thread.
pub fn sync_in_background(path: &Path) -> BackgroundSync {
    let path = path.to_path_buf();
    BackgroundSync(std::thread::spawn(move || File::open(&path)?.sync_all()))
}

impl BackgroundSync {
    /// Wait for the sync; its error if it failed.
    pub fn wait(self) -> std::io::Result<()> {
        self.0
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the sync thread panicked")))
    }
}

/// Make the file at `path` and its directory entry durable.
pub fn sync_file_and_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Make the entries of directory `dir` (files created, renamed, removed)
/// durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn syncs_report_success_and_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&[7u8; 100_000]).unwrap();
        start(&f, 0);
        sync_in_background(&path).wait().unwrap();
        // space reserved past the end is given back, the contents stay
        preallocate(&f, 10_000_000);
        release_unused(&f).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 100_000]);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::MetadataExt;
            assert!(f.metadata().unwrap().blocks() * 512 < 1_000_000);
        }
        sync_file_and_dir(&path).unwrap();
        let missing = dir.path().join("missing");
        assert!(sync_in_background(&missing).wait().is_err());
        assert!(sync_file_and_dir(&missing).is_err());
        sync_dir(dir.path()).unwrap();
        assert!(sync_dir(&missing).is_err());
    }
}
