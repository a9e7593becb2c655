//! Throttling failed authentication (`R-THROTTLE` in docs/decisions.md): per client address and per Basic login,
//! in fixed windows aligned to the clock (window n spans n × length to (n + 1) × length), so
//! that every replica counts in the same window without agreeing on when it started. The
//! check reads only in-process state, so it costs no I/O on the hot path; each failure is
//! also counted in Redis in the background (failures arriving together in one round trip),
//! and the shared count comes back moments after the deny, so every replica blocks once the
//! failures of all replicas together pass the limit.
//!
//! Successful requests are never counted. A client is only held back by its own failures;
//! a login by the failures of anyone guessing its password (that is the point), and then
//! only for Basic with that login: the user's API keys and tokens keep working.

mod shared;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;

use crate::auth::{Credential, Login, Request};
use crate::cache::{CacheKey, KeyHasher, KeyKind};
use crate::clock::Clock;
use crate::redis::Redis;
use shared::{SharedCounter, SharedCounts};

#[derive(Debug, Clone)]
pub struct ThrottleOptions {
    /// Failures allowed per client address in a window; 0 turns this limit off.
    pub client_limit: u64,
    pub client_window: Duration,
    /// Failures allowed per Basic login in a window; 0 turns this limit off.
    pub login_limit: u64,
    pub login_window: Duration,
    /// Proxies in front of Envoy whose `X-Forwarded-For` entries are trusted.
    pub trusted_hops: usize,
}

impl Default for ThrottleOptions {
    fn default() -> Self {
        Self {
            client_limit: 100,
            client_window: Duration::from_secs(60),
            login_limit: 20,
            login_window: Duration::from_secs(300),
            trusted_hops: 0,
        }
    }
}

/// Who a request's failures count against.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    client: Option<IpAddr>,
    /// The Basic login, lower-cased, as a keyed hash: logins are the client's to choose and
    /// may be kilobytes long, and the windows are many.
    login: Option<CacheKey>,
}

/// One counted window. A client address is kept as is in process (not a secret, fixed size),
/// so an API-key Check computes no MAC for the throttle; Redis gets the keyed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Counted {
    Client(IpAddr),
    Login(CacheKey),
}

/// The failures counted in process against one subject, in window `number`.
#[derive(Debug, Default)]
struct Window {
    number: i64,
    failures: u64,
    /// The subject's keyed hash for Redis, computed once rather than per failure.
    shared_key: Option<CacheKey>,
}

/// Which aligned window `now` falls in, and when it ends.
fn window_at(now: DateTime<Utc>, length: Duration) -> (i64, DateTime<Utc>) {
    let length_ms = i64::try_from(length.as_millis()).unwrap_or(i64::MAX).max(1);
    let number = now.timestamp_millis().div_euclid(length_ms);
    let ends_at =
        DateTime::from_timestamp_millis(number.saturating_add(1).saturating_mul(length_ms))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
    (number, ends_at)
}

pub struct Throttle {
    options: ThrottleOptions,
    hasher: Arc<KeyHasher>,
    local: quick_cache::sync::Cache<Counted, Arc<Mutex<Window>>>,
    /// Counts shared with the other replicas; `None` without Redis.
    shared: Option<SharedCounts>,
    clock: Arc<dyn Clock>,
    /// Requests answered 429.
    pub throttled: Counter,
}

impl Throttle {
    pub fn new(
        options: ThrottleOptions,
        hasher: Arc<KeyHasher>,
        redis: Option<Arc<Redis>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // Bounded: a flood from many addresses evicts windows seen once before those of
        // clients that keep failing. A window past `resets_at` counts as empty.
        let local = quick_cache::sync::Cache::new(200_000);
        Self {
            options,
            hasher,
            local,
            shared: redis.map(SharedCounts::new),
            clock,
            throttled: Counter::default(),
        }
    }

    pub fn subject(&self, request: &Request, credential: Option<&Credential>) -> Subject {
        let client = (self.options.client_limit > 0)
            .then(|| request.client_address(self.options.trusted_hops))
            .flatten();
        let login = match credential {
            // Counted under the name Redmine's case-insensitive lookup would find.
            Some(Credential::Basic(basic)) if self.options.login_limit > 0 => {
                Login::parse(&basic.username)
                    .map(|login| self.hasher.key(KeyKind::FailedLogin, &[&login.downcased()]))
            }
            _ => None,
        };
        Subject { client, login }
    }

