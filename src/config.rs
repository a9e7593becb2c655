//! Typed settings from flags and the environment. Every error is collected and reported at
//! once; secrets never print.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr as _;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use sqlx::postgres::PgConnectOptions;

use crate::auth::{ExternalAuth, Policy, RedmineTimezone, RedmineVersion};
use crate::cache::CacheOptions;
use crate::cli::{DecisionArgs, ServeArgs};
use crate::connections::ConnectionOptions;
use crate::envoy::ResponseOptions;
use crate::store::StoreOptions;
use crate::throttle::ThrottleOptions;

/// Most in-process cache entries: about 220 B each, so 2 GB at this bound.
pub const MAX_L1_CAPACITY: u64 = 10_000_000;

/// Exit code for a configuration or usage error (BSD `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;

/// All configuration errors found, one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("configuration error: {e}"))
            .collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// Where Redmine's database is. Debug and Display show host and database only.
#[derive(Clone)]
pub struct DatabaseTarget {
    pub options: PgConnectOptions,
}

impl DatabaseTarget {
    pub fn parse(url: &SecretString) -> Result<Self, String> {
        let url = url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("--database-url must be a postgres:// URL".to_owned());
        }
        // The parser's own message may quote the URL, password included: not shown.
        PgConnectOptions::from_str(url)
            .map(|options| Self { options })
            .map_err(|_| "--database-url is not a valid PostgreSQL URL".to_owned())
    }
}

impl fmt::Display for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database = self.options.get_database().unwrap_or("(default)");
        write!(
            f,
            "{}:{}/{}",
            self.options.get_host(),
            self.options.get_port(),
            database
        )
    }
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseTarget({self})")
    }
}

/// What every decision needs, for `serve` and `check` alike.
#[derive(Debug, Clone)]
pub struct DecisionConfig {
    pub database: DatabaseTarget,
    pub policy: Policy,
    /// False when the zone is UTC only because none was given: worth a warning, as the
    /// database cannot say which zone Redmine writes in.
    pub timezone_given: bool,
    pub response: ResponseOptions,
    pub store: StoreOptions,
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub redis_url: Option<SecretString>,
    pub redis_key_prefix: String,
    pub redis_timeout: Duration,
    /// `None`: a random per-process secret (Redis entries then not shared by replicas).
    pub cache_secret: Option<SecretString>,
    pub cache: CacheOptions,
    pub listen_invalidations: bool,
    pub audit: crate::observe::AuditMode,
    pub throttle: ThrottleOptions,
    pub decision: DecisionConfig,
    /// Upper bound on one decision when Envoy sends no deadline.
    pub decision_timeout: Duration,
    pub settings_refresh: Duration,
    /// How long in-flight checks may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    pub connections: ConnectionOptions,
}

impl DecisionConfig {
    pub fn from_args(args: &DecisionArgs, errors: &mut Vec<String>) -> Option<Self> {
        let database = match &args.database_url {
            None => {
                errors.push("--database-url (or DATABASE_URL) is required".to_owned());
                None
            }
            Some(url) => DatabaseTarget::parse(url).map_err(|e| errors.push(e)).ok(),
        };
        let zone = args.redmine_timezone.as_deref().unwrap_or("UTC");
        let timezone = RedmineTimezone::parse(zone).or_else(|| {
            errors.push(format!(
                "--redmine-timezone {zone:?} is not an IANA time zone name"
            ));
            None
        });
        let redmine = RedmineVersion::parse(&args.redmine_version).or_else(|| {
            errors.push(format!(
                "--redmine-version {:?} must be `any` or a release like 5.0 or 6.1.2 (4.2 or later)",
                args.redmine_version
            ));
            None
        });
        let header_prefix = args.header_prefix.to_ascii_lowercase();
        if header_prefix.is_empty()
            || !header_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            errors.push(format!(
                "--header-prefix {:?} must be letters, digits and '-'",
                args.header_prefix
            ));
        }
        if args.db_max_connections == 0 {
            errors.push("--db-max-connections must be at least 1".to_owned());
        }
        if args.db_timeout_ms == 0 {
            errors.push("--db-timeout-ms must be at least 1".to_owned());
        }
        Some(Self {
            database: database?,
            timezone_given: args.redmine_timezone.is_some(),
            policy: Policy {
                timezone: timezone?,
                allow_anonymous: args.allow_anonymous,
                external_auth: if args.ldap_pass_on {
                    ExternalAuth::PassOn
                } else {
                    ExternalAuth::Deny
                },
                redmine: redmine?,
            },
            response: ResponseOptions {
                header_prefix,
                strip_credentials: args.strip_credentials,
            },
            store: StoreOptions {
                max_connections: args.db_max_connections,
                acquire_timeout: Duration::from_millis(args.db_timeout_ms),
                statement_timeout: Duration::from_millis(args.db_timeout_ms),
                key_filter_above: args.key_filter_above,
            },
        })
    }

    /// One line for the start-up log: effective settings, nothing secret.
    pub fn summary(&self) -> String {
        format!(
            "database={} timezone={} redmine_version={} allow_anonymous={} ldap={} header_prefix={} strip_credentials={} db_max_connections={} db_timeout={:?} key_filter_above={}",
            self.database,
            self.policy.timezone.0.name(),
            self.policy.redmine,
            self.policy.allow_anonymous,
            match self.policy.external_auth { ExternalAuth::Deny => "deny", ExternalAuth::PassOn => "pass-on" },
            self.response.header_prefix,
            self.response.strip_credentials,
            self.store.max_connections,
            self.store.statement_timeout,
            self.store.key_filter_above,
        )
    }
}

