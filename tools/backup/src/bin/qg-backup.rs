//! `qg-backup`: a thin shell over the `qg_backup` library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use qg_backup::backup::BackupResult;
use qg_backup::keys::{KeyOptions, PASSPHRASE_ENV};
use qg_backup::target::S3Options;
use qg_backup::{full, incremental, list, prune, restore, verify, Error};
use qg_store::cli::{self, GlobalArgs, EXIT_FAILED, EXIT_OK, EXIT_USAGE};

const AFTER_HELP: &str = "Targets: a directory, file://DIR, s3://BUCKET/PREFIX (credentials, region and endpoint from the AWS_* environment; --s3-endpoint for MinIO-style servers), or - for standard output/input.\n\
Secrets: QG_BACKUP_KEY (64 hex digits) or QG_BACKUP_PASSPHRASE in the environment, or --key-file / --passphrase-file; never as flags.\n\n\
Exit codes:\n  0  success\n  1  the operation failed or a check found problems (damaged or missing backup, broken chain, failed restore check)\n  2  bad usage or bad input (unknown flag, missing or wrong key, unknown backup, non-empty restore destination)";

#[derive(Parser)]
#[command(
    name = "qg-backup",
    version,
    about = "Streaming full and incremental backups of a QuadGit store; restore, verify, retention",
    long_about = "Backs up a QuadGit store (every namespace, encrypted ones as ciphertext) to a directory, S3-compatible storage or standard output, \
                  as one consistent point in time while the store keeps serving. Incrementals hold only what changed. \
                  Restore rebuilds a store from a chain and checks it like `qg fsck` before it is moved into place.",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    /// Endpoint of an S3-compatible server (e.g. http://127.0.0.1:9000); default: AWS_ENDPOINT_URL, else AWS.
    #[arg(long, global = true, env = "QG_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Default)]
struct KeyArgs {
    /// File holding the backup key (64 hex digits); default: $QG_BACKUP_KEY.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// File holding a passphrase (Argon2id derives the key); default: $QG_BACKUP_PASSPHRASE.
    #[arg(long, value_name = "FILE", conflicts_with = "key_file")]
    passphrase_file: Option<PathBuf>,
}

