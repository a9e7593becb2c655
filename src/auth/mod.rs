//! The pure decision core: no I/O, no protocol types. Each step is a function of its inputs.

pub mod body;
pub mod classify;
pub mod credentials;
pub mod decide;
pub mod decision;
pub mod params;
pub mod password;
pub mod principal;
pub mod request;
pub mod routes;
pub mod version;

pub use classify::{classify, Gating};
pub use credentials::{ApiKey, BearerToken, Credential, Login, Password};
pub use decide::{ExternalAuth, Policy, Resolved};
pub use decision::{AuthMethod, Decision, Deny, Identity, Reason};
pub use principal::{AccessToken, PasswordCheck, Principal, RedmineTimezone, Settings};
pub use request::{Format, Request, RouteMode};
pub use routes::PathFormat;
pub use version::RedmineVersion;
