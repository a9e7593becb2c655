//! Throttling failed authentication (SPEC 7, 429): per client address and per Basic login,
//! in fixed windows. The check reads only in-process state, so it costs no I/O on the hot
//! path; each failure is also counted in Redis in the background (failures arriving together
//! in one round trip), and the shared count comes back moments after the deny, so every
//! replica blocks once the failures of all replicas together pass the limit.
//!
//! Successful requests are never counted. A client is only held back by its own failures;
//! a login by the failures of anyone guessing its password (that is the point), and then
//! only for Basic with that login: the user's API keys and tokens keep working.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;

use crate::auth::{Credential, Request};
use crate::cache::{CacheKey, KeyHasher, KeyKind, RedisTier};
use crate::clock::Clock;

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

#[derive(Debug)]
struct Window {
    failures: u64,
    resets_at: DateTime<Utc>,
}

pub struct Throttle {
    options: ThrottleOptions,
    hasher: Arc<KeyHasher>,
    local: quick_cache::sync::Cache<Counted, Arc<Mutex<Window>>>,
    redis: Option<Arc<RedisTier>>,
    clock: Arc<dyn Clock>,
    /// Requests answered 429.
    pub throttled: Counter,
}

impl Throttle {
    pub fn new(
        options: ThrottleOptions,
        hasher: Arc<KeyHasher>,
        redis: Option<Arc<RedisTier>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // Bounded: a flood from many addresses evicts windows seen once before those of
        // clients that keep failing. A window past `resets_at` counts as empty.
        let local = quick_cache::sync::Cache::new(200_000);
        Self {
            options,
            hasher,
            local,
            redis,
            clock,
            throttled: Counter::default(),
        }
    }

    pub fn subject(&self, request: &Request, credential: Option<&Credential>) -> Subject {
        let client = (self.options.client_limit > 0)
            .then(|| request.client_address(self.options.trusted_hops))
            .flatten();
        let login = match credential {
            Some(Credential::Basic(basic)) if self.options.login_limit > 0 => {
                let login = basic.username.trim().to_lowercase();
                (!login.is_empty()).then(|| self.hasher.key(KeyKind::FailedLogin, &[&login]))
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
        let over = |counted: Counted, limit: u64| {
            let window = self.local.get(&counted)?;
            let window = window.lock().unwrap_or_else(|e| e.into_inner());
            (window.resets_at > now && window.failures >= limit)
                .then(|| (window.resets_at - now).to_std().unwrap_or_default())
        };
        let wait = [
            subject
                .client
                .and_then(|ip| over(Counted::Client(ip), self.options.client_limit)),
            subject
                .login
                .and_then(|login| over(Counted::Login(login), self.options.login_limit)),
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

    fn count(&self, counted: Counted, window: Duration) {
        let now = self.clock.now();
        let fresh = || {
            Ok::<_, std::convert::Infallible>(Arc::new(Mutex::new(Window {
                failures: 0,
                resets_at: now + window,
            })))
        };
        let Ok(local) = self.local.get_or_insert_with(&counted, fresh);
        {
            let mut local = local.lock().unwrap_or_else(|e| e.into_inner());
            if local.resets_at <= now {
                *local = Window {
                    failures: 0,
                    resets_at: now + window,
                };
            }
            local.failures += 1;
        }
        // The shared count raises this one when Redis answers, moments after the deny.
        // Redis down: the in-process count stands alone.
        let Some(redis) = &self.redis else { return };
        let shared_key = match &counted {
            Counted::Client(ip) => self.hasher.key(KeyKind::Client, &[&ip.to_string()]),
            Counted::Login(key) => *key,
        };
        let raise = move |shared: u64, remaining: Duration| {
            let mut local = local.lock().unwrap_or_else(|e| e.into_inner());
            if shared > local.failures {
                local.failures = shared;
                local.resets_at = now + chrono::Duration::from_std(remaining).unwrap_or_default();
            }
        };
        redis.count_failure(shared_key, window, Box::new(raise));
    }
}