impl KeyArgs {
    fn options(&self) -> KeyOptions {
        KeyOptions {
            key_file: self.key_file.clone(),
            passphrase_file: self.passphrase_file.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Back up the whole store (every namespace) at one point in time.
    Full {
        /// Where to: DIR, file://DIR, s3://BUCKET/PREFIX, or - (standard output).
        #[arg(long, value_name = "TARGET")]
        to: String,
        /// Encrypt the backup (AES-256-GCM) with the configured key or passphrase.
        #[arg(long)]
        encrypt: bool,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Back up what changed since the newest backup of this store in the target (or --since).
    Incremental {
        /// Where to: DIR, file://DIR, s3://BUCKET/PREFIX, or - (standard output; needs --base).
        #[arg(long, value_name = "TARGET")]
        to: String,
        /// Base on this backup instead of the newest one.
        #[arg(long, value_name = "ID")]
        since: Option<String>,
        /// The target holding the chain to build on, when --to is -.
        #[arg(long, value_name = "TARGET")]
        base: Option<String>,
        /// Fail unless the chain is encrypted.
        #[arg(long)]
        encrypt: bool,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Rebuild a store in a new directory from a backup chain (--ns: one namespace only).
    Restore {
        /// DIR, file://DIR, s3://BUCKET/PREFIX, or - (streams on standard input, full first).
        #[arg(long, value_name = "TARGET")]
        from: String,
        /// Restore up to this backup (default: the newest).
        #[arg(long, value_name = "ID", conflicts_with = "at")]
        id: Option<String>,
        /// Restore the newest backup taken at or before T (RFC 3339, YYYY-MM-DD, or an age like 24h).
        #[arg(long, value_name = "T")]
        at: Option<String>,
        /// The new data directory (must not exist, or be empty).
        #[arg(long, value_name = "NEWDATA")]
        to: PathBuf,
        /// Tree nodes the final check (and each commit-delta rebuild) keeps in
        /// memory; past that it uses a temporary database in NEWDATA (slower,
        /// bounded memory).
        #[arg(long, value_name = "N", default_value_t = qg_backup::check::MEMORY_NODES)]
        memory_nodes: usize,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Check the catalog and chains; --read-data also reads every frame and object.
    Verify {
        /// DIR, file://DIR, s3://BUCKET/PREFIX, or - (streams on standard input).
        #[arg(long, value_name = "TARGET")]
        from: String,
        /// Only this backup and the chain it needs.
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Read every stream: checksums, authentication, object hashes.
        #[arg(long)]
        read_data: bool,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// List the backups in a target, oldest first, with their chain status.
    List {
        #[arg(long, value_name = "TARGET")]
        from: String,
    },
    /// Remove backups the retention policy does not keep (never one a kept backup needs).
    Prune {
        #[arg(long, value_name = "TARGET")]
        from: String,
        /// Keep the N newest backups.
        #[arg(long, default_value_t = 0, value_name = "N")]
        keep_last: u32,
        /// Keep the newest backup of each of the last N days with backups.
        #[arg(long, default_value_t = 0, value_name = "N")]
        keep_daily: u32,
        /// ... of each of the last N ISO weeks.
        #[arg(long, default_value_t = 0, value_name = "N")]
        keep_weekly: u32,
        /// ... of each of the last N months.
        #[arg(long, default_value_t = 0, value_name = "N")]
        keep_monthly: u32,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

fn main() -> ExitCode {
    cli::default_sigpipe();
    let passphrase_from_env = std::env::var_os(PASSPHRASE_ENV).is_some();
    if let Err(e) = cli::load_config() {
        return ExitCode::from(cli::report(&e) as u8);
    }
    if !passphrase_from_env && std::env::var_os(PASSPHRASE_ENV).is_some() {
        eprintln!("error: the configuration file sets a backup passphrase; secrets are not read from configuration files, use the environment or --passphrase-file");
        return ExitCode::from(EXIT_USAGE as u8);
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    cli::init_logging(cli.global.log_format);
    let code = match run(&cli, &matches) {
        Ok(code) => code,
        Err(e) => report(&e),
    };
    ExitCode::from(code as u8)
}

/// Print `error: ...` with its cause chain, as every QuadGit binary does.
fn report(err: &Error) -> i32 {
    cli::report_with(err, err.kind())
}

/// Whether `--ns` was typed on the command line (not defaulted, not from QG_NS).
fn ns_given(matches: &ArgMatches) -> bool {
    let mut m = Some(matches);
    while let Some(cur) = m {
        if cur.value_source("ns") == Some(ValueSource::CommandLine) {
            return true;
        }
        m = cur.subcommand().map(|(_, s)| s);
    }
    false
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Print a result as JSON on stdout, or on stderr when stdout carries a stream.
fn emit_json<T: serde::Serialize>(value: &T, stdout_busy: bool) -> Result<(), Error> {
    if stdout_busy {
        let text = serde_json::to_string_pretty(value).expect("results serialize");
        eprintln!("{text}");
        Ok(())
    } else {
        cli::print_json(value).map_err(Error::from)
    }
}

fn backup_summary(r: &BackupResult) -> String {
    let c = &r.counts;
    let mut s = format!(
        "{} backup {} of store {}: {} objects ({}), {} refs, {} reflog and {} audit entries",
        r.kind.as_str(),
        r.id,
        r.store_id,
        c.objects,
        human_bytes(c.object_bytes),
        c.refs,
        c.reflog,
        c.audit,
    );
    if c.deleted > 0 {
        s.push_str(&format!(", {} deletions", c.deleted));
    }
    if c.deltas > 0 {
        s.push_str(&format!(
            ", {} commit delta{} (instead of {} tree nodes, {})",
            c.deltas,
            if c.deltas == 1 { "" } else { "s" },
            c.delta_nodes,
            human_bytes(c.delta_node_bytes)
        ));
    }
    if c.resets > 0 {
        s.push_str(&format!(", {} namespace(s) reset", c.resets));
    }
    if let Some(p) = &r.parent {
        s.push_str(&format!(", based on {p}"));
    }
    s.push_str(&format!(
        "; {} written to {}{} in {}",
        human_bytes(r.bytes),
        r.target,
        if r.encrypted { " (encrypted)" } else { "" },
        secs(r.duration_ms)
    ));
    s
}

fn run(cli: &Cli, matches: &ArgMatches) -> Result<i32, Error> {
    let g = &cli.global;
    let s3 = S3Options {
        endpoint: cli.s3_endpoint.clone(),
    };
    let bars = cli::Bars::default();
    let ns = ns_given(matches).then(|| g.ns.clone());
    match &cli.command {
        Command::Completions { shell } => cli::print_completions(*shell, &mut Cli::command()),
        Command::Man => cli::print_man(Cli::command())?,
        Command::Full { to, encrypt, keys } => {
            no_ns(&ns)?;
            let r = full::full(
                &full::FullOptions {
                    data: g.data.clone(),
                    to: to.clone(),
                    encrypt: *encrypt,
                    keys: keys.options(),
                    s3,
                },
                &bars,
            )?;
            print_backup(&r, g.json, to == "-")?;
        }
        Command::Incremental {
            to,
            since,
            base,
            encrypt,
            keys,
        } => {
            no_ns(&ns)?;
            let r = incremental::incremental(
                &incremental::IncrementalOptions {
                    data: g.data.clone(),
                    to: to.clone(),
                    since: since.clone(),
                    base: base.clone(),
                    encrypt: *encrypt,
                    keys: keys.options(),
                    s3,
                },
                &bars,
            )?;
            print_backup(&r, g.json, to == "-")?;
        }
        Command::Restore {
            from,
            id,
            at,
            to,
            memory_nodes,
            keys,
        } => {
            // with QUADGIT_MASTER_KEY (and QG_PASSWORD) the check also decrypts encrypted namespaces
            let keyring = g.keyring().ok();
            let r = restore::restore_with_keys(
                &restore::RestoreOptions {
                    from: from.clone(),
                    id: id.clone(),
                    at: at.clone(),
                    to: to.clone(),
                    ns,
                    keys: keys.options(),
                    s3,
                    record_in: Some(g.data.clone()),
                    memory_nodes: Some(*memory_nodes),
                },
                keyring,
                &bars,
            )?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            if g.json {
                cli::print_json(&r)?;
            } else {
                let c = &r.check;
                println!(
                    "restored backup {} ({} stream{}, point in time {}) to {}: {} namespace{}{}, {} objects, {} refs; {} read in {}",
                    r.id,
                    r.chain.len(),
                    if r.chain.len() == 1 { "" } else { "s" },
                    r.point_in_time,
                    r.to.display(),
                    r.namespaces.len(),
                    if r.namespaces.len() == 1 { "" } else { "s" },
                    r.namespace.as_ref().map(|n| format!(" (only `{n}`)")).unwrap_or_default(),
                    r.objects,
                    r.refs,
                    human_bytes(r.bytes_read),
                    secs(r.duration_ms)
                );
                println!(
                    "check: {} objects re-hashed, {} commits, {} refs, {} audit entries verified{}{}",
                    c.objects_verified,
                    c.commits,
                    c.refs,
                    c.audit_entries,
                    if c.decrypted_namespaces.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; encrypted namespaces decrypted and checked: {}",
                            c.decrypted_namespaces.join(", ")
                        )
                    },
                    if c.encrypted_namespaces.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; encrypted namespaces restored sealed, not decrypted (no key here): {}",
                            c.encrypted_namespaces.join(", ")
                        )
                    }
                );
            }
        }
        Command::Verify {
            from,
            id,
            read_data,
            keys,
        } => {
            let r = verify::verify(
                &verify::VerifyOptions {
                    from: from.clone(),
                    id: id.clone(),
                    read_data: *read_data,
                    keys: keys.options(),
                    s3,
                    record_in: Some(g.data.clone()),
                },
                &bars,
            )?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            if g.json {
                cli::print_json(&r)?;
            } else {
                for p in &r.problems {
                    println!("DAMAGED {p}");
                }
                println!(
                    "{}: {} backup{} in {}, {} read in full ({}, {} objects re-hashed), {} problem{}",
                    if r.is_clean() { "OK" } else { "FAILED" },
                    r.backups,
                    if r.backups == 1 { "" } else { "s" },
                    r.target,
                    r.read.len(),
                    human_bytes(r.bytes_read),
                    r.objects_checked,
                    r.problems.len(),
                    if r.problems.len() == 1 { "" } else { "s" },
                );
            }
            if !r.is_clean() {
                return Ok(EXIT_FAILED);
            }
        }
        Command::List { from } => {
            let r = list::list(&list::ListOptions {
                from: from.clone(),
                s3,
            })?;
            if g.json {
                cli::print_json(&r)?;
            } else {
                print_list(&r).map_err(|e| {
                    Error::CheckFailed(format!("cannot write to standard output: {e}"))
                })?;
            }
        }
        Command::Prune {
            from,
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            dry_run,
        } => {
            let r = prune::prune(&prune::PruneOptions {
                from: from.clone(),
                keep_last: *keep_last,
                keep_daily: *keep_daily,
                keep_weekly: *keep_weekly,
                keep_monthly: *keep_monthly,
                dry_run: *dry_run,
                s3,
                record_in: Some(g.data.clone()),
            })?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            if g.json {
                cli::print_json(&r)?;
            } else {
                for k in &r.kept {
                    println!("keep   {} ({})", k.id, k.reasons.join(", "));
                }
                for x in &r.removed {
                    println!(
                        "{} {} ({}, {})",
                        if r.dry_run { "would remove" } else { "remove" },
                        x.id,
                        x.kind.as_str(),
                        human_bytes(x.bytes)
                    );
                }
                for i in &r.incomplete_removed {
                    println!(
                        "{} {i} (interrupted backup)",
                        if r.dry_run { "would remove" } else { "remove" }
                    );
                }
                println!(
                    "{} {} backup{} ({}), kept {}",
                    if r.dry_run { "would remove" } else { "removed" },
                    r.removed.len(),
                    if r.removed.len() == 1 { "" } else { "s" },
                    human_bytes(r.removed_bytes),
                    r.kept.len()
                );
            }
        }
    }
    Ok(EXIT_OK)
}

fn no_ns(ns: &Option<String>) -> Result<(), Error> {
    match ns {
        Some(_) => Err(Error::Usage(
            "backups always cover every namespace; --ns selects one namespace only for `restore`"
                .into(),
        )),
        None => Ok(()),
    }
}

fn print_backup(r: &BackupResult, json: bool, stdout_busy: bool) -> Result<(), Error> {
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if json {
        emit_json(r, stdout_busy)
    } else {
        let line = backup_summary(r);
        if stdout_busy {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        Ok(())
    }
}

fn print_list(r: &list::ListResult) -> std::io::Result<()> {
    let mut o = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(
        o,
        "{:<32} {:<11} {:<24} {:>10} {:>9} {:<4} {:<32} status",
        "id", "kind", "created", "size", "objects", "enc", "parent"
    )?;
    // one table in id (= time) order, damaged manifests in their place
    let mut rows: Vec<(&str, String)> = r
        .backups
        .iter()
        .map(|b| {
            let row = format!(
                "{:<32} {:<11} {:<24} {:>10} {:>9} {:<4} {:<32} {}",
                b.id,
                b.kind.as_str(),
                b.created,
                human_bytes(b.bytes),
                b.objects,
                if b.encrypted { "yes" } else { "no" },
                b.parent.as_deref().unwrap_or("-"),
                if b.restorable {
                    "ok".to_string()
                } else {
                    format!("BROKEN: {}", b.problem.as_deref().unwrap_or("?"))
                }
            );
            (b.id.as_str(), row)
        })
        .collect();
    rows.extend(r.damaged.iter().map(|d| {
        let row = format!(
            "{:<32} {:<11} {:<24} {:>10} {:>9} {:<4} {:<32} DAMAGED: {}",
            d.id, "?", "?", "?", "?", "?", "?", d.problem
        );
        (d.id.as_str(), row)
    }));
    rows.sort_by(|a, b| a.0.cmp(b.0));
    for (_, row) in rows {
        writeln!(o, "{row}")?;
    }
    for i in &r.incomplete {
        writeln!(o, "incomplete: {i} (no manifest)")?;
    }
    o.flush()
}
