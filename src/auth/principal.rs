//! What the directory (Redmine's database, or a cache of it) knows about the caller.

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

/// `users.status` of an active user; registered (2) and locked (3) cannot authenticate.
pub const STATUS_ACTIVE: i32 = 1;

/// One user as the decision needs it. No password hash: a `Principal` may be cached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    pub id: i64,
    pub login: String,
    pub admin: bool,
    pub status: i32,
    /// `twofa_scheme` is set.
    pub twofa: bool,
    pub must_change_passwd: bool,
    /// `passwd_changed_on`, in Redmine's local time. Cached as a number: cheaper to read back.
    #[serde(with = "chrono::naive::serde::ts_microseconds_option")]
    pub passwd_changed_on: Option<NaiveDateTime>,
    /// Authenticates against an external source (LDAP): `auth_source_id` is set.
    pub external_auth: bool,
}

impl Principal {
    pub fn is_active(&self) -> bool {
        self.status == STATUS_ACTIVE
    }

    /// Redmine's `must_change_password?`: flagged, or the password is older than the
    /// configured maximum age. Never for users whose password lives in LDAP.
    pub fn must_change_password(
        &self,
        settings: &Settings,
        timezone: RedmineTimezone,
        now: DateTime<Utc>,
    ) -> bool {
        if self.external_auth {
            return false;
        }
        self.must_change_passwd || self.password_expired(settings, timezone, now)
    }

    fn password_expired(
        &self,
        settings: &Settings,
        timezone: RedmineTimezone,
        now: DateTime<Utc>,
    ) -> bool {
        if settings.password_max_age_days <= 0 {
            return false;
        }
        let Some(changed_on) = self.passwd_changed_on else {
            return true; // Redmine counts NULL as the epoch.
        };
        let changed_on = timezone.to_utc(changed_on);
        now - changed_on > chrono::Duration::days(settings.password_max_age_days)
    }
}

/// The outcome of checking a login and password against the directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PasswordCheck {
    /// The password is right; the user may still be inactive or use 2FA.
    Valid(Principal),
    /// The login exists (or not) but the password is wrong.
    Invalid,
    /// The user authenticates against LDAP, which the gate cannot consult.
    External(Principal),
}

/// An OAuth2 access token issued by Redmine's Doorkeeper (its hash is the lookup key and
/// is not kept here).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessToken {
    pub application_id: Option<i64>,
    /// The resource owner, if the row still exists.
    pub owner: Option<Principal>,
    pub scopes: Vec<String>,
    /// Redmine's local time, as stored.
    #[serde(with = "chrono::naive::serde::ts_microseconds")]
    pub created_at: NaiveDateTime,
    pub expires_in_seconds: Option<i64>,
    #[serde(with = "chrono::naive::serde::ts_microseconds_option")]
    pub revoked_at: Option<NaiveDateTime>,
}

impl AccessToken {
    /// Doorkeeper's `revoked?`: a revocation time that has come.
    pub fn is_revoked(&self, timezone: RedmineTimezone, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_some_and(|at| timezone.to_utc(at) <= now)
    }

    /// Doorkeeper's `expired?`: `expires_in` set and its time has passed.
    pub fn is_expired(&self, timezone: RedmineTimezone, now: DateTime<Utc>) -> bool {
        self.expires_in_seconds.is_some_and(|seconds| {
            now > timezone.to_utc(self.created_at) + chrono::Duration::seconds(seconds)
        })
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// The zone Redmine writes its zone-less timestamps in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedmineTimezone(pub Tz);

impl Default for RedmineTimezone {
    fn default() -> Self {
        Self(Tz::UTC)
    }
}

impl RedmineTimezone {
    pub fn parse(name: &str) -> Option<Self> {
        name.parse::<Tz>().ok().map(Self)
    }

    /// Interprets a stored local time. In a DST fold the earlier instant is taken; a time in
    /// a DST gap (which Redmine cannot write) is read as if the clock had not jumped.
    pub fn to_utc(self, local: NaiveDateTime) -> DateTime<Utc> {
        use chrono::offset::LocalResult;
        use chrono::TimeZone as _;
        match self.0.from_local_datetime(&local) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
            LocalResult::None => {
                let offset = self.0.offset_from_utc_datetime(&local);
                use chrono::Offset as _;
                DateTime::from_naive_utc_and_offset(local - offset.fix(), Utc)
            }
        }
    }
}

/// Redmine settings that change decisions, read from the `settings` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub rest_api_enabled: bool,
    pub password_max_age_days: i64,
}

impl Settings {
    /// Builds settings from the raw `settings.value` texts (newest row per name).
    pub fn from_values(rest_api_enabled: Option<&str>, password_max_age: Option<&str>) -> Self {
        Self {
            // Redmine's default for rest_api_enabled is 0, for password_max_age 0.
            rest_api_enabled: rest_api_enabled.map(ruby_to_i).unwrap_or(0) > 0,
            password_max_age_days: password_max_age.map(ruby_to_i).unwrap_or(0),
        }
    }
}

/// Ruby's `String#to_i`: leading white space, an optional sign, then digits; else 0.
pub fn ruby_to_i(text: &str) -> i64 {
    let text = text.trim_start();
    let (sign, digits) = match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => (1, text),
    };
    let mut value: i64 = 0;
    for b in digits.bytes() {
        match b {
            b'0'..=b'9' => value = value.saturating_mul(10).saturating_add(i64::from(b - b'0')),
            b'_' => continue,
            _ => break,
        }
    }
    sign * value
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn local(y: i32, m: u32, d: u32, h: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, 0, 0)
            .unwrap()
    }

    #[test]
    fn ruby_to_i_matches_ruby() {
        for (text, expected) in [
            ("1", 1),
            ("0", 0),
            ("", 0),
            (" 12abc", 12),
            ("-3", -3),
            ("abc", 0),
            ("1_000", 1000),
            ("+7", 7),
        ] {
            assert_eq!(ruby_to_i(text), expected, "{text:?}");
        }
    }

    #[test]
    fn settings_defaults_are_redmines() {
        let s = Settings::from_values(None, None);
        assert!(!s.rest_api_enabled);
        assert_eq!(s.password_max_age_days, 0);
        assert!(Settings::from_values(Some("1"), None).rest_api_enabled);
    }

    #[test]
    fn local_times_are_read_in_redmines_zone() {
        let berlin = RedmineTimezone::parse("Europe/Berlin").unwrap();
        assert_eq!(
            berlin.to_utc(local(2026, 1, 15, 12)).to_rfc3339(),
            "2026-01-15T11:00:00+00:00"
        );
        assert_eq!(
            berlin.to_utc(local(2026, 7, 15, 12)).to_rfc3339(),
            "2026-07-15T10:00:00+00:00"
        );
        assert!(RedmineTimezone::parse("Mars/Olympus").is_none());
    }

    #[test]
    fn token_expiry_and_revocation() {
        let tz = RedmineTimezone::parse("Asia/Tokyo").unwrap(); // UTC+9
        let token = AccessToken {
            application_id: None,
            owner: None,
            scopes: vec![],
            created_at: local(2026, 3, 1, 9), // 00:00 UTC
            expires_in_seconds: Some(7200),
            revoked_at: Some(local(2026, 3, 1, 10)), // 01:00 UTC
        };
        let at = |h| local(2026, 3, 1, h).and_utc();
        assert!(!token.is_expired(tz, at(1)));
        assert!(token.is_expired(tz, at(2) + chrono::Duration::seconds(1)));
        assert!(!token.is_revoked(tz, at(0)));
        assert!(token.is_revoked(tz, at(1)));
    }
}
