//! Test harness: each test gets its own PostgreSQL database (schema + demo users from
//! `demo-db`) and its own server on port 0, talked to with a real tonic client.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use redmine_authz::app::Application;
use redmine_authz::cache::CacheStats;
use redmine_authz::cli::{Cli, Command};
use redmine_authz::clock::ManualClock;
use redmine_authz::config::ServeConfig;
use redmine_authz::envoy::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use redmine_authz::envoy::proto::envoy::service::auth::v3::check_response::HttpResponse;
use redmine_authz::envoy::proto::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use sqlx::{Connection as _, PgConnection, PgPool};
use tonic::transport::Channel;

pub use crate::support::check_request::{get, post, CheckBuilder};
pub use crate::support::http::{http_response, http_status};
pub use redmine_authz::store::{DEMO_OAUTH_TOKEN, DEMO_USERS};

/// The server PostgreSQL runs on; each test makes its own database there.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn url_for(database: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin);
    format!("{base}/{database}")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Drops databases left by earlier test runs (other process ids), once per run.
async fn drop_stale_databases() {
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("connect to the test PostgreSQL server");
    let ours = format!("authz_test_{}_%", std::process::id());
    let stale: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'authz\\_test\\_%' AND datname NOT LIKE $1")
        .bind(ours)
        .fetch_all(&mut admin)
        .await
        .unwrap_or_default();
    for name in stale {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// A Redis key prefix no other test uses.
pub fn redis_prefix() -> String {
    format!(
        "authz-test-{}-{}:",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A fresh database with the demo schema and users.
pub async fn fresh_database() -> String {
    let name = format!(
        "authz_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("connect to the test PostgreSQL server");
    CLEANED.get_or_init(drop_stale_databases).await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let url = url_for(&name);
    let options = url.parse().expect("test database url");
    redmine_authz::store::seed_demo(&options, false)
        .await
        .expect("seed demo data");
    // As in production: changes to users, keys, tokens and settings evict at once.
    redmine_authz::store::install_triggers(&options)
        .await
        .expect("install triggers");
    url
}

pub fn demo_key(login: &str) -> &'static str {
    DEMO_USERS
        .iter()
        .find(|u| u.login == login)
        .and_then(|u| u.api_key)
        .expect("demo user with a key")
}

pub fn demo_password(login: &str) -> &'static str {
    DEMO_USERS
        .iter()
        .find(|u| u.login == login)
        .map(|u| u.password)
        .expect("demo user")
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub struct TestApp {
    pub port: u16,
    pub admin_port: Option<u16>,
    pub database_url: String,
    /// Writable connection to the test database, for fixtures.
    pub db: PgPool,
    pub clock: Arc<ManualClock>,
    pub stats: Arc<CacheStats>,
    client: AuthorizationClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<()>>,
}

/// Extra `serve` flags for a test, e.g. `&["--allow-anonymous"]`.
pub async fn spawn_app(flags: &[&str]) -> TestApp {
    let database_url = fresh_database().await;
    spawn_app_on(&database_url, flags).await
}

pub async fn spawn_app_on(database_url: &str, flags: &[&str]) -> TestApp {
    spawn(database_url, flags, true).await
}

async fn spawn(database_url: &str, flags: &[&str], wait_ready: bool) -> TestApp {
    let mut argv = vec![
        "redmine-authz",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
    ];
    if !flags.contains(&"--settings-refresh-secs") {
        argv.extend(["--settings-refresh-secs", "1"]);
    }
    argv.extend_from_slice(flags);
    let listens = !flags
        .windows(2)
        .any(|w| w == ["--listen-invalidations", "false"]);
    let args = match <Cli as clap::Parser>::try_parse_from(argv)
        .expect("valid test flags")
        .command
    {
        Command::Serve(args) => args,
        _ => unreachable!(),
    };
    let config = ServeConfig::from_args(&args).expect("valid test config");
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = Application::build_with_clock(config, clock.clone())
        .await
        .expect("build app");
    let port = app.port();
    let admin_port = app.admin_port();
    let stats = app.cache_stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    });
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy(database_url)
        .expect("fixture pool");
    let app = TestApp {
        port,
        admin_port,
        database_url: database_url.to_owned(),
        db,
        clock,
        stats,
        client: client_for(port),
        stop: Some(stop),
        server: Some(server),
    };
    if wait_ready {
        app.wait_ready(listens).await;
    }
    app
}

/// A server whose database may be unreachable: does not wait for readiness.
pub async fn spawn_app_without_ready_wait(database_url: &str) -> TestApp {
    spawn(database_url, &[], false).await
}

impl TestApp {
    /// Ready, and LISTENing for invalidations (so a fixture change is seen at once).
    async fn wait_ready(&self, listens: bool) {
        let Some(port) = self.admin_port else { return };
        for _ in 0..200 {
            if http_status(port, "/readyz").await == Some(200)
                && (!listens || self.listening().await)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server did not become ready");
    }

    async fn listening(&self) -> bool {
        let listeners: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(&self.db)
        .await
        .unwrap_or(0);
        listeners > 0
    }

    pub async fn send(&self, check: CheckRequest) -> CheckResponse {
        let mut client = self.client.clone();
        tokio::time::timeout(Duration::from_secs(10), client.check(check))
            .await
            .expect("check answered in time")
            .expect("check RPC succeeds")
            .into_inner()
    }

    /// Sends a prepared call (with metadata such as a trace context).
    pub async fn send_request(&self, call: tonic::Request<CheckRequest>) -> CheckResponse {
        let mut client = self.client.clone();
        tokio::time::timeout(Duration::from_secs(10), client.check(call))
            .await
            .expect("check answered in time")
            .expect("check RPC succeeds")
            .into_inner()
    }

    pub async fn check(&self, request: CheckBuilder) -> Verdict {
        Verdict(self.send(request.build()).await)
    }

    /// The shutdown trigger, for a test that fires it itself.
    pub fn take_stop(&mut self) -> tokio::sync::oneshot::Sender<()> {
        self.stop.take().expect("not stopped yet")
    }

    /// Signals shutdown and waits for the server to finish draining.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(15), server)
                .await
                .expect("server stops")
                .expect("server task");
        }
    }

    pub async fn set_setting(&self, name: &str, value: &str) {
        sqlx::query("INSERT INTO settings (name, value, updated_on) VALUES ($1, $2, now())")
            .bind(name)
            .bind(value)
            .execute(&self.db)
            .await
            .unwrap();
    }

    pub async fn exec(&self, sql: &str) {
        sqlx::query(sql)
            .execute(&self.db)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Checks `request` until it gets `status` (a change reaching the cache through the
    /// database triggers), failing after `limit`; returns how long it took.
    pub async fn until_status(
        &self,
        request: CheckBuilder,
        status: i32,
        limit: Duration,
    ) -> Duration {
        let started = std::time::Instant::now();
        loop {
            let verdict = self.check(request.clone()).await;
            if verdict.status() == status {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "still {} after {limit:?}: {verdict:?}",
                verdict.status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn user_id(&self, login: &str) -> i64 {
        sqlx::query_scalar::<_, i32>("SELECT id FROM users WHERE login = $1")
            .bind(login)
            .fetch_one(&self.db)
            .await
            .unwrap() as i64
    }

    /// Adds an OAuth token for `login`; times are Redmine local times.
    pub async fn add_token(
        &self,
        login: &str,
        token: &str,
        scopes: &str,
        created_at: NaiveDateTime,
        expires_in: Option<i32>,
        revoked_at: Option<NaiveDateTime>,
    ) {
        use sha2::Digest as _;
        let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        sqlx::query(
            "INSERT INTO oauth_access_tokens (resource_owner_id, application_id, token, expires_in, scopes, created_at, revoked_at) \
             SELECT u.id, (SELECT min(id) FROM oauth_applications), $2, $3, $4, $5, $6 FROM users u WHERE u.login = $1",
        )
        .bind(login)
        .bind(hash)
        .bind(expires_in)
        .bind(scopes)
        .bind(created_at)
        .bind(revoked_at)
        .execute(&self.db)
        .await
        .unwrap();
    }

    /// Every secret the demo database holds or its users send: passwords, API keys, the OAuth
    /// token and its stored hash, password hashes and salts. None may leak anywhere.
    pub async fn secrets(&self) -> Vec<String> {
        use sha2::Digest as _;
        let mut secrets = vec![
            DEMO_OAUTH_TOKEN.to_owned(),
            hex::encode(sha2::Sha256::digest(DEMO_OAUTH_TOKEN.as_bytes())),
        ];
        for user in DEMO_USERS {
            secrets.push(user.password.to_owned());
            secrets.extend(user.api_key.map(str::to_owned));
        }
        let stored: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT hashed_password, salt FROM users")
                .fetch_all(&self.db)
                .await
                .unwrap();
        for (hash, salt) in stored {
            secrets.push(hash);
            secrets.extend(salt);
        }
        secrets
    }

    pub fn set_now(&self, now: DateTime<Utc>) {
        self.clock.set(now);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A bare HTTP/1.0 GET on loopback; returns the body.
/// A port nothing listens on now, for a process that must be told its port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client for a gate on `port` that this process did not start.
pub fn client_for(port: u16) -> AuthorizationClient<Channel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    AuthorizationClient::new(channel)
}

pub async fn http_get(port: u16, path: &str) -> String {
    let (_, body) = http_response(port, path).await.expect("an HTTP answer");
    body
}

/// A decoded answer with assertions that read like R-DENY-2's table.
#[derive(Debug)]
pub struct Verdict(pub CheckResponse);

impl Verdict {
    pub fn grpc_code(&self) -> i32 {
        self.0.status.as_ref().map(|s| s.code).unwrap_or(-1)
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self.0.http_response, Some(HttpResponse::OkResponse(_))) && self.grpc_code() == 0
    }

    /// The HTTP status of a deny, or 200 for an allow.
    pub fn status(&self) -> i32 {
        match &self.0.http_response {
            Some(HttpResponse::OkResponse(_)) => 200,
            Some(HttpResponse::DeniedResponse(denied)) => {
                denied.status.as_ref().map(|s| s.code).unwrap_or(0)
            }
            _ => -1,
        }
    }

    /// A header Envoy is told to set (allow) or send (deny).
    pub fn header(&self, name: &str) -> Option<String> {
        let headers = match &self.0.http_response {
            Some(HttpResponse::OkResponse(ok)) => &ok.headers,
            Some(HttpResponse::DeniedResponse(denied)) => &denied.headers,
            _ => return None,
        };
        headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| h.value.clone())
    }

    pub fn set_headers(&self) -> Vec<String> {
        match &self.0.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| h.key.clone())
                .collect(),
            _ => vec![],
        }
    }

    pub fn removed(&self) -> Vec<String> {
        match &self.0.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok.headers_to_remove.clone(),
            _ => vec![],
        }
    }

    pub fn body(&self) -> String {
        match &self.0.http_response {
            Some(HttpResponse::DeniedResponse(denied)) => denied.body.clone(),
            _ => String::new(),
        }
    }

    pub fn reason(&self) -> String {
        self.0
            .status
            .as_ref()
            .map(|s| s.message.clone())
            .unwrap_or_default()
    }

    /// Asserts a deny with this HTTP status and reason name.
    #[track_caller]
    pub fn assert_denied(&self, status: i32, reason: &str) {
        assert_eq!(
            (self.status(), self.reason().as_str()),
            (status, reason),
            "{self:?}"
        );
    }

    /// Asserts an allow as `login` via `method`.
    #[track_caller]
    pub fn assert_user(&self, login: &str, method: &str) {
        assert!(self.is_allowed(), "expected allow for {login}: {self:?}");
        assert_eq!(
            self.header("x-auth-user-login").as_deref(),
            Some(login),
            "{self:?}"
        );
        assert_eq!(
            self.header("x-auth-method").as_deref(),
            Some(method),
            "{self:?}"
        );
    }
}
