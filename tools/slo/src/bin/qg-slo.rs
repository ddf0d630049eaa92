//! `qg-slo`: SLO specs, Prometheus rules and error-budget reports for
//! QuadGit. A thin shell over the `qg_slo` library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use qg_slo::duration::Duration;
use qg_slo::render::{self, Format};
use qg_slo::{Error, ReportOptions, Source};
use qg_store::cli::{self, GlobalArgs, EXIT_FAILED, EXIT_OK};

const EXIT_HELP: &str = "Exit codes:\n  0  success (report: no SLO breached)\n  1  the operation failed, or (report) an SLO is breached\n  2  bad usage or bad input: unknown flag, malformed or unsupported spec (file:line: field: reason)\n\nWith --data DIR (or QG_DATA), `report` records an audit event (slo.report) in that QuadGit store.";

#[derive(Parser)]
#[command(
    name = "qg-slo",
    version,
    about = "OpenSLO specs, multi-window multi-burn-rate Prometheus rules and error-budget reports for QuadGit",
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
    /// Check the SLO specs: supported fields, names, targets, windows, histogram buckets.
    Validate {
        /// A spec file or a folder of *.yaml specs.
        #[arg(default_value = "slo/", value_name = "PATH")]
        spec: PathBuf,
    },
    /// Write Prometheus recording and alerting rules for the specs (deterministic).
    Generate {
        #[arg(long, default_value = "slo/", value_name = "PATH")]
        spec: PathBuf,
        /// A folder (writes slo.rules.yaml in it), a .yaml file, or `-` for stdout.
        #[arg(
            long,
            short,
            default_value = "dashboards/prometheus/",
            value_name = "PATH"
        )]
        output: PathBuf,
    },
    /// Report SLIs, error budgets and burn rates; exit 1 when an SLO is breached.
    Report {
        #[arg(long, default_value = "slo/", value_name = "PATH")]
        spec: PathBuf,
        /// Prometheus base URL (HTTP API).
        #[arg(
            long,
            value_name = "URL",
            required_unless_present = "metrics_url",
            conflicts_with = "metrics_url"
        )]
        prometheus: Option<String>,
        /// Sample a server's /metrics instead of asking a Prometheus.
        #[arg(long, value_name = "URL", requires = "duration")]
        metrics_url: Option<String>,
        /// How long to sample --metrics-url.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Time between samples of --metrics-url (default: a tenth of --duration, at least 1s).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        interval: Option<Duration>,
        /// A rolling window for every SLO (default: each SLO's own period).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "calendar")]
        window: Option<Duration>,
        /// A calendar month (2026-11) or quarter (2026-Q4), UTC.
        #[arg(long, value_name = "PERIOD")]
        calendar: Option<String>,
        /// End of the window: RFC 3339 time or Unix seconds (default: now).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<i64>,
        #[arg(long, value_enum, default_value = "md")]
        format: FormatArg,
        /// Write the report here instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Md,
    Html,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    Duration::parse(s)
}

fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("`{s}` is neither Unix seconds nor an RFC 3339 time ({e})"))
}

fn report_err(err: &Error) -> i32 {
    match err {
        Error::Store(e) => cli::report(e),
        _ => cli::report_with(err, err.kind()),
    }
}

fn data_given(matches: &ArgMatches) -> bool {
    matches!(
        matches.value_source("data"),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<i32, Error> {
    let json = cli.global.json;
    match cli.command {
        Command::Completions { shell } => {
            cli::print_completions(shell, &mut Cli::command());
            Ok(EXIT_OK)
        }
        Command::Man => {
            cli::print_man(Cli::command())?;
            Ok(EXIT_OK)
        }
        Command::Validate { spec } => {
            let r = qg_slo::validate(&qg_slo::ValidateOptions { spec })?;
            if json {
                cli::print_json(&r)?;
            } else {
                for s in &r.slos {
                    println!(
                        "ok {} ({}): {} over {}, {}, longest alert window {} ({}:{})",
                        s.name,
                        s.service,
                        s.target,
                        s.window,
                        s.budgeting,
                        s.longest_alert_window,
                        s.file.display(),
                        s.line
                    );
                }
                println!("{} SLOs in {} files are valid", r.slos.len(), r.files.len());
            }
            Ok(EXIT_OK)
        }
        Command::Generate { spec, output } => {
            let to_stdout = output.as_os_str() == "-";
            let r = qg_slo::generate(&qg_slo::GenerateOptions {
                spec,
                output: (!to_stdout).then_some(output),
            })?;
            if to_stdout {
                std::io::stdout()
                    .write_all(r.yaml.as_bytes())
                    .map_err(|e| Error::BadInput(format!("stdout: {e}")))?;
            } else if json {
                cli::print_json(&r)?;
            } else {
                println!(
                    "wrote {}: {} SLOs, {} recording rules, {} alerts",
                    r.path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    r.slos,
                    r.recording_rules,
                    r.alerting_rules
                );
            }
            Ok(EXIT_OK)
        }
        Command::Report {
            spec,
            prometheus,
            metrics_url,
            duration,
            interval,
            window,
            calendar,
            at,
            format,
            output,
        } => {
            let source = match (prometheus, metrics_url) {
                (Some(url), _) => Source::Prometheus { url },
                (None, Some(url)) => {
                    let duration = duration.expect("clap requires --duration");
                    Source::Metrics {
                        url,
                        duration,
                        interval: interval.unwrap_or(Duration((duration.secs() / 10).max(1))),
                    }
                }
                (None, None) => unreachable!("clap requires one source"),
            };
            let report = qg_slo::report(&ReportOptions {
                spec,
                source,
                window,
                calendar,
                at,
            })?;
            if data_given(matches) {
                let actor = qg_store::store::default_actor();
                qg_slo::audit::record_report(&cli.global.data, &actor, &report)?;
            }
            let format = match (json, format) {
                (true, _) | (_, FormatArg::Json) => Format::Json,
                (_, FormatArg::Md) => Format::Md,
                (_, FormatArg::Html) => Format::Html,
            };
            let text = render::render(&report, format)?;
            match &output {
                Some(path) => std::fs::write(path, &text).map_err(|e| Error::Write {
                    path: path.display().to_string(),
                    source: e,
                })?,
                None => std::io::stdout()
                    .write_all(text.as_bytes())
                    .map_err(|e| Error::BadInput(format!("stdout: {e}")))?,
            }
            if report.breached.is_empty() {
                Ok(EXIT_OK)
            } else {
                eprintln!("error: SLO breached: {}", report.breached.join(", "));
                Ok(EXIT_FAILED)
            }
        }
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
        Err(e) => report_err(&e),
    };
    ExitCode::from(code as u8)
}
