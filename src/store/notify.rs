//! Revocation in about a second: triggers on Redmine's tables `NOTIFY` a channel, and the
//! service `LISTEN`s to drop what it cached about the affected user.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{Connection as _, PgConnection};
use tokio::sync::mpsc;

/// The channel the triggers notify.
pub const CHANNEL: &str = "redmine_authz";

/// What the listener reports: what a notification says must be forgotten, and whether
/// every notification is arriving (the API key filter depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// Everything cached about this user (row, keys, tokens) is stale.
    User(i64),
    /// Redmine's settings changed.
    Settings,
    /// Notifications may have been missed (the connection dropped): forget everything.
    All,
    /// LISTEN has begun: every notification from here on will arrive.
    Listening,
    /// The connection dropped: notifications are missed until the next `Listening`.
    NotListening,
}

impl Invalidation {
    fn parse(payload: &str) -> Option<Self> {
        match payload.split_once(':') {
            Some(("user", id)) => id.parse().ok().map(Self::User),
            _ if payload == "settings" => Some(Self::Settings),
            _ => None,
        }
    }
}

/// Listens until the receiver is dropped, reconnecting by itself. After a reconnect (not the
/// first connect) it sends [`Invalidation::All`], since notifications sent meanwhile are lost.
pub fn listen(connect: PgConnectOptions) -> mpsc::Receiver<Invalidation> {
    let (sender, receiver) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut reconnecting = false;
        loop {
            let mut listener = match PgListener::connect_with(&sqlx::PgPool::connect_lazy_with(
                connect.clone(),
            ))
            .await
            {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(error = %super::describe(&error), "cannot LISTEN for invalidations; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if let Err(error) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %super::describe(&error), "LISTEN failed; retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
            backoff = Duration::from_millis(100);
            tracing::info!(channel = CHANNEL, "listening for invalidations");
            // Anything could have changed while no one was listening.
            if reconnecting && sender.send(Invalidation::All).await.is_err() {
                return;
            }
            if sender.send(Invalidation::Listening).await.is_err() {
                return;
            }
            reconnecting = true;
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        let Some(event) = Invalidation::parse(notification.payload()) else {
                            tracing::warn!("ignoring an unrecognised invalidation");
                            continue;
                        };
                        if sender.send(event).await.is_err() {
                            return;
                        }
                    }
                    // The connection dropped: listen again, then forget everything.
                    Ok(None) => {
                        tracing::warn!("invalidation listener lost its connection; reconnecting");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(error = %super::describe(&error), "invalidation listener failed; reconnecting");
                        break;
                    }
                }
            }
            if sender.send(Invalidation::NotListening).await.is_err() {
                return;
            }
        }
    });
    receiver
}

// The trigger's argument names the column holding the user id; `to_jsonb` reads it without
// PL/pgSQL resolving other tables' columns.
const INSTALL: &str = r#"
CREATE OR REPLACE FUNCTION redmine_authz_notify() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  user_column text := TG_ARGV[0];
  old_user text;
  new_user text;
BEGIN
  IF user_column = 'settings' THEN
    PERFORM pg_notify('redmine_authz', 'settings');
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    old_user := to_jsonb(OLD) ->> user_column;
    IF old_user IS NOT NULL THEN
      PERFORM pg_notify('redmine_authz', 'user:' || old_user);
    END IF;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    new_user := to_jsonb(NEW) ->> user_column;
    IF new_user IS NOT NULL AND new_user IS DISTINCT FROM old_user THEN
      PERFORM pg_notify('redmine_authz', 'user:' || new_user);
    END IF;
  END IF;
  RETURN NULL;
END
$fn$;

-- Only the columns decisions read: Redmine rewrites last_login_on on every sign-in.
DROP TRIGGER IF EXISTS redmine_authz_users ON users;
CREATE TRIGGER redmine_authz_users
  AFTER UPDATE OF login, hashed_password, salt, admin, status, auth_source_id, twofa_scheme,
    must_change_passwd, passwd_changed_on, type ON users
  FOR EACH ROW EXECUTE FUNCTION redmine_authz_notify('id');
