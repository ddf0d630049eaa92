//! Hooks: executables in `<data>/hooks/` run around commits and merges.
//!
//! Each gets one JSON document on stdin (fields: `FORMAT.md` beside this
//! file, and the worked example in `runbooks/hooks-shacl.md`). A failing `pre-*` hook aborts the operation and
//! its stderr reaches the user; `post-*` hooks are reported and audited but
//! never undo a write. Every hook runs under a timeout.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

use crate::error::{Error, Result};

/// Default time a hook may run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this much of a hook's stderr is kept.
const STDERR_MAX: usize = 64 * 1024;

/// The hook points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    PreCommit,
    PostCommit,
    PreMerge,
    PostMerge,
    PostReceive,
}

impl Hook {
    pub fn file_name(self) -> &'static str {
        match self {
            Hook::PreCommit => "pre-commit",
            Hook::PostCommit => "post-commit",
            Hook::PreMerge => "pre-merge",
            Hook::PostMerge => "post-merge",
            Hook::PostReceive => "post-receive",
        }
    }

    pub fn is_pre(self) -> bool {
        matches!(self, Hook::PreCommit | Hook::PreMerge)
    }
}

/// What a hook run produced.
#[derive(Debug, Clone)]
pub struct HookRun {
    pub hook: Hook,
    /// Exit code (None when killed by a signal or the timeout).
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stderr: String,
}

impl HookRun {
    pub fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// One line describing a failure.
    pub fn failure(&self, timeout: Duration) -> String {
        let stderr = self.stderr.trim();
        if self.timed_out {
            format!("timed out after {}s", timeout.as_secs_f64())
        } else if stderr.is_empty() {
            match self.code {
                Some(c) => format!("exited with status {c}"),
                None => "killed by a signal".into(),
            }
        } else {
            stderr.to_string()
        }
    }
}

/// The hooks folder of one store.
#[derive(Debug, Clone)]
pub struct Hooks {
    dir: PathBuf,
    data_dir: PathBuf,
    pub timeout: Duration,
}

impl Hooks {
    pub fn new(data_dir: &Path, timeout: Duration) -> Self {
        Hooks {
            dir: data_dir.join("hooks"),
            data_dir: data_dir.to_path_buf(),
            timeout,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Run `hook` if it is installed; `None` when there is no such executable.
    pub fn run(
        &self,
        hook: Hook,
        ns: &str,
        payload: &serde_json::Value,
    ) -> Result<Option<HookRun>> {
        let path = self.dir.join(hook.file_name());
        if !is_executable(&path) {
            return Ok(None);
        }
        let name = hook.file_name().to_string();
        let mut command = Command::new(&path);
        // own process group, so a timeout kills the hook and everything it started
        command
            .process_group(0)
            .current_dir(&self.data_dir)
            .env("QG_DATA", &self.data_dir)
            .env("QG_NS", ns)
            .env("QG_HOOK", &name)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn_retrying_busy(&mut command).map_err(|e| Error::HookFailed {
            hook: name.clone(),
            reason: format!("cannot start {}: {e}", path.display()),
        })?;
        let body = payload.to_string().into_bytes();
        let mut stdin = child.stdin.take().expect("piped");
        // Feed stdin and drain stderr on threads: a hook that ignores either must not block us.
        let writer = std::thread::spawn(move || {
            // A hook may exit without reading its stdin. Block SIGPIPE in this
            // thread so the write fails with EPIPE instead of killing us (the
            // binary restores SIGPIPE's default so `qg export | head` exits
            // quietly); the thread-directed signal dies with the thread.
            // SAFETY: sigset manipulation on a local set for the current thread only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGPIPE);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            let _ = stdin.write_all(&body);
        });
        let mut stderr = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(STDERR_MAX as u64).read_to_end(&mut buf);
            // keep draining so the hook never blocks on a full pipe
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            buf
        });
        let status = child.wait_timeout(self.timeout)?;
        let timed_out = status.is_none();
        let code = match status {
            Some(s) => s.code(),
            None => {
                // SAFETY: plain syscall on the hook's own process group.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        };
        let _ = writer.join();
        let stderr = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
        Ok(Some(HookRun {
            hook,
            code,
            timed_out,
            stderr,
        }))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Spawn `command`, retrying for a moment while its executable is busy
/// (ETXTBSY): a script just written, or being replaced, can still be open
/// for writing, in this process or in a child forked meanwhile.
fn spawn_retrying_busy(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn install(dir: &Path, hook: Hook, script: &str) {
        let hooks = dir.join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        let p = hooks.join(hook.file_name());
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_hook_still_open_for_writing_is_started_once_it_is_closed() {
        use std::os::unix::fs::OpenOptionsExt;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("busy");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&path)
            .unwrap();
        f.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(f);
        });
        let status = spawn_retrying_busy(&mut Command::new(&path))
            .unwrap()
            .wait()
            .unwrap();
        assert!(status.success());
        closer.join().unwrap();
    }

    #[test]
    fn missing_hook_is_none_and_stdin_reaches_hook() {
        let d = tempfile::tempdir().unwrap();
        let hooks = Hooks::new(d.path(), Duration::from_secs(10));
        assert!(hooks
            .run(Hook::PreCommit, "default", &serde_json::json!({}))
            .unwrap()
            .is_none());
        install(d.path(), Hook::PreCommit, "#!/bin/sh\ngrep -q '\"message\":\"bad\"' && { echo rejected: bad message >&2; exit 3; }\nexit 0\n");
        let run = hooks
            .run(
                Hook::PreCommit,
                "default",
                &serde_json::json!({"message": "bad"}),
            )
            .unwrap()
            .unwrap();
        assert_eq!(run.code, Some(3));
        assert_eq!(run.failure(hooks.timeout), "rejected: bad message");
        let run = hooks
            .run(
                Hook::PreCommit,
                "default",
                &serde_json::json!({"message": "good"}),
            )
            .unwrap()
            .unwrap();
        assert!(run.ok());
    }

    #[test]
    fn slow_hook_times_out() {
        let d = tempfile::tempdir().unwrap();
        install(d.path(), Hook::PostCommit, "#!/bin/sh\nsleep 30\n");
        let hooks = Hooks::new(d.path(), Duration::from_millis(300));
        let run = hooks
            .run(Hook::PostCommit, "default", &serde_json::json!({}))
            .unwrap()
            .unwrap();
        assert!(run.timed_out && !run.ok());
        assert!(run.failure(hooks.timeout).contains("timed out"));
    }
}
