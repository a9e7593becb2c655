//! The load generator: a tonic client keeping `concurrency` Checks in flight over a few
//! HTTP/2 connections, for a fixed number of requests or until a time bound, recording each
//! latency in an HdrHistogram. Optionally paced to a fixed rate (for latency at a given load).
//!
//! Requests go out already encoded (as h2load's pre-framed body does): cloning and encoding a
//! `CheckRequest` per call, with tonic's 8 KiB encode buffer, made the generator slower than the
//! floor server it was measuring.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use redmine_authz::envoy::proto::envoy::service::auth::v3::check_response::HttpResponse;
use redmine_authz::envoy::proto::envoy::service::auth::v3::CheckResponse;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};

use crate::support::raw_check;

/// Makes request number `i` of a run: an encoded `CheckRequest` (see [`crate::requests::encode`]).
pub type RequestSource = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;

/// A tonic client for `Authorization/Check` that sends encoded requests as they are.
pub type Client = Grpc<Channel>;

/// What every answer of a scenario must be; anything else is counted as unexpected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Allow,
    Deny(i32),
    /// Any deny: 401, or 429 once a throttle steps in.
    AnyDeny,
}

impl Expect {
    fn accepts(self, outcome: Expect) -> bool {
        self == outcome || (self == Expect::AnyDeny && matches!(outcome, Expect::Deny(_)))
    }
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub connections: usize,
    pub concurrency: usize,
    pub requests: u64,
    pub max_duration: Duration,
    /// Requests per second to pace at; `None` sends as fast as answers come back.
    pub rate: Option<f64>,
}

impl LoadSpec {
    pub fn saturating(requests: u64, seconds: u64) -> Self {
        Self {
            connections: 4,
            concurrency: 32,
            requests,
            max_duration: Duration::from_secs(seconds),
            rate: None,
        }
    }
}

pub struct LoadResult {
    pub sent: u64,
    pub elapsed: Duration,
    /// Latency in nanoseconds.
    pub histogram: Histogram<u64>,
    pub allows: u64,
    pub denies: u64,
    pub errors: u64,
    pub unexpected: u64,
    /// Denies with 429 (throttled).
    pub throttled: u64,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64()
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram bounds")
}

/// One client per HTTP/2 connection.
pub async fn connect(
    port: u16,
    connections: usize,
) -> Result<Vec<Client>, tonic::transport::Error> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await?;
        clients.push(Grpc::new(channel));
    }
    Ok(clients)
}

pub fn classify(response: &CheckResponse) -> Expect {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            Expect::Deny(denied.status.as_ref().map(|s| s.code).unwrap_or(0))
        }
        _ if response.status.as_ref().map(|s| s.code).unwrap_or(0) == 0 => Expect::Allow,
        _ => Expect::Deny(0),
    }
}

#[derive(Default)]
struct Counts {
    allows: u64,
    denies: u64,
    errors: u64,
    unexpected: u64,
    throttled: u64,
}

pub async fn run(
    clients: &[Client],
    spec: &LoadSpec,
    source: RequestSource,
    expect: Expect,
) -> LoadResult {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + spec.max_duration;
    let mut workers = Vec::with_capacity(spec.concurrency);
    for worker in 0..spec.concurrency {
        let mut client = clients[worker % clients.len()].clone();
        let next = next.clone();
        let source = source.clone();
        let (total, rate) = (spec.requests, spec.rate);
        workers.push(tokio::spawn(async move {
            let mut histogram = new_histogram();
            let mut counts = Counts::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    break;
                }
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    if due >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                let request = source(i);
                let sent = Instant::now();
                let answer = raw_check::check(&mut client, request).await;
                let _ = histogram.record(sent.elapsed().as_nanos() as u64);
                match answer {
                    Ok(response) => {
                        let outcome = classify(&response);
                        match outcome {
                            Expect::Allow => counts.allows += 1,
                            Expect::Deny(status) => {
                                counts.denies += 1;
                                counts.throttled += u64::from(status == 429);
                            }
                            Expect::AnyDeny => {}
                        }
                        if !expect.accepts(outcome) {
                            counts.unexpected += 1;
                        }
                    }
                    Err(_) => {
                        counts.errors += 1;
                        counts.unexpected += 1;
                    }
                }
            }
            (histogram, counts)
        }));
    }
    let mut result = LoadResult {
        sent: 0,
        elapsed: Duration::ZERO,
        histogram: new_histogram(),
        allows: 0,
        denies: 0,
        errors: 0,
        unexpected: 0,
        throttled: 0,
    };
    for worker in workers {
        let (histogram, counts) = worker.await.expect("load worker");
        result
            .histogram
            .add(&histogram)
            .expect("same histogram bounds");
        result.allows += counts.allows;
        result.denies += counts.denies;
        result.errors += counts.errors;
        result.unexpected += counts.unexpected;
        result.throttled += counts.throttled;
    }
    result.elapsed = start.elapsed();
    result.sent = result.histogram.len();
    result
}
