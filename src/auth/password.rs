//! Redmine's password hash: `sha1_hex(salt + sha1_hex(password))`, lowercase hex.

use sha1::{Digest as _, Sha1};
use subtle::ConstantTimeEq as _;

use super::credentials::Password;

/// The stored half of a local (non-LDAP) password.
pub struct StoredPassword<'a> {
    pub hashed_password: &'a str,
    /// `users.salt`; NULL counts as "".
    pub salt: Option<&'a str>,
}

/// True when `password` hashes to the stored value. The comparison is constant-time so the
/// answer's timing says nothing about how much of the hash matched.
pub fn matches(password: &Password, stored: &StoredPassword<'_>) -> bool {
    let inner = hex::encode(Sha1::digest(password.expose().as_bytes()));
    let mut outer = Sha1::new();
    outer.update(stored.salt.unwrap_or_default().as_bytes());
    outer.update(inner.as_bytes());
    let computed = hex::encode(outer.finalize());
    computed
        .as_bytes()
        .ct_eq(stored.hashed_password.as_bytes())
        .into()
}

/// Hashes a password the way Redmine does; used to seed demo and test databases.
pub fn hash(password: &str, salt: &str) -> String {
    let inner = hex::encode(Sha1::digest(password.as_bytes()));
    hex::encode(Sha1::digest(format!("{salt}{inner}").as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credentials::BasicCredentials;

    fn password(text: &str) -> Password {
        BasicCredentials {
            username: "u".into(),
            password: text.into(),
        }
        .password_login()
        .unwrap()
        .1
    }

    #[test]
    fn hash_written_by_redmine_5_verifies() {
        // users row "alice" as Redmine 5.0.4 stored it for password "Oracle-alice-pw-1".
        let stored = StoredPassword {
            hashed_password: "0b053785ef5557442c355770f6facc464f4b3b77",
            salt: Some("28fd3b2f72b88f1be587aef65fa041ea"),
        };
        assert!(matches(&password("Oracle-alice-pw-1"), &stored));
        assert!(!matches(&password("oracle-alice-pw-1"), &stored));
        assert_eq!(
            hash("Oracle-alice-pw-1", "28fd3b2f72b88f1be587aef65fa041ea"),
            stored.hashed_password
        );
    }

    #[test]
    fn null_salt_is_empty() {
        let hashed = hash("pw", "");
        assert!(matches(
            &password("pw"),
            &StoredPassword {
                hashed_password: &hashed,
                salt: None
            }
        ));
    }

    #[test]
    fn uppercase_stored_hash_does_not_match() {
        let hashed = hash("pw", "s").to_uppercase();
        assert!(!matches(
            &password("pw"),
            &StoredPassword {
                hashed_password: &hashed,
                salt: Some("s")
            }
        ));
    }
}
