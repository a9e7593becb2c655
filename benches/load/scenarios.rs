//! The gate's scenarios that differ only in data: which server, which requests, how much load,
//! how each is set against the floor, and the targets of BENCHMARKS.md it is checked against.
//! The ones with steps of their own (the flood, memory, scale, Redmine) are in `main.rs`.

use redmine_authz::envoy::proto::envoy::service::auth::v3::CheckRequest;

use crate::loadgen::{Expect, LoadSpec};
use crate::report::{Check, Scenario};
use crate::{key_requests, requests, Lengths};

/// One gate server and the scenarios measured on it, one after another.
pub struct GateRun {
    /// The server's log name.
    pub server: &'static str,
    /// Users (each with an API key) in the bench database.
    pub users: u64,
    /// With both cache tiers: Redis, under a key prefix of this name.
    pub redis: Option<&'static str>,
    pub flags: &'static [&'static str],
    pub scenarios: &'static [Measured],
}

/// One scenario and its targets.
pub struct Measured {
    pub name: &'static str,
    pub what: &'static str,
    pub requests: Requests,
    pub warmup: u64,
    pub load: Load,
    pub expect: Expect,
    pub floor: Floor,
    pub targets: &'static [Target],
}

/// The requests a scenario cycles through.
#[derive(Clone, Copy)]
pub enum Requests {
    /// API keys of bench users 1 to 1,000 (the floor's requests too).
    HotKeys,
    /// API keys of bench users 1 to 10,000.
    AllKeys,
    /// Basic login:password of the demo users admin, alice and bob.
    DemoBasic,
    /// `GET /users/current.json?key=wrong`, the Redmine comparison's request.
    WrongKey,
}

impl Requests {
    pub fn build(self) -> Vec<CheckRequest> {
        match self {
            Self::HotKeys => key_requests(1..=1_000),
            Self::AllKeys => key_requests(1..=10_000),
            Self::DemoBasic => ["admin", "alice", "bob"]
                .iter()
                .map(|login| {
                    let demo = redmine_authz::store::DEMO_USERS
                        .iter()
                        .find(|u| u.login == *login)
                        .expect("demo user");
                    requests::basic(demo.login, demo.password)
                })
                .collect(),
            Self::WrongKey => vec![requests::wrong_key_query()],
        }
    }
}

/// How much load, before `--quick` shortens it.
#[derive(Clone, Copy)]
pub enum Load {
    /// As many requests as answers allow, up to a count or a time.
    Saturating { requests: u64, seconds: u64 },
    /// A fixed rate.
    Paced {
        rate: f64,
        seconds: u64,
        connections: usize,
        concurrency: usize,
    },
}

impl Load {
    pub fn spec(self, lengths: &Lengths) -> LoadSpec {
        match self {
            Self::Saturating { requests, seconds } => lengths.saturating(requests, seconds),
            Self::Paced {
                rate,
                seconds,
                connections,
                concurrency,
            } => lengths.paced(rate, seconds, connections, concurrency),
        }
    }
}

/// How a scenario is set against the floor.
#[derive(Clone, Copy)]
pub enum Floor {
    /// In turns with the floor, the ratio the median of the turns' (`Bench::beside_floor`).
    Turns,
    /// Against the floor measured at the start of the run.
    Once,
}

