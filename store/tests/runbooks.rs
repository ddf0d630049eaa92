//! Runs every runbook in `runbooks/` (see `runbooks/README.md`): the ```sh
//! blocks of each Markdown file, in order, as one `bash -euo pipefail` script
//! in a fresh temporary directory, with the freshly built `qg` first on PATH
//! and QG_DATA naming a fresh directory.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

/// How long one runbook may run.
const TIMEOUT: Duration = Duration::from_secs(300);

fn runbooks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks")
}

/// Every runbook: the folder's `*.md` files except README.md, sorted.
fn runbooks() -> Vec<PathBuf> {
    let dir = runbooks_dir();
    let mut books: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md") && !p.ends_with("README.md"))
        .collect();
    books.sort();
    books
}

/// The script of a runbook: the lines of its ```sh blocks, every other line
/// left blank so that `$LINENO` in the script is the line in the Markdown.
/// Errs on an unclosed fence or when there is no ```sh block.
fn script(name: &str, markdown: &str) -> Result<String, String> {
    let mut out = vec![format!(
        "trap 'echo \"runbook {name}: command failed (exit $?) at line $LINENO\" >&2' ERR"
    )];
    // (fence length, is sh, line where it opened) of the open block
    let mut open: Option<(usize, bool, usize)> = None;
    let mut blocks = 0;
    for (i, line) in markdown.lines().enumerate() {
        let ticks = line.len() - line.trim_start_matches('`').len();
        let text = match open {
            None if ticks >= 3 => {
                let is_sh = line[ticks..].trim() == "sh";
                blocks += usize::from(is_sh);
                open = Some((ticks, is_sh, i + 1));
                ""
            }
            Some((n, _, _)) if ticks >= n && line[ticks..].trim().is_empty() => {
                open = None;
                ""
            }
            Some((_, true, _)) => line,
            _ => "",
        };
        if i == 0 {
            continue; // line 1 is never code (at most a fence); it holds the trap
        }
        out.push(text.to_string());
    }
    if let Some((_, _, at)) = open {
        return Err(format!(
            "{name}: the code block opened at line {at} is never closed"
        ));
    }
    if blocks == 0 {
        return Err(format!("{name}: no ```sh block, nothing to run"));
    }
    out.push(String::new());
    Ok(out.join("\n"))
}

fn read_all(mut f: File) -> String {
    let mut s = String::new();
    f.rewind().expect("rewind output file");
    f.read_to_string(&mut s).expect("read output file");
    s
}

/// Run one runbook; Err with a report naming it and showing its output.
fn run(path: &Path) -> Result<(), String> {
    let name = path
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    let markdown = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let script = script(&name, &markdown)?;

    let tmp = tempfile::tempdir().expect("temp dir");
    let work = tmp.path().join("work");
    let data = tmp.path().join("data");
    std::fs::create_dir(&work).expect("create work dir");
    std::fs::create_dir(&data).expect("create data dir");
    let script_path = tmp.path().join("runbook.sh");
    std::fs::write(&script_path, script).expect("write script");

    let qg = Path::new(env!("CARGO_BIN_EXE_qg"));
    let mut paths = vec![qg.parent().expect("qg has a directory").to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let (stdout, stderr) = (
        tempfile::tempfile().expect("temp file"),
        tempfile::tempfile().expect("temp file"),
    );

    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail"])
        .arg(&script_path)
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("clone file"))
        .stderr(stderr.try_clone().expect("clone file"))
        .process_group(0); // so a timeout kills everything the script started
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("QG_") || key.starts_with("QUADGIT_") {
            cmd.env_remove(&*key);
        }
    }
    cmd.env("PATH", std::env::join_paths(paths).expect("PATH"))
        .env("QG_DATA", &data);

    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{name}: cannot start bash: {e}"))?;
    let status = match child.wait_timeout(TIMEOUT).expect("wait for bash") {
        Some(status) if status.success() => return Ok(()),
        Some(status) => status.to_string(),
        None => {
            // SAFETY: a plain kill(2) of the script's own process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            child.wait().expect("reap bash");
            format!("timed out after {}s", TIMEOUT.as_secs())
        }
    };
    Err(format!(
        "runbook {name} failed ({status})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        read_all(stdout).trim_end(),
        read_all(stderr).trim_end()
    ))
}

#[test]
fn every_runbook_runs() {
    let books = runbooks();
    assert!(
        !books.is_empty(),
        "no runbooks (*.md besides README.md) in {}",
        runbooks_dir().display()
    );
    let failures: Vec<String> = books.iter().filter_map(|b| run(b).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} runbooks failed:\n\n{}",
        failures.len(),
        books.len(),
        failures.join("\n\n")
    );
}

#[test]
fn readme_lists_every_runbook() {
    let readme =
        std::fs::read_to_string(runbooks_dir().join("README.md")).expect("runbooks/README.md");
    for book in runbooks() {
        let name = book
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        assert!(
            readme.contains(&format!("]({name})")),
            "runbooks/README.md does not link to {name}"
        );
    }
}

#[test]
fn script_keeps_only_sh_blocks_on_their_lines() {
    let md = "# T\n```sh\necho one\n```\ntext\n````markdown\n```sh\nnot run\n```\n````\n```bash\nnot run\n```\n```sh\necho two\n```\n";
    let s = script("t.md", md).unwrap();
    let lines: Vec<&str> = s.lines().collect();
    assert!(lines[0].starts_with("trap "));
    assert_eq!(lines[2], "echo one");
    assert_eq!(lines[14], "echo two");
    assert_eq!(s.matches("echo").count(), 3, "{s}"); // two commands and the trap
    assert!(!s.contains("not run"));
    assert!(script("t.md", "```bash\nls\n```\n")
        .unwrap_err()
        .contains("no ```sh block"));
    assert!(script("t.md", "```sh\nls\n")
        .unwrap_err()
        .contains("never closed"));
}
