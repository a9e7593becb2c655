//! `demo-db`: a Redmine-compatible schema and a handful of users to try the gate on.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};

use crate::auth::password;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "this database already has Redmine tables that demo-db did not create; \
         refusing to touch what may be a real Redmine (pass --force to seed it anyway)"
    )]
    RealRedmine,
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for DemoError {
    fn from(error: sqlx::Error) -> Self {
        // sqlx's messages never carry the connection URL; they may name a table.
        Self::Database(error.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for DemoError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        Self::Database(error.to_string())
    }
}

/// A seeded account, as printed for the operator and used by tests.
#[derive(Debug, Clone, Copy)]
pub struct DemoUser {
    pub login: &'static str,
    pub password: &'static str,
    pub api_key: Option<&'static str>,
    pub admin: bool,
    pub status: i32,
    pub twofa: bool,
    pub must_change_passwd: bool,
    pub ldap: bool,
    pub note: &'static str,
}

const fn user(
    login: &'static str,
    password: &'static str,
    api_key: Option<&'static str>,
    note: &'static str,
) -> DemoUser {
    DemoUser {
        login,
        password,
        api_key,
        admin: false,
        status: 1,
        twofa: false,
        must_change_passwd: false,
        ldap: false,
        note,
    }
}

pub const DEMO_USERS: [DemoUser; 8] = [
    DemoUser {
        admin: true,
        ..user(
            "admin",
            "demo-admin-pw",
            Some("d3m0a11ce0000000000000000000000000000a01"),
            "administrator",
        )
    },
    user(
        "alice",
        "demo-alice-pw",
        Some("d3m0a11ce0000000000000000000000000000a02"),
        "active user",
    ),
    user("bob", "demo-bob-pw", None, "active user without an API key"),
    DemoUser {
        status: 3,
        ..user(
            "larry",
            "demo-larry-pw",
            Some("d3m0a11ce0000000000000000000000000000a03"),
            "locked",
        )
    },
    DemoUser {
        status: 2,
        ..user(
            "reggie",
            "demo-reggie-pw",
            Some("d3m0a11ce0000000000000000000000000000a04"),
            "registered, not activated",
        )
    },
    DemoUser {
        twofa: true,
        ..user(
            "tina",
            "demo-tina-pw",
            Some("d3m0a11ce0000000000000000000000000000a05"),
            "two-factor auth on",
        )
    },
    DemoUser {
        must_change_passwd: true,
        ..user(
            "mona",
            "demo-mona-pw",
            Some("d3m0a11ce0000000000000000000000000000a06"),
            "must change password",
        )
    },
    DemoUser {
        ldap: true,
        ..user("lara", "demo-lara-pw", None, "LDAP account")
    },
];

/// An OAuth access token for `admin` with the `admin` scope (it never expires).
pub const DEMO_OAUTH_TOKEN: &str = "demo-oauth-token-admin-scope";
pub const DEMO_OAUTH_SCOPES: &str = "admin view_issues view_project";

/// Creates the schema (unless the tables are there) and the demo data. Existing users with a
/// demo login are left alone and reported.
pub async fn seed_demo(connect: &PgConnectOptions, force: bool) -> Result<Vec<String>, DemoError> {
    let mut conn = PgConnection::connect_with(connect).await?;
    let has_users: bool = sqlx::query_scalar("SELECT to_regclass('users') IS NOT NULL")
        .fetch_one(&mut conn)
        .await?;
    let ours: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut conn)
        .await?;
    if has_users && !ours && !force {
        return Err(DemoError::RealRedmine);
    }
    sqlx::migrate!("./migrations").run(&mut conn).await?;

    let mut report = Vec::new();
    sqlx::query(
        "INSERT INTO settings (name, value, updated_on) \
         SELECT 'rest_api_enabled', '1', now() AT TIME ZONE 'UTC' \
         WHERE NOT EXISTS (SELECT 1 FROM settings WHERE name = 'rest_api_enabled')",
    )
    .execute(&mut conn)
    .await?;
    for demo in DEMO_USERS {
        let salt = format!("demo-salt-{}", demo.login);
        let inserted: Option<i32> = sqlx::query_scalar(
            "INSERT INTO users (login, hashed_password, salt, firstname, lastname, admin, status, \
                 type, twofa_scheme, must_change_passwd, auth_source_id, passwd_changed_on, created_on) \
             SELECT $1, $2, $3, $1, 'Demo', $4, $5, 'User', $6, $7, $8, \
                 now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' \
             WHERE NOT EXISTS (SELECT 1 FROM users WHERE login = $1) RETURNING id",
        )
        .bind(demo.login)
        .bind(password::hash(demo.password, &salt))
        .bind(&salt)
        .bind(demo.admin)
        .bind(demo.status)
        .bind(demo.twofa.then_some("totp"))
        .bind(demo.must_change_passwd)
        .bind(demo.ldap.then_some(1_i32))
        .fetch_optional(&mut conn)
        .await?;
        let Some(id) = inserted else {
            report.push(format!("user {} exists, left alone", demo.login));
            continue;
        };
        if let Some(key) = demo.api_key {
            sqlx::query(
                "INSERT INTO tokens (user_id, action, value, created_on) \
                 VALUES ($1, 'api', $2, now() AT TIME ZONE 'UTC') ON CONFLICT (value) DO NOTHING",
            )
            .bind(id)
            .bind(key)
            .execute(&mut conn)
            .await?;
        }
        if demo.login == "admin" {
            seed_oauth_token(&mut conn, id).await?;
        }
    }
    Ok(report)
}

async fn seed_oauth_token(conn: &mut PgConnection, owner_id: i32) -> Result<(), DemoError> {
    let app_id: i64 = sqlx::query_scalar(
        "INSERT INTO oauth_applications (name, uid, secret, redirect_uri, scopes, created_at, updated_at) \
         VALUES ('Demo client', 'demo-client', 'demo-secret', 'urn:ietf:wg:oauth:2.0:oob', $1, \
                 now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC') \
         ON CONFLICT (uid) DO UPDATE SET updated_at = EXCLUDED.updated_at RETURNING id",
    )
    .bind(DEMO_OAUTH_SCOPES)
    .fetch_one(&mut *conn)
    .await?;
    let token_hash = crate::auth::BearerToken::from_clear(DEMO_OAUTH_TOKEN).sha256_hex();
    sqlx::query(
        "INSERT INTO oauth_access_tokens (resource_owner_id, application_id, token, expires_in, scopes, created_at) \
         VALUES ($1, $2, $3, NULL, $4, now() AT TIME ZONE 'UTC') ON CONFLICT (token) DO NOTHING",
    )
    .bind(i64::from(owner_id))
    .bind(app_id)
    .bind(token_hash)
    .bind(DEMO_OAUTH_SCOPES)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
