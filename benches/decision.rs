//! The decision core alone: a parsed request (`auth::Request`) and a looked-up principal in,
//! a `Decision` out, with no I/O. Target: at most 2 µs per decision (BENCHMARKS.md).

use std::hint::black_box;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use redmine_authz::auth::decide::{self, Authentication, SwitchRequest};
use redmine_authz::auth::{
    classify, Credential, Decision, Format, Policy, Principal, Request, Resolved, Settings,
};

const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

fn principal() -> Principal {
    Principal {
        id: 42,
        login: "alice".into(),
        admin: false,
        status: 1,
        twofa: false,
        must_change_passwd: false,
        passwd_changed_on: None,
        external_auth: false,
    }
}

/// What the gate does around its one lookup, with the lookup's answer given.
fn decide_with(
    request: &Request,
    found: &Principal,
    settings: &Settings,
    policy: &Policy,
) -> Decision {
    let gating = classify(request);
    let format = request.format().unwrap_or(Format::Json);
    let resolved = match Credential::select(request) {
        Ok(Credential::ApiKey(Some(_), source)) => Resolved::ApiKey(Some(found.clone()), source),
        Ok(Credential::Basic(_)) => Resolved::Basic {
            password: redmine_authz::auth::PasswordCheck::Valid(found.clone()),
            key_owner: None,
        },
        Ok(_) => Resolved::Anonymous,
        Err(_) => unreachable!("benchmark requests carry one valid credential"),
    };
    match decide::authenticate(resolved, gating, settings, policy, Utc::now(), format) {
        Authentication::Decided(decision) => decision,
        Authentication::Identified(identity) => match decide::switch_request(request, &identity) {
            SwitchRequest::None => decide::allow(identity),
            _ => unreachable!("no switch header"),
        },
    }
}

fn decision_core(c: &mut Criterion) {
    let settings = Settings {
        rest_api_enabled: true,
        password_max_age_days: 0,
    };
    let policy = Policy::default();
    let found = principal();
    let by_header = Request::new("GET", "/issues.json?project_id=1&limit=25")
        .with_header("x-redmine-api-key", KEY)
        .with_header("accept", "application/json")
        .with_header("user-agent", "bench/1.0");
    let by_query = Request::new("GET", &format!("/users/current.json?key={KEY}"));
    let by_basic = Request::new("GET", "/projects.json")
        .with_header("authorization", "Basic YWxpY2U6ZGVtby1hbGljZS1wdw==");
    for request in [&by_header, &by_query, &by_basic] {
        assert!(matches!(
            decide_with(request, &found, &settings, &policy),
            Decision::Allow(_)
        ));
    }
    let mut group = c.benchmark_group("decision_core");
    group.bench_function("api_key_header", |b| {
        b.iter(|| decide_with(black_box(&by_header), &found, &settings, &policy))
    });
    group.bench_function("api_key_query", |b| {
        b.iter(|| decide_with(black_box(&by_query), &found, &settings, &policy))
    });
    group.bench_function("basic", |b| {
        b.iter(|| decide_with(black_box(&by_basic), &found, &settings, &policy))
    });
    // A request as each Check gets it: its parameters not yet read.
    let query_target = format!("/users/current.json?key={KEY}");
    group.bench_function("api_key_query_unread", |b| {
        b.iter(|| {
            let request = Request::new("GET", black_box(&query_target));
            decide_with(&request, &found, &settings, &policy)
        })
    });
    group.bench_function("api_key_header_unread", |b| {
        b.iter(|| {
            let request = Request::new("GET", black_box("/issues.json?project_id=1&limit=25"))
                .with_header("x-redmine-api-key", KEY);
            decide_with(&request, &found, &settings, &policy)
        })
    });
    group.finish();
}

/// The request's format, which every Check reads (more than once): plain API paths, a
/// project's, and paths that take a route swallowing the extension.
fn request_format(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_format");
    for (name, target) in [
        ("issues", "/issues.json?project_id=1&limit=25"),
        ("project_issues", "/projects/demo/issues.json?limit=25"),
        ("named_download", "/attachments/download/7/report.json"),
        (
            "repository_raw",
            "/projects/demo/repository/main/raw/lib/a.json",
        ),
    ] {
        let request = Request::new("GET", target);
        group.bench_function(name, |b| b.iter(|| black_box(&request).format()));
    }
    group.finish();
}

criterion_group!(benches, decision_core, request_format);
criterion_main!(benches);
