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
    let telemetry = match telemetry::init_stdio(&telemetry_config) {
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
