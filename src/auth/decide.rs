//! The decision table (`R-KEY`, `R-BEARER`, `R-BASIC`, `R-SWITCH` in docs/decisions.md): lookup results in, a decision out. Pure and
//! synchronous; the lookups themselves happen in [`crate::gate`].

use chrono::{DateTime, Utc};

use super::classify::Gating;
use super::credentials::{single_header, KeySource, SWITCH_USER_HEADER};
use super::decision::{Allow, AuthMethod, Decision, Deny, Identity, OAuthGrant, Reason};
use super::principal::{AccessToken, PasswordCheck, Principal, RedmineTimezone, Settings};
use super::request::{Format, Request};
use super::version::RedmineVersion;

/// What to do with users whose password lives in LDAP, which the gate cannot check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExternalAuth {
    /// Deny 401 and say why.
    #[default]
    Deny,
    /// Let the request through without identity; Redmine upstream checks the password.
    PassOn,
}

/// Deployment choices that shape decisions.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub timezone: RedmineTimezone,
    /// Let gated requests without a credential through as anonymous.
    pub allow_anonymous: bool,
    pub external_auth: ExternalAuth,
    /// Whose reading of parameters (and routes) the gate follows (`--redmine-version`).
    pub redmine: RedmineVersion,
}

/// The credential after its lookups.
#[derive(Debug, Clone)]
pub enum Resolved {
    Anonymous,
    /// The key's owner, whatever their status; `None` for an unknown or malformed key.
    ApiKey(Option<Principal>, KeySource),
    /// `None` for a token Doorkeeper never issued.
    Bearer(Option<AccessToken>),
    Basic {
        password: PasswordCheck,
        /// The first active owner of the user name, then of the password, as an API key.
        /// Looked up only when the password login did not succeed.
        key_owner: Option<Principal>,
    },
}

/// The first step's result: a user to go on with, or a final decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Identified(Identity),
    Decided(Decision),
}

/// True when a Basic password check leaves the user name and password to be tried as API
/// keys: everything but a correct password of an active user.
pub fn basic_tries_keys(password: &PasswordCheck) -> bool {
    !matches!(password, PasswordCheck::Valid(p) if p.is_active())
}

/// Turns a resolved credential into an identity or a final decision.
pub fn authenticate(
    resolved: Resolved,
    gating: Gating,
    settings: &Settings,
    policy: &Policy,
    now: DateTime<Utc>,
    format: Format,
) -> Authentication {
    let deny = |reason| Authentication::Decided(Decision::Deny(Deny::new(reason, format)));
    let anonymous = |reason_if_denied| {
        if policy.allow_anonymous || gating == Gating::GatedIfCredentials {
            Authentication::Decided(Decision::Allow(Allow {
                identity: None,
                reason: Reason::AnonymousAllowed,
            }))
        } else {
            deny(reason_if_denied)
        }
    };
    let identified = |principal: Principal, method| {
        Authentication::Identified(Identity {
            user_id: principal.id,
            admin: principal.admin,
            login: principal.login,
            method,
            impersonator: None,
            oauth: None,
        })
    };

    match resolved {
        Resolved::Anonymous => anonymous(Reason::NoCredential),
        Resolved::ApiKey(Some(owner), _) if owner.is_active() => {
            identified(owner, AuthMethod::ApiKey)
        }
        Resolved::ApiKey(_, _) => deny(Reason::InvalidApiKey),
        Resolved::Bearer(None) => anonymous(Reason::UnknownBearerToken),
        Resolved::Bearer(Some(token)) => {
            if token.is_revoked(policy.timezone, now) {
                return deny(Reason::TokenRevoked);
            }
            if token.is_expired(policy.timezone, now) {
                return deny(Reason::TokenExpired);
            }
            let Some(owner) = token.owner.clone().filter(Principal::is_active) else {
                return deny(Reason::TokenOwnerInactive);
            };
            // Redmine 6.1: an OAuth user is admin only with the token's `admin` scope.
            let admin = owner.admin && token.has_scope("admin");
            Authentication::Identified(Identity {
                user_id: owner.id,
                login: owner.login,
                admin,
                method: AuthMethod::OAuth2,
                impersonator: None,
                oauth: Some(OAuthGrant {
                    scopes: token.scopes,
                    application_id: token.application_id,
                }),
            })
        }
        Resolved::Basic {
            password,
            key_owner,
        } => {
            let (user, method) = match (password, key_owner) {
                (PasswordCheck::Valid(user), _) if user.is_active() => {
                    if user.twofa {
                        return deny(Reason::TwofaBasicNotAllowed);
                    }
                    (user, AuthMethod::BasicPassword)
                }
                (_, Some(owner)) if owner.is_active() => (owner, AuthMethod::BasicApiKey),
                (PasswordCheck::External(user), _) if user.is_active() => {
                    return match policy.external_auth {
                        ExternalAuth::Deny => deny(Reason::ExternalAuthUnsupported),
                        ExternalAuth::PassOn => Authentication::Decided(Decision::Allow(Allow {
                            identity: None,
                            reason: Reason::ExternalAuthPassedOn,
                        })),
                    };
                }
                _ => return deny(Reason::InvalidBasic),
            };
            if user.must_change_password(settings, policy.timezone, now) {
                return deny(Reason::MustChangePassword);
            }
            identified(user, method)
        }
    }
}

