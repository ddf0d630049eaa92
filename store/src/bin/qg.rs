//! `qg`: the QuadGit command line. A thin shell over `qg_store::commands`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use qg_store::cli::{self, GlobalArgs, EXIT_FAILED, EXIT_OK};
use qg_store::commands::{branch, bulk_load, commit, diff, export, fsck, gc, log, merge, query};
use qg_store::crypto::KdfParams;
use qg_store::merge::Strategy;
use qg_store::rdf::{Format, Source};
use qg_store::store::NamespaceOptions;
use qg_store::tree::Change;
use qg_store::{audit, rdf, Error, Store};

#[derive(Parser)]
#[command(
    name = "qg",
    version,
    about = "QuadGit: a versioned, content-addressed RDF quad store",
    long_about = "QuadGit keeps RDF quads in namespaces with Git-like commits, branches, tags, merges and diffs, \
                  on one SQLite file per store, with a hash-chained audit log and hooks.",
    after_help = cli::EXIT_CODES_HELP
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    /// Seconds a hook may run before it is killed.
    #[arg(
        long,
        global = true,
        env = "QG_HOOK_TIMEOUT",
        default_value_t = 60,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    hook_timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a store in --data with the namespace `default`.
    Init,
    /// Create, list or remove namespaces.
    #[command(subcommand)]
    Ns(NsCommand),
    /// Commit additions and removals to a branch in one atomic step.
    Commit {
        /// Commit message.
        #[arg(short, long)]
        message: String,
        /// Author (default: $QG_ACTOR or $USER).
        #[arg(long)]
        author: Option<String>,
        /// Branch to commit on (default: the namespace's default branch).
        #[arg(long)]
        branch: Option<String>,
        /// RDF file of quads to add (`-` for stdin); repeatable.
        #[arg(long, value_name = "FILE")]
        add: Vec<String>,
        /// RDF file of quads to remove (`-` for stdin); repeatable.
        #[arg(long, value_name = "FILE")]
        remove: Vec<String>,
        /// Format of the files: nquads, ntriples, trig, turtle (default: from the extension; stdin: nquads).
        #[arg(long, value_parser = parse_format)]
        format: Option<Format>,
        /// Fail unless the branch is at this commit (compare-and-swap).
        #[arg(long, value_name = "COMMIT")]
        expected_parent: Option<String>,
        /// Commit even when nothing changes.
        #[arg(long)]
        allow_empty: bool,
    },
    /// Load a large file fast: sorted externally, tree built bottom-up.
    BulkLoad {
        /// RDF file (`-` for stdin).
        file: String,
        #[arg(short, long)]
        message: String,
        #[arg(long)]
        branch: Option<String>,
        #[arg(long)]
        author: Option<String>,
        #[arg(long, value_parser = parse_format)]
        format: Option<Format>,
        /// Memory for sorting, in MiB, before spilling to temporary files.
        #[arg(long, default_value_t = 256, value_name = "MIB")]
        sort_memory: usize,
    },
    /// Show history, newest first.
    Log {
        /// Where to start (default: the default branch).
        reference: Option<String>,
        /// Show at most N commits.
        #[arg(short = 'n', long = "max-count", value_name = "N")]
        limit: Option<usize>,
    },
    /// Show one commit.
    Show { reference: String },
    /// Quads that differ between two refs, as `+ quad` / `- quad` lines.
    Diff {
        from: String,
        to: String,
        /// Only print counts.
        #[arg(long)]
        stat: bool,
    },
    /// List branches, create NAME [FROM], or delete with -d NAME; `protect`/`unprotect` NAME.
    #[command(args_conflicts_with_subcommands = true)]
    Branch {
        name: Option<String>,
        from: Option<String>,
        /// Delete the branch NAME.
        #[arg(short = 'd', long = "delete", value_name = "NAME", conflicts_with_all = ["name", "from"])]
        delete: Option<String>,
        #[command(subcommand)]
        action: Option<BranchAction>,
    },
    /// List tags, or create tag NAME at REF (default: the default branch).
    Tag {
        name: Option<String>,
        reference: Option<String>,
    },
    /// Three-way merge of SOURCE into a branch.
    Merge {
        source: String,
        /// Branch to merge into (default: the default branch).
        #[arg(long)]
        into: Option<String>,
        #[arg(long, default_value = "three-way", value_parser = parse_strategy)]
        strategy: Strategy,
        #[arg(short, long)]
        message: Option<String>,
        #[arg(long)]
        author: Option<String>,
    },
    /// Write a ref's quads to stdout.
    Export {
        reference: Option<String>,
        /// Only this named graph.
        #[arg(long, value_name = "IRI")]
        graph: Option<String>,
        /// nquads (default) or trig.
        #[arg(long, default_value = "nquads", value_parser = parse_format)]
        format: Format,
    },
    /// Match a quad pattern: `?s <http://p> ?o [graph]`; `?var` or `*` anywhere.
    Query {
        /// Ref to query (default: the default branch).
        #[arg(long)]
        at: Option<String>,
        /// Stop after N matches.
        #[arg(long)]
        limit: Option<u64>,
        /// The pattern (one argument or several).
        #[arg(required = true, num_args = 1..)]
        pattern: Vec<String>,
    },
    /// Re-hash every object and check every ref's history and trees.
    Fsck,
    /// Remove objects no ref, tag or reflog entry reaches.
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Read or verify the hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Serve the store over HTTP/JSON (API tokens, roles, /metrics, /openapi.json).
    #[cfg(feature = "server")]
    Serve {
        /// Address to listen on (IP:PORT; port 0 picks a free one).
        #[arg(
            long,
            env = "QG_LISTEN",
            default_value = "127.0.0.1:7878",
            value_name = "ADDR"
        )]
        listen: String,
        /// Largest request body accepted, in MiB (413 beyond).
        #[arg(long, default_value_t = 16, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
        max_body_mib: u64,
        /// Seconds a request may take before it is answered 503.
        #[arg(long, default_value_t = 120, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        request_timeout: u64,
        /// Open stores (SQLite connections) kept for reuse.
        #[arg(long, default_value_t = 32, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
        pool_size: u64,
        /// Failed authentications per client (or token) per minute before answering 429.
        #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        auth_failure_limit: u64,
        /// After SIGTERM, seconds in-flight requests may take before the server exits anyway.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        shutdown_timeout: u64,
        /// Async worker threads (0: one per core).
        #[arg(long, default_value_t = 0, value_name = "N")]
        workers: usize,
    },
    /// Create, list and revoke API tokens for `qg serve`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

