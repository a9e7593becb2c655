//! The SQL the gate runs, and the rows it reads. Only `users.type = 'User'` rows are people.

use chrono::NaiveDateTime;

use crate::auth::{AccessToken, Principal};

macro_rules! principal_columns {
    () => {
        "u.id::int8 AS id, u.login, u.admin, u.status, \
         COALESCE(u.twofa_scheme, '') <> '' AS twofa, u.must_change_passwd, u.passwd_changed_on, \
         u.auth_source_id::int8 AS auth_source_id, u.hashed_password, u.salt"
    };
}

pub const USER_BY_API_KEY: &str = concat!(
    "SELECT ",
    principal_columns!(),
    " FROM tokens t JOIN users u ON u.id = t.user_id \
     WHERE t.action = 'api' AND t.value = $1 AND u.type = 'User' LIMIT 1"
);

pub const USERS_BY_LOGIN: &str = concat!(
    "SELECT ",
    principal_columns!(),
    " FROM users u WHERE u.type = 'User' AND (u.login = $1 OR LOWER(u.login) = $2) \
     ORDER BY u.id LIMIT 20"
);

pub const ACCESS_TOKEN: &str = "SELECT t.application_id, t.scopes, t.created_at, \
     t.expires_in::int8 AS expires_in, t.revoked_at, \
     u.id::int8 AS owner_id, u.login AS owner_login, u.admin AS owner_admin, \
     u.status AS owner_status, COALESCE(u.twofa_scheme, '') <> '' AS owner_twofa, \
     u.must_change_passwd AS owner_must_change_passwd, \
     u.passwd_changed_on AS owner_passwd_changed_on, \
     u.auth_source_id IS NOT NULL AS owner_external_auth \
     FROM oauth_access_tokens t \
     LEFT JOIN users u ON u.id = t.resource_owner_id AND u.type = 'User' \
     WHERE t.token = $1";

/// The API key filter is kept current only by the triggers on `tokens`, and only a primary
/// sends their notifications.
pub const API_KEY_TRIGGERS_LIVE: &str = "SELECT NOT pg_is_in_recovery() AND \
     (SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('tokens') AND tgenabled <> 'D' \
      AND tgname IN ('redmine_authz_tokens_insert', 'redmine_authz_tokens_update')) = 2";

pub const API_KEY_COUNT: &str = "SELECT count(*) FROM tokens WHERE action = 'api'";

pub const API_KEYS: &str = "SELECT value FROM tokens WHERE action = 'api'";

pub const API_KEYS_OF_USERS: &str =
    "SELECT value FROM tokens WHERE action = 'api' AND user_id = ANY($1)";

/// The newest row wins when a setting was written twice.
pub const SETTINGS: &str = "SELECT DISTINCT ON (name) name, value FROM settings \
     WHERE name IN ('rest_api_enabled', 'password_max_age') ORDER BY name, id DESC";

#[derive(sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub login: String,
    pub admin: bool,
    pub status: i32,
    pub twofa: bool,
    pub must_change_passwd: bool,
    pub passwd_changed_on: Option<NaiveDateTime>,
    pub auth_source_id: Option<i64>,
    pub hashed_password: String,
    pub salt: Option<String>,
}

impl UserRow {
    /// Drops the password hash: a principal may be cached, a hash never.
    pub fn into_principal(self) -> Principal {
        Principal {
            id: self.id,
            login: self.login,
            admin: self.admin,
            status: self.status,
            twofa: self.twofa,
            must_change_passwd: self.must_change_passwd,
            passwd_changed_on: self.passwd_changed_on,
            external_auth: self.auth_source_id.is_some(),
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct TokenRow {
    pub application_id: Option<i64>,
    pub scopes: Option<String>,
    pub created_at: NaiveDateTime,
    pub expires_in: Option<i64>,
    pub revoked_at: Option<NaiveDateTime>,
    pub owner_id: Option<i64>,
    pub owner_login: Option<String>,
    pub owner_admin: Option<bool>,
    pub owner_status: Option<i32>,
    pub owner_twofa: Option<bool>,
    pub owner_must_change_passwd: Option<bool>,
    pub owner_passwd_changed_on: Option<NaiveDateTime>,
    pub owner_external_auth: Option<bool>,
}

impl TokenRow {
    pub fn into_access_token(self) -> AccessToken {
        let owner = match (self.owner_id, self.owner_login) {
            (Some(id), Some(login)) => Some(Principal {
                id,
                login,
                admin: self.owner_admin.unwrap_or(false),
                status: self.owner_status.unwrap_or(0),
                twofa: self.owner_twofa.unwrap_or(false),
                must_change_passwd: self.owner_must_change_passwd.unwrap_or(false),
                passwd_changed_on: self.owner_passwd_changed_on,
                external_auth: self.owner_external_auth.unwrap_or(false),
            }),
            _ => None,
        };
        AccessToken {
            application_id: self.application_id,
            owner,
            scopes: self
                .scopes
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            created_at: self.created_at,
            expires_in_seconds: self.expires_in,
            revoked_at: self.revoked_at,
        }
    }
}
