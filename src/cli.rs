//! The command line: `serve`, `check`, `demo-db`. Each flag can also come from the
//! environment, so deployment files and tooling can rely on the names.

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

#[derive(Debug, Parser)]
#[command(
    name = "redmine-authz",
    version,
    about = "Envoy ext_authz gate that authenticates requests the way Redmine does"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ext_authz gRPC server.
    Serve(ServeArgs),
    /// Decide one request from the command line and say why (exit 0 allow, 1 deny).
    Check(CheckArgs),
    /// Create a Redmine-compatible schema with demo users, keys and an OAuth token.
    DemoDb(DemoDbArgs),
    /// Ask a running server's gRPC health service; exit 0 when SERVING (for probes).
    Healthcheck(HealthcheckArgs),
    /// Install triggers that tell the service at once when users, keys, tokens or settings change.
    InstallTriggers(TriggerArgs),
    /// Remove the triggers install-triggers created.
    UninstallTriggers(TriggerArgs),
}

/// Settings shared by everything that makes decisions.
#[derive(Debug, Args)]
pub struct DecisionArgs {
    /// Redmine's PostgreSQL database (read-only access is enough).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,
    /// The time zone Redmine writes timestamps in (IANA name): the zone Redmine's server runs
    /// in. Not set: UTC, with a warning at start-up.
    #[arg(long, env = "AUTHZ_REDMINE_TIMEZONE", value_name = "ZONE")]
    pub redmine_timezone: Option<String>,
    /// The Redmine release behind the gate (`MAJOR.MINOR[.PATCH]`, from 4.2): requests are read
    /// as it reads them (query separators, parameter names, routes' formats). `any`: read as
    /// every release reads them, and fail closed where they differ.
    #[arg(
        long,
        env = "AUTHZ_REDMINE_VERSION",
        value_name = "VERSION",
        default_value = "any"
    )]
    pub redmine_version: String,
    /// Let API requests without credentials through as anonymous (Redmine serves public data).
    #[arg(long, env = "AUTHZ_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    /// Pass LDAP users' Basic requests on without identity instead of denying them.
    #[arg(long, env = "AUTHZ_LDAP_PASS_ON")]
    pub ldap_pass_on: bool,
    /// Prefix of the identity headers sent upstream.
    #[arg(long, env = "AUTHZ_HEADER_PREFIX", default_value = "x-auth-")]
    pub header_prefix: String,
    /// Remove credentials from authenticated requests before they go upstream.
    #[arg(long, env = "AUTHZ_STRIP_CREDENTIALS")]
    pub strip_credentials: bool,
    /// Most database connections at once.
    #[arg(long, env = "AUTHZ_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Longest wait for a connection, and longest query, in milliseconds.
    #[arg(long, env = "AUTHZ_DB_TIMEOUT_MS", default_value_t = 1500)]
    pub db_timeout_ms: u64,
    /// Wrong API keys per second above which a key absent from every `tokens` row is
    /// refused without a query (needs `install-triggers`; 0: whenever the filter is loaded).
    #[arg(long, env = "AUTHZ_KEY_FILTER_ABOVE", default_value_t = 100)]
    pub key_filter_above: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// gRPC listen address for Envoy's Check calls.
    #[arg(long, env = "AUTHZ_LISTEN", default_value = "0.0.0.0:9191")]
    pub listen: String,
    /// HTTP address for /healthz and /readyz; off when unset.
    #[arg(long, env = "AUTHZ_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Open gRPC connections at once; one more is closed as soon as it is accepted.
    #[arg(long, env = "AUTHZ_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Open admin HTTP connections at once.
    #[arg(long, env = "AUTHZ_ADMIN_MAX_CONNECTIONS", default_value_t = 64)]
    pub admin_max_connections: usize,
    /// Seconds a new gRPC connection has to send its HTTP/2 preface, and an admin request
    /// its headers, before it is closed.
    #[arg(long, env = "AUTHZ_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Checks in flight at once on one gRPC connection (HTTP/2 max concurrent streams).
    #[arg(long, env = "AUTHZ_MAX_CONCURRENT_STREAMS", default_value_t = 1024)]
    pub max_concurrent_streams: u32,
    /// Seconds a gRPC peer may send nothing before it is sent an HTTP/2 PING.
    #[arg(long, env = "AUTHZ_KEEPALIVE_INTERVAL_SECS", default_value_t = 10)]
    pub keepalive_interval_secs: u64,
    /// Seconds the PING's acknowledgement may take before the connection is closed.
    #[arg(long, env = "AUTHZ_KEEPALIVE_TIMEOUT_SECS", default_value_t = 10)]
    pub keepalive_timeout_secs: u64,
    /// Redis for the cache tier shared by replicas; without it only the in-process tier is used.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key this deployment writes.
    #[arg(long, env = "AUTHZ_REDIS_KEY_PREFIX", default_value = "redmine-authz:")]
    pub redis_key_prefix: String,
    /// Longest wait for Redis before treating it as a miss, in milliseconds.
    #[arg(long, env = "AUTHZ_REDIS_TIMEOUT_MS", default_value_t = 100)]
    pub redis_timeout_ms: u64,
    /// Secret that keys the cache keys and seals Redis values; set the same on every replica to
    /// share Redis entries.
    #[arg(long, env = "AUTHZ_CACHE_SECRET", hide_env_values = true)]
    pub cache_secret: Option<SecretString>,
    /// Seconds a found user, key or token stays cached; 0 turns caching off.
    #[arg(long, env = "AUTHZ_CACHE_TTL", default_value_t = 60)]
    pub cache_ttl: u64,
    /// Seconds an unknown key, token or wrong password stays cached.
    #[arg(long, env = "AUTHZ_NEGATIVE_CACHE_TTL", default_value_t = 10)]
    pub negative_cache_ttl: u64,
    /// Entries in the in-process cache tier (at most 10,000,000); 0 keeps none in process.
    #[arg(long, env = "AUTHZ_L1_CAPACITY", default_value_t = 100_000)]
    pub l1_capacity: u64,
    /// LISTEN for the invalidations that `install-triggers` sends (off on a hot standby,
    /// which cannot LISTEN).
    #[arg(long, env = "AUTHZ_LISTEN_INVALIDATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub listen_invalidations: bool,
    /// Longest a decision may take when Envoy sends no deadline, in milliseconds.
    #[arg(long, env = "AUTHZ_DECISION_TIMEOUT_MS", default_value_t = 1000)]
    pub decision_timeout_ms: u64,
    /// How often Redmine's settings are re-read, in seconds.
    #[arg(long, env = "AUTHZ_SETTINGS_REFRESH_SECS", default_value_t = 5)]
    pub settings_refresh_secs: u64,
    /// Failed authentications allowed per client address per window; 0 turns it off.
    #[arg(long, env = "AUTHZ_THROTTLE_CLIENT_LIMIT", default_value_t = 100)]
    pub throttle_client_limit: u64,
    /// The client limit's window, in seconds.
    #[arg(long, env = "AUTHZ_THROTTLE_CLIENT_WINDOW_SECS", default_value_t = 60)]
    pub throttle_client_window_secs: u64,
    /// Failed Basic logins allowed per login per window; 0 turns it off.
    #[arg(long, env = "AUTHZ_THROTTLE_LOGIN_LIMIT", default_value_t = 20)]
    pub throttle_login_limit: u64,
    /// The login limit's window, in seconds.
    #[arg(long, env = "AUTHZ_THROTTLE_LOGIN_WINDOW_SECS", default_value_t = 300)]
    pub throttle_login_window_secs: u64,
    /// Proxies in front of Envoy whose X-Forwarded-For entries name the client (0: the peer).
    #[arg(long, env = "AUTHZ_TRUSTED_HOPS", default_value_t = 0)]
    pub trusted_hops: usize,
    /// Which decisions get a JSON audit line on standard output.
    #[arg(long, env = "AUTHZ_AUDIT_LOG", value_enum, default_value = "all")]
    pub audit_log: crate::observe::AuditMode,
    /// How long in-flight checks may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "AUTHZ_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    #[command(flatten)]
    pub decision: DecisionArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// HTTP method, e.g. GET.
    pub method: String,
    /// Request target with query string, e.g. '/issues.json?key=...'.
    pub path: String,
    /// A request header, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Route setting as Envoy's context extension, e.g. redmine_authz_mode=public (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub context: Vec<String>,
    #[command(flatten)]
    pub decision: DecisionArgs,
}

#[derive(Debug, Args)]
pub struct DemoDbArgs {
    /// The database to create the demo schema and users in.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,
    /// Seed even when the database already holds Redmine tables demo-db did not create.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The server's gRPC address.
    #[arg(long, env = "AUTHZ_HEALTHCHECK_ADDR", default_value = "127.0.0.1:9191")]
    pub addr: String,
    /// The service to ask about; empty means the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// Redmine's database, with a role allowed to create functions and triggers.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,
}