#[derive(Subcommand)]
enum NsCommand {
    /// Create a namespace (branch `main` with an empty root commit).
    Create {
        name: String,
        /// Encrypt it at rest under a new data key wrapped by QUADGIT_MASTER_KEY.
        #[arg(long)]
        encrypted: bool,
        /// Also protect it with a password, read from QG_PASSWORD or a prompt (implies --encrypted).
        #[arg(long)]
        password: bool,
        /// Argon2id memory for the password, in MiB.
        #[arg(long, default_value_t = 64, value_name = "MIB")]
        kdf_memory_mib: u32,
        /// Argon2id iterations.
        #[arg(long, default_value_t = 3, value_name = "N")]
        kdf_iterations: u32,
        /// Argon2id lanes.
        #[arg(long, default_value_t = 4, value_name = "N")]
        kdf_parallelism: u32,
    },
    /// Check a namespace password (QG_PASSWORD or prompt) and print a
    /// short-lived unlock token; set it as QG_UNLOCK_TOKEN to skip the password.
    Unlock {
        name: String,
        /// How long the token is valid, e.g. 15m, 1h, 90s.
        #[arg(long, default_value = "15m", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// List namespaces.
    List,
    /// Delete a namespace and everything in it.
    Rm { name: String },
}

#[derive(Subcommand)]
enum BranchAction {
    /// Protect branch NAME: writers may no longer commit to it (maintainers and admins may).
    Protect { name: String },
    /// Lift the protection of branch NAME.
    Unprotect { name: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token and print it (only it) on stdout; the store keeps only its hash.
    /// `--ns NAME` given on the command line limits the token to that namespace;
    /// without it the token holds its role in every namespace.
    Create {
        /// Who the token acts as (the actor of its audit entries).
        #[arg(long)]
        user: String,
        /// reader, writer, maintainer or admin.
        #[arg(long, value_parser = parse_role)]
        role: qg_store::server::roles::Role,
        /// Lifetime, e.g. 12h or 30d (default: until revoked).
        #[arg(long, value_name = "DURATION", value_parser = qg_store::server::tokens::parse_duration)]
        expires: Option<Duration>,
    },
    /// List tokens (ids, users, roles; never the tokens).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

/// Whether `--ns` was given on the command line of `qg token create`.
static TOKEN_NS_EXPLICIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

fn parse_role(s: &str) -> Result<qg_store::server::roles::Role, String> {
    qg_store::server::roles::Role::from_name(s)
        .ok_or_else(|| format!("unknown role `{s}` (reader, writer, maintainer, admin)"))
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print entries, oldest first.
    Log {
        /// Only entries at or after T: RFC 3339, YYYY-MM-DD, or an age like 24h / 7d.
        #[arg(long, value_name = "T")]
        since: Option<String>,
    },
    /// Check the hash chain; exit 1 naming the first bad entry.
    Verify,
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::from_name(s)
        .ok_or_else(|| format!("unknown format `{s}` (nquads, ntriples, trig, turtle)"))
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.char_indices().last().map_or(0, |(i, _)| i));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("bad duration `{s}`: use e.g. 90s, 15m, 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("bad duration `{s}`: use e.g. 90s, 15m, 1h")),
    };
    if secs == 0 {
        return Err("the duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    Strategy::from_name(s)
        .ok_or_else(|| format!("unknown strategy `{s}` (three-way, ours, theirs)"))
}

fn main() -> ExitCode {
    cli::default_sigpipe();
    if let Err(e) = cli::load_config() {
        return ExitCode::from(cli::report(&e) as u8);
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // `qg token create --ns NAME` scopes the token only when --ns is given explicitly
    let _ = TOKEN_NS_EXPLICIT.set(
        matches
            .subcommand_matches("token")
            .and_then(|m| m.subcommand_matches("create"))
            .is_some_and(|m| m.value_source("ns") == Some(clap::parser::ValueSource::CommandLine)),
    );
    #[cfg(feature = "server")]
    if matches!(cli.command, Command::Serve { .. }) && std::env::var_os("QG_LOG").is_none() {
        // the server logs one line per request at info level
        std::env::set_var("QG_LOG", "info");
    }
    cli::init_logging(cli.global.log_format);
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => cli::report(&e),
    };
    ExitCode::from(code as u8)
}

fn open(cli: &Cli) -> Result<Store, Error> {
    let mut store = cli.global.open()?;
    store.set_hook_timeout(Duration::from_secs(cli.hook_timeout));
    Ok(store)
}

fn out() -> std::io::BufWriter<std::io::StdoutLock<'static>> {
    std::io::BufWriter::new(std::io::stdout().lock())
}

fn run(cli: &Cli) -> Result<i32, Error> {
    let g = &cli.global;
    let ns = g.ns.clone();
    match &cli.command {
        Command::Completions { shell } => cli::print_completions(*shell, &mut Cli::command()),
        Command::Man => cli::print_man(Cli::command())?,
        Command::Init => {
            let store = Store::init(&g.data)?;
            if g.json {
                cli::print_json(
                    &serde_json::json!({"data": g.data, "store_id": store.id()?, "namespace": "default"}),
                )?;
            } else {
                println!(
                    "Initialized QuadGit store in {} (namespace `default`, branch `main`)",
                    g.data.display()
                );
            }
        }
        Command::Ns(cmd) => {
            let store = open(cli)?;
            match cmd {
                NsCommand::Create {
                    name,
                    encrypted,
                    password,
                    kdf_memory_mib,
                    kdf_iterations,
                    kdf_parallelism,
                } => {
                    let password = if *password {
                        Some(cli::secret_from_env_or_prompt(
                            "QG_PASSWORD",
                            &format!("Password for namespace {name}: "),
                        )?)
                    } else {
                        None
                    };
                    let opts = NamespaceOptions {
                        encrypted: *encrypted,
                        password,
                        kdf: Some(KdfParams {
                            m_kib: kdf_memory_mib.saturating_mul(1024),
                            t: *kdf_iterations,
                            p: *kdf_parallelism,
                        }),
                    };
                    let root = store.create_namespace_with(name, &opts)?;
                    if g.json {
                        cli::print_json(&serde_json::json!({"namespace": name, "commit": root}))?;
                    } else {
                        println!("Created namespace {name}");
                    }
                }
                NsCommand::Unlock { name, ttl } => {
                    let mut keyring = g.keyring()?;
                    if keyring.password.is_none() {
                        keyring.password = Some(cli::secret_from_env_or_prompt(
                            "QG_PASSWORD",
                            &format!("Password for namespace {name}: "),
                        )?);
                    }
                    let mut store = store;
                    store.set_keyring(keyring);
                    let token = store.unlock(name, *ttl)?;
                    if g.json {
                        cli::print_json(
                            &serde_json::json!({"namespace": name, "token": token, "expires_in_secs": ttl.as_secs()}),
                        )?;
                    } else {
                        println!("{token}");
                    }
                }
                NsCommand::List => {
                    let names = store.namespaces()?;
                    if g.json {
                        cli::print_json(&names)?;
                    } else {
                        for n in names {
                            println!("{n}");
                        }
                    }
                }
                NsCommand::Rm { name } => {
                    store.delete_namespace(name)?;
                    if g.json {
                        cli::print_json(&serde_json::json!({"deleted": name}))?;
                    } else {
                        println!("Deleted namespace {name}");
                    }
                }
            }
        }
        Command::Commit {
            message,
            author,
            branch,
            add,
            remove,
            format,
            expected_parent,
            allow_empty,
        } => {
            let store = open(cli)?;
            let expected_parent = match expected_parent {
                Some(spec) => Some(qg_store::refs::resolve(&store.objects(&ns)?, spec)?),
                None => None,
            };
            let r = commit::commit(
                &store,
                &commit::CommitOptions {
                    ns,
                    branch: branch.clone(),
                    message: message.clone(),
                    author: author.clone(),
                    add: add.iter().map(|a| Source::from_arg(a)).collect(),
                    remove: remove.iter().map(|a| Source::from_arg(a)).collect(),
                    format: *format,
                    expected_parent,
                    allow_empty: *allow_empty,
                },
            )?;
            for w in &r.hook_warnings {
                eprintln!("warning: {w}");
            }
            if g.json {
                cli::print_json(&r)?;
            } else {
                println!(
                    "[{} {}] +{} -{} ({} quads)",
                    r.branch,
                    r.commit.short(),
                    r.added,
                    r.removed,
                    r.quads
                );
            }
        }
        Command::BulkLoad {
            file,
            message,
            branch,
            author,
            format,
            sort_memory,
        } => {
            let store = open(cli)?;
            let r = bulk_load::bulk_load(
                &store,
                &bulk_load::BulkLoadOptions {
                    ns,
                    branch: branch.clone(),
                    source: Source::from_arg(file),
                    format: *format,
                    message: message.clone(),
                    author: author.clone(),
                    sort_memory_bytes: sort_memory << 20,
                    ..Default::default()
                },
                &cli::Bars::default(),
            )?;
            for w in &r.hook_warnings {
                eprintln!("warning: {w}");
            }
            if g.json {
                cli::print_json(&r)?;
            } else {
                println!(
                    "[{} {}] loaded {} quads (+{}, {} quads on the branch)",
                    r.branch,
                    r.commit.short(),
                    r.read,
                    r.added,
                    r.quads
                );
            }
        }
        Command::Log { reference, limit } => {
            let store = open(cli)?;
            let entries = log::log(
                &store,
                &log::LogOptions {
                    ns,
                    reference: reference.clone(),
                    limit: *limit,
                },
            )?;
            if g.json {
                cli::print_json(&entries)?;
            } else {
                let mut o = out();
                for e in entries {
                    writeln!(o, "commit {}", e.id)?;
                    if e.commit.parents.len() > 1 {
                        let ps: Vec<_> = e.commit.parents.iter().map(|p| p.short()).collect();
                        writeln!(o, "Merge:  {}", ps.join(" "))?;
                    }
                    writeln!(
                        o,
                        "Author: {}\nDate:   {}\nQuads:  {}\n",
                        e.commit.author, e.commit.time, e.commit.quads
                    )?;
                    for line in e.commit.message.lines() {
                        writeln!(o, "    {line}")?;
                    }
                    writeln!(o)?;
                }
            }
        }
        Command::Show { reference } => {
            let store = open(cli)?;
            let r = log::show(
                &store,
                &log::ShowOptions {
                    ns,
                    reference: reference.clone(),
                },
            )?;
            if g.json {
                cli::print_json(&r)?;
            } else {
                let c = &r.entry.commit;
                println!("commit {}", r.entry.id);
                println!("Tree:    {}", c.tree);
                for p in &c.parents {
                    println!("Parent:  {p}");
                }
                println!(
                    "Author:  {}\nDate:    {}\nQuads:   {} (+{} -{})\n",
                    c.author, c.time, c.quads, r.added, r.removed
                );
                for line in c.message.lines() {
                    println!("    {line}");
                }
            }
        }
        Command::Diff { from, to, stat } => {
            let store = open(cli)?;
            let opts = diff::DiffOptions {
                ns,
                from: from.clone(),
                to: to.clone(),
            };
            let mut o = out();
            let mut line = Vec::new();
            let mut changes = Vec::new();
            let s = diff::diff(&store, &opts, |c| {
                if *stat {
                    return Ok(());
                }
                if g.json {
                    let mut l = Vec::new();
                    rdf::nquad_line(c.key(), &mut l);
                    let quad = String::from_utf8_lossy(&l).trim_end().to_string();
                    changes.push(serde_json::json!({"op": if matches!(c, Change::Added(_)) {"+"} else {"-"}, "quad": quad}));
                    return Ok(());
                }
                line.clear();
                line.extend_from_slice(if matches!(c, Change::Added(_)) {
                    b"+ "
                } else {
                    b"- "
                });
                rdf::nquad_line(c.key(), &mut line);
                o.write_all(&line)?;
                Ok(())
            })?;
            if g.json {
                cli::print_json(
                    &serde_json::json!({"stat": s, "changes": if *stat { None } else { Some(changes) }}),
                )?;
            } else if *stat {
                writeln!(o, "{} added, {} removed", s.added, s.removed)?;
            }
        }
        Command::Branch {
            name,
            from,
            delete,
            action,
        } => {
            let store = open(cli)?;
            if let Some(action) = action {
                use qg_store::server::protect;
                let (name, on) = match action {
                    BranchAction::Protect { name } => (name, true),
                    BranchAction::Unprotect { name } => (name, false),
                };
                let changed = if on {
                    protect::protect(&store, &ns, name)?
                } else {
                    protect::unprotect(&store, &ns, name)?
                };
                if g.json {
                    cli::print_json(
                        &serde_json::json!({"branch": name, "protected": on, "changed": changed}),
                    )?;
                } else {
                    let state = if on { "protected" } else { "not protected" };
                    match changed {
                        true => println!("Branch {name} is now {state}"),
                        false => println!("Branch {name} was already {state}"),
                    }
                }
            } else if let Some(d) = delete {
                let was = branch::delete_branch(&store, &ns, d)?;
                if g.json {
                    cli::print_json(&serde_json::json!({"deleted": d, "was": was}))?;
                } else {
                    println!("Deleted branch {d} (was {})", was.short());
                }
            } else if let Some(n) = name {
                let r = branch::create_branch(&store, &ns, n, from.as_deref())?;
                if g.json {
                    cli::print_json(&r)?;
                } else {
                    println!("Created branch {} at {}", r.name, r.target.short());
                }
            } else {
                let list = branch::branches(&store, &ns)?;
                if g.json {
                    cli::print_json(&list)?;
                } else {
                    for b in list {
                        println!(
                            "{} {} {}",
                            if b.default { "*" } else { " " },
                            b.name,
                            b.target.short()
                        );
                    }
                }
            }
        }
        Command::Tag { name, reference } => {
            let store = open(cli)?;
            if let Some(n) = name {
                let r = branch::create_tag(&store, &ns, n, reference.as_deref())?;
                if g.json {
                    cli::print_json(&r)?;
                } else {
                    println!("Created tag {} at {}", r.name, r.target.short());
                }
            } else {
                let list = branch::tags(&store, &ns)?;
                if g.json {
                    cli::print_json(&list)?;
                } else {
                    for t in list {
                        println!("{} {}", t.name, t.target.short());
                    }
                }
            }
        }
        Command::Merge {
            source,
            into,
            strategy,
            message,
            author,
        } => {
            let store = open(cli)?;
            let opts = merge::MergeOptions {
                ns,
                source: source.clone(),
                into: into.clone(),
                strategy: *strategy,
                message: message.clone(),
                author: author.clone(),
            };
            match merge::merge(&store, &opts) {
                Ok(r) => {
                    for w in &r.hook_warnings {
                        eprintln!("warning: {w}");
                    }
                    if g.json {
                        cli::print_json(&r)?;
                    } else {
                        match r.kind {
                            merge::MergeKind::UpToDate => println!("Already up to date."),
                            merge::MergeKind::FastForward => {
                                println!(
                                    "Fast-forward {} to {} (+{} -{})",
                                    r.into,
                                    r.commit.short(),
                                    r.added,
                                    r.removed
                                )
                            }
                            merge::MergeKind::Merged => println!(
                                "Merged {} into {}: {} (+{} -{}{})",
                                source,
                                r.into,
                                r.commit.short(),
                                r.added,
                                r.removed,
                                if r.resolved_conflicts > 0 {
                                    format!(
                                        ", {} conflicts resolved by strategy",
                                        r.resolved_conflicts
                                    )
                                } else {
                                    String::new()
                                }
                            ),
                        }
                    }
                }
                Err(Error::MergeConflict {
                    source_ref,
                    target,
                    conflicts,
                }) => {
                    if g.json {
                        cli::print_json(&serde_json::json!({"conflicts": conflicts}))?;
                    } else {
                        for c in &conflicts {
                            let graph = if c.graph.is_empty() {
                                "default graph".to_string()
                            } else {
                                c.graph.clone()
                            };
                            println!(
                                "CONFLICT {} {} in {}: base [{}] ours [{}] theirs [{}]",
                                c.subject,
                                c.predicate,
                                graph,
                                c.base.join(", "),
                                c.ours.join(", "),
                                c.theirs.join(", ")
                            );
                        }
                    }
                    return Err(Error::MergeConflict {
                        source_ref,
                        target,
                        conflicts,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Command::Export {
            reference,
            graph,
            format,
        } => {
            let store = open(cli)?;
            let mut o = out();
            export::export(
                &store,
                &export::ExportOptions {
                    ns,
                    reference: reference.clone(),
                    graph: graph.clone(),
                    format: Some(*format),
                },
                &mut o,
            )?;
            o.flush()?;
        }
        Command::Query { at, limit, pattern } => {
            let store = open(cli)?;
            let opts = query::QueryOptions {
                ns,
                at: at.clone(),
                pattern: pattern.join(" "),
                limit: *limit,
            };
            let mut o = out();
            let mut all = Vec::new();
            query::query(&store, &opts, |m| {
                if g.json {
                    all.push(m);
                } else {
                    writeln!(o, "{}", m.quad)?;
                }
                Ok(())
            })?;
            if g.json {
                drop(o);
                cli::print_json(&all)?;
            }
        }
        Command::Fsck => {
            let store = open(cli)?;
            let r = fsck::fsck(
                &store,
                &fsck::FsckOptions { ns: None },
                &cli::Bars::default(),
            )?;
            if g.json {
                cli::print_json(&r)?;
            } else {
                for p in &r.problems {
                    println!("{p}");
                }
                println!(
                    "{}: {} namespaces, {} objects, {} refs, {} commits checked, {} problems",
                    if r.is_clean() { "ok" } else { "FAILED" },
                    r.namespaces,
                    r.objects,
                    r.refs,
                    r.commits,
                    r.problems.len()
                );
            }
            return Ok(if r.is_clean() { EXIT_OK } else { EXIT_FAILED });
        }
        Command::Gc { dry_run } => {
            let store = open(cli)?;
            let r = gc::gc(&store, &gc::GcOptions { dry_run: *dry_run })?;
            if g.json {
                cli::print_json(&r)?;
            } else {
                println!(
                    "{} {} unreachable objects ({} bytes), kept {}",
                    if r.dry_run { "would remove" } else { "removed" },
                    r.removed,
                    r.removed_bytes,
                    r.kept
                );
                for ns in &r.skipped_locked {
                    eprintln!("warning: skipped locked namespace {ns}: set QUADGIT_MASTER_KEY (and QG_PASSWORD) to collect it");
                }
            }
        }
        #[cfg(feature = "server")]
        Command::Serve {
            listen,
            max_body_mib,
            request_timeout,
            pool_size,
            auth_failure_limit,
            shutdown_timeout,
            workers,
        } => {
            let master_key = match &g.master_key_file {
                Some(path) => Some(zeroize::Zeroizing::new(
                    std::fs::read_to_string(path).map_err(|e| Error::ReadFile {
                        path: path.display().to_string(),
                        source: e,
                    })?,
                )),
                None => std::env::var("QUADGIT_MASTER_KEY")
                    .ok()
                    .map(zeroize::Zeroizing::new),
            };
            let json = g.json;
            qg_store::server::serve(
                qg_store::server::ServeOptions {
                    data: g.data.clone(),
                    listen: listen.clone(),
                    master_key,
                    hook_timeout: Duration::from_secs(cli.hook_timeout),
                    max_body_bytes: (*max_body_mib as usize) << 20,
                    request_timeout: Duration::from_secs(*request_timeout),
                    pool_size: *pool_size as usize,
                    auth_failure_limit: *auth_failure_limit as usize,
                    auth_failure_window: Duration::from_secs(60),
                    shutdown_timeout: Duration::from_secs(*shutdown_timeout),
                    workers: *workers,
                },
                move |addr| {
                    if json {
                        let _ = cli::print_json(
                            &serde_json::json!({"listening": format!("http://{addr}")}),
                        );
                    } else {
                        println!("Listening on http://{addr}");
                    }
                    let _ = std::io::stdout().flush();
                },
            )?;
        }
        Command::Token(cmd) => {
            let store = open(cli)?;
            use qg_store::server::tokens;
            match cmd {
                TokenCommand::Create {
                    user,
                    role,
                    expires,
                } => {
                    let token_ns = TOKEN_NS_EXPLICIT
                        .get()
                        .copied()
                        .unwrap_or(false)
                        .then(|| ns.clone());
                    let t = tokens::create_token(
                        &store,
                        &tokens::TokenOptions {
                            user: user.clone(),
                            role: *role,
                            ns: token_ns.clone(),
                            expires: *expires,
                        },
                    )?;
                    if g.json {
                        cli::print_json(
                            &serde_json::json!({"token": t.token.as_str(), "id": t.info.id, "user": t.info.user,
                                "role": t.info.role, "ns": t.info.ns, "expires": t.info.expires}),
                        )?;
                    } else {
                        println!("{}", t.token.as_str());
                    }
                }
                TokenCommand::List => {
                    let list = tokens::list_tokens(&store)?;
                    if g.json {
                        cli::print_json(&list)?;
                    } else {
                        for t in list {
                            println!(
                                "{} {} {} {} expires {}{}",
                                t.id,
                                t.user,
                                t.role,
                                t.ns.as_deref().unwrap_or("*"),
                                t.expires.as_deref().unwrap_or("never"),
                                t.revoked
                                    .map(|r| format!(" revoked {r}"))
                                    .unwrap_or_default()
                            );
                        }
                    }
                }
                TokenCommand::Revoke { id } => {
                    tokens::revoke_token(&store, id)?;
                    if g.json {
                        cli::print_json(&serde_json::json!({"revoked": id}))?;
                    } else {
                        println!("Revoked token {id}");
                    }
                }
            }
        }
        Command::Audit(cmd) => {
            let store = open(cli)?;
            match cmd {
                AuditCommand::Log { since } => {
                    let since = match since {
                        Some(s) => Some(qg_store::clock::format(qg_store::clock::parse_since(s)?)),
                        None => None,
                    };
                    let entries = audit::list(store.db(), since.as_deref())?;
                    if g.json {
                        cli::print_json(&entries)?;
                    } else {
                        let mut o = out();
                        for e in entries {
                            writeln!(
                                o,
                                "#{} {} {} {} {}{} {} {}",
                                e.seq,
                                e.time,
                                e.actor,
                                e.action,
                                e.ns.as_deref().map(|n| format!("{n} ")).unwrap_or_default(),
                                e.target.as_deref().unwrap_or("-"),
                                e.outcome.as_str(),
                                e.detail
                            )?;
                        }
                    }
                }
                AuditCommand::Verify => {
                    let n = audit::verify(store.db())?;
                    if g.json {
                        cli::print_json(&serde_json::json!({"ok": true, "entries": n}))?;
                    } else {
                        println!("ok: {n} audit entries, hash chain intact");
                    }
                }
            }
        }
    }
    Ok(EXIT_OK)
}
