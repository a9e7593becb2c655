//! Cache keys: HMAC-SHA256 of the credential under a deployment secret, so a Redis dump
//! reveals nothing that could be replayed or cracked offline without the secret. The same
//! secret also yields, through a derived key, the MAC that seals Redis values (`seal.rs`).

use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretSlice};
use sha2::Sha256;

/// What a key was derived from; part of the MAC so kinds never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    ApiKey,
    Login,
    Password,
    Bearer,
    /// A client address, for throttling.
    Client,
    /// A Basic login (lower-cased), for throttling.
    FailedLogin,
}

impl KeyKind {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::ApiKey => b"api-key",
            Self::Login => b"login",
            Self::Password => b"password",
            Self::Bearer => b"bearer",
            Self::Client => b"client",
            Self::FailedLogin => b"failed-login",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn to_hex(self) -> String {
        // Into a buffer: hex::encode builds its String a char at a time, 1.6k instructions
        // for every Redis key in callgrind's flood profile (about 0.9k this way).
        let mut hex = [0u8; 64];
        hex::encode_to_slice(self.0, &mut hex).expect("64 hex digits for 32 bytes");
        String::from_utf8_lossy(&hex).into_owned()
    }
}

/// What the value MAC's key is derived from: the secret's MAC of this label. No cache key
/// can be the same MAC, as no kind's tag starts with a zero byte.
const VALUE_MAC_LABEL: &[u8] = b"\0redis-value-mac";

pub struct KeyHasher {
    /// The MAC with the secret already absorbed: cloning it skips two of the four SHA-256
    /// blocks each key would otherwise cost.
    keyed: Hmac<Sha256>,
    /// The MAC of Redis values, under a key derived from the secret rather than the secret
    /// itself: one key, one purpose.
    value_mac: Hmac<Sha256>,
}

impl KeyHasher {
    pub fn new(secret: SecretSlice<u8>) -> Self {
        let keyed = Hmac::<Sha256>::new_from_slice(secret.expose_secret())
            .expect("HMAC takes any key length");
        let mut derive = keyed.clone();
        derive.update(VALUE_MAC_LABEL);
        let value_mac = Hmac::<Sha256>::new_from_slice(&derive.finalize().into_bytes())
            .expect("HMAC takes any key length");
        Self { keyed, value_mac }
    }

    /// A random secret for this process: keys are then not shared with other replicas.
    pub fn random() -> Self {
        let secret: [u8; 32] = rand::random();
        Self::new(secret.to_vec().into())
    }

    /// MAC over the kind and each part, length-prefixed so ("ab","c") != ("a","bc").
    pub fn key(&self, kind: KeyKind, parts: &[&str]) -> CacheKey {
        let mut mac = self.keyed.clone();
        mac.update(kind.tag());
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        CacheKey(mac.finalize().into_bytes().into())
    }

    /// The value MAC, keyed, for `seal::Seal`.
    pub(super) fn value_mac(&self) -> &Hmac<Sha256> {
        &self.value_mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_secret_kind_and_boundaries() {
        let a = KeyHasher::new(b"secret-a".to_vec().into());
        let b = KeyHasher::new(b"secret-b".to_vec().into());
        assert_ne!(
            a.key(KeyKind::ApiKey, &["k"]),
            b.key(KeyKind::ApiKey, &["k"])
        );
        assert_ne!(
            a.key(KeyKind::ApiKey, &["k"]),
            a.key(KeyKind::Login, &["k"])
        );
        assert_ne!(
            a.key(KeyKind::Password, &["ab", "c"]),
            a.key(KeyKind::Password, &["a", "bc"])
        );
        assert_eq!(
            a.key(KeyKind::Bearer, &["t"]),
            a.key(KeyKind::Bearer, &["t"])
        );
        let visible = a.key(KeyKind::ApiKey, &["visible-key"]);
        assert!(!visible.to_hex().contains("visible"));
        assert_eq!(visible.to_hex(), hex::encode(visible.0));
    }
}