/// What an identified user's `X-Redmine-Switch-User` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchRequest {
    /// No switch: the identity stands (a non-admin's header is ignored).
    None,
    /// Look up this login and call [`switch_user`].
    To(String),
    /// The header is unusable (repeated with different values): 412.
    Invalid,
}

pub fn switch_request(request: &Request, identity: &Identity) -> SwitchRequest {
    if !identity.admin {
        return SwitchRequest::None;
    }
    match single_header(request, SWITCH_USER_HEADER) {
        Ok(None) => SwitchRequest::None,
        Ok(Some(login)) => SwitchRequest::To(login.to_owned()),
        Err(_) => SwitchRequest::Invalid,
    }
}

/// Applies an admin's switch to `target` (looked up by login, exact then case-insensitive).
/// The switched request has the target's full rights, not the admin's OAuth scopes.
pub fn switch_user(admin: Identity, target: Option<Principal>, format: Format) -> Decision {
    match target.filter(Principal::is_active) {
        Some(user) => Decision::Allow(Allow {
            identity: Some(Identity {
                user_id: user.id,
                login: user.login,
                admin: user.admin,
                method: admin.method,
                impersonator: Some(admin.login),
                oauth: None,
            }),
            reason: Reason::Authenticated,
        }),
        None => Decision::Deny(Deny::new(Reason::InvalidSwitchUser, format)),
    }
}