impl ServeConfig {
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let listen = parse_addr("--listen", &args.listen, &mut errors);
        let admin_listen = args
            .admin_listen
            .as_deref()
            .map(|a| parse_addr("--admin-listen", a, &mut errors));
        if let Some(url) = &args.redis_url {
            let url = url.expose_secret();
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                errors.push("--redis-url must be a redis:// or rediss:// URL".to_owned());
            }
        }
        if args.throttle_client_window_secs == 0 || args.throttle_login_window_secs == 0 {
            errors.push("throttle windows must be at least 1 second".to_owned());
        }
        if args.redis_timeout_ms == 0 {
            errors.push("--redis-timeout-ms must be at least 1".to_owned());
        }
        if args
            .cache_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().len() < 16)
        {
            errors.push("--cache-secret must be at least 16 characters".to_owned());
        }
        if args.decision_timeout_ms == 0 {
            errors.push("--decision-timeout-ms must be at least 1".to_owned());
        }
        for (flag, value) in [
            ("--max-connections", args.max_connections as u64),
            ("--admin-max-connections", args.admin_max_connections as u64),
            ("--header-read-timeout-secs", args.header_read_timeout_secs),
            (
                "--max-concurrent-streams",
                u64::from(args.max_concurrent_streams),
            ),
            ("--keepalive-interval-secs", args.keepalive_interval_secs),
            ("--keepalive-timeout-secs", args.keepalive_timeout_secs),
        ] {
            if value == 0 {
                errors.push(format!("{flag} must be at least 1"));
            }
        }
        // The in-process tier reserves its table up front.
        if args.l1_capacity > MAX_L1_CAPACITY {
            errors.push(format!("--l1-capacity must be at most {MAX_L1_CAPACITY}"));
        }
        let decision = DecisionConfig::from_args(&args.decision, &mut errors);
        match (listen, decision) {
            (Some(listen), Some(decision)) if errors.is_empty() => Ok(Self {
                listen,
                admin_listen: admin_listen.flatten(),
                redis_url: args.redis_url.clone(),
                redis_key_prefix: args.redis_key_prefix.clone(),
                redis_timeout: Duration::from_millis(args.redis_timeout_ms),
                cache_secret: args.cache_secret.clone(),
                cache: CacheOptions {
                    ttl: Duration::from_secs(args.cache_ttl),
                    negative_ttl: Duration::from_secs(args.negative_cache_ttl),
                    l1_capacity: args.l1_capacity,
                },
                listen_invalidations: args.listen_invalidations,
                audit: args.audit_log,
                throttle: ThrottleOptions {
                    client_limit: args.throttle_client_limit,
                    client_window: Duration::from_secs(args.throttle_client_window_secs),
                    login_limit: args.throttle_login_limit,
                    login_window: Duration::from_secs(args.throttle_login_window_secs),
                    trusted_hops: args.trusted_hops,
                },
                decision,
                decision_timeout: Duration::from_millis(args.decision_timeout_ms),
                settings_refresh: Duration::from_secs(args.settings_refresh_secs.max(1)),
                shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
                connections: ConnectionOptions {
                    max_connections: args.max_connections,
                    admin_max_connections: args.admin_max_connections,
                    header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
                    max_concurrent_streams: args.max_concurrent_streams,
                    keepalive_interval: Duration::from_secs(args.keepalive_interval_secs),
                    keepalive_timeout: Duration::from_secs(args.keepalive_timeout_secs),
                },
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "listen={} admin_listen={} {} redis={} cache_ttl={:?} negative_cache_ttl={:?} \
             l1_capacity={} cache_secret={} listen_invalidations={} decision_timeout={:?} {}",
            self.listen,
            self.admin_listen
                .map_or("off".to_owned(), |a| a.to_string()),
            self.connections.summary(),
            if self.redis_url.is_some() {
                "on"
            } else {
                "off"
            },
            self.cache.ttl,
            self.cache.negative_ttl,
            self.cache.l1_capacity,
            if self.cache_secret.is_some() {
                "set"
            } else {
                "random per process"
            },
            self.listen_invalidations,
            self.decision_timeout,
            self.decision.summary()
        )
    }
}

