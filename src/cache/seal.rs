//! Redis values are sealed: a MAC under a key derived from the cache secret, over the Redis
//! key and the value. Anyone who can reach Redis can write to it; a value they wrote (forged,
//! copied from another key, cut short) fails the MAC and is a miss, never an identity. The
//! expiry a value carries is inside the MAC, so an old value replayed, or one whose Redis TTL
//! was stripped, is refused once that expiry has passed.
//!
//! Layout: `[format][tag][body]`; the tag is HMAC-SHA256 truncated to 128 bits, over the
//! deployment's key prefix (length first), the entry's cache key, the format byte and the body.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::key::{CacheKey, KeyHasher};

/// The first byte of every sealed value. 1 was the previous release's unsealed postcard, and
/// JSON before it starts with `{`: both are refused as another format, never read unchecked.
pub const FORMAT: u8 = 2;

/// 128 bits: forging one takes 2^128 tries, and each try is a Redis write and a Check.
pub const TAG_LEN: usize = 16;

/// Room before the body: the format byte and the tag.
pub const HEADER_LEN: usize = 1 + TAG_LEN;

/// Why a value read from Redis was refused; the label of `authz_redis_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not this release's format: an older release's entry, or not ours at all.
    Format,
    /// The tag is missing or wrong: forged, another key's value, cut short or damaged.
    Mac,
    /// Authentic, but past the expiry it carries: its Redis TTL was stripped or lengthened,
    /// or the replicas' clocks disagree.
    Expired,
}

impl Rejection {
    pub const ALL: [Self; 3] = [Self::Format, Self::Mac, Self::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Format => "format",
            Self::Mac => "mac",
            Self::Expired => "expired",
        }
    }
}

/// Seals and opens the values of one deployment (one key prefix).
pub struct Seal {
    /// The value MAC with the prefix already absorbed.
    mac: Hmac<Sha256>,
}

impl Seal {
    pub fn new(hasher: &KeyHasher, prefix: &str) -> Self {
        let mut mac = hasher.value_mac().clone();
        mac.update(&(prefix.len() as u64).to_be_bytes());
        mac.update(prefix.as_bytes());
        Self { mac }
    }

    fn tag(&self, key: CacheKey, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(&key.0);
        mac.update(&[FORMAT]);
        mac.update(body);
        mac
    }

    /// Seals `value`, laid out as `HEADER_LEN` bytes of room and then the body, for `key`.
    pub fn seal(&self, key: CacheKey, value: &mut [u8]) {
        let (header, body) = value.split_at_mut(HEADER_LEN);
        let tag = self.tag(key, body).finalize().into_bytes();
        header[0] = FORMAT;
        header[1..].copy_from_slice(&tag[..TAG_LEN]);
    }

    /// The body of `value` if it was sealed for `key` by this deployment.
    pub fn open<'v>(&self, key: CacheKey, value: &'v [u8]) -> Result<&'v [u8], Rejection> {
        match value.split_first() {
            Some((&FORMAT, rest)) if rest.len() >= TAG_LEN => {
                let (tag, body) = rest.split_at(TAG_LEN);
                // Constant time: a forger learns nothing from how long a wrong tag took.
                self.tag(key, body)
                    .verify_truncated_left(tag)
                    .map(|()| body)
                    .map_err(|_| Rejection::Mac)
            }
            Some((&FORMAT, _)) => Err(Rejection::Mac),
            _ => Err(Rejection::Format),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KeyKind;

    fn hasher(secret: &str) -> KeyHasher {
        KeyHasher::new(secret.as_bytes().to_vec().into())
    }

    fn sealed(seal: &Seal, key: CacheKey, body: &[u8]) -> Vec<u8> {
        let mut value = vec![0; HEADER_LEN];
        value.extend_from_slice(body);
        seal.seal(key, &mut value);
        value
    }

    #[test]
    fn only_the_same_secret_prefix_and_key_open_a_value() {
        let secret = hasher("secret-a-0123456789");
        let seal = Seal::new(&secret, "authz:");
        let key = secret.key(KeyKind::ApiKey, &["k"]);
        let other_key = secret.key(KeyKind::ApiKey, &["j"]);
        let value = sealed(&seal, key, b"principal");
        assert_eq!(value[0], FORMAT);
        assert_eq!(seal.open(key, &value), Ok(&b"principal"[..]));

        assert_eq!(seal.open(other_key, &value), Err(Rejection::Mac));
        let other_prefix = Seal::new(&secret, "authz2:");
        assert_eq!(other_prefix.open(key, &value), Err(Rejection::Mac));
        let other_secret = Seal::new(&hasher("secret-b-0123456789"), "authz:");
        assert_eq!(other_secret.open(key, &value), Err(Rejection::Mac));
        // The prefix is length-prefixed: moving a byte between prefix and key is no help.
        assert_eq!(
            Seal::new(&secret, "authz").open(key, &value),
            Err(Rejection::Mac)
        );
    }

    #[test]
    fn forged_cut_or_flipped_values_are_refused() {
        let secret = hasher("secret-a-0123456789");
        let seal = Seal::new(&secret, "authz:");
        let key = secret.key(KeyKind::Bearer, &["t"]);
        let value = sealed(&seal, key, b"an admin principal");

        let mut forged = value.clone();
        forged[1..HEADER_LEN].fill(0);
        assert_eq!(seal.open(key, &forged), Err(Rejection::Mac));
        for cut in 1..value.len() {
            assert_eq!(
                seal.open(key, &value[..cut]),
                Err(Rejection::Mac),
                "cut {cut}"
            );
        }
        for at in 1..value.len() {
            let mut flipped = value.clone();
            flipped[at] ^= 1;
            assert_eq!(seal.open(key, &flipped), Err(Rejection::Mac), "flip {at}");
        }
        // The previous release's unsealed postcard, JSON, nothing at all.
        let mut previous = vec![1];
        previous.extend_from_slice(b"an admin principal");
        assert_eq!(seal.open(key, &previous), Err(Rejection::Format));
        assert_eq!(seal.open(key, b"{\"answer\":1}"), Err(Rejection::Format));
        assert_eq!(seal.open(key, b""), Err(Rejection::Format));
    }
}
