//! Wiring: the store, the gate, the gRPC server (Check, health, reflection) and the admin
//! HTTP port. `Application::build` binds its listeners, so tests can use port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::cache::{CacheStats, CachedDirectory, KeyHasher, RedisTier};
use crate::clock::{Clock, SystemClock};
use crate::config::ServeConfig;
use crate::connections::{grpc_incoming, Admission, ConnectionStats};
use crate::envoy::{proto, AuthorizationService, CheckServer};
use crate::gate::{watch_settings, Gate};
use crate::metrics::Metrics;
use crate::observe::Observer;
use crate::store::{Invalidation, Store};
use crate::throttle::Throttle;

/// The gRPC service name health is reported under (besides the whole server, "").
pub const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot bind {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
    #[error(transparent)]
    Redis(#[from] crate::cache::RedisConfigError),
}

pub struct Application {
    grpc: TcpListener,
    admin: Option<TcpListener>,
    config: ServeConfig,
    store: Store,
    clock: Arc<dyn Clock>,
    cache_stats: Arc<CacheStats>,
}

impl Application {
    pub async fn build(config: ServeConfig) -> Result<Self, AppError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        config: ServeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AppError> {
        let grpc = TcpListener::bind(config.listen)
            .await
            .map_err(|e| AppError::Bind(config.listen, e))?;
        let admin = match config.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| AppError::Bind(addr, e))?,
            ),
            None => None,
        };
        let store = Store::connect_lazy(
            config.decision.database.options.clone(),
            &config.decision.store,
        );
        Ok(Self {
            grpc,
            admin,
            config,
            store,
            clock,
            cache_stats: Arc::default(),
        })
    }

    /// Cache counters (hits per tier, directory lookups, Redis errors).
    pub fn cache_stats(&self) -> Arc<CacheStats> {
        self.cache_stats.clone()
    }

    pub fn port(&self) -> u16 {
        self.grpc.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    pub fn admin_port(&self) -> Option<u16> {
        self.admin
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING and drains in-flight checks
    /// for at most the configured grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let Self {
            grpc,
            admin,
            config,
            store,
            clock,
            cache_stats,
        } = self;
        let (hasher, redis) = shared_backends(&config, &cache_stats)?;
        let directory = Arc::new(CachedDirectory::new(
            Arc::new(store.clone()),
            config.cache.clone(),
            hasher.clone(),
            redis.clone(),
            clock.clone(),
            cache_stats.clone(),
        ));
        let throttle = Arc::new(Throttle::new(
            config.throttle.clone(),
            hasher,
            redis,
            clock.clone(),
        ));
        let settings_wake = Arc::new(Notify::new());
        let settings = watch_settings(
            directory.clone(),
            config.settings_refresh,
            settings_wake.clone(),
        );
        if config.listen_invalidations {
            tokio::spawn(apply_invalidations(
                crate::store::listen(config.decision.database.options.clone()),
                directory.clone(),
                store.clone(),
                settings_wake,
            ));
        }
        let gate = Arc::new(
            Gate::new(
                directory,
                config.decision.policy.clone(),
                settings.clone(),
                clock,
            )
            .with_throttle(throttle.clone()),
        );
        let pool = store.pool().clone();
        let pool_probe: crate::metrics::PoolProbe = Box::new(move || {
            let idle = pool.num_idle() as u32;
            (pool.size().saturating_sub(idle), idle)
        });
        let limits = &config.connections;
        let connection_stats = ConnectionStats::default();
        let metrics = Arc::new(Metrics::new(
            &cache_stats,
            &throttle,
            &connection_stats,
            Some(pool_probe),
        ));
        let observer = Arc::new(Observer::new(metrics.clone(), config.audit));
        let authorization = AuthorizationService::new(
            gate,
            config.decision.response.clone(),
            observer,
            config.decision_timeout,
        );

        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, ServingStatus::NotServing).await;
        let ready = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(become_ready(
            store,
            settings,
            health.clone(),
            ready.clone(),
            stop_rx.clone(),
        ));

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| AppError::Reflection(e.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| AppError::Reflection(e.to_string()))?;

        if let Some(listener) = admin {
            let admission =
                Admission::new("admin", limits.admin_max_connections, &connection_stats);
            tokio::spawn(crate::admin::serve(
                listener,
                admission,
                limits.header_read_timeout,
                ready.clone(),
                metrics,
            ));
        }

        tokio::spawn({
            let health = health.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: health NOT_SERVING, draining in-flight checks");
                // Health first, so watchers (Envoy, kubelet) hear it before the listener closes.
                ready.store(false, Ordering::SeqCst);
                set_health(&health, ServingStatus::NotServing).await;
                let _ = stop_tx.send(true);
            }
        });

        let admission = Admission::new("grpc", limits.max_connections, &connection_stats);
        // A peer that stops answering (gone without a FIN, or a client holding a stalled
        // stream) misses a PING and is closed within interval + timeout.
        let server = tonic::transport::Server::builder()
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(CheckServer::new(authorization))
            .serve_with_incoming_shutdown(
                grpc_incoming(grpc, admission, limits.header_read_timeout),
                stopped(stop_rx.clone()),
            );
        let grace = config.shutdown_grace;
        // The server drains by itself once stopped; the grace period bounds the drain.
        tokio::select! {
            result = server => result?,
            _ = async { stopped(stop_rx).await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "grace period over; exiting with checks in flight");
            }
        }
        Ok(())
    }
}

