//! The gate: runs the lookups a request's credential needs, in Redmine's order, and feeds
//! the results to the pure decision core. The only async step between Envoy and the core.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::auth::credentials::BasicCredentials;
use crate::auth::decide::{self, Authentication, Resolved, SwitchRequest};
use crate::auth::{
    body, classify, ApiKey, Credential, Decision, Deny, Format, Gating, Login, PasswordCheck,
    Policy, Reason, Request, Settings,
};
use crate::clock::Clock;
use crate::directory::{Directory, DirectoryError};
use crate::throttle::Throttle;

/// The latest Redmine settings, refreshed in the background; `None` until first read.
pub type SettingsWatch = watch::Receiver<Option<Settings>>;

pub struct Gate<D> {
    directory: Arc<D>,
    policy: Policy,
    settings: SettingsWatch,
    clock: Arc<dyn Clock>,
    throttle: Option<Arc<Throttle>>,
}

impl<D: Directory> Gate<D> {
    pub fn new(
        directory: Arc<D>,
        policy: Policy,
        settings: SettingsWatch,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            directory,
            policy,
            settings,
            clock,
            throttle: None,
        }
    }

    /// Counts failed authentications and answers 429 past the limits.
    pub fn with_throttle(mut self, throttle: Arc<Throttle>) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// Decides within `budget`; a decision that cannot be made in time is a 503, never an
    /// allow and never an RPC error (which a fail-open Envoy would let through).
    pub async fn check_within(&self, request: &Request, budget: Duration) -> Decision {
        match tokio::time::timeout(budget, self.check(request)).await {
            Ok(decision) => decision,
            Err(_) => unavailable(request),
        }
    }

    pub async fn check(&self, request: &Request) -> Decision {
        request.read_as(self.policy.redmine);
        let gating = classify(request);
        if gating == Gating::NotGated {
            return Decision::Allow(crate::auth::decision::Allow {
                identity: None,
                reason: Reason::NotGated,
            });
        }
        let format = request.format().unwrap_or(Format::Json);
        // What Redmine reads from a body the gate did not see whole is unknown: never guessed.
        if let Some(reason) = body::unchecked_body(request) {
            return Decision::Deny(Deny::new(reason, format));
        }
        let credential = Credential::select(request);
        let Some(throttle) = &self.throttle else {
            return self
                .check_credential(request, credential, gating, format)
                .await;
        };
        // Over a limit: answered without touching the database.
        let subject = throttle.subject(request, credential.as_ref().ok());
        if let Some(wait) = throttle.blocked(&subject) {
            let mut deny = Deny::new(Reason::Throttled, format);
            deny.retry_after = Some(wait.as_secs().clamp(1, u64::from(u32::MAX)) as u32);
            return Decision::Deny(deny);
        }
        let decision = self
            .check_credential(request, credential, gating, format)
            .await;
        if matches!(&decision, Decision::Deny(deny) if deny.reason.is_failed_authentication()) {
            throttle.record_failure(&subject);
        }
        decision
    }

    async fn check_credential(
        &self,
        request: &Request,
        credential: Result<Credential, Reason>,
        gating: Gating,
        format: Format,
    ) -> Decision {
        let credential = match credential {
            Ok(credential) => credential,
            Err(reason) => return Decision::Deny(Deny::new(reason, format)),
        };
        if gating == Gating::GatedIfCredentials && !credential.is_present() {
            return Decision::Allow(crate::auth::decision::Allow {
                identity: None,
                reason: Reason::AnonymousAllowed,
            });
        }
        let Some(settings) = self.settings.borrow().clone() else {
            return unavailable(request);
        };
        if !settings.rest_api_enabled {
            return Decision::Deny(Deny::new(Reason::RestApiDisabled, format));
        }
        match self
            .decide(request, credential, gating, &settings, format)
            .await
        {
            Ok(decision) => decision,
            Err(DirectoryError::Unavailable(cause)) => {
                tracing::warn!(%cause, "directory unavailable; answering 503");
                unavailable(request)
            }
        }
    }

    async fn decide(
        &self,
        request: &Request,
        credential: Credential,
        gating: Gating,
        settings: &Settings,
        format: Format,
    ) -> Result<Decision, DirectoryError> {
        let resolved = self.resolve(credential).await?;
        let now = self.clock.now();
        let identity =
            match decide::authenticate(resolved, gating, settings, &self.policy, now, format) {
                Authentication::Identified(identity) => identity,
                Authentication::Decided(decision) => return Ok(decision),
            };
        Ok(match decide::switch_request(request, &identity) {
            SwitchRequest::None => decide::allow(identity),
            SwitchRequest::Invalid => decide::switch_user(identity, None, format),
            SwitchRequest::To(login) => {
                let target = match Login::exact(&login) {
                    Some(login) => self.directory.user_by_login(&login).await?,
                    None => None,
                };
                decide::switch_user(identity, target, format)
            }
        })
    }

    /// Runs the lookups for one credential, lazily: Basic tries keys only after the password.
    async fn resolve(&self, credential: Credential) -> Result<Resolved, DirectoryError> {
        Ok(match credential {
            Credential::Anonymous => Resolved::Anonymous,
            Credential::ApiKey(None, source) => Resolved::ApiKey(None, source),
            Credential::ApiKey(Some(key), source) => {
                Resolved::ApiKey(self.directory.user_by_api_key(&key).await?, source)
            }
            Credential::Bearer(token) => {
                Resolved::Bearer(self.directory.access_token(&token).await?)
            }
            Credential::Basic(basic) => self.resolve_basic(&basic).await?,
        })
    }

    async fn resolve_basic(&self, basic: &BasicCredentials) -> Result<Resolved, DirectoryError> {
        let password = match basic.password_login() {
            Some((login, password)) => self.directory.password_login(&login, &password).await?,
            None => PasswordCheck::Invalid,
        };
        let mut key_owner = None;
        if decide::basic_tries_keys(&password) {
            // Redmine tries the user name as a key; the gate also tries the password.
            for candidate in [&basic.username, &basic.password] {
                let Some(key) = ApiKey::parse(candidate) else {
                    continue;
                };
                if let Some(owner) = self.directory.user_by_api_key(&key).await? {
                    if owner.is_active() {
                        key_owner = Some(owner);
                        break;
                    }
                }
            }
        }
        Ok(Resolved::Basic {
            password,
            key_owner,
        })
    }
}

