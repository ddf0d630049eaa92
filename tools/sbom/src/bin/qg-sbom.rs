//! `qg-sbom`: SBOM, signatures, provenance and the vulnerability gate for
//! QuadGit releases. A thin shell over `qg_sbom::commands`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use qg_sbom::commands::{self as cmds, Severity};
use qg_sbom::Error;
use qg_store::audit::Outcome;
use qg_store::cli::{self, GlobalArgs, EXIT_FAILED, EXIT_OK};
use serde_json::json;
use zeroize::Zeroizing;

const EXIT_HELP: &str = "Exit codes:\n  0  success\n  1  the check or verification failed: stale SBOM, bad signature or provenance, a finding at or above --fail-on\n  2  bad usage or bad input: unknown flag, malformed file, unreadable key, wrong or missing COSIGN_PASSWORD, trivy missing without --trivy-json\n\nSecrets: the key password is read from COSIGN_PASSWORD only (never a flag).\nWith --data DIR (or QG_DATA), every command records an audit event in that QuadGit store.";

#[derive(Parser)]
#[command(
    name = "qg-sbom",
    version,
    about = "CycloneDX SBOM, cosign-compatible signatures, SLSA provenance and a vulnerability gate for QuadGit releases",
    after_help = EXIT_HELP
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a CycloneDX JSON SBOM of the workspace (deterministic under SOURCE_DATE_EPOCH).
    Generate {
        #[arg(long, default_value = "Cargo.toml", value_name = "FILE")]
        manifest_path: PathBuf,
        /// Where to write it (`-` for stdout).
        #[arg(long, short, default_value = "SBOM.json", value_name = "FILE")]
        output: PathBuf,
        /// CycloneDX specification version: 1.3, 1.4 or 1.5.
        #[arg(long, default_value = "1.5", value_name = "VERSION")]
        spec_version: String,
        /// Also list dev-dependencies of workspace members (scope `excluded`).
        #[arg(long)]
        include_dev: bool,
        /// Target triple whose dependencies are listed, or `all` (default: the host).
        #[arg(long, value_name = "TRIPLE")]
        target: Option<String>,
        /// Product name of the SBOM's metadata component (default: the workspace folder's name).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Exit 1 listing the differing components if the SBOM no longer matches the workspace.
    Check {
        #[arg(long, default_value = "Cargo.toml", value_name = "FILE")]
        manifest_path: PathBuf,
        #[arg(long, default_value = "SBOM.json", value_name = "FILE")]
        sbom: PathBuf,
    },
    /// Create PREFIX.key (cosign encrypted format, password from COSIGN_PASSWORD) and PREFIX.pub.
    Keygen {
        #[arg(long, default_value = "cosign", value_name = "PREFIX")]
        output_key_prefix: PathBuf,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Sign a file as `cosign sign-blob --key` does (base64 DER ECDSA P-256 / SHA-256).
    Sign {
        file: PathBuf,
        /// cosign private key (password from COSIGN_PASSWORD).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Signature file (default: FILE.sig).
        #[arg(long, value_name = "FILE")]
        output_signature: Option<PathBuf>,
        /// Also write a Sigstore bundle (v0.3 JSON, no transparency log entry).
        #[arg(long, value_name = "FILE")]
        bundle: Option<PathBuf>,
    },
    /// Verify a signature as `cosign verify-blob --key` does; exit 1 on mismatch.
    Verify {
        file: PathBuf,
        /// PEM public key (cosign.pub).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "bundle",
            conflicts_with = "bundle"
        )]
        signature: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        bundle: Option<PathBuf>,
    },
    /// Write SLSA provenance v1 for artifacts, as a signed DSSE envelope (in-toto JSON lines).
    Provenance {
        /// A built file (repeatable).
        #[arg(long = "artifact", value_name = "PATH", required = true)]
        artifacts: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[arg(
            long,
            short,
            default_value = "provenance.intoto.jsonl",
            value_name = "FILE"
        )]
        output: PathBuf,
        #[arg(long, default_value = "Cargo.toml", value_name = "FILE")]
        manifest_path: PathBuf,
        /// Builder id URI (default: the GitHub Actions workflow run, else a local builder id).
        #[arg(long, env = "QG_SBOM_BUILDER_ID", value_name = "URI")]
        builder_id: Option<String>,
        #[arg(long, default_value = cmds::provenance::BUILD_TYPE, value_name = "URI")]
        build_type: String,
        /// Source repository URL (default: git remote origin).
        #[arg(long, value_name = "URL")]
        repository: Option<String>,
        /// Source commit (default: $GITHUB_SHA, else `git rev-parse HEAD`).
        #[arg(long, value_name = "SHA")]
        git_commit: Option<String>,
        /// Source ref (default: $GITHUB_REF).
        #[arg(long, value_name = "REF")]
        git_ref: Option<String>,
        /// Target triple the artifacts were built for.
        #[arg(long, value_name = "TRIPLE")]
        target: Option<String>,
        /// Cargo profile used.
        #[arg(long, default_value = "release")]
        profile: String,
        /// When the build started (Unix seconds; default: now).
        #[arg(long, value_name = "SECS")]
        started_on: Option<i64>,
    },
    /// Check a provenance file: signature, predicate type, and artifacts against subjects.
    VerifyProvenance {
        #[arg(long, default_value = "provenance.intoto.jsonl", value_name = "FILE")]
        provenance: PathBuf,
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[arg(long = "artifact", value_name = "PATH", required = true)]
        artifacts: Vec<PathBuf>,
        /// Require this builder id.
        #[arg(long, value_name = "URI")]
        builder_id: Option<String>,
    },
    /// Scan the SBOM with trivy and gate on severity.
    Scan {
        #[arg(long, default_value = "SBOM.json", value_name = "FILE")]
        sbom: PathBuf,
        /// Exit 1 when a finding is at or above this severity.
        #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
        fail_on: Option<Severity>,
        /// Use a saved `trivy ... --format json` report instead of running trivy.
        #[arg(long, value_name = "FILE")]
        trivy_json: Option<PathBuf>,
        /// Ignore list (default: .qg-sbom-ignore.yaml when it exists).
        #[arg(long, value_name = "FILE")]
        ignore_file: Option<PathBuf>,
        /// Write the JSON summary here too.
        #[arg(long, value_name = "FILE")]
        summary: Option<PathBuf>,
        /// The trivy program.
        #[arg(
            long,
            default_value = "trivy",
            value_name = "PROGRAM",
            env = "QG_SBOM_TRIVY"
        )]
        trivy: PathBuf,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::parse(s).ok_or_else(|| format!("`{s}` is not one of CRITICAL, HIGH, MEDIUM, LOW"))
}

