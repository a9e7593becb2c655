//! What the tiers hold: a lookup's answer with its own expiry, and its sealed Redis form.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::{AccessToken, PasswordCheck, Principal};

use super::key::CacheKey;
use super::seal::{self, Rejection, Seal};

/// What a cached lookup answered. The token is boxed: it is twice the size of the other
/// answers, and every entry would pay for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Answer {
    User(Option<Principal>),
    Password(PasswordCheck),
    Token(Option<Box<AccessToken>>),
}

impl Answer {
    /// The user this answer is about, for eviction; `None` for a negative answer.
    pub(super) fn user_id(&self) -> Option<i64> {
        match self {
            Self::User(Some(p))
            | Self::Password(PasswordCheck::Valid(p) | PasswordCheck::External(p)) => Some(p.id),
            Self::Token(Some(token)) => token.owner.as_ref().map(|p| p.id),
            _ => None,
        }
    }
}

/// A lookup's result, as an [`Answer`] holds it.
pub(super) trait Cached: Sized {
    fn into_answer(self) -> Answer;
    /// `None` for an answer of another kind.
    fn from_answer(answer: Answer) -> Option<Self>;
}

impl Cached for Option<Principal> {
    fn into_answer(self) -> Answer {
        Answer::User(self)
    }

    fn from_answer(answer: Answer) -> Option<Self> {
        match answer {
            Answer::User(user) => Some(user),
            _ => None,
        }
    }
}

impl Cached for PasswordCheck {
    fn into_answer(self) -> Answer {
        Answer::Password(self)
    }

    fn from_answer(answer: Answer) -> Option<Self> {
        match answer {
            Answer::Password(check) => Some(check),
            _ => None,
        }
    }
}

impl Cached for Option<AccessToken> {
    fn into_answer(self) -> Answer {
        Answer::Token(self.map(Box::new))
    }

    fn from_answer(answer: Answer) -> Option<Self> {
        match answer {
            Answer::Token(token) => Some(token.map(|token| *token)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) answer: Answer,
    /// Microseconds, not chrono's default RFC 3339 text: parsing that text was a fifth of
    /// reading an entry back.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub(super) expires_at: DateTime<Utc>,
}

impl Entry {
    /// The Redis value for `key`: postcard, sealed. postcard rather than JSON: decoding a
    /// principal from JSON was 6.8k instructions, a fifth of a Redis hit's own work
    /// (callgrind).
    pub(super) fn encode(&self, seal: &Seal, key: CacheKey) -> Option<Vec<u8>> {
        let mut value = postcard::to_extend(self, vec![0; seal::HEADER_LEN]).ok()?;
        seal.seal(key, &mut value);
        Some(value)
    }

    /// The entry `value` holds, if this deployment sealed it for `key` and it has not
    /// expired by the time it carries (Redis's own TTL is not trusted).
    pub(super) fn decode(
        value: &[u8],
        seal: &Seal,
        key: CacheKey,
        now: DateTime<Utc>,
    ) -> Result<Self, Rejection> {
        let body = seal.open(key, value)?;
        // Authentic but unreadable: written by a release with the same format byte and
        // another layout, which the format byte exists to prevent.
        let entry: Self = postcard::from_bytes(body).map_err(|_| Rejection::Format)?;
        if entry.expires_at <= now {
            return Err(Rejection::Expired);
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::NaiveDate;

    use super::*;
    use crate::cache::{KeyHasher, KeyKind};

    fn principal() -> Principal {
        Principal {
            id: 7,
            login: "zoë".into(),
            admin: false,
            status: 1,
            twofa: true,
            must_change_passwd: false,
            passwd_changed_on: NaiveDate::from_ymd_opt(2024, 2, 29)
                .and_then(|d| d.and_hms_micro_opt(23, 59, 58, 123_456)),
            external_auth: false,
        }
    }

    fn seal() -> (Seal, CacheKey) {
        let hasher = KeyHasher::new(b"test-secret-0123456789".to_vec().into());
        let key = hasher.key(KeyKind::ApiKey, &["a key"]);
        (Seal::new(&hasher, "authz:"), key)
    }

    fn written_at() -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_764_979_200_123_456).unwrap()
    }

    fn round_trip(answer: Answer) -> Answer {
        let (seal, key) = seal();
        let expires_at = written_at() + Duration::from_secs(60);
        let bytes = Entry { answer, expires_at }.encode(&seal, key).unwrap();
        let entry = Entry::decode(&bytes, &seal, key, written_at()).unwrap();
        assert_eq!(entry.expires_at, expires_at);
        entry.answer
    }

    #[test]
    fn redis_values_read_back_as_written() {
        let Answer::User(Some(user)) = round_trip(Answer::User(Some(principal()))) else {
            panic!("not a user");
        };
        assert_eq!(user, principal());
        assert!(matches!(round_trip(Answer::User(None)), Answer::User(None)));
        let Answer::Password(check) =
            round_trip(Answer::Password(PasswordCheck::External(principal())))
        else {
            panic!("not a password check");
        };
        assert_eq!(check, PasswordCheck::External(principal()));
        let token = AccessToken {
            application_id: Some(3),
            owner: Some(principal()),
            scopes: vec!["view_issues".into(), "add_issues".into()],
            created_at: principal().passwd_changed_on.unwrap(),
            expires_in_seconds: Some(7200),
            revoked_at: None,
        };
        let Answer::Token(Some(read)) = round_trip(Answer::Token(Some(Box::new(token.clone()))))
        else {
            panic!("not a token");
        };
        assert_eq!(*read, token);
    }

    #[test]
    fn foreign_damaged_or_expired_redis_values_are_misses() {
        let (seal, key) = seal();
        let now = written_at();
        let decode = |bytes: &[u8]| Entry::decode(bytes, &seal, key, now).map(|_| ());
        let json = br#"{"answer":{"User":null},"expires_at":"2026-12-05T00:00:00Z"}"#;
        assert_eq!(
            decode(json),
            Err(Rejection::Format),
            "an older release's JSON"
        );
        assert_eq!(decode(&[]), Err(Rejection::Format));
        let entry = Entry {
            answer: Answer::User(Some(principal())),
            expires_at: now + Duration::from_secs(60),
        };
        let bytes = entry.encode(&seal, key).unwrap();
        // The previous release wrote the same postcard behind format byte 1, unsealed.
        let previous = postcard::to_extend(&entry, vec![1]).unwrap();
        assert_eq!(decode(&previous), Err(Rejection::Format));
        for cut in 1..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Err(Rejection::Mac), "cut at {cut}");
        }
        // Sealed for another key: a valid value replayed under this one.
        let other = KeyHasher::new(b"test-secret-0123456789".to_vec().into())
            .key(KeyKind::ApiKey, &["another key"]);
        let replayed = entry.encode(&seal, other).unwrap();
        assert_eq!(decode(&replayed), Err(Rejection::Mac));
        // Authentic, but read at or past the expiry it carries.
        assert_eq!(
            Entry::decode(&bytes, &seal, key, entry.expires_at).map(|_| ()),
            Err(Rejection::Expired)
        );
        assert!(decode(&bytes).is_ok());
    }
}