/// An identity with nothing left to check.
pub fn allow(identity: Identity) -> Decision {
    Decision::Allow(Allow {
        identity: Some(identity),
        reason: Reason::Authenticated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::decision::{Challenge, DenyStatus};
    use chrono::NaiveDate;

    fn user(id: i64, login: &str) -> Principal {
        Principal {
            id,
            login: login.into(),
            admin: false,
            status: 1,
            twofa: false,
            must_change_passwd: false,
            passwd_changed_on: None,
            external_auth: false,
        }
    }

    fn settings() -> Settings {
        Settings {
            rest_api_enabled: true,
            password_max_age_days: 0,
        }
    }

    fn now() -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(2026, 6, 1)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
    }

    fn run(resolved: Resolved) -> Authentication {
        authenticate(
            resolved,
            Gating::Gated,
            &settings(),
            &Policy::default(),
            now(),
            Format::Json,
        )
    }

    fn denied(outcome: Authentication) -> Deny {
        match outcome {
            Authentication::Decided(Decision::Deny(deny)) => deny,
            other => panic!("expected a deny, got {other:?}"),
        }
    }

    fn identity(outcome: Authentication) -> Identity {
        match outcome {
            Authentication::Identified(identity) => identity,
            other => panic!("expected an identity, got {other:?}"),
        }
    }

    #[test]
    fn anonymous_is_denied_with_a_basic_challenge_unless_allowed() {
        let deny = denied(run(Resolved::Anonymous));
        assert_eq!(
            (deny.status, deny.challenge),
            (DenyStatus::Unauthorized, Some(Challenge::Basic))
        );
        let policy = Policy {
            allow_anonymous: true,
            ..Policy::default()
        };
        let allowed = authenticate(
            Resolved::Anonymous,
            Gating::Gated,
            &settings(),
            &policy,
            now(),
            Format::Json,
        );
        assert!(matches!(
            allowed,
            Authentication::Decided(Decision::Allow(Allow { identity: None, .. }))
        ));
        let public = authenticate(
            Resolved::Bearer(None),
            Gating::GatedIfCredentials,
            &settings(),
            &Policy::default(),
            now(),
            Format::Json,
        );
        assert!(matches!(
            public,
            Authentication::Decided(Decision::Allow(_))
        ));
    }

    #[test]
    fn api_key_owner_must_be_active() {
        let alice = user(2, "alice");
        assert_eq!(
            identity(run(Resolved::ApiKey(
                Some(alice.clone()),
                KeySource::Header
            )))
            .method,
            AuthMethod::ApiKey
        );
        for status in [2, 3] {
            let inactive = Principal {
                status,
                ..alice.clone()
            };
            let deny = denied(run(Resolved::ApiKey(Some(inactive), KeySource::Header)));
            assert_eq!((deny.reason, deny.challenge), (Reason::InvalidApiKey, None));
        }
        assert_eq!(
            denied(run(Resolved::ApiKey(None, KeySource::Parameter))).reason,
            Reason::InvalidApiKey
        );
    }

    #[test]
    fn api_keys_skip_twofa_and_password_change() {
        let strict = Principal {
            twofa: true,
            must_change_passwd: true,
            ..user(2, "tina")
        };
        assert!(matches!(
            run(Resolved::ApiKey(Some(strict), KeySource::Header)),
            Authentication::Identified(_)
        ));
    }

    #[test]
    fn basic_password_rules() {
        let alice = user(2, "alice");
        let ok = identity(run(Resolved::Basic {
            password: PasswordCheck::Valid(alice.clone()),
            key_owner: None,
        }));
        assert_eq!(ok.method, AuthMethod::BasicPassword);

        let twofa = Principal {
            twofa: true,
            ..alice.clone()
        };
        let deny = denied(run(Resolved::Basic {
            password: PasswordCheck::Valid(twofa),
            key_owner: None,
        }));
        assert_eq!(
            (deny.status, deny.reason, deny.challenge),
            (DenyStatus::Unauthorized, Reason::TwofaBasicNotAllowed, None)
        );

        let must = Principal {
            must_change_passwd: true,
            ..alice.clone()
        };
        let deny = denied(run(Resolved::Basic {
            password: PasswordCheck::Valid(must.clone()),
            key_owner: None,
        }));
        assert_eq!(
            (deny.status, deny.reason),
            (DenyStatus::Forbidden, Reason::MustChangePassword)
        );
        let deny = denied(run(Resolved::Basic {
            password: PasswordCheck::Invalid,
            key_owner: Some(must),
        }));
        assert_eq!(deny.reason, Reason::MustChangePassword);

        let via_key = identity(run(Resolved::Basic {
            password: PasswordCheck::Invalid,
            key_owner: Some(alice),
        }));
        assert_eq!(via_key.method, AuthMethod::BasicApiKey);

        let deny = denied(run(Resolved::Basic {
            password: PasswordCheck::Invalid,
            key_owner: None,
        }));
        assert_eq!(
            (deny.reason, deny.challenge),
            (Reason::InvalidBasic, Some(Challenge::Basic))
        );
    }

    #[test]
    fn locked_user_with_right_password_fails_like_a_wrong_one() {
        let locked = Principal {
            status: 3,
            ..user(3, "larry")
        };
        assert!(basic_tries_keys(&PasswordCheck::Valid(locked.clone())));
        let deny = denied(run(Resolved::Basic {
            password: PasswordCheck::Valid(locked),
            key_owner: None,
        }));
        assert_eq!(deny.reason, Reason::InvalidBasic);
    }

    #[test]
    fn password_max_age() {
        let changed = NaiveDate::from_ymd_opt(2026, 5, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let alice = Principal {
            passwd_changed_on: Some(changed),
            ..user(2, "alice")
        };
        let strict = Settings {
            password_max_age_days: 7,
            ..settings()
        };
        let lax = Settings {
            password_max_age_days: 60,
            ..settings()
        };
        let basic = || Resolved::Basic {
            password: PasswordCheck::Valid(alice.clone()),
            key_owner: None,
        };
        let policy = Policy::default();
        assert!(matches!(
            authenticate(
                basic(),
                Gating::Gated,
                &strict,
                &policy,
                now(),
                Format::Json
            ),
            Authentication::Decided(_)
        ));
        assert!(matches!(
            authenticate(basic(), Gating::Gated, &lax, &policy, now(), Format::Json),
            Authentication::Identified(_)
        ));
        let never_changed = Principal {
            passwd_changed_on: None,
            ..alice.clone()
        };
        let resolved = Resolved::Basic {
            password: PasswordCheck::Valid(never_changed),
            key_owner: None,
        };
        assert!(matches!(
            authenticate(
                resolved,
                Gating::Gated,
                &strict,
                &policy,
                now(),
                Format::Json
            ),
            Authentication::Decided(_)
        ));
        let ldap = Principal {
            external_auth: true,
            passwd_changed_on: None,
            ..alice
        };
        let resolved = Resolved::Basic {
            password: PasswordCheck::Invalid,
            key_owner: Some(ldap),
        };
        assert!(matches!(
            authenticate(
                resolved,
                Gating::Gated,
                &strict,
                &policy,
                now(),
                Format::Json
            ),
            Authentication::Identified(_)
        ));
    }

    #[test]
    fn ldap_users_are_denied_or_passed_on() {
        let ldap = Principal {
            external_auth: true,
            ..user(5, "lara")
        };
        let resolved = || Resolved::Basic {
            password: PasswordCheck::External(ldap.clone()),
            key_owner: None,
        };
        assert_eq!(
            denied(run(resolved())).reason,
            Reason::ExternalAuthUnsupported
        );
        let policy = Policy {
            external_auth: ExternalAuth::PassOn,
            ..Policy::default()
        };
        let outcome = authenticate(
            resolved(),
            Gating::Gated,
            &settings(),
            &policy,
            now(),
            Format::Json,
        );
        assert!(matches!(
            outcome,
            Authentication::Decided(Decision::Allow(Allow {
                identity: None,
                reason: Reason::ExternalAuthPassedOn
            }))
        ));
    }

    fn token(owner: Option<Principal>, scopes: &[&str]) -> AccessToken {
        AccessToken {
            application_id: Some(7),
            owner,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            created_at: NaiveDate::from_ymd_opt(2026, 6, 1)
                .unwrap()
                .and_hms_opt(11, 0, 0)
                .unwrap(),
            expires_in_seconds: Some(7200),
            revoked_at: None,
        }
    }

    #[test]
    fn oauth_tokens() {
        let admin = Principal {
            admin: true,
            ..user(1, "admin")
        };
        let scoped = identity(run(Resolved::Bearer(Some(token(
            Some(admin.clone()),
            &["admin", "view_issues"],
        )))));
        assert!(scoped.admin);
        assert_eq!(scoped.oauth.unwrap().scopes, vec!["admin", "view_issues"]);
        let unscoped = identity(run(Resolved::Bearer(Some(token(
            Some(admin.clone()),
            &["view_issues"],
        )))));
        assert!(!unscoped.admin);

        let revoked = AccessToken {
            revoked_at: Some(token(None, &[]).created_at),
            ..token(Some(admin.clone()), &[])
        };
        let deny = denied(run(Resolved::Bearer(Some(revoked))));
        assert_eq!(
            (deny.reason, deny.challenge),
            (Reason::TokenRevoked, Some(Challenge::BearerInvalidToken))
        );

        let later = NaiveDate::from_ymd_opt(2026, 6, 2)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let revoking_later = AccessToken {
            revoked_at: Some(later),
            ..token(Some(admin.clone()), &[])
        };
        assert!(matches!(
            run(Resolved::Bearer(Some(revoking_later))),
            Authentication::Identified(_)
        ));

        let expired = AccessToken {
            expires_in_seconds: Some(60),
            ..token(Some(admin.clone()), &[])
        };
        assert_eq!(
            denied(run(Resolved::Bearer(Some(expired)))).reason,
            Reason::TokenExpired
        );
        let forever = AccessToken {
            expires_in_seconds: None,
            ..token(Some(admin.clone()), &[])
        };
        assert!(matches!(
            run(Resolved::Bearer(Some(forever))),
            Authentication::Identified(_)
        ));

        let locked = Principal { status: 3, ..admin };
        assert_eq!(
            denied(run(Resolved::Bearer(Some(token(Some(locked), &[]))))).reason,
            Reason::TokenOwnerInactive
        );
        assert_eq!(
            denied(run(Resolved::Bearer(Some(token(None, &[]))))).reason,
            Reason::TokenOwnerInactive
        );
    }

    #[test]
    fn switch_user_only_for_admins() {
        let request =
            Request::new("GET", "/issues.json").with_header("x-redmine-switch-user", "alice");
        let admin = identity(run(Resolved::ApiKey(
            Some(Principal {
                admin: true,
                ..user(1, "admin")
            }),
            KeySource::Header,
        )));
        assert_eq!(
            switch_request(&request, &admin),
            SwitchRequest::To("alice".into())
        );
        let plain = identity(run(Resolved::ApiKey(
            Some(user(2, "bob")),
            KeySource::Header,
        )));
        assert_eq!(switch_request(&request, &plain), SwitchRequest::None);
        let blank = Request::new("GET", "/issues.json").with_header("x-redmine-switch-user", " ");
        assert_eq!(switch_request(&blank, &admin), SwitchRequest::None);
        // Rack reads `X_Redmine_Switch_User` as the same header, keeping the last of several.
        let underscored =
            Request::new("GET", "/issues.json").with_header("X_Redmine_Switch_User", "alice");
        assert_eq!(
            switch_request(&underscored, &admin),
            SwitchRequest::To("alice".into())
        );
        let two = underscored.with_header("x-redmine-switch-user", "alice");
        assert_eq!(switch_request(&two, &admin), SwitchRequest::Invalid);
        // Taken as sent: Redmine does not strip it, and " alice" is no login.
        let padded =
            Request::new("GET", "/issues.json").with_header("x-redmine-switch-user", " alice");
        assert_eq!(
            switch_request(&padded, &admin),
            SwitchRequest::To(" alice".into())
        );

        let Decision::Allow(Allow {
            identity: Some(switched),
            ..
        }) = switch_user(admin.clone(), Some(user(2, "alice")), Format::Json)
        else {
            panic!("switch should allow");
        };
        assert_eq!(
            (switched.login.as_str(), switched.impersonator.as_deref()),
            ("alice", Some("admin"))
        );
        let Decision::Deny(deny) = switch_user(
            admin.clone(),
            Some(Principal {
                status: 3,
                ..user(3, "larry")
            }),
            Format::Xml,
        ) else {
            panic!("locked target must be refused");
        };
        assert_eq!(deny.status, DenyStatus::PreconditionFailed);
        assert!(matches!(
            switch_user(admin, None, Format::Json),
            Decision::Deny(_)
        ));
    }
}
