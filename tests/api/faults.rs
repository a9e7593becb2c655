//! Database faults and shutdown: a TCP proxy between the service and PostgreSQL that a test
//! cuts, restores or slows down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::helpers::*;

/// Forwards to PostgreSQL until cut; a cut drops every open connection and refuses new ones.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    generation: watch::Sender<u64>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (generation, _) = watch::channel(0u64);
        let proxy = Self {
            port,
            up: up.clone(),
            delay_ms: delay_ms.clone(),
            generation: generation.clone(),
        };
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !up.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused, in effect
                }
                let cut = generation.subscribe();
                tokio::spawn(pipe(client, delay_ms.clone(), cut));
            }
        });
        proxy
    }

    fn url(&self, database_url: &str) -> String {
        database_url.replacen(":5432/", &format!(":{}/", self.port), 1)
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

async fn pipe(mut client: TcpStream, delay_ms: Arc<AtomicU64>, mut cut: watch::Receiver<u64>) {
    let Ok(mut server) = TcpStream::connect("127.0.0.1:5432").await else {
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            let delay = delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            server_write.write_all(&buffer[..n]).await?;
        }
    };
    let downstream = tokio::io::copy(&mut server_read, &mut client_write);
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut.changed() => {}
    }
}

fn key(login: &str) -> CheckBuilder {
    get("/issues.json").header("x-redmine-api-key", demo_key(login))
}

#[tokio::test]
async fn outage_keeps_cached_decisions_denies_the_rest_and_recovers() {
    let proxy = Proxy::start().await;
    let database = fresh_database().await;
    let app = spawn_app_on(&proxy.url(&database), &["--db-timeout-ms", "300"]).await;
    app.check(key("alice"))
        .await
        .assert_user("alice", "api-key");
    let wrong = get("/issues.json").header(
        "x-redmine-api-key",
        "0000000000000000000000000000000000000000",
    );
    app.check(wrong.clone())
        .await
        .assert_denied(401, "invalid_api_key");

    proxy.cut();
    for _ in 0..3 {
        app.check(key("alice"))
            .await
            .assert_user("alice", "api-key");
        app.check(wrong.clone())
            .await
            .assert_denied(401, "invalid_api_key");
        let uncached = app.check(key("admin")).await;
        uncached.assert_denied(503, "directory_unavailable");
        assert_eq!(uncached.header("retry-after").as_deref(), Some("5"));
        let unknown = app
            .check(get("/issues.json").header(
                "x-redmine-api-key",
                "1111111111111111111111111111111111111111",
            ))
            .await;
        assert!(!unknown.is_allowed(), "{unknown:?}");
        assert!(!app
            .check(get("/issues.json").header("authorization", &basic("bob", demo_password("bob"))))
            .await
            .is_allowed());
    }

    proxy.restore();
    let restored = Instant::now();
    loop {
        let verdict = app.check(key("admin")).await;
        if verdict.is_allowed() {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(2),
            "not recovered 2 s after the restore: {verdict:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("recovered {:?} after the restore", restored.elapsed());
}

#[tokio::test]
async fn slow_database_is_a_503_before_envoys_deadline() {
    let proxy = Proxy::start().await;
    let database = fresh_database().await;
    let app = spawn_app_on(&proxy.url(&database), &[]).await;
    proxy.delay(Duration::from_secs(2));
    let mut call = tonic::Request::new(key("admin").build());
    call.set_timeout(Duration::from_millis(250));
    let started = Instant::now();
    let verdict = Verdict(app.send_request(call).await);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "answered after {:?}",
        started.elapsed()
    );
    verdict.assert_denied(503, "directory_unavailable");
}

#[tokio::test]
async fn pool_exhaustion_fails_fast() {
    let proxy = Proxy::start().await;
    let database = fresh_database().await;
    let app = spawn_app_on(
        &proxy.url(&database),
        &[
            "--db-max-connections",
            "1",
            "--db-timeout-ms",
            "200",
            "--decision-timeout-ms",
            "5000",
        ],
    )
    .await;
    proxy.delay(Duration::from_millis(1500));
    let logins = ["admin", "alice", "larry", "reggie", "tina", "mona"];
    let started = Instant::now();
    let verdicts =
        futures::future::join_all(logins.iter().map(|login| app.check(key(login)))).await;
    let unavailable = verdicts.iter().filter(|v| v.status() == 503).count();
    assert!(
        unavailable >= logins.len() - 1,
        "waiters for the one connection give up: {verdicts:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert!(verdicts
        .iter()
        .all(|v| v.status() == 503 || v.status() == 200 || v.status() == 401));
}

#[tokio::test]
async fn health_stays_serving_during_an_outage() {
    let proxy = Proxy::start().await;
    let database = fresh_database().await;
    let app = spawn_app_on(&proxy.url(&database), &[]).await;
    proxy.cut();
    app.check(key("admin"))
        .await
        .assert_denied(503, "directory_unavailable");
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", app.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        ServingStatus::Serving as i32,
        "an outage shared by every replica is not a reason to leave rotation"
    );
}

#[tokio::test]
async fn shutdown_answers_every_in_flight_check_and_says_not_serving_first() {
    let proxy = Proxy::start().await;
    let database = fresh_database().await;
    let mut app = spawn_app_on(
        &proxy.url(&database),
        &[
            "--cache-ttl",
            "0",
            "--db-timeout-ms",
            "5000",
            "--decision-timeout-ms",
            "10000",
            "--db-max-connections",
            "32",
        ],
    )
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", app.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    proxy.delay(Duration::from_millis(400));
    let in_flight: Vec<_> = (0..20)
        .map(|i| {
            let request = key(if i % 2 == 0 { "alice" } else { "admin" }).build();
            let mut client = redmine_authz::envoy::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
                tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", app.port)).unwrap().connect_lazy(),
            );
            tokio::spawn(async move { client.check(request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stopping = tokio::spawn({
        let stop = app.take_stop();
        async move { stop.send(()).ok() }
    });
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("a health update")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    stopping.await.unwrap();
    for check in in_flight {
        let response = check
            .await
            .unwrap()
            .expect("every in-flight check is answered")
            .into_inner();
        assert_eq!(Verdict(response).status(), 200);
    }
    app.stop().await;
}
