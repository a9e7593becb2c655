//! Wiring: the store, the cache tiers, the throttle, the gate, the gRPC server (Check,
//! health, reflection) and the admin HTTP port. `Application::build` binds the listeners
//! (port 0 in tests) and builds everything; `run_until_stopped` serves, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::admin;
use crate::cache::{CacheStats, CachedDirectory, KeyHasher, RedisTier};
use crate::clock::{Clock, SystemClock};
use crate::config::ServeConfig;
use crate::connections::{grpc_incoming, Admission, ConnectionOptions, ConnectionStats};
use crate::envoy::{proto, AuthorizationService, CheckServer};
use crate::gate::{watch_settings, Gate, SettingsWatch};
use crate::metrics::{Metrics, PoolProbe};
use crate::observe::Observer;
use crate::redis::{Redis, RedisConfigError};
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
    Redis(#[from] RedisConfigError),
}

/// A gate built and bound, not yet serving.
pub struct Application {
    grpc: GrpcServer,
    admin: Option<admin::Server>,
    health: Health,
    /// What readiness waits for: the database and the first settings.
    store: Store,
    settings: SettingsWatch,
    /// `None` with `--listen-invalidations false`.
    invalidations: Option<Invalidations>,
    shutdown_grace: Duration,
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
        let grpc_listener = bind(config.listen).await?;
        let admin_listener = match config.admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let store = Store::connect_lazy(
            config.decision.database.options.clone(),
            &config.decision.store,
        );

        let cache_stats = Arc::<CacheStats>::default();
        let (hasher, redis) = shared_backends(&config, &cache_stats)?;
        let directory = Arc::new(CachedDirectory::new(
            Arc::new(store.clone()),
            config.cache.clone(),
            hasher.clone(),
            redis
                .clone()
                .map(|redis| RedisTier::new(redis, cache_stats.clone())),
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
        let invalidations = config.listen_invalidations.then(|| Invalidations {
            connect: config.decision.database.options.clone(),
            directory: directory.clone(),
            store: store.clone(),
            settings_wake,
        });
        let gate = Arc::new(
            Gate::new(
                directory,
                config.decision.policy.clone(),
                settings.clone(),
                clock,
            )
            .with_throttle(throttle.clone()),
        );

        let limits = &config.connections;
        let connection_stats = ConnectionStats::default();
        let metrics = Arc::new(Metrics::new(
            &cache_stats,
            &throttle,
            &connection_stats,
            Some(pool_probe(&store)),
        ));
        let observer = Arc::new(Observer::new(metrics.clone(), config.audit));
        let authorization = AuthorizationService::new(
            gate,
            config.decision.response.clone(),
            observer,
            config.decision_timeout,
        );

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = Health {
            reporter,
            ready: Arc::default(),
        };
        health.not_serving().await;
        let grpc = GrpcServer {
            router: grpc_router(limits)?
                .add_service(health_service)
                .add_service(CheckServer::new(authorization)),
            listener: grpc_listener,
            admission: Admission::new("grpc", limits.max_connections, &connection_stats),
            preface_timeout: limits.header_read_timeout,
        };
        let admin = admin_listener.map(|listener| {
            admin::Server::new(
                listener,
                Admission::new("admin", limits.admin_max_connections, &connection_stats),
                limits.header_read_timeout,
                health.ready.clone(),
                metrics,
            )
        });
        Ok(Self {
            grpc,
            admin,
            health,
            store,
            settings,
            invalidations,
            shutdown_grace: config.shutdown_grace,
            cache_stats,
        })
    }

    /// Cache counters (hits per tier, directory lookups, Redis errors).
    pub fn cache_stats(&self) -> Arc<CacheStats> {
        self.cache_stats.clone()
    }

    pub fn port(&self) -> u16 {
        self.grpc
            .listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().and_then(admin::Server::port)
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING and drains in-flight checks
    /// for at most the configured grace period. The admin port answers (`/readyz` 503) until
    /// the drain is over, then closes too.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let Self {
            grpc,
            admin,
            health,
            store,
            settings,
            invalidations,
            shutdown_grace,
            cache_stats: _,
        } = self;
        if let Some(invalidations) = invalidations {
            tokio::spawn(invalidations.apply());
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(become_ready(
            store,
            settings,
            health.clone(),
            stop_rx.clone(),
        ));
        // Dropped when the drain is over (or the server failed): the admin port then closes.
        let (drained, admin_stop) = oneshot::channel::<()>();
        let admin = admin.map(|admin| {
            tokio::spawn(admin.serve(async {
                let _ = admin_stop.await;
            }))
        });
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: health NOT_SERVING, draining in-flight checks");
            // Health first, so watchers (Envoy, kubelet) hear it before the listener closes.
            health.not_serving().await;
            let _ = stop_tx.send(true);
        });
        let served = grpc.serve_and_drain(stop_rx, shutdown_grace).await;
        drop(drained);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        served
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| AppError::Bind(addr, e))
}

