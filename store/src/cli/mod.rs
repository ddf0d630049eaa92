//! Command-line plumbing shared by `qg` and every QuadGit tool: global flags,
//! exit codes, error reporting, JSON output, progress bars and logging.
//! (Feature `cli`.)

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::crypto::MasterKey;
use crate::error::{Error, ErrorKind};
use crate::progress::Progress;
use crate::store::{Keyring, Store};
use zeroize::Zeroizing;

/// Exit status: success.
pub const EXIT_OK: i32 = 0;
/// Exit status: the operation failed or a check found problems.
pub const EXIT_FAILED: i32 = 1;
/// Exit status: bad usage or bad input.
pub const EXIT_USAGE: i32 = 2;

/// The exit-code paragraph every binary's `--help` ends with.
pub const EXIT_CODES_HELP: &str = "Exit codes:\n  0  success\n  1  the operation failed or a check found problems (fsck errors, merge conflict, broken audit chain, ...)\n  2  bad usage or bad input (unknown flag, malformed file, unknown ref, missing store)";

/// Flags every QuadGit binary accepts, before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Data directory of the store.
    #[arg(
        long,
        global = true,
        env = "QG_DATA",
        default_value = "./qg-data",
        value_name = "DIR"
    )]
    pub data: PathBuf,
    /// Namespace to work in.
    #[arg(
        long,
        global = true,
        env = "QG_NS",
        default_value = "default",
        value_name = "NAME"
    )]
    pub ns: String,
    /// Print results as JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "QG_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// TOML file of defaults (keys are long flag names); flags and environment win.
    #[arg(long, global = true, env = "QG_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// File holding the master key (hex or base64); default: $QUADGIT_MASTER_KEY.
    #[arg(long, global = true, env = "QG_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
}

impl GlobalArgs {
    /// Open the store named by `--data`, with the keyring from the environment.
    pub fn open(&self) -> Result<Store, Error> {
        let mut store = Store::open(&self.data)?;
        store.set_keyring(self.keyring()?);
        Ok(store)
    }

    /// Secrets from the environment (never from flags): `QUADGIT_MASTER_KEY`
    /// (or `--master-key-file`), `QG_PASSWORD`, `QG_UNLOCK_TOKEN`.
    pub fn keyring(&self) -> Result<Keyring, Error> {
        let master = match (&self.master_key_file, std::env::var("QUADGIT_MASTER_KEY")) {
            (Some(path), _) => Some(MasterKey::from_file(path)?),
            (None, Ok(text)) => {
                let text = Zeroizing::new(text);
                Some(MasterKey::parse(&text).map_err(|e| match e {
                    Error::BadKey { reason, .. } => Error::BadKey {
                        what: "QUADGIT_MASTER_KEY".into(),
                        reason,
                    },
                    e => e,
                })?)
            }
            (None, Err(_)) => None,
        };
        Ok(Keyring {
            master,
            password: std::env::var("QG_PASSWORD").ok().map(Zeroizing::new),
            unlock_token: std::env::var("QG_UNLOCK_TOKEN").ok().map(Zeroizing::new),
        })
    }
}