/// Print `error: ...` with its cause chain, as every QuadGit binary does.
fn report(err: &Error) -> i32 {
    match err {
        Error::Store(e) => cli::report(e),
        _ => cli::report_with(err, err.kind()),
    }
}

fn password() -> Result<Zeroizing<String>, Error> {
    match std::env::var("COSIGN_PASSWORD") {
        Ok(p) => Ok(Zeroizing::new(p)),
        Err(std::env::VarError::NotPresent) => Err(Error::MissingSecret(
            "COSIGN_PASSWORD is not set: the key password is read from the environment only \
             (export COSIGN_PASSWORD=...; an empty value means no password)"
                .into(),
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::MissingSecret(
            "COSIGN_PASSWORD is not valid UTF-8".into(),
        )),
    }
}

fn source_date_epoch() -> Result<Option<i64>, Error> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.trim().is_empty() => s.trim().parse().map(Some).map_err(|_| Error::BadInput {
            path: "SOURCE_DATE_EPOCH".into(),
            reason: format!("`{s}` is not a number of seconds since 1970"),
        }),
        _ => Ok(None),
    }
}

/// The builder id when none is given: the GitHub Actions workflow, else local.
fn default_builder_id() -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("GITHUB_SERVER_URL"), var("GITHUB_WORKFLOW_REF")) {
        (Some(server), Some(wf)) => format!("{server}/{wf}"),
        _ => "urn:qg-sbom:builder:local".into(),
    }
}

