//! The commands: `serve`, and the one-shot ones (`check` explains one decision, `demo-db`,
//! `healthcheck`, `install-triggers`).

use std::sync::Arc;

use crate::app::Application;
use crate::auth::{Decision, Request, RouteMode};
use crate::cli::{CheckArgs, Command, DemoDbArgs, HealthcheckArgs, ServeArgs, TriggerArgs};
use crate::clock::SystemClock;
use crate::config::{ConfigErrors, DatabaseTarget, DecisionConfig, ServeConfig, EXIT_USAGE};
use crate::envoy::proto::envoy::service::auth::v3::check_response::HttpResponse;
use crate::envoy::respond;
use crate::gate::{settings_once, Gate};
use crate::store::{seed_demo, Store, DEMO_OAUTH_TOKEN, DEMO_USERS};
use crate::telemetry::TelemetryConfig;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    /// 64 for usage and configuration errors, 2 for failures (1 means "no").
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => EXIT_USAGE as u8,
            Self::Failed(_) => 2,
        }
    }
}

/// Runs one command; `Ok(false)` is a "no" (a deny, an unhealthy server): exit code 1.
pub async fn run(command: &Command, telemetry: &TelemetryConfig) -> Result<bool, CommandError> {
    match command {
        Command::Serve(args) => serve(args, telemetry).await.map(|()| true),
        Command::Check(args) => check(args).await,
        Command::DemoDb(args) => demo_db(args).await.map(|()| true),
        Command::Healthcheck(args) => healthcheck(args).await,
        Command::InstallTriggers(args) => triggers(args, true).await.map(|()| true),
        Command::UninstallTriggers(args) => triggers(args, false).await.map(|()| true),
    }
}

async fn serve(args: &ServeArgs, telemetry: &TelemetryConfig) -> Result<(), CommandError> {
    let mut config = ServeConfig::from_args(args)?;
    fit_open_files(&mut config);
    tracing::info!(
        config = %config.summary(),
        telemetry = %telemetry.summary(),
        "redmine-authz {} starting",
        env!("CARGO_PKG_VERSION")
    );
    if !config.decision.timezone_given {
        tracing::warn!(
            "--redmine-timezone (AUTHZ_REDMINE_TIMEZONE) is not set: Redmine's timestamps are read \
             as UTC. Redmine writes them in its server's local time zone; where that is not UTC, \
             revoked or expired OAuth tokens stay valid (or valid ones are refused) for the \
             difference. Set it to the zone Redmine runs in, UTC included."
        );
    }
    let app = Application::build(config)
        .await
        .map_err(|e| CommandError::Failed(e.to_string()))?;
    app.run_until_stopped(crate::shutdown::signal())
        .await
        .map_err(|e| CommandError::Failed(e.to_string()))
}

/// Descriptors kept for everything but client connections and the database pool: the
/// pool's listener, Redis (up to 32), the runtime, the exporter, standard streams.
const RESERVED_FILES: u64 = 128;

/// Raises the open file limit to the hard one and keeps the connection caps under it, so a
/// flood of connections can never leave the gate without descriptors for its lookups.
fn fit_open_files(config: &mut ServeConfig) {
    let open_files = match crate::connections::raise_open_files_limit() {
        Ok(limit) => {
            tracing::info!(
                soft_before = limit.before,
                soft = limit.now,
                hard = limit.hard,
                "open file limit"
            );
            limit.now
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open file limit");
            return;
        }
    };
    let reserved = RESERVED_FILES + u64::from(config.decision.store.max_connections);
    let asked = config.connections.clone();
    if config.connections.fit_open_files(open_files, reserved) {
        tracing::warn!(
            open_files,
            max_connections = config.connections.max_connections,
            admin_max_connections = config.connections.admin_max_connections,
            asked_max_connections = asked.max_connections,
            asked_admin_max_connections = asked.admin_max_connections,
            "connection caps lowered to fit the open file limit"
        );
    }
}

/// Decides one request and prints the verdict, the reason and what Envoy would be told.
/// Returns whether it was allowed.
pub async fn check(args: &CheckArgs) -> Result<bool, CommandError> {
    let mut errors = Vec::new();
    let request = build_request(args, &mut errors);
    let config = DecisionConfig::from_args(&args.decision, &mut errors);
    let (Some(request), Some(config)) = (request, config) else {
        return Err(ConfigErrors(errors).into());
    };
    if !errors.is_empty() {
        return Err(ConfigErrors(errors).into());
    }
    let store = Store::connect_lazy(config.database.options.clone(), &config.store);
    let settings = settings_once(&store).await.map_err(|e| {
        CommandError::Failed(format!(
            "cannot read Redmine settings from {}: {e}",
            config.database
        ))
    })?;
    let gate = Gate::new(
        Arc::new(store),
        config.policy.clone(),
        settings,
        Arc::new(SystemClock),
    );
    let decision = gate.check(&request).await;
    print!("{}", explain(&decision, &request, &config));
    Ok(decision.is_allow())
}