fn unavailable(request: &Request) -> Decision {
    Decision::Deny(Deny::new(
        Reason::DirectoryUnavailable,
        request.format().unwrap_or(Format::Json),
    ))
}

/// Reads settings now, then every `interval` and whenever `wake` is notified (a settings
/// trigger fired), keeping the last good value while the database is away. The task ends
/// when every receiver is gone.
pub fn watch_settings<D: Directory>(
    directory: Arc<D>,
    interval: Duration,
    wake: Arc<Notify>,
) -> SettingsWatch {
    let (sender, receiver) = watch::channel(None);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = wake.notified() => {}
            }
            match directory.settings().await {
                Ok(settings) => {
                    sender.send_if_modified(|current| {
                        let changed = current.as_ref() != Some(&settings);
                        if changed {
                            tracing::info!(
                                rest_api_enabled = settings.rest_api_enabled,
                                password_max_age_days = settings.password_max_age_days,
                                "Redmine settings loaded"
                            );
                            *current = Some(settings);
                        }
                        changed
                    });
                }
                Err(error) => tracing::warn!(%error, "could not refresh Redmine settings"),
            }
            if sender.is_closed() {
                break;
            }
        }
    });
    receiver
}

/// Settings read once, for one-shot use (`check` on the command line).
pub async fn settings_once<D: Directory>(directory: &D) -> Result<SettingsWatch, DirectoryError> {
    let (_sender, receiver) = watch::channel(Some(directory.settings().await?));
    Ok(receiver)
}
