//! The Envoy ext_authz edge: the only module that knows the protobuf types.

mod limit;
mod parse;
pub mod proto;
mod respond;
mod service;
pub mod wire;

pub use limit::CheckServer;
pub use parse::{parse, ParseError};
pub use respond::{respond, Answer, Responder, ResponseOptions};
pub use service::{budget, AuthorizationService};
