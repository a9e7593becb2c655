//! Integration tests: the real server, a real PostgreSQL database per test, a tonic client.
//! Modules follow the rule areas of docs/decisions.md.

mod helpers;
#[path = "../support/mod.rs"]
mod support;

mod answer; // R-ALLOW, R-DENY
mod basic; // R-BASIC, R-LOGIN
mod bodies; // R-PARAM, bodies Rails parses
mod cache; // the cache tiers and revocation
mod cli; // the command line
mod connections; // connection caps, header deadlines, keepalive
mod dashboard; // deploy/grafana queries only exposed metrics
mod docs; // docs/configuration.md's flag tables against the command line
mod faults; // database outages, slowness, pool exhaustion, shutdown
mod gating; // R-GATE, R-REST
mod key_filter; // the API key filter against floods of random keys
mod keys; // R-CRED, R-KEY
mod malformed; // R-NEVER-3, R-LIMIT: no panic, no hang, no allow
mod oauth; // R-BEARER
mod params_oracle; // R-PARAM: parameters against Rack and Rails (Ruby)
mod properties; // R-NEVER: never allowed as somebody, parsers never panic (no database)
mod server; // health, reflection, shutdown, database outage
mod strings_oracle; // R-LOGIN, R-BEARER-1: logins and bearer tokens against Ruby
mod switch_user; // R-SWITCH
mod telemetry; // traces, metrics, audit log
mod throttle; // R-THROTTLE