struct Audit {
    store: Option<qg_store::Store>,
}

impl Audit {
    fn open(global: &GlobalArgs, matches: &ArgMatches) -> Result<Audit, Error> {
        let given = matches!(
            matches.value_source("data"),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !given {
            return Ok(Audit { store: None });
        }
        let actor = qg_store::store::default_actor();
        Ok(Audit {
            store: Some(qg_sbom::audit::open(&global.data, &actor)?),
        })
    }

    fn record(
        &self,
        action: &str,
        target: &Path,
        ok: bool,
        detail: serde_json::Value,
    ) -> Result<(), Error> {
        if let Some(store) = &self.store {
            let outcome = if ok {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            qg_sbom::audit::record(
                store,
                action,
                &target.display().to_string(),
                outcome,
                detail,
            )?;
        }
        Ok(())
    }
}

fn out<T: serde::Serialize>(json: bool, value: &T, human: impl FnOnce()) -> Result<(), Error> {
    if json {
        cli::print_json(value)?;
    } else {
        human();
    }
    Ok(())
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<i32, Error> {
    let json = cli.global.json;
    let mut stdout = std::io::stdout();
    match cli.command {
        Command::Completions { shell } => {
            cli::print_completions(shell, &mut Cli::command());
            return Ok(EXIT_OK);
        }
        Command::Man => {
            cli::print_man(Cli::command())?;
            return Ok(EXIT_OK);
        }
        _ => {}
    }
    let audit = Audit::open(&cli.global, matches)?;
    match cli.command {
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
        Command::Generate {
            manifest_path,
            output,
            spec_version,
            include_dev,
            target,
            name,
        } => {
            let to_stdout = output.as_os_str() == "-";
            let r = cmds::generate(&cmds::GenerateOptions {
                manifest_path,
                output: (!to_stdout).then(|| output.clone()),
                spec_version,
                include_dev,
                target,
                name,
                source_date_epoch: source_date_epoch()?,
            })?;
            audit.record(
                "generate",
                &output,
                true,
                json!({ "serial": r.serial_number, "sha256": r.sha256, "components": r.components, "spec_version": r.spec_version }),
            )?;
            if to_stdout {
                stdout.write_all(r.json.as_bytes())?;
                return Ok(EXIT_OK);
            }
            out(json, &r, || {
                let kinds: Vec<String> =
                    r.by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
                println!(
                    "wrote {}: CycloneDX {}, {} components ({}), binaries: {}",
                    output.display(),
                    r.spec_version,
                    r.components,
                    kinds.join(", "),
                    r.binaries.join(", ")
                );
                println!("serial {}  sha256 {}", r.serial_number, r.sha256);
                if !r.without_license.is_empty() {
                    eprintln!(
                        "warning: no license declared by: {}",
                        r.without_license.join(", ")
                    );
                }
            })?;
            Ok(EXIT_OK)
        }
        Command::Check {
            manifest_path,
            sbom,
        } => {
            let r = cmds::check(&cmds::CheckOptions {
                manifest_path,
                sbom: sbom.clone(),
            })?;
            audit.record(
                "check",
                &sbom,
                r.current,
                json!({ "current": r.current, "added": r.added.len(), "removed": r.removed.len(), "changed": r.changed.len() }),
            )?;
            out(json, &r, || {
                for c in &r.added {
                    println!("+ {} {} ({})", c.name, c.version, c.bom_ref);
                }
                for c in &r.removed {
                    println!("- {} {} ({})", c.name, c.version, c.bom_ref);
                }
                for c in &r.changed {
                    println!(
                        "~ {} {} ({}): {}",
                        c.name,
                        c.version,
                        c.bom_ref,
                        c.fields.join(", ")
                    );
                }
                for d in &r.dependencies_changed {
                    println!("~ dependencies of {d}");
                }
                if r.metadata_changed {
                    println!("~ metadata.component (product name, version or binaries)");
                }
                if r.current {
                    println!(
                        "{} is current ({} components)",
                        sbom.display(),
                        r.components
                    );
                }
            })?;
            if r.current {
                Ok(EXIT_OK)
            } else {
                eprintln!(
                    "error: {} is out of date with the workspace; regenerate it with `qg-sbom generate --output {}`",
                    sbom.display(),
                    sbom.display()
                );
                Ok(EXIT_FAILED)
            }
        }
        Command::Keygen {
            output_key_prefix,
            force,
        } => {
            let pw = password()?;
            let r = cmds::keygen(
                &cmds::KeygenOptions {
                    output_key_prefix,
                    force,
                },
                &pw,
            )?;
            audit.record("keygen", &r.public_key, true, json!({ "key_id": r.key_id }))?;
            out(json, &r, || {
                println!(
                    "wrote {} (encrypted) and {}; key id {}",
                    r.private_key.display(),
                    r.public_key.display(),
                    r.key_id
                );
            })?;
            Ok(EXIT_OK)
        }
        Command::Sign {
            file,
            key,
            output_signature,
            bundle,
        } => {
            let pw = password()?;
            let r = cmds::sign(
                &cmds::SignOptions {
                    file,
                    key,
                    output_signature,
                    bundle,
                },
                &pw,
            )?;
            audit.record(
                "sign",
                &r.file,
                true,
                json!({ "sha256": r.sha256, "key_id": r.key_id, "signature": r.signature }),
            )?;
            out(json, &r, || {
                println!(
                    "signed {} (sha256 {}) -> {}",
                    r.file.display(),
                    r.sha256,
                    r.signature.display()
                );
            })?;
            Ok(EXIT_OK)
        }
        Command::Verify {
            file,
            key,
            signature,
            bundle,
        } => {
            let r = cmds::verify(&cmds::VerifyOptions {
                file,
                key,
                signature,
                bundle,
            })?;
            audit.record(
                "verify",
                &r.file,
                r.verified,
                json!({ "sha256": r.sha256, "key_id": r.key_id, "verified": r.verified }),
            )?;
            out(json, &r, || {
                if r.verified {
                    println!("Verified OK: {} (sha256 {})", r.file.display(), r.sha256);
                }
            })?;
            if r.verified {
                Ok(EXIT_OK)
            } else {
                eprintln!(
                    "error: verification failed: {}",
                    r.reason.as_deref().unwrap_or("bad signature")
                );
                Ok(EXIT_FAILED)
            }
        }
        Command::Provenance {
            artifacts,
            key,
            output,
            manifest_path,
            builder_id,
            build_type,
            repository,
            git_commit,
            git_ref,
            target,
            profile,
            started_on,
        } => {
            let pw = password()?;
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let repository = repository.or_else(|| {
                Some(format!(
                    "{}/{}",
                    env("GITHUB_SERVER_URL")?,
                    env("GITHUB_REPOSITORY")?
                ))
            });
            let invocation_id = match (
                env("GITHUB_SERVER_URL"),
                env("GITHUB_REPOSITORY"),
                env("GITHUB_RUN_ID"),
            ) {
                (Some(s), Some(r), Some(id)) => Some(format!(
                    "{s}/{r}/actions/runs/{id}/attempts/{}",
                    env("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into())
                )),
                _ => None,
            };
            let r = cmds::provenance(
                &cmds::ProvenanceOptions {
                    artifacts,
                    key,
                    output,
                    manifest_path,
                    build_type,
                    builder_id: builder_id.unwrap_or_else(default_builder_id),
                    invocation_id,
                    repository,
                    git_commit: git_commit.or_else(|| env("GITHUB_SHA")),
                    git_ref: git_ref.or_else(|| env("GITHUB_REF")),
                    profile,
                    target,
                    started_on,
                    finished_on: None,
                },
                &pw,
            )?;
            audit.record(
                "provenance",
                &r.output,
                true,
                json!({ "subjects": r.subjects, "builder_id": r.builder_id, "git_commit": r.git_commit, "key_id": r.key_id }),
            )?;
            out(json, &r, || {
                println!(
                    "wrote {}: {} subject(s), {} resolved dependencies, builder {}",
                    r.output.display(),
                    r.subjects.len(),
                    r.resolved_dependencies,
                    r.builder_id
                );
            })?;
            Ok(EXIT_OK)
        }
        Command::VerifyProvenance {
            provenance,
            key,
            artifacts,
            builder_id,
        } => {
            let r = cmds::verify_provenance(&cmds::VerifyProvenanceOptions {
                provenance,
                key,
                artifacts,
                builder_id,
            })?;
            audit.record(
                "verify-provenance",
                &r.provenance,
                r.verified,
                json!({ "verified": r.verified, "problems": r.problems, "artifacts": r.artifacts_checked }),
            )?;
            out(json, &r, || {
                if r.verified {
                    println!(
                        "Verified OK: {} ({} artifact(s) match its subjects, builder {})",
                        r.provenance.display(),
                        r.artifacts_checked.len(),
                        r.builder_ids.join(", ")
                    );
                }
            })?;
            if r.verified {
                Ok(EXIT_OK)
            } else {
                for p in &r.problems {
                    eprintln!("error: {p}");
                }
                Ok(EXIT_FAILED)
            }
        }
        Command::Scan {
            sbom,
            fail_on,
            trivy_json,
            ignore_file,
            summary,
            trivy,
        } => {
            let ignore_file = ignore_file.or_else(|| {
                let p = PathBuf::from(cmds::scan::DEFAULT_IGNORE_FILE);
                p.is_file().then_some(p)
            });
            let r = cmds::scan(&cmds::ScanOptions {
                sbom: sbom.clone(),
                trivy_json,
                trivy,
                fail_on,
                ignore_file,
                summary,
                today: None,
            })?;
            let counts: serde_json::Map<String, serde_json::Value> = r
                .counts
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), json!(v)))
                .collect();
            audit.record(
                "scan",
                &sbom,
                !r.gate_failed,
                json!({ "counts": counts, "ignored": r.ignored.len(), "fail_on": r.fail_on, "blocking": r.blocking, "report": r.report }),
            )?;
            out(json, &r, || print_scan(&r))?;
            if r.gate_failed {
                eprintln!(
                    "error: {} finding(s) at or above {}: the vulnerability gate fails",
                    r.blocking,
                    r.fail_on.map(Severity::as_str).unwrap_or("")
                );
                Ok(EXIT_FAILED)
            } else {
                Ok(EXIT_OK)
            }
        }
    }
}

fn print_scan(r: &cmds::ScanResult) {
    let order = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Unknown,
    ];
    let counts: Vec<String> = order
        .iter()
        .map(|s| format!("{} {}", s.as_str(), r.counts.get(s).copied().unwrap_or(0)))
        .collect();
    println!(
        "{}: {} finding(s): {}",
        r.artifact.as_deref().unwrap_or(&r.report),
        r.findings.len(),
        counts.join(", ")
    );
    if !r.findings.is_empty() {
        println!("SEVERITY  PACKAGE                  INSTALLED      FIXED          ID");
        for f in &r.findings {
            println!(
                "{:<9} {:<24} {:<14} {:<14} {}",
                f.severity.as_str(),
                f.package,
                f.installed_version,
                f.fixed_version.as_deref().unwrap_or("-"),
                f.id
            );
        }
    }
    for i in &r.ignored {
        println!(
            "ignored: {} in {} until {}: {}",
            i.finding.id, i.finding.package, i.expires, i.reason
        );
    }
    for e in &r.expired_ignores {
        println!(
            "expired ignore entry (no longer applied): {} expired {}: {}",
            e.id, e.expires, e.reason
        );
    }
    for e in &r.unused_ignores {
        println!("unused ignore entry: {} (matched no finding)", e.id);
    }
}

fn main() -> ExitCode {
    cli::default_sigpipe();
    if let Err(e) = cli::load_config() {
        return ExitCode::from(cli::report(&e) as u8);
    }
    let matches = Cli::command().get_matches();
    let parsed = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    cli::init_logging(parsed.global.log_format);
    let code = match run(parsed, &matches) {
        Ok(code) => code,
        Err(e) => report(&e),
    };
    ExitCode::from(code as u8)
}
