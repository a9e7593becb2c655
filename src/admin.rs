//! The admin HTTP port: liveness and readiness for probes and load balancers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, ready: Arc<AtomicBool>) {
    let router = Router::new()
        // Liveness never depends on the database: a restart would not bring it back.
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .with_state(ready);
    if let Err(error) = axum::serve(listener, router).await {
        tracing::error!(%error, "admin server stopped");
    }
}

async fn readiness(State(ready): State<Arc<AtomicBool>>) -> (StatusCode, &'static str) {
    if ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
