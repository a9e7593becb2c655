//! The admin HTTP port: liveness and readiness for probes, Prometheus metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

#[derive(Clone)]
struct AdminState {
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

pub async fn serve(listener: TcpListener, ready: Arc<AtomicBool>, metrics: Arc<Metrics>) {
    let router = Router::new()
        // Liveness never depends on the database: a restart would not bring it back.
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .route("/metrics", get(scrape))
        .with_state(AdminState { ready, metrics });
    if let Err(error) = axum::serve(listener, router).await {
        tracing::error!(%error, "admin server stopped");
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