/// The key hasher and the Redis tier, shared by the cache and the throttle.
fn shared_backends(
    config: &ServeConfig,
    stats: &Arc<CacheStats>,
) -> Result<(Arc<KeyHasher>, Option<Arc<RedisTier>>), AppError> {
    let hasher = match &config.cache_secret {
        Some(secret) => KeyHasher::new(secret.expose_secret().as_bytes().to_vec().into()),
        None => {
            if config.redis_url.is_some() {
                tracing::warn!(
                    "no --cache-secret: using a random one, so replicas cannot share Redis entries"
                );
            }
            KeyHasher::random()
        }
    };
    let redis = match &config.redis_url {
        Some(url) => Some(RedisTier::new(
            url.expose_secret(),
            config.redis_key_prefix.clone(),
            config.redis_timeout,
            stats.clone(),
        )?),
        None => None,
    };
    Ok((Arc::new(hasher), redis))
}

/// Evicts what notifications name, all that have arrived at once together; a settings
/// change re-reads settings at once. Keeps the API key filter in step with the listener:
/// loaded once it listens, off while it cannot, and given the named users' keys (after the
/// listener's events: adding keys is always safe, and a load would include them anyway).
/// Notifications that arrive during a load wait in the channel and are applied after it.
async fn apply_invalidations(
    mut events: tokio::sync::mpsc::Receiver<Invalidation>,
    cache: Arc<CachedDirectory<Store>>,
    store: Store,
    settings_wake: Arc<Notify>,
) {
    let mut arrived = Vec::new();
    while events.recv_many(&mut arrived, 256).await > 0 {
        tracing::debug!(events = arrived.len(), "invalidations");
        cache.invalidate(&arrived).await;
        let mut users = Vec::new();
        for event in arrived.drain(..) {
            match event {
                Invalidation::Listening => store.load_key_filter().await,
                Invalidation::NotListening => store.lose_key_filter(),
                Invalidation::User(user_id) => users.push(user_id),
                Invalidation::Settings | Invalidation::All => settings_wake.notify_one(),
            }
        }
        store.note_key_changes(&users).await;
    }
}

/// Resolves once shutdown has begun.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status(AUTHORIZATION_SERVICE, status)
        .await;
}

/// SERVING once the database has answered and settings are loaded.
async fn become_ready(
    store: Store,
    mut settings: crate::gate::SettingsWatch,
    health: HealthReporter,
    ready: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) {
    loop {
        if settings.borrow().is_some() && store.ping().await {
            break;
        }
        tokio::select! {
            _ = settings.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    if *stop.borrow() {
        return; // Shutting down: stay NOT_SERVING.
    }
    ready.store(true, Ordering::SeqCst);
    set_health(&health, ServingStatus::Serving).await;
    tracing::info!("database answered; serving");
}
