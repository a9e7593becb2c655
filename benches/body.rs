//! What the request body costs the gate's own work on a Check: the message decoded from its
//! received frame (as the server does it, from `Bytes`: the body is a slice, not a copy),
//! parsed into a `Request`, and the body rule applied, with no body and with JSON bodies of
//! 4 KiB and 64 KiB (the Envoy example's `max_request_bytes`). The cost of carrying the body
//! over HTTP/2 to the gate is in the `load` bench's `drive --body` (BENCHMARKS.md).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prost::Message as _;
use redmine_authz::auth::body::unchecked_body;
use redmine_authz::envoy::proto::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use redmine_authz::envoy::proto::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use redmine_authz::envoy::{parse, wire};

/// A POST as Envoy sends it with `with_request_body` (`size` 0: a GET without a body).
fn frame(size: usize) -> bytes::Bytes {
    let mut headers: std::collections::HashMap<String, String> = [
        (":authority", "redmine.example"),
        (":method", "GET"),
        (":path", "/issues.json"),
        (":scheme", "https"),
        ("accept", "application/json"),
        ("user-agent", "redmine-authz-bench/1.0"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "6a1c6f0e-5f7e-4e39-9d1b-1c0d1f1c2b3a"),
        (
            "x-redmine-api-key",
            "0123456789abcdef0123456789abcdef01234567",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut http = HttpRequest {
        method: "GET".into(),
        path: "/issues.json".into(),
        host: "redmine.example".into(),
        ..Default::default()
    };
    if size > 0 {
        let mut body = br#"{"issue":{"notes":""#.to_vec();
        body.resize(size - 3, b'x');
        body.extend_from_slice(br#""}}"#);
        http.method = "POST".into();
        headers.insert(":method".into(), "POST".into());
        headers.insert("content-type".into(), "application/json".into());
        headers.insert("content-length".into(), body.len().to_string());
        headers.insert("x-envoy-auth-partial-body".into(), "false".into());
        http.raw_body = body;
    }
    http.headers = headers;
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                time: None,
                http: Some(http),
            }),
            ..Default::default()
        }),
    };
    check.encode_to_vec().into()
}

fn decode_and_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("check_with_body");
    for size in [0, 4 * 1024, 64 * 1024] {
        let frame = frame(size);
        let request = parse(wire::CheckRequest::decode(frame.clone()).unwrap()).unwrap();
        assert_eq!(request.body.as_ref().map_or(0, |b| b.bytes.len()), size);
        assert_eq!(unchecked_body(&request), None);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &frame, |b, frame| {
            b.iter(|| {
                let check = wire::CheckRequest::decode(black_box(frame.clone())).unwrap();
                let request = parse(check).unwrap();
                unchecked_body(black_box(&request))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode_and_parse);
criterion_main!(benches);
