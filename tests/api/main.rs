//! Integration tests: the real server, a real PostgreSQL database per test, a tonic client.
//! Modules follow SPEC's sections.

mod helpers;
#[path = "../support/mod.rs"]
mod support;

mod answer; // SPEC 7
mod basic; // SPEC 5, Basic
mod bodies; // SPEC 4, bodies Rails parses
mod cache; // the cache tiers and revocation
mod cli; // the command line
mod connections; // connection caps, header deadlines, keepalive
mod dashboard; // deploy/grafana queries only exposed metrics
mod docs; // docs/configuration.md's flag tables against the command line
mod faults; // database outages, slowness, pool exhaustion, shutdown
mod gating; // SPEC 2 and 3
mod key_filter; // the API key filter against floods of random keys
mod keys; // SPEC 4 and 5, API keys
mod malformed; // SPEC 8: no panic, no hang, no allow
mod oauth; // SPEC 5, bearer tokens
mod params_oracle; // R-PARAM: parameters against Rack and Rails (Ruby)
mod properties; // SPEC 8: never allowed as somebody, parsers never panic (no database)
mod server; // health, reflection, shutdown, database outage
mod switch_user; // SPEC 6
mod telemetry; // traces, metrics, audit log
mod throttle; // SPEC 7, 429
