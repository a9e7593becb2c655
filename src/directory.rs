//! The one seam between the decision and its data: what the gate may ask about users,
//! keys, tokens and settings. PostgreSQL implements it; a cache wraps it.

use std::future::Future;

use crate::auth::{
    AccessToken, ApiKey, BearerToken, Login, Password, PasswordCheck, Principal, Settings,
};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The backing store could not answer (down, timed out, pool exhausted).
    #[error("directory unavailable: {0}")]
    Unavailable(String),
}

pub trait Directory: Send + Sync + 'static {
    /// The owner of an API key, whatever their status.
    fn user_by_api_key(
        &self,
        key: &ApiKey,
    ) -> impl Future<Output = Result<Option<Principal>, DirectoryError>> + Send;

    /// A user by login: exact match first, then case-insensitive, as Redmine does.
    fn user_by_login(
        &self,
        login: &Login,
    ) -> impl Future<Output = Result<Option<Principal>, DirectoryError>> + Send;

    /// Checks a login and password; the hash never leaves the implementation.
    fn password_login(
        &self,
        login: &Login,
        password: &Password,
    ) -> impl Future<Output = Result<PasswordCheck, DirectoryError>> + Send;

    /// An OAuth2 access token by its clear value.
    fn access_token(
        &self,
        token: &BearerToken,
    ) -> impl Future<Output = Result<Option<AccessToken>, DirectoryError>> + Send;

    /// The Redmine settings decisions depend on.
    fn settings(&self) -> impl Future<Output = Result<Settings, DirectoryError>> + Send;

    /// Whether `key` can be answered "unknown" without a lookup (`store::KnownKeys`, during
    /// a flood of wrong keys). `false` whenever unsure.
    fn refuses_api_key(&self, _key: &ApiKey) -> bool {
        false
    }
}