/// A target a scenario is checked against; `what` names it in the report.
pub enum Target {
    /// Throughput at least this share of the floor's.
    FloorShare { what: &'static str, at_least: f64 },
    /// p99 at most this multiple of the floor's.
    FloorP99 { what: &'static str, at_most: f64 },
    /// Throughput at least this many per second.
    PerSecond { what: &'static str, at_least: f64 },
    /// At a paced rate: p99 at most this many milliseconds, with the rate (nearly) achieved.
    PacedP99 {
        what: &'static str,
        at_most_ms: f64,
        achieved: f64,
    },
}

impl Target {
    pub fn check(&self, scenario: &Scenario) -> Check {
        match *self {
            Self::FloorShare { what, at_least } => {
                let ratio = scenario.floor_rps_ratio.unwrap_or(0.0);
                Check::new(
                    what,
                    format!(
                        "{:.0}/s = {:.0}% of floor",
                        scenario.per_second,
                        100.0 * ratio
                    ),
                    &format!(">= {:.0}% of floor", 100.0 * at_least),
                    ratio >= at_least,
                )
            }
            Self::FloorP99 { what, at_most } => Check::new(
                what,
                format!(
                    "{:.0} µs = {:.2}x floor p99",
                    scenario.p99(),
                    scenario.floor_p99_ratio.unwrap_or(0.0)
                ),
                &format!("<= {at_most}x floor p99"),
                scenario.floor_p99_ratio.unwrap_or(f64::MAX) <= at_most,
            ),
            Self::PerSecond { what, at_least } => Check::new(
                what,
                format!("{:.0}/s", scenario.per_second),
                &format!(">= {}/s", thousands(at_least as u64)),
                scenario.per_second >= at_least,
            ),
            Self::PacedP99 {
                what,
                at_most_ms,
                achieved,
            } => Check::new(
                what,
                format!(
                    "{:.2} ms (achieved {:.0}/s)",
                    scenario.p99() / 1_000.0,
                    scenario.per_second
                ),
                &format!("<= {at_most_ms} ms"),
                scenario.p99() <= at_most_ms * 1_000.0 && scenario.per_second >= achieved,
            ),
        }
    }
}

/// `n` with a comma between thousands: 5,000.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The gate scenarios measured before the flood, in the order they run and are reported
/// (but for `wrong_key`, reported beside Redmine's at the end).
pub const GATE_RUNS: &[GateRun] = &[
    GateRun {
        server: "api_key_l1",
        users: 10_000,
        redis: Some("l1"),
        flags: &[],
        scenarios: &[Measured {
            name: "api_key_l1_hit",
            what: "API key, in-process cache hit (1,000 keys)",
            requests: Requests::HotKeys,
            warmup: 20_000,
            load: Load::Saturating {
                requests: 400_000,
                seconds: 8,
            },
            expect: Expect::Allow,
            floor: Floor::Turns,
            targets: &[
                Target::FloorShare {
                    what: "API key, in-process hit: req/s",
                    at_least: 0.85,
                },
                Target::FloorP99 {
                    what: "API key, in-process hit: p99",
                    at_most: 1.3,
                },
            ],
        }],
    },
    GateRun {
        server: "api_key_redis",
        users: 10_000,
        redis: Some("redis"),
        flags: &["--l1-capacity", "0"],
        scenarios: &[Measured {
            name: "api_key_redis_hit",
            what: "API key, Redis hit (--l1-capacity 0)",
            requests: Requests::HotKeys,
            warmup: 5_000,
            load: Load::Saturating {
                requests: 300_000,
                seconds: 8,
            },
            expect: Expect::Allow,
            floor: Floor::Turns,
            targets: &[Target::FloorShare {
                what: "API key, Redis hit: req/s",
                at_least: 0.5,
            }],
        }],
    },
    GateRun {
        server: "api_key_db",
        users: 10_000,
        redis: None,
        flags: &["--cache-ttl", "0"],
        scenarios: &[
            Measured {
                name: "api_key_db_miss",
                what: "API key, database miss (--cache-ttl 0), 10k keys",
                requests: Requests::AllKeys,
                warmup: 2_000,
                load: Load::Saturating {
                    requests: 80_000,
                    seconds: 8,
                },
                expect: Expect::Allow,
                floor: Floor::Once,
                targets: &[Target::PerSecond {
                    what: "API key, database miss: decisions/s",
                    at_least: 5_000.0,
                }],
            },
            Measured {
                name: "api_key_db_miss_5k",
                what: "same, paced at 5,000/s",
                requests: Requests::AllKeys,
                warmup: 0,
                load: Load::Paced {
                    rate: 5_000.0,
                    seconds: 6,
                    connections: 4,
                    concurrency: 32,
                },
                expect: Expect::Allow,
                floor: Floor::Once,
                targets: &[Target::PacedP99 {
                    what: "API key, database miss at 5,000/s: p99",
                    at_most_ms: 5.0,
                    achieved: 4_900.0,
                }],
            },
        ],
    },
    GateRun {
        server: "basic_l1",
        users: 10_000,
        redis: None,
        flags: &[],
        scenarios: &[Measured {
            name: "basic_l1_hit",
            what: "Basic login:password, cache hit",
            requests: Requests::DemoBasic,
            warmup: 20_000,
            load: Load::Saturating {
                requests: 400_000,
                seconds: 8,
            },
            expect: Expect::Allow,
            floor: Floor::Turns,
            targets: &[Target::FloorShare {
                what: "Basic login:password, cache hit: req/s",
                at_least: 0.8,
            }],
        }],
    },
    // The Redmine comparison's request against the gate: a cached "not found". Throttling
    // off: Redmine has none, and the comparison is of deciding, not of 429s.
    GateRun {
        server: "wrong_key",
        users: 10_000,
        redis: None,
        flags: &["--throttle-client-limit", "0"],
        scenarios: &[Measured {
            name: "wrong_key",
            what: "GET /users/current.json?key=wrong (negative cache)",
            requests: Requests::WrongKey,
            warmup: 20_000,
            load: Load::Saturating {
                requests: 400_000,
                seconds: 8,
            },
            expect: Expect::Deny(401),
            floor: Floor::Turns,
            targets: &[],
        }],
    },
];