    /// How long the subject must wait, if it is over a limit.
    pub fn blocked(&self, subject: &Subject) -> Option<Duration> {
        if subject.client.is_none() && subject.login.is_none() {
            return None;
        }
        let now = self.clock.now();
        let over = |counted: Counted, limit: u64, length: Duration| {
            let window = self.local.get(&counted)?;
            let window = window.lock().unwrap_or_else(|e| e.into_inner());
            let (number, ends_at) = window_at(now, length);
            (window.number == number && window.failures >= limit)
                .then(|| (ends_at - now).to_std().unwrap_or_default())
        };
        let options = &self.options;
        let wait = [
            subject.client.and_then(|ip| {
                over(
                    Counted::Client(ip),
                    options.client_limit,
                    options.client_window,
                )
            }),
            subject.login.and_then(|login| {
                over(
                    Counted::Login(login),
                    options.login_limit,
                    options.login_window,
                )
            }),
        ]
        .into_iter()
        .flatten()
        .max();
        if wait.is_some() {
            self.throttled.inc();
        }
        wait
    }

    /// Counts one failed authentication against the subject.
    pub fn record_failure(&self, subject: &Subject) {
        if let Some(ip) = subject.client {
            self.count(Counted::Client(ip), self.options.client_window);
        }
        if let Some(login) = subject.login {
            self.count(Counted::Login(login), self.options.login_window);
        }
    }

    fn count(&self, counted: Counted, length: Duration) {
        let now = self.clock.now();
        let (number, ends_at) = window_at(now, length);
        let Ok(local) = self.local.get_or_insert_with(&counted, || {
            Ok::<_, std::convert::Infallible>(Arc::default())
        });
        let shared = {
            let mut window = local.lock().unwrap_or_else(|e| e.into_inner());
            // A new entry's window number is 0: a window long past.
            let first_here = window.number != number;
            if first_here {
                window.number = number;
                window.failures = 0;
            }
            window.failures += 1;
            // Without Redis the in-process count stands alone.
            self.shared.as_ref().map(|shared| {
                let key = *window.shared_key.get_or_insert_with(|| match &counted {
                    Counted::Client(ip) => self.hasher.key(KeyKind::Client, &[&ip.to_string()]),
                    Counted::Login(key) => *key,
                });
                (shared, key, first_here)
            })
        };
        let Some((shared, shared_key, first_here)) = shared else {
            return;
        };
        // The shared count raises this one when Redis answers, moments after the deny.
        let raise = move |shared: u64| {
            let mut window = local.lock().unwrap_or_else(|e| e.into_inner());
            if window.number == number && shared > window.failures {
                window.failures = shared;
            }
        };
        // Kept a window past its end: replicas' clocks differ a little.
        let keep = (ends_at - now).to_std().unwrap_or_default() + length;
        let counter = SharedCounter {
            key: shared_key,
            window: number,
            keep,
            first_here,
        };
        shared.count_failure(counter, Box::new(raise));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_to_the_clock() {
        let minute = Duration::from_secs(60);
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let (number, ends_at) = window_at(at("2026-12-06T10:00:59.999Z"), minute);
        assert_eq!(ends_at, at("2026-12-06T10:01:00Z"));
        // The next window starts exactly where this one ends.
        let (next, next_ends_at) = window_at(ends_at, minute);
        assert_eq!(next, number + 1);
        assert_eq!(next_ends_at, at("2026-12-06T10:02:00Z"));
        // Every replica computes the same number from its own clock.
        assert_eq!(window_at(at("2026-12-06T10:00:00Z"), minute).0, number);
        assert_eq!(window_at(at("1969-12-31T23:59:30Z"), minute).0, -1);
        // A zero-length window (not configurable) still has one millisecond.
        let (_, ends_at) = window_at(at("2026-12-06T10:00:00Z"), Duration::ZERO);
        assert_eq!(ends_at, at("2026-12-06T10:00:00.001Z"));
    }
}