/// The gRPC server with its listener: Check, health and reflection.
struct GrpcServer {
    router: Router,
    listener: TcpListener,
    admission: Admission,
    preface_timeout: Duration,
}

impl GrpcServer {
    /// Serves until `stop` turns true; the server then drains by itself, and `grace` bounds
    /// the drain.
    async fn serve_and_drain(
        self,
        stop: watch::Receiver<bool>,
        grace: Duration,
    ) -> Result<(), AppError> {
        let server = self.router.serve_with_incoming_shutdown(
            grpc_incoming(self.listener, self.admission, self.preface_timeout),
            stopped(stop.clone()),
        );
        tokio::select! {
            result = server => result?,
            _ = async { stopped(stop).await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "grace period over; exiting with checks in flight");
            }
        }
        Ok(())
    }
}

/// The gRPC server with its HTTP/2 limits and reflection, ready for the services.
fn grpc_router(limits: &ConnectionOptions) -> Result<Router, AppError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| AppError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| AppError::Reflection(e.to_string()))?;
    // A peer that stops answering (gone without a FIN, or a client holding a stalled
    // stream) misses a PING and is closed within interval + timeout.
    Ok(tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
}

/// The key hasher and the Redis connection, shared by the cache and the throttle.
fn shared_backends(
    config: &ServeConfig,
    stats: &CacheStats,
) -> Result<(Arc<KeyHasher>, Option<Arc<Redis>>), AppError> {
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
        Some(url) => Some(Redis::new(
            url.expose_secret(),
            config.redis_key_prefix.clone(),
            config.redis_timeout,
            stats.redis_errors.clone(),
        )?),
        None => None,
    };
    Ok((Arc::new(hasher), redis))
}

/// The database pool's connections at scrape time: (in use, idle).
fn pool_probe(store: &Store) -> PoolProbe {
    let pool = store.pool().clone();
    Box::new(move || {
        let idle = pool.num_idle() as u32;
        (pool.size().saturating_sub(idle), idle)
    })
}

/// What Redmine's notifications reach: the cache tiers, the API key filter, the settings.
struct Invalidations {
    connect: PgConnectOptions,
    directory: Arc<CachedDirectory<Store>>,
    store: Store,
    settings_wake: Arc<Notify>,
}

impl Invalidations {
    /// Evicts what notifications name, all that have arrived at once together; a settings
    /// change re-reads settings at once. Keeps the API key filter in step with the listener:
    /// loaded once it listens, off while it cannot, and given the named users' keys (after the
    /// listener's events: adding keys is always safe, and a load would include them anyway).
    /// Notifications that arrive during a load wait in the channel and are applied after it.
    async fn apply(self) {
        let mut events = crate::store::listen(self.connect);
        let mut arrived = Vec::new();
        while events.recv_many(&mut arrived, 256).await > 0 {
            tracing::debug!(events = arrived.len(), "invalidations");
            self.directory.invalidate(&arrived).await;
            let mut users = Vec::new();
            for event in arrived.drain(..) {
                match event {
                    Invalidation::Listening => self.store.load_key_filter().await,
                    Invalidation::NotListening => self.store.lose_key_filter(),
                    Invalidation::User(user_id) => users.push(user_id),
                    Invalidation::Settings | Invalidation::All => self.settings_wake.notify_one(),
                }
            }
            self.store.note_key_changes(&users).await;
        }
    }
}

/// Resolves once shutdown has begun.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// What probes see: gRPC health (the whole server and the Check service) and `/readyz`.
#[derive(Clone)]
struct Health {
    reporter: HealthReporter,
    ready: Arc<AtomicBool>,
}

impl Health {
    async fn serving(&self) {
        self.ready.store(true, Ordering::SeqCst);
        self.set(ServingStatus::Serving).await;
    }

    async fn not_serving(&self) {
        self.ready.store(false, Ordering::SeqCst);
        self.set(ServingStatus::NotServing).await;
    }

    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        self.reporter
            .set_service_status(AUTHORIZATION_SERVICE, status)
            .await;
    }
}

/// SERVING once the database has answered and settings are loaded.
async fn become_ready(
    store: Store,
    mut settings: SettingsWatch,
    health: Health,
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
    health.serving().await;
    tracing::info!("database answered; serving");
}
