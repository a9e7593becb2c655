//! The server around the decisions: health, reflection, shutdown, database outage.

use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::helpers::*;

async fn health(port: u16, service: &str) -> Option<i32> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    Some(response.into_inner().status)
}

#[tokio::test]
async fn serving_once_the_database_answers_and_not_serving_on_shutdown() {
    let mut app = spawn_app(&[]).await;
    assert_eq!(
        health(app.port, "").await,
        Some(ServingStatus::Serving as i32)
    );
    assert_eq!(
        health(app.port, "envoy.service.auth.v3.Authorization").await,
        Some(ServingStatus::Serving as i32)
    );
    assert_eq!(
        http_status(app.admin_port.unwrap(), "/healthz").await,
        Some(200)
    );
    let (port, admin_port) = (app.port, app.admin_port.unwrap());
    app.stop().await;
    assert_eq!(
        health(port, "").await,
        None,
        "server is gone after shutdown"
    );
    assert_eq!(
        http_status(admin_port, "/healthz").await,
        None,
        "the admin port closes once the drain is over"
    );
}

#[tokio::test]
async fn database_down_means_not_serving_and_503() {
    // Nothing listens on port 1: the pool cannot connect.
    let app = spawn_app_without_ready_wait("postgres://postgres@127.0.0.1:1/none").await;
    assert_eq!(
        health(app.port, "").await,
        Some(ServingStatus::NotServing as i32)
    );
    assert_eq!(
        http_status(app.admin_port.unwrap(), "/readyz").await,
        Some(503)
    );
    assert_eq!(
        http_status(app.admin_port.unwrap(), "/healthz").await,
        Some(200),
        "liveness never depends on the database"
    );
    let verdict = app
        .check(get("/issues.json").header("x-redmine-api-key", demo_key("alice")))
        .await;
    verdict.assert_denied(503, "directory_unavailable");
    assert_eq!(verdict.grpc_code(), 14);
    assert_eq!(verdict.header("retry-after").as_deref(), Some("5"));
    // Not-gated requests do not need the database.
    assert!(app.check(get("/projects")).await.is_allowed());
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let app = spawn_app(&[]).await;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", app.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("{response:?}")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "envoy.service.auth.v3.Authorization",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn envoy_deadline_bounds_the_decision() {
    // A database that accepts connections but never answers: the check must end in a 503
    // inside Envoy's deadline, not in an RPC error.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let app =
        spawn_app_without_ready_wait(&format!("postgres://postgres@127.0.0.1:{port}/none")).await;
    let mut client = redmine_authz::envoy::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
        Channel::from_shared(format!("http://127.0.0.1:{}", app.port)).unwrap().connect().await.unwrap(),
    );
    let mut request = tonic::Request::new(
        get("/issues.json")
            .header("x-redmine-api-key", demo_key("alice"))
            .build(),
    );
    request.set_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let response = client
        .check(request)
        .await
        .expect("a deny, not an RPC error")
        .into_inner();
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "answered after {:?}",
        started.elapsed()
    );
    Verdict(response).assert_denied(503, "directory_unavailable");
}
