//! redmine-authz: parse the command line, start logging, run the command.

use std::process::ExitCode;

use clap::Parser as _;
use redmine_authz::app::Application;
use redmine_authz::cli::{Cli, Command};
use redmine_authz::commands::{self, CommandError};
use redmine_authz::config::{ServeConfig, EXIT_USAGE};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() => {
            let _ = error.print();
            return ExitCode::from(EXIT_USAGE as u8);
        }
        Err(help) => {
            let _ = help.print();
            return ExitCode::SUCCESS;
        }
    };
    redmine_authz::telemetry::init();
    let outcome = match &cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Check(args) => commands::check(args).await.map(|allowed| {
            if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }),
        Command::DemoDb(args) => commands::demo_db(args).await.map(|()| ExitCode::SUCCESS),
        Command::Healthcheck(args) => commands::healthcheck(args).await.map(exit_if),
        Command::InstallTriggers(args) => commands::triggers(args, true)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::UninstallTriggers(args) => commands::triggers(args, false)
            .await
            .map(|()| ExitCode::SUCCESS),
    };
    outcome.unwrap_or_else(|error| {
        eprint!("{error}");
        if matches!(error, CommandError::Config(_)) {
            ExitCode::from(EXIT_USAGE as u8)
        } else {
            eprintln!();
            ExitCode::from(2)
        }
    })
}

/// 0 when the answer is yes, 1 when it is no.
fn exit_if(yes: bool) -> ExitCode {
    if yes {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn serve(args: &redmine_authz::cli::ServeArgs) -> Result<ExitCode, CommandError> {
    let config = ServeConfig::from_args(args)?;
    tracing::info!(config = %config.summary(), "redmine-authz {} starting", env!("CARGO_PKG_VERSION"));
    let app = Application::build(config)
        .await
        .map_err(|e| CommandError::Failed(e.to_string()))?;
    app.run_until_stopped(redmine_authz::telemetry::shutdown_signal())
        .await
        .map_err(|e| CommandError::Failed(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}