/// A secret from environment variable `var`, else typed at a terminal prompt.
pub fn secret_from_env_or_prompt(var: &str, prompt: &str) -> Result<Zeroizing<String>, Error> {
    if let Ok(v) = std::env::var(var) {
        return Ok(Zeroizing::new(v));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::BadKey {
            what: var.to_string(),
            reason: format!("{var} is not set and there is no terminal to prompt on"),
        });
    }
    Ok(Zeroizing::new(rpassword::prompt_password(prompt)?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Send `tracing` logs to stderr (level from `QG_LOG`, default `warn`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// Die quietly on a closed stdout (`qg export | head`), as Unix filters do,
/// instead of panicking on a failed print.
pub fn default_sigpipe() {
    // SAFETY: resetting a signal disposition at startup, before any threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Settings for a process that rewrites a store in batches on several
/// threads (`qg-rotate-keys`): the C allocator keeps the memory a batch
/// frees (glibc gives the top of its heap back to the OS once 128 KiB are
/// free, and serves larger blocks with fresh mappings, so such a job
/// page-faulted the same memory in again and again: a fifth of a key
/// rotation's CPU time), and SQLite keeps no memory statistics
/// ([`crate::storage::disable_sqlite_memory_statistics`]).
///
/// # Safety
/// Call it first thing in `main`: no other thread may exist yet, and no
/// SQLite connection.
pub unsafe fn tune_for_batch_work() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
    // SAFETY: the caller guarantees that nothing else uses SQLite yet.
    unsafe { crate::storage::disable_sqlite_memory_statistics() };
}

/// Read the optional TOML configuration file and export its settings as
/// `QG_*` environment variables that are not set yet, so the precedence is
/// flags, then environment, then the file. The file is `--config FILE`, else
/// `$QG_CONFIG`; keys are the long flag names (`data`, `ns`, `hook-timeout`,
/// `log-format`, ...). Call before parsing arguments.
pub fn load_config() -> Result<Option<PathBuf>, Error> {
    let args: Vec<String> = std::env::args().collect();
    let from_flag = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=").map(str::to_string).or_else(|| {
            (a == "--config")
                .then(|| args.get(i + 1).cloned())
                .flatten()
        })
    });
    let Some(path) = from_flag
        .or_else(|| std::env::var("QG_CONFIG").ok())
        .map(PathBuf::from)
    else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::ReadFile {
        path: path.display().to_string(),
        source: e,
    })?;
    let bad = |reason: String| Error::BadConfig {
        path: path.display().to_string(),
        reason,
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start].lines().count().max(1))
            .unwrap_or(0);
        bad(format!("line {line}: {}", e.message()))
    })?;
    for (key, value) in table {
        let var = format!("QG_{}", key.to_ascii_uppercase().replace('-', "_"));
        if matches!(var.as_str(), "QG_PASSWORD" | "QG_NEW_PASSWORD") || var.contains("KEY") {
            return Err(bad(format!(
                "`{key}` is a secret and is not read from configuration files; use the environment"
            )));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => {
                return Err(bad(format!(
                    "`{key}` must be a string, number or boolean, not {}",
                    other.type_str()
                )))
            }
        };
        if std::env::var_os(&var).is_none() {
            std::env::set_var(var, value);
        }
    }
    Ok(Some(path))
}

/// Write shell completions for `cmd` to stdout.
pub fn print_completions(shell: clap_complete::Shell, cmd: &mut clap::Command) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, cmd, name, &mut std::io::stdout());
}

/// Write the man page of `cmd` (roff) to stdout.
pub fn print_man(cmd: clap::Command) -> Result<(), Error> {
    clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
    Ok(())
}

/// The exit code for an error.
pub fn exit_code(err: &Error) -> i32 {
    match err.kind() {
        ErrorKind::Usage => EXIT_USAGE,
        ErrorKind::Failed => EXIT_FAILED,
    }
}

/// Print `error: ...` with its cause chain to stderr and return the exit code.
pub fn report(err: &Error) -> i32 {
    report_with(err, err.kind())
}

/// [`report`] for a tool's own error type: same output, exit code from `kind`.
pub fn report_with(err: &dyn std::error::Error, kind: ErrorKind) -> i32 {
    let mut msg = format!("error: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(&format!("\n  caused by: {text}"));
        }
        source = s.source();
    }
    let _ = writeln!(std::io::stderr(), "{msg}");
    match kind {
        ErrorKind::Usage => EXIT_USAGE,
        ErrorKind::Failed => EXIT_FAILED,
    }
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(|e| Error::Other(e.to_string()))?;
    writeln!(out)?;
    Ok(())
}

/// Progress bars on stderr; hidden when stderr is not a terminal.
pub struct Bars {
    bar: std::cell::RefCell<Option<ProgressBar>>,
    visible: bool,
}

impl Default for Bars {
    fn default() -> Self {
        Bars {
            bar: std::cell::RefCell::new(None),
            visible: std::io::stderr().is_terminal(),
        }
    }
}

impl Progress for Bars {
    fn start(&self, what: &str, total: Option<u64>) {
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(
                    "{msg:>12} [{bar:30}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{msg:>12} {spinner} {human_pos} ({per_sec})")
                    .expect("valid template"),
            ),
        };
        if !self.visible {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_message(what.to_string());
        *self.bar.borrow_mut() = Some(bar);
    }

    fn inc(&self, n: u64) {
        if let Some(b) = &*self.bar.borrow() {
            b.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish_and_clear();
        }
    }
}
