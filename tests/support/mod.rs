//! What the API tests, the load benchmark and the fuzz seeds share: Check requests as Envoy
//! sends them, a client that sends a Check as the bytes given, and a bare HTTP/1.0 GET for
//! the admin port. Included with `#[path]`; it is not a test target itself.
#![allow(dead_code)] // Each includer uses part of it.

pub mod check_request;
pub mod http;
pub mod raw_check;
