//! Failure counts shared by the replicas through Redis. Each failure is queued and counted in
//! the background, failures that arrive together in one round trip, so a deny never waits for
//! Redis (a flood from many addresses spent a third of its time there). A counter's key names
//! its window, and it expires a window after its own, so a counter that outlived its expiry
//! is never read again.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::Pipeline;
use tokio::sync::mpsc;

use crate::cache::CacheKey;
use crate::redis::Redis;

/// What to do with a shared failure count.
pub(super) type SharedCount = Box<dyn FnOnce(u64) + Send + Sync>;

/// A failure counter shared by the replicas: one per subject and aligned window.
#[derive(Debug, Clone, Copy)]
pub(super) struct SharedCounter {
    /// The subject's keyed hash.
    pub key: CacheKey,
    /// The window's number: counts of different windows are different counters.
    pub window: i64,
    /// How long Redis keeps the counter.
    pub keep: Duration,
    /// This replica's first failure for the subject in the window: it sets the expiry.
    pub first_here: bool,
}

/// One failure to count, and what to do with the shared count.
struct Failure {
    counter: String,
    keep_ms: u64,
    first_here: bool,
    then: SharedCount,
}

/// Most failures counted in one round trip.
const FAILURES_PER_TRIP: usize = 512;

/// The queue of failures to count, and the key prefix of their counters.
pub(super) struct SharedCounts {
    prefix: String,
    failures: mpsc::Sender<Failure>,
}

impl SharedCounts {
    /// Also starts the task that counts failures (needs a Tokio runtime); it ends when this
    /// is dropped.
    pub(super) fn new(redis: Arc<Redis>) -> Self {
        let (failures, pending) = mpsc::channel(4 * FAILURES_PER_TRIP);
        let prefix = redis.prefix().to_owned();
        tokio::spawn(count_failures(redis, pending));
        Self { prefix, failures }
    }

    /// Counts one failure in the background: `then` gets the shared count once Redis has
    /// answered, and is dropped if it fails.
    pub(super) fn count_failure(&self, counter: SharedCounter, then: SharedCount) {
        let failure = Failure {
            counter: format!(
                "{}t:{}:{}",
                self.prefix,
                counter.key.to_hex(),
                counter.window
            ),
            keep_ms: counter.keep.as_millis().max(1) as u64,
            first_here: counter.first_here,
            then,
        };
        // A full queue means Redis is behind: the in-process count stands alone.
        let _ = self.failures.try_send(failure);
    }
}

/// Counts the queued failures, all that have arrived in one round trip, until the queue is
/// dropped, and hands each its shared count (none if Redis failed).
async fn count_failures(redis: Arc<Redis>, mut pending: mpsc::Receiver<Failure>) {
    let mut batch = Vec::with_capacity(FAILURES_PER_TRIP);
    while pending.recv_many(&mut batch, FAILURES_PER_TRIP).await > 0 {
        let counts = redis
            .timed("count failures", count_together(&redis, &batch))
            .await
            .unwrap_or_default();
        // Draining empties the batch even when Redis gave no counts (the rest are dropped).
        for (failure, count) in batch.drain(..).zip(counts) {
            (failure.then)(count);
        }
    }
}

/// One pipeline for `failures`: an `INCR` each, and the expiry with a replica's first
/// failure in a window. Not a transaction: a counter belongs to one window, so an `INCR`
/// never meets an expired counter of its own window, and one that finds none (Redis
/// restarted or evicted it) gets its expiry in a second trip. A transaction per failure
/// (`SET NX PX`, `INCR`, `PTTL`) cost Redis about 4 µs of CPU per failure in a flood,
/// the `INCR` alone 0.7 µs.
async fn count_together(redis: &Redis, failures: &[Failure]) -> Result<Vec<u64>, String> {
    let mut conn = redis.connection().await?;
    let mut pipe = Pipeline::new();
    for failure in failures {
        pipe.cmd("INCR").arg(&failure.counter);
        if failure.first_here {
            pipe.cmd("PEXPIRE")
                .arg(&failure.counter)
                .arg(failure.keep_ms)
                .ignore();
        }
    }
    let counts: Vec<u64> = pipe
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut unexpiring = Pipeline::new();
    for (failure, count) in failures.iter().zip(&counts) {
        if *count == 1 && !failure.first_here {
            unexpiring
                .cmd("PEXPIRE")
                .arg(&failure.counter)
                .arg(failure.keep_ms)
                .ignore();
        }
    }
    if !unexpiring.is_empty() {
        unexpiring
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(counts)
}
