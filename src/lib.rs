pub mod auth;
pub mod envoy {
    pub mod proto;
}
