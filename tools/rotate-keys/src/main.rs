//! `qg-rotate-keys`: a thin shell over `qg_rotate_keys::commands`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use qg_rotate_keys::commands::{dek, encrypt, master, password, status};
use qg_store::cli::{self, GlobalArgs, EXIT_OK};
use qg_store::crypto::KdfParams;
use qg_store::rotation::{RekeyOptions, RekeyReport};
use qg_store::Error;

#[derive(Parser)]
#[command(
    name = "qg-rotate-keys",
    version,
    about = "Rotate the keys of a QuadGit store",
    long_about = "Rotate the master key, change namespace passwords, rotate a namespace's data key, or encrypt a \
                  plaintext namespace. Secrets come only from the environment: QUADGIT_MASTER_KEY (or \
                  --master-key-file), QG_PASSWORD, QG_NEW_PASSWORD (or a prompt). `dek` and `encrypt` can be \
                  killed at any moment and re-run: the re-run finishes the job.",
    after_help = cli::EXIT_CODES_HELP
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per namespace: encrypted or not, master key id, key versions and ages, objects per key, password.
    Status,
    /// Rewrap every data key under a new master key (the old one from QUADGIT_MASTER_KEY).
    Master {
        /// File with the new master key (64 hex digits or base64 of 32 bytes).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
        /// Show what would change without changing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Change the password of namespace --ns (old: QG_PASSWORD, new: QG_NEW_PASSWORD, else prompts).
    Password {
        #[arg(long)]
        dry_run: bool,
        /// Argon2id memory for the new password in MiB (default: keep the current parameters).
        #[arg(long, value_name = "MIB", requires_all = ["kdf_iterations", "kdf_parallelism"])]
        kdf_memory_mib: Option<u32>,
        #[arg(long, value_name = "N")]
        kdf_iterations: Option<u32>,
        #[arg(long, value_name = "N")]
        kdf_parallelism: Option<u32>,
    },
    /// New data key for namespace --ns: rebuilds the database file with every
    /// object re-encrypted (the store must not be open elsewhere: stop `qg
    /// serve` first). Killed, it leaves the store as it was; run it again.
    Dek {
        /// Show what would change (objects, bytes, key versions) without changing it.
        #[arg(long)]
        dry_run: bool,
        /// Objects read, re-keyed and written per batch (up to four batches
        /// are in memory at a time, and the commits and internal nodes).
        #[arg(long, default_value_t = 2000)]
        batch: usize,
    },
    /// Encrypt plaintext namespace --ns: rebuilds the database file with new
    /// addresses, refs and reflog rewritten (the store must not be open
    /// elsewhere). Killed, it leaves the store as it was; run it again.
    Encrypt {
        /// Show what would change (objects, bytes) without changing it.
        #[arg(long)]
        dry_run: bool,
        /// Objects read, re-keyed and written per batch (up to four batches
        /// are in memory at a time, and the commits and internal nodes).
        #[arg(long, default_value_t = 2000)]
        batch: usize,
    },
}

fn main() -> ExitCode {
    // SAFETY: first thing in main: no other thread, no connection yet.
    unsafe { cli::tune_for_batch_work() };
    cli::default_sigpipe();
    if let Err(e) = cli::load_config() {
        return ExitCode::from(cli::report(&e) as u8);
    }
    let cli = Cli::parse();
    cli::init_logging(cli.global.log_format);
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => cli::report(&e),
    };
    ExitCode::from(code as u8)
}

fn print_rekey(json: bool, r: &RekeyReport) -> Result<(), Error> {
    if json {
        return cli::print_json(r);
    }
    let from = r
        .from_version
        .map(|v| format!("key v{v}"))
        .unwrap_or_else(|| "plaintext".into());
    if r.erase_only {
        if r.dry_run {
            println!(
                "{}: a killed run switched to key v{} but left the final rewrite of the file; it would be finished",
                r.ns, r.to_version
            );
        } else {
            println!(
                "{}: finished the final rewrite a killed run left (key v{}; no old key material remains in the files)",
                r.ns, r.to_version
            );
        }
    } else if r.already_done {
        println!(
            "{}: already encrypted (key v{}); nothing to do",
            r.ns, r.to_version
        );
    } else if r.dry_run {
        println!(
            "would re-encrypt {} objects ({} bytes) of {} from {from} to key v{} under master key {}",
            r.objects_before, r.bytes_before, r.ns, r.to_version, r.kek_id
        );
    } else {
        println!(
            "{}: {} -> key v{}{}: {} objects rewritten into a new database file, {} old objects gone with the old file",
            r.ns,
            from,
            r.to_version,
            if r.resumed {
                " (resumed: a killed run's unfinished work was redone)"
            } else {
                ""
            },
            r.objects_rewritten,
            r.objects_deleted
        );
    }
    Ok(())
}

