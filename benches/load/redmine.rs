//! Redmine itself rejecting a wrong API key: plain HTTP/1.1 GETs, one connection per request
//! (`Connection: close`), a few in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::loadgen::new_histogram;

pub struct RedmineResult {
    pub sent: u64,
    pub elapsed: Duration,
    pub histogram: Histogram<u64>,
    /// Answers other than 401.
    pub unexpected: u64,
}

async fn get_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).into_owned();
    head.split_whitespace().nth(1)?.parse().ok()
}

pub async fn reachable(addr: &str) -> bool {
    get_status(addr, "/users/current.json?key=wrong")
        .await
        .is_some()
}

pub async fn run(addr: &str, path: &str, requests: u64, concurrency: usize) -> RedmineResult {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, addr, path) = (next.clone(), addr.to_owned(), path.to_owned());
        workers.push(tokio::spawn(async move {
            let mut histogram = new_histogram();
            let mut unexpected = 0;
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let sent = Instant::now();
                let status = get_status(&addr, &path).await;
                let _ = histogram.record(sent.elapsed().as_nanos() as u64);
                if status != Some(401) {
                    unexpected += 1;
                }
            }
            (histogram, unexpected)
        }));
    }
    let mut result = RedmineResult {
        sent: 0,
        elapsed: Duration::ZERO,
        histogram: new_histogram(),
        unexpected: 0,
    };
    for worker in workers {
        let (histogram, unexpected) = worker.await.expect("redmine worker");
        result.histogram.add(&histogram).expect("same bounds");
        result.unexpected += unexpected;
    }
    result.elapsed = start.elapsed();
    result.sent = result.histogram.len();
    result
}
