//! Traces joined to Envoy's, metrics, the audit log, and no secret in any of them.
//!
//! The whole test binary shares one global subscriber (there can be only one): it exports
//! spans to an in-process OTLP receiver and writes logs and audit lines to buffers. Each
//! test finds its own spans by a trace id of its own.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};
use redmine_authz::telemetry::{self, Telemetry, TelemetryConfig};
use tracing_subscriber::fmt::MakeWriter;

use crate::helpers::*;

#[derive(Clone, Default)]
pub struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

pub struct Harness {
    telemetry: Telemetry,
    receiver: Receiver,
    pub logs: Buffer,
    pub audit: Buffer,
}

/// The process-wide telemetry, on a runtime of its own so it outlives each test's runtime.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let spans = Receiver::default();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(spans.clone()))
                        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                            listener,
                        )),
                );
                let env: HashMap<String, String> = [
                    (
                        "OTEL_EXPORTER_OTLP_ENDPOINT",
                        format!("http://127.0.0.1:{port}"),
                    ),
                    ("OTEL_SERVICE_NAME", "redmine-authz-test".to_owned()),
                    ("RUST_LOG", "redmine_authz=debug,info".to_owned()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                let config = TelemetryConfig::from_env(&env).unwrap();
                let (logs, audit) = (Buffer::default(), Buffer::default());
                let telemetry = telemetry::init(&config, logs.clone(), audit.clone())
                    .expect("the only global subscriber");
                sender
                    .send(Harness {
                        telemetry,
                        receiver: spans,
                        logs,
                        audit,
                    })
                    .unwrap();
                std::future::pending::<()>().await;
            });
        });
        receiver.recv().unwrap()
    })
}

impl Harness {
    /// The spans of one trace, after flushing what the SDK buffered.
    async fn trace(&self, trace_id: &str, at_least: usize) -> Vec<Span> {
        let wanted = hex::decode(trace_id).unwrap();
        for _ in 0..50 {
            tokio::task::block_in_place(|| self.telemetry.flush());
            let spans: Vec<Span> = self
                .receiver
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == wanted)
                .cloned()
                .collect();
            if spans.len() >= at_least {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {at_least} spans for trace {trace_id}");
    }

    fn all_spans_text(&self) -> String {
        format!("{:?}", self.receiver.0.lock().unwrap())
    }

    /// The audit lines whose request id is `request_id`.
    fn audit_lines(&self, request_id: &str) -> Vec<serde_json::Value> {
        self.audit
            .text()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["request_id"] == request_id)
            .collect()
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(b) => b.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

fn unique_hex(len: usize) -> String {
    let mut out = String::new();
    while out.len() < len {
        out.push_str(&format!("{:016x}", rand_u64()));
    }
    out.truncate(len);
    out
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    hasher.finish()
}

/// Sends `request` as Envoy would, with a W3C parent in the call's metadata.
async fn check_traced(app: &TestApp, request: CheckBuilder) -> (Verdict, String, String) {
    let trace_id = unique_hex(32);
    let parent_span = unique_hex(16);
    let mut call = tonic::Request::new(request.build());
    call.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_span}-01").parse().unwrap(),
    );
    (Verdict(app.send_request(call).await), trace_id, parent_span)
}