fn run(cli: &Cli) -> Result<i32, Error> {
    let g = &cli.global;
    let mut store = g.open()?;
    match &cli.command {
        Command::Status => {
            let s = status::run(&store)?;
            if g.json {
                cli::print_json(&s)?;
            } else {
                println!(
                    "master key in environment: {}",
                    s.master_key_id.as_deref().unwrap_or("(none)")
                );
                if s.interrupted_rebuild {
                    println!(
                        "INTERRUPTED: a `dek` or `encrypt` run was killed while writing the new database file; \
                         the store is as it was before it: run the same command again"
                    );
                }
                for n in &s.namespaces {
                    if !n.encrypted && n.unfinished_job.is_none() {
                        println!("{}: plaintext, {} objects", n.name, n.objects);
                        continue;
                    }
                    println!(
                        "{}: encrypted{}, master key {}, key v{}, {} objects{}",
                        n.name,
                        n.kdf
                            .map(|k| format!(
                                ", password-protected (Argon2id m={} MiB t={} p={})",
                                k.m_kib / 1024,
                                k.t,
                                k.p
                            ))
                            .unwrap_or_default(),
                        n.kek_id.as_deref().unwrap_or("?"),
                        n.current_version
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into()),
                        n.objects,
                        n.unfinished_job
                            .as_deref()
                            .map(|j| match j {
                                "erase" => format!(
                                    ", UNFINISHED final rewrite of a re-encryption: re-run the `dek` or `encrypt` command with --ns {}",
                                    n.name
                                ),
                                j => format!(
                                    ", UNFINISHED `{j}` job: re-run `qg-rotate-keys {j} --ns {}`",
                                    n.name
                                ),
                            })
                            .unwrap_or_default()
                    );
                    for v in &n.versions {
                        println!(
                            "    v{}{} created {} ({} days), {} objects sealed",
                            v.version,
                            if v.current { " (current)" } else { "" },
                            v.created,
                            v.age_days
                                .map(|d| d.to_string())
                                .unwrap_or_else(|| "?".into()),
                            v.sealed_objects
                        );
                    }
                }
            }
        }
        Command::Master {
            new_key_file,
            dry_run,
        } => {
            let r = master::run(
                &store,
                &master::MasterOptions {
                    new_key_file: new_key_file.clone(),
                    dry_run: *dry_run,
                },
            )?;
            if g.json {
                cli::print_json(&r)?;
            } else if r.dry_run {
                println!(
                    "would rewrap the keys of {} namespaces from master key {} to {} (no object data changes)",
                    r.namespaces.len(),
                    r.old_kek_id,
                    r.new_kek_id
                );
            } else {
                println!(
                    "rewrapped the keys of {} namespaces: master key {} -> {}. Set QUADGIT_MASTER_KEY to the new key now.",
                    r.namespaces.len(),
                    r.old_kek_id,
                    r.new_kek_id
                );
            }
        }
        Command::Password {
            dry_run,
            kdf_memory_mib,
            kdf_iterations,
            kdf_parallelism,
        } => {
            let new = cli::secret_from_env_or_prompt(
                "QG_NEW_PASSWORD",
                &format!("New password for namespace {}: ", g.ns),
            )?;
            let kdf = match (kdf_memory_mib, kdf_iterations, kdf_parallelism) {
                (Some(m), Some(t), Some(p)) => Some(KdfParams {
                    m_kib: m.saturating_mul(1024),
                    t: *t,
                    p: *p,
                }),
                _ => None,
            };
            let r = password::run(
                &store,
                &password::PasswordOptions {
                    ns: g.ns.clone(),
                    kdf,
                    dry_run: *dry_run,
                },
                &new,
            )?;
            if g.json {
                cli::print_json(&r)?;
            } else {
                println!(
                    "{} the password of {} ({} key versions rewrapped; no object data changes)",
                    if r.dry_run { "would change" } else { "changed" },
                    r.ns,
                    r.key_versions.len()
                );
            }
        }
        Command::Dek { dry_run, batch } => {
            let r = dek::run(
                &mut store,
                &dek::DekOptions {
                    ns: g.ns.clone(),
                    rekey: RekeyOptions {
                        dry_run: *dry_run,
                        batch_objects: *batch,
                    },
                },
                &cli::Bars::default(),
            )?;
            print_rekey(g.json, &r)?;
        }
        Command::Encrypt { dry_run, batch } => {
            let r = encrypt::run(
                &mut store,
                &encrypt::EncryptOptions {
                    ns: g.ns.clone(),
                    rekey: RekeyOptions {
                        dry_run: *dry_run,
                        batch_objects: *batch,
                    },
                },
                &cli::Bars::default(),
            )?;
            print_rekey(g.json, &r)?;
        }
    }
    Ok(EXIT_OK)
}
