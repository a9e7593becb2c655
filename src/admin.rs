//! The admin HTTP port: liveness and readiness for probes, Prometheus metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::connections::{Admission, Connection};
use crate::metrics::Metrics;

#[derive(Clone)]
struct AdminState {
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

/// Serves HTTP/1.1 until the process ends, at most `admission`'s cap of connections at once.
/// hyper itself, not `axum::serve`, so that each request's headers have a deadline: one
/// that has not sent them whole within `header_read_timeout` (also the longest a kept-alive
/// connection may idle between requests) is closed.
pub async fn serve(
    listener: TcpListener,
    admission: Admission,
    header_read_timeout: Duration,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let router = Router::new()
        // Liveness never depends on the database: a restart would not bring it back.
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .route("/metrics", get(scrape))
        .with_state(AdminState { ready, metrics });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    loop {
        let (stream, slot) = admission.accept(&listener).await;
        let connection = http.serve_connection(
            TokioIo::new(Connection::admin(stream, slot)),
            TowerToHyperService::new(router.clone()),
        );
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin connection closed");
            }
        });
    }
}

async fn scrape(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readiness(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