fn build_request(args: &CheckArgs, errors: &mut Vec<String>) -> Option<Request> {
    if !args.path.starts_with('/') {
        errors.push(format!("PATH {:?} must start with '/'", args.path));
    }
    let mut request = Request::new(&args.method.to_ascii_uppercase(), &args.path);
    for header in &args.headers {
        match header.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                request.headers.push(name.trim(), value.trim())
            }
            _ => errors.push(format!("-H {header:?} must look like 'Name: value'")),
        }
    }
    for entry in &args.context {
        match entry.split_once('=') {
            Some((RouteMode::CONTEXT_KEY, value)) => {
                request.mode = Some(RouteMode::parse(value).ok_or_else(|| value.to_owned()));
            }
            Some((_, _)) => {} // Other context extensions do not change decisions.
            None => errors.push(format!("--context {entry:?} must look like KEY=VALUE")),
        }
    }
    errors.is_empty().then_some(request)
}

fn explain(decision: &Decision, request: &Request, config: &DecisionConfig) -> String {
    let mut out = String::new();
    match decision {
        Decision::Allow(allow) => {
            out.push_str(&format!("ALLOW ({})\n", allow.reason.as_str()));
            match &allow.identity {
                Some(identity) => out.push_str(&format!(
                    "  user {} (id {}), admin={}, via {}{}\n",
                    identity.login,
                    identity.user_id,
                    identity.admin,
                    identity.method.as_str(),
                    identity
                        .impersonator
                        .as_ref()
                        .map(|a| format!(", switched by {a}"))
                        .unwrap_or_default()
                )),
                None => out.push_str("  no identity (anonymous or not gated)\n"),
            }
        }
        Decision::Deny(deny) => {
            out.push_str(&format!(
                "DENY {} ({}): {}\n",
                deny.status.http_code(),
                deny.reason.as_str(),
                deny.reason.message()
            ));
        }
    }
    let response = respond(decision, request, &config.response);
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            for header in ok.headers.iter().filter_map(|h| h.header.as_ref()) {
                out.push_str(&format!("  set {}: {}\n", header.key, header.value));
            }
            for name in ok.headers_to_remove {
                out.push_str(&format!("  remove {name}\n"));
            }
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            for header in denied.headers.iter().filter_map(|h| h.header.as_ref()) {
                out.push_str(&format!("  {}: {}\n", header.key, header.value));
            }
            out.push_str(&format!("  body: {}\n", denied.body));
        }
        _ => {}
    }
    out
}

pub async fn demo_db(args: &DemoDbArgs) -> Result<(), CommandError> {
    let Some(url) = &args.database_url else {
        return Err(ConfigErrors(vec![
            "--database-url (or DATABASE_URL) is required".to_owned()
        ])
        .into());
    };
    let target = DatabaseTarget::parse(url).map_err(|e| ConfigErrors(vec![e]))?;
    let report = seed_demo(&target.options, args.force)
        .await
        .map_err(|e| CommandError::Failed(format!("demo-db on {target}: {e}")))?;
    for line in report {
        println!("{line}");
    }
    println!("Demo database ready at {target}. Accounts (login / password / API key):");
    for user in DEMO_USERS {
        println!(
            "  {:<7} {:<15} {:<41} {}",
            user.login,
            user.password,
            user.api_key.unwrap_or("-"),
            user.note
        );
    }
    println!("  OAuth bearer token for admin (admin scope): {DEMO_OAUTH_TOKEN}");
    println!(
        "Try: redmine-authz check GET '/users/current.json' -H 'X-Redmine-API-Key: {}'",
        DEMO_USERS[1].api_key.unwrap_or_default()
    );
    Ok(())
}

/// Asks the gRPC health service; true when it answers SERVING.
pub async fn healthcheck(args: &HealthcheckArgs) -> Result<bool, CommandError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

    let timeout = std::time::Duration::from_millis(args.timeout_ms);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))
        .map_err(|_| ConfigErrors(vec![format!("--addr {:?} is not host:port", args.addr)]))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let status = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", args.addr))?;
        let request = HealthCheckRequest {
            service: args.service.clone(),
        };
        let response = HealthClient::new(channel)
            .check(request)
            .await
            .map_err(|e| format!("health check failed: {}", e.message()))?;
        Ok::<_, String>(response.into_inner().status)
    }
    .await
    .map_err(CommandError::Failed)?;
    let serving = status == ServingStatus::Serving as i32;
    println!(
        "{}",
        ServingStatus::try_from(status)
            .map(|s| s.as_str_name())
            .unwrap_or("UNKNOWN")
    );
    Ok(serving)
}

/// `install-triggers` (true) or `uninstall-triggers` (false).
pub async fn triggers(args: &TriggerArgs, install: bool) -> Result<(), CommandError> {
    let Some(url) = &args.database_url else {
        return Err(ConfigErrors(vec![
            "--database-url (or DATABASE_URL) is required".to_owned()
        ])
        .into());
    };
    let target = DatabaseTarget::parse(url).map_err(|e| ConfigErrors(vec![e]))?;
    let failed = |e: sqlx::Error| CommandError::Failed(format!("on {target}: {e}"));
    if install {
        let tables = crate::store::install_triggers(&target.options)
            .await
            .map_err(failed)?;
        println!(
            "Triggers installed on {target}: {} notify channel {:?}.",
            tables.join(", "),
            crate::store::CHANNEL
        );
    } else {
        crate::store::uninstall_triggers(&target.options)
            .await
            .map_err(failed)?;
        println!("Triggers removed from {target}.");
    }
    Ok(())
}