fn check_span<'a>(spans: &'a [Span], parent: &str) -> &'a Span {
    let span = spans
        .iter()
        .find(|s| s.name == "authz.check")
        .expect("an authz.check span");
    assert_eq!(
        hex::encode(&span.parent_span_id),
        parent,
        "parent is Envoy's span"
    );
    span
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_span_has_the_decision_and_a_sql_child() {
    let harness = harness();
    let app = spawn_app(&[]).await;
    let alice = app.user_id("alice").await.to_string();
    let (verdict, trace_id, parent) = check_traced(
        &app,
        get("/issues.json").header("x-redmine-api-key", demo_key("alice")),
    )
    .await;
    verdict.assert_user("alice", "api-key");
    let spans = harness.trace(&trace_id, 2).await;
    let span = check_span(&spans, &parent);
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "envoy.service.auth.v3.Authorization"),
        ("rpc.method", "Check"),
        ("rpc.grpc.status_code", "0"),
        ("authz.decision", "allow"),
        ("authz.reason", "authenticated"),
        ("authz.method", "api-key"),
        ("authz.cache", "db"),
        ("enduser.id", alice.as_str()),
    ] {
        assert_eq!(
            attribute(span, key).as_deref(),
            Some(value),
            "{key} in {span:?}"
        );
    }
    assert_ne!(
        span.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    let sql = spans
        .iter()
        .find(|s| s.name == "sql")
        .expect("a child span for the query");
    assert_eq!(sql.parent_span_id, span.span_id);
    assert_eq!(attribute(sql, "db.system").as_deref(), Some("postgresql"));

    // The same key again: an in-process hit, no SQL.
    let (_, trace_id, parent) = check_traced(
        &app,
        get("/issues.json").header("x-redmine-api-key", demo_key("alice")),
    )
    .await;
    let spans = harness.trace(&trace_id, 1).await;
    assert_eq!(
        attribute(check_span(&spans, &parent), "authz.cache").as_deref(),
        Some("l1")
    );
    assert!(!spans.iter().any(|s| s.name == "sql"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_is_not_a_span_error_but_failing_to_decide_is() {
    let harness = harness();
    let app = spawn_app(&[]).await;
    let (verdict, trace_id, parent) = check_traced(
        &app,
        get("/issues.json").header(
            "x-redmine-api-key",
            "0000000000000000000000000000000000000000",
        ),
    )
    .await;
    verdict.assert_denied(401, "invalid_api_key");
    let spans = harness.trace(&trace_id, 1).await;
    let span = check_span(&spans, &parent);
    assert_eq!(attribute(span, "authz.decision").as_deref(), Some("deny"));
    assert_eq!(
        attribute(span, "authz.reason").as_deref(),
        Some("invalid_api_key")
    );
    assert_eq!(attribute(span, "enduser.id"), None);
    assert_ne!(
        span.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );

    let down = spawn_app_without_ready_wait("postgres://postgres@127.0.0.1:1/none").await;
    let (verdict, trace_id, parent) = check_traced(
        &down,
        get("/issues.json").header("x-redmine-api-key", demo_key("alice")),
    )
    .await;
    verdict.assert_denied(503, "directory_unavailable");
    let spans = harness.trace(&trace_id, 1).await;
    let span = check_span(&spans, &parent);
    assert_eq!(
        span.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32),
        "{span:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_metadata_and_forwarded_headers_are_parents_too() {
    let harness = harness();
    let app = spawn_app(&[]).await;
    let trace_id = unique_hex(32);
    let parent = unique_hex(16);
    let mut call = tonic::Request::new(
        get("/issues.json")
            .header("x-redmine-api-key", demo_key("alice"))
            .build(),
    );
    call.metadata_mut()
        .insert("x-b3-traceid", trace_id.parse().unwrap());
    call.metadata_mut()
        .insert("x-b3-spanid", parent.parse().unwrap());
    call.metadata_mut()
        .insert("x-b3-sampled", "1".parse().unwrap());
    Verdict(app.send_request(call).await).assert_user("alice", "api-key");
    check_span(&harness.trace(&trace_id, 1).await, &parent);

    // No context on the call: the request's own traceparent header is used.
    let trace_id = unique_hex(32);
    let parent = unique_hex(16);
    let forwarded =
        get("/issues.json").header("traceparent", &format!("00-{trace_id}-{parent}-01"));
    app.check(forwarded)
        .await
        .assert_denied(401, "no_credential");
    check_span(&harness.trace(&trace_id, 1).await, &parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic() {
    let _ = harness();
    let app = spawn_app(&[]).await;
    for _ in 0..3 {
        app.check(get("/issues.json").header("x-redmine-api-key", demo_key("alice")))
            .await;
    }
    app.check(get("/issues.json")).await;
    app.check(get("/issues.json")).await;
    app.check(get("/issues.json").header("authorization", &basic("tina", demo_password("tina"))))
        .await;
    let text = http_get(app.admin_port.unwrap(), "/metrics").await;
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
    };
    assert_eq!(
        value(r#"authz_decisions_total{outcome="allow",method="api-key",reason="authenticated"}"#),
        3.0
    );
    assert_eq!(
        value(r#"authz_decisions_total{outcome="deny",method="none",reason="no_credential"}"#),
        2.0
    );
    assert_eq!(
        value(
            r#"authz_decisions_total{outcome="deny",method="none",reason="twofa_basic_not_allowed"}"#
        ),
        1.0
    );
    assert_eq!(value("authz_decision_duration_seconds_count"), 6.0);
    assert_eq!(value(r#"authz_lookups_total{tier="l1"}"#), 2.0);
    assert_eq!(value(r#"authz_lookups_total{tier="db"}"#), 2.0);
    assert!(
        text.contains("authz_db_pool_connections{state=\"idle\"}"),
        "{text}"
    );
    assert!(text.contains("authz_redis_errors_total 0"), "{text}");
    assert!(text.contains("authz_database_errors_total 0"), "{text}");
    assert!(!text.contains("alice"), "no login in labels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_are_json_with_the_decision() {
    let harness = harness();
    let app = spawn_app(&[]).await;
    let request_id = unique_hex(24);
    let (_, trace_id, _) = check_traced(
        &app,
        get("/issues.json")
            .header("x-redmine-api-key", demo_key("admin"))
            .header("x-redmine-switch-user", "alice")
            .header("x-request-id", &request_id),
    )
    .await;
    let lines = harness.audit_lines(&request_id);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["trace_id"], trace_id.as_str());
    assert_eq!(line["outcome"], "allow");
    assert_eq!(line["reason"], "authenticated");
    assert_eq!(line["method"], "api-key");
    assert_eq!(line["login"], "alice");
    assert_eq!(line["user_id"], app.user_id("alice").await);
    assert_eq!(line["impersonator"], "admin");
    assert_eq!(line["source"], "203.0.113.9");
    assert!(
        line["timestamp"].is_string() && line["level"] == "INFO",
        "{line}"
    );

    let deny_id = unique_hex(24);
    app.check(get("/issues.json").header("x-request-id", &deny_id))
        .await;
    let denied = &harness.audit_lines(&deny_id)[0];
    assert_eq!(
        (
            denied["outcome"].as_str(),
            denied["status"].as_u64(),
            denied["reason"].as_str()
        ),
        (Some("deny"), Some(401), Some("no_credential"))
    );

    let quiet = spawn_app_on(&app.database_url, &["--audit-log", "deny-only"]).await;
    let allow_id = unique_hex(24);
    quiet
        .check(
            get("/issues.json")
                .header("x-redmine-api-key", demo_key("alice"))
                .header("x-request-id", &allow_id),
        )
        .await;
    let deny_id = unique_hex(24);
    quiet
        .check(get("/issues.json").header("x-request-id", &deny_id))
        .await;
    assert!(harness.audit_lines(&allow_id).is_empty());
    assert_eq!(harness.audit_lines(&deny_id).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_spans_audit_or_metrics() {
    let harness = harness();
    let prefix = redis_prefix();
    let app = spawn_app(&[
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--redis-key-prefix",
        &prefix,
    ])
    .await;
    let mut trace_ids = Vec::new();
    for user in DEMO_USERS {
        let mut requests = vec![
            get("/issues.json").header("authorization", &basic(user.login, user.password)),
            get("/issues.json").header(
                "authorization",
                &basic(user.login, &format!("{}-wrong", user.password)),
            ),
        ];
        if let Some(key) = user.api_key {
            requests.push(get(&format!("/issues.json?key={key}")));
            requests.push(get("/issues.json").header("x-redmine-api-key", key));
            requests.push(get("/issues.json").header("authorization", &basic("x", key)));
        }
        for request in requests {
            let (_, trace_id, _) = check_traced(&app, request).await;
            trace_ids.push(trace_id);
        }
    }
    let (_, trace_id, _) = check_traced(
        &app,
        get("/issues.json").header("authorization", &format!("Bearer {DEMO_OAUTH_TOKEN}")),
    )
    .await;
    trace_ids.push(trace_id);
    let secrets = Box::pin(app.secrets()).await;
    harness.trace(trace_ids.last().unwrap(), 1).await;
    let metrics = http_get(app.admin_port.unwrap(), "/metrics").await;
    let everything = [
        harness.logs.text(),
        harness.audit.text(),
        harness.all_spans_text(),
        metrics,
    ];
    assert!(
        everything[1].contains("\"login\":\"alice\""),
        "audit lines were written"
    );
    for secret in &secrets {
        for (place, text) in ["logs", "audit", "spans", "metrics"]
            .iter()
            .zip(&everything)
        {
            assert!(
                !text.contains(secret.as_str()),
                "a secret ({} chars) appears in {place}",
                secret.len()
            );
        }
    }
}
