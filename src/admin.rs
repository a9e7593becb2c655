//! The admin HTTP port: liveness and readiness for probes, Prometheus metrics.

use std::future::Future;
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

/// The admin port, bound and routed; [`Server::serve`] runs it.
pub struct Server {
    listener: TcpListener,
    admission: Admission,
    header_read_timeout: Duration,
    router: Router,
}

impl Server {
    pub fn new(
        listener: TcpListener,
        admission: Admission,
        header_read_timeout: Duration,
        ready: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let router = Router::new()
            // Liveness never depends on the database: a restart would not bring it back.
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readiness))
            .route("/metrics", get(scrape))
            .with_state(AdminState { ready, metrics });
        Self {
            listener,
            admission,
            header_read_timeout,
            router,
        }
    }

    pub fn port(&self) -> Option<u16> {
        self.listener.local_addr().ok().map(|a| a.port())
    }

    /// Serves HTTP/1.1 until `stop` resolves, at most `admission`'s cap of connections at
    /// once. hyper itself, not `axum::serve`, so that each request's headers have a deadline:
    /// one that has not sent them whole within `header_read_timeout` (also the longest a
    /// kept-alive connection may idle between requests) is closed.
    pub async fn serve(self, stop: impl Future<Output = ()>) {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        tokio::pin!(stop);
        loop {
            let (stream, slot) = tokio::select! {
                accepted = self.admission.accept(&self.listener) => accepted,
                () = &mut stop => return,
            };
            let connection = http.serve_connection(
                TokioIo::new(Connection::admin(stream, slot)),
                TowerToHyperService::new(self.router.clone()),
            );
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "admin connection closed");
                }
            });
        }
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