fn parse_addr(flag: &str, value: &str, errors: &mut Vec<String>) -> Option<SocketAddr> {
    value
        .parse()
        .map_err(|_| {
            errors.push(format!(
                "{flag} {value:?} is not an address like 0.0.0.0:9191"
            ))
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn serve(args: &[&str]) -> Result<ServeConfig, ConfigErrors> {
        let mut argv = vec!["redmine-authz", "serve"];
        argv.extend_from_slice(args);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Serve(args) => ServeConfig::from_args(&args),
            _ => unreachable!(),
        }
    }

    #[test]
    fn all_errors_are_reported_together() {
        let errors = serve(&[
            "--listen",
            "nowhere",
            "--redmine-timezone",
            "Mars/Base",
            "--header-prefix",
            "x auth",
            "--database-url",
            "mysql://x",
            "--redmine-version",
            "5",
        ])
        .unwrap_err();
        assert_eq!(errors.0.len(), 5, "{errors}");
    }

    #[test]
    fn summary_never_shows_the_password() {
        let config = serve(&[
            "--database-url",
            "postgres://redmine:s3cr3t-pw@db.example:5432/redmine",
        ])
        .unwrap();
        let summary = config.summary();
        assert!(summary.contains("db.example:5432/redmine"), "{summary}");
        assert!(
            !summary.contains("s3cr3t-pw") && !summary.contains("redmine:"),
            "{summary}"
        );
        assert!(!format!("{config:?}").contains("s3cr3t-pw"));
    }

    #[test]
    fn connection_limits_are_never_zero() {
        let database = ["--database-url", "postgres://db.example/redmine"];
        let zeros = [
            "--max-connections",
            "--admin-max-connections",
            "--header-read-timeout-secs",
            "--max-concurrent-streams",
            "--keepalive-interval-secs",
            "--keepalive-timeout-secs",
        ];
        let args: Vec<&str> = zeros.iter().flat_map(|flag| [*flag, "0"]).collect();
        let errors = serve(&[&database[..], &args].concat()).unwrap_err();
        let expected: Vec<String> = zeros
            .iter()
            .map(|flag| format!("{flag} must be at least 1"))
            .collect();
        assert_eq!(errors.0, expected);
        let summary = serve(&database).unwrap().summary();
        assert!(
            summary.contains("max_connections=4096 admin_max_connections=64 header_read_timeout=10s max_concurrent_streams=1024 keepalive=10s+10s"),
            "{summary}"
        );
    }

    #[test]
    fn l1_capacity_is_bounded() {
        let database = ["--database-url", "postgres://db.example/redmine"];
        let errors =
            serve(&[&database[..], &["--l1-capacity", "1000000000000"]].concat()).unwrap_err();
        assert_eq!(errors.0, ["--l1-capacity must be at most 10000000"]);
        assert!(serve(&[&database[..], &["--l1-capacity", "10000000"]].concat()).is_ok());
    }

    #[test]
    fn redmine_version_reaches_the_policy() {
        let database = ["--database-url", "postgres://db.example/redmine"];
        let config = serve(&database).unwrap();
        assert_eq!(config.decision.policy.redmine, RedmineVersion::Any);
        let config = serve(&[&database[..], &["--redmine-version", "5.0.4"]].concat()).unwrap();
        assert_eq!(config.decision.policy.redmine.to_string(), "5.0.4");
        assert!(config.summary().contains("redmine_version=5.0.4"));
    }

    #[test]
    fn bad_url_error_does_not_echo_it() {
        let errors = serve(&["--database-url", "postgres://u:s3cr3t@[bad"]).unwrap_err();
        assert!(!errors.to_string().contains("s3cr3t"), "{errors}");
    }
}