DROP TRIGGER IF EXISTS redmine_authz_users_delete ON users;
CREATE TRIGGER redmine_authz_users_delete AFTER DELETE ON users
  FOR EACH ROW EXECUTE FUNCTION redmine_authz_notify('id');

-- Only API keys: session and feed tokens churn constantly.
DROP TRIGGER IF EXISTS redmine_authz_tokens_insert ON tokens;
CREATE TRIGGER redmine_authz_tokens_insert AFTER INSERT ON tokens
  FOR EACH ROW WHEN (NEW.action = 'api') EXECUTE FUNCTION redmine_authz_notify('user_id');
DROP TRIGGER IF EXISTS redmine_authz_tokens_update ON tokens;
CREATE TRIGGER redmine_authz_tokens_update AFTER UPDATE ON tokens
  FOR EACH ROW WHEN (NEW.action = 'api' OR OLD.action = 'api') EXECUTE FUNCTION redmine_authz_notify('user_id');
DROP TRIGGER IF EXISTS redmine_authz_tokens_delete ON tokens;
CREATE TRIGGER redmine_authz_tokens_delete AFTER DELETE ON tokens
  FOR EACH ROW WHEN (OLD.action = 'api') EXECUTE FUNCTION redmine_authz_notify('user_id');

DROP TRIGGER IF EXISTS redmine_authz_settings ON settings;
CREATE TRIGGER redmine_authz_settings AFTER INSERT OR UPDATE OR DELETE ON settings
  FOR EACH STATEMENT EXECUTE FUNCTION redmine_authz_notify('settings');
"#;

// Redmine before 6.1 has no Doorkeeper tables.
const INSTALL_OAUTH: &str = r#"
DROP TRIGGER IF EXISTS redmine_authz_oauth_access_tokens ON oauth_access_tokens;
CREATE TRIGGER redmine_authz_oauth_access_tokens AFTER UPDATE OR DELETE ON oauth_access_tokens
  FOR EACH ROW EXECUTE FUNCTION redmine_authz_notify('resource_owner_id');
"#;

const UNINSTALL: &str = r#"
DROP TRIGGER IF EXISTS redmine_authz_users ON users;
DROP TRIGGER IF EXISTS redmine_authz_users_delete ON users;
DROP TRIGGER IF EXISTS redmine_authz_tokens_insert ON tokens;
DROP TRIGGER IF EXISTS redmine_authz_tokens_update ON tokens;
DROP TRIGGER IF EXISTS redmine_authz_tokens_delete ON tokens;
DROP TRIGGER IF EXISTS redmine_authz_settings ON settings;
DO $do$ BEGIN
  IF to_regclass('oauth_access_tokens') IS NOT NULL THEN
    DROP TRIGGER IF EXISTS redmine_authz_oauth_access_tokens ON oauth_access_tokens;
  END IF;
END $do$;
DROP FUNCTION IF EXISTS redmine_authz_notify();
"#;

/// Installs (or replaces) the triggers, in one transaction. Returns the tables covered.
pub async fn install_triggers(
    connect: &PgConnectOptions,
) -> Result<Vec<&'static str>, sqlx::Error> {
    let mut conn = PgConnection::connect_with(connect).await?;
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(INSTALL).execute(&mut *tx).await?;
    let mut tables = vec!["users", "tokens", "settings"];
    let has_oauth: bool =
        sqlx::query_scalar("SELECT to_regclass('oauth_access_tokens') IS NOT NULL")
            .fetch_one(&mut *tx)
            .await?;
    if has_oauth {
        sqlx::raw_sql(INSTALL_OAUTH).execute(&mut *tx).await?;
        tables.push("oauth_access_tokens");
    }
    tx.commit().await?;
    Ok(tables)
}

pub async fn uninstall_triggers(connect: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect_with(connect).await?;
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(UNINSTALL).execute(&mut *tx).await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(Invalidation::parse("user:42"), Some(Invalidation::User(42)));
        assert_eq!(
            Invalidation::parse("settings"),
            Some(Invalidation::Settings)
        );
        assert_eq!(Invalidation::parse("user:"), None);
        assert_eq!(Invalidation::parse("junk"), None);
    }
}
