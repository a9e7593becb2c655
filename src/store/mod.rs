//! Reads of Redmine's own tables in PostgreSQL. Read-only: every session is opened with
//! `default_transaction_read_only`, so the gate can sit on a replica and can never write.

mod demo;
mod known_keys;
mod notify;
mod queries;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions as _;
use tracing::Instrument as _;

use crate::auth::password::{self, StoredPassword};
use crate::auth::{
    AccessToken, ApiKey, BearerToken, Login, Password, PasswordCheck, Principal, Settings,
};
use crate::directory::{Directory, DirectoryError};

pub use demo::{seed_demo, DemoError, DemoUser, DEMO_OAUTH_SCOPES, DEMO_OAUTH_TOKEN, DEMO_USERS};
pub use known_keys::KnownKeys;
pub use notify::{install_triggers, listen, uninstall_triggers, Invalidation, CHANNEL};
use queries::{TokenRow, UserRow};

/// Pool and timeout settings for the Redmine database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// How long a check may wait for a free connection before it is a 503.
    pub acquire_timeout: Duration,
    /// Server-side cap on each query.
    pub statement_timeout: Duration,
    /// Wrong API keys per second above which keys never seen in `tokens` are refused
    /// without a query (see [`KnownKeys`]); 0 refuses them whenever the filter is in sync.
    pub key_filter_above: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_millis(500),
            statement_timeout: Duration::from_millis(1500),
            key_filter_above: 100,
        }
    }
}

/// Redmine's database, read through a bounded pool.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    known_keys: Arc<KnownKeys>,
}

impl Store {
    /// Builds the pool without connecting: the service starts (and reports NOT_SERVING)
    /// while the database is still down.
    pub fn connect_lazy(connect: PgConnectOptions, options: &StoreOptions) -> Self {
        let statement_timeout = options.statement_timeout.as_millis().to_string();
        let connect = connect
            .application_name("redmine-authz")
            .options([
                ("default_transaction_read_only", "on"),
                ("statement_timeout", statement_timeout.as_str()),
            ])
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        Self {
            pool,
            known_keys: Arc::new(KnownKeys::new(options.key_filter_above)),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Loads the API key filter; call it once LISTEN has begun (see [`KnownKeys::load`]).
    pub async fn load_key_filter(&self) {
        if let Err(error) = self.known_keys.load(&self.pool).await {
            tracing::warn!(error = %describe(&error), "cannot load the API key filter; it stays off");
        }
    }

    /// These users' keys may have changed: their current keys join the filter. Should that
    /// fail, the filter is reloaded, or left off until the listener reconnects.
    pub async fn note_key_changes(&self, user_ids: &[i64]) {
        if let Err(error) = self.known_keys.add_users(&self.pool, user_ids).await {
            tracing::warn!(error = %describe(&error), "cannot update the API key filter; reloading it");
            self.load_key_filter().await;
        }
    }

    /// Notifications are being missed: the filter refuses nothing until reloaded.
    pub fn lose_key_filter(&self) {
        self.known_keys.lose_sync();
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    async fn user_row_by_login(&self, login: &Login) -> Result<Option<UserRow>, DirectoryError> {
        let rows: Vec<UserRow> = sqlx::query_as(queries::USERS_BY_LOGIN)
            .bind(login.as_str())
            .bind(login.downcased())
            .fetch_all(&self.pool)
            .instrument(sql_span("users by login"))
            .await
            .map_err(unavailable)?;
        // Redmine: an exact match wins over a case-insensitive one.
        let exact = rows.iter().position(|row| row.login == login.as_str());
        Ok(match exact {
            Some(index) => rows.into_iter().nth(index),
            None => rows.into_iter().next(),
        })
    }
}

impl Directory for Store {
    async fn user_by_api_key(&self, key: &ApiKey) -> Result<Option<Principal>, DirectoryError> {
        let row: Option<UserRow> = sqlx::query_as(queries::USER_BY_API_KEY)
            .bind(key.expose())
            .fetch_optional(&self.pool)
            .instrument(sql_span("user by API key"))
            .await
            .map_err(unavailable)?;
        Ok(row.map(UserRow::into_principal))
    }

    async fn user_by_login(&self, login: &Login) -> Result<Option<Principal>, DirectoryError> {
        Ok(self
            .user_row_by_login(login)
            .await?
            .map(UserRow::into_principal))
    }

    async fn password_login(
        &self,
        login: &Login,
        password: &Password,
    ) -> Result<PasswordCheck, DirectoryError> {
        let Some(row) = self.user_row_by_login(login).await? else {
            return Ok(PasswordCheck::Invalid);
        };
        if row.auth_source_id.is_some() {
            return Ok(PasswordCheck::External(row.into_principal()));
        }
        let stored = StoredPassword {
            hashed_password: &row.hashed_password,
            salt: row.salt.as_deref(),
        };
        Ok(if password::matches(password, &stored) {
            PasswordCheck::Valid(row.into_principal())
        } else {
            PasswordCheck::Invalid
        })
    }

    async fn access_token(
        &self,
        token: &BearerToken,
    ) -> Result<Option<AccessToken>, DirectoryError> {
        let result: Result<Option<TokenRow>, sqlx::Error> = sqlx::query_as(queries::ACCESS_TOKEN)
            .bind(token.sha256_hex())
            .fetch_optional(&self.pool)
            .instrument(sql_span("access token"))
            .await;
        match result {
            Ok(row) => Ok(row.map(TokenRow::into_access_token)),
            // Redmine before 6.1 has no Doorkeeper tables and ignores bearer tokens.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNDEFINED_TABLE) => {
                Ok(None)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    fn refuses_api_key(&self, key: &ApiKey) -> bool {
        self.known_keys.refuses(key.expose())
    }

    async fn settings(&self) -> Result<Settings, DirectoryError> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(queries::SETTINGS)
            .fetch_all(&self.pool)
            .instrument(sql_span("settings"))
            .await
            .map_err(unavailable)?;
        let value = |name: &str| {
            rows.iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.as_deref())
        };
        Ok(Settings::from_values(
            value("rest_api_enabled"),
            value("password_max_age"),
        ))
    }
}

const UNDEFINED_TABLE: &str = "42P01";

/// A child span of the check for one query; the statement is fixed, so its summary is enough.
fn sql_span(summary: &'static str) -> tracing::Span {
    tracing::info_span!(
        "sql",
        otel.kind = "client",
        db.system = "postgresql",
        db.operation.name = "SELECT",
        db.query.summary = summary
    )
}

/// Maps a driver error to a message that names its kind, never the URL or a query value.
fn unavailable(error: sqlx::Error) -> DirectoryError {
    DirectoryError::Unavailable(describe(&error))
}

fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::PoolTimedOut => "connection pool exhausted".to_owned(),
        sqlx::Error::PoolClosed => "connection pool closed".to_owned(),
        sqlx::Error::Io(e) => format!("i/o: {}", e.kind()),
        sqlx::Error::Tls(_) => "tls".to_owned(),
        sqlx::Error::Database(e) => format!("database error {}", e.code().unwrap_or_default()),
        sqlx::Error::Protocol(_) => "protocol".to_owned(),
        _ => "query failed".to_owned(),
    }
}
