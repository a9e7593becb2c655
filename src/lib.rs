//! redmine-authz: an Envoy ext_authz service that authenticates requests the way Redmine
//! does, from Redmine's own database.
//!
//! The path of one check:
//!
//! ```text
//! envoy::service  CheckRequest (gRPC) ──> envoy::parse ──> auth::Request
//! gate::Gate      auth::classify ─> settings (REST switch) ─> auth::Credential::select
//!                 (both read auth::params: query and body as the Redmine release reads them)
//!                 ─> Directory lookups (store::Store: PostgreSQL) ─> auth::decide
//! envoy::respond  auth::Decision ──> CheckResponse (allow + x-auth-* headers, or deny)
//! ```
//!
//! `auth` is pure and synchronous; `store` is the only place with SQL; `envoy` the only
//! place with protobuf types; `app` wires them into a server.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod connections;
pub mod directory;
pub mod envoy;
pub mod gate;
pub mod metrics;
pub mod observe;
pub mod redis;
pub mod runtime;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod throttle;
