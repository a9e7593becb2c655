//! redmine-authz: parse the command line, set up telemetry, run the command.

use std::process::ExitCode;

use clap::Parser as _;
use redmine_authz::cli::Cli;
use redmine_authz::commands;
use redmine_authz::config::EXIT_USAGE;
use redmine_authz::telemetry::{self, TelemetryConfig};

// glibc's malloc was an eighth of a cached decision's CPU time in the profile
// (BENCHMARKS.md); mimalloc is faster for the small, short-lived allocations of a Check.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match redmine_authz::runtime::for_allowed_cores() {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(usage) => {
            let _ = usage.print();
            return if usage.use_stderr() {
                ExitCode::from(EXIT_USAGE as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let telemetry_config = match TelemetryConfig::from_env(&std::env::vars().collect()) {
        Ok(config) => config,
        Err(errors) => {
            errors
                .iter()
                .for_each(|e| eprintln!("configuration error: {e}"));
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    // Logs go to stderr; audit lines (JSON) to stdout from a writer thread, so a Check never
    // waits on the pipe. Lossless: under back-pressure checks wait rather than drop lines.
    // Buffered: the thread flushes after each batch it drains, so a busy gate makes one write
    // per batch instead of one per line, and an idle one still writes each line at once.
    let (audit, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let telemetry = match telemetry::init(&telemetry_config, std::io::stderr, audit) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let outcome = commands::run(&cli.command, &telemetry_config).await;
    telemetry.shutdown();
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(error.exit_code())
        }
    }
}
