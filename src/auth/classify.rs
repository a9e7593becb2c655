//! Which requests the gate checks at all (`R-GATE` in docs/decisions.md).

use super::request::{Request, RouteMode};
use super::routes::may_be_rewritten;

/// How strictly a request is gated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gating {
    /// Passed on without a check (identity headers are still scrubbed).
    NotGated,
    /// Must authenticate (or be allowed as anonymous by configuration).
    Gated,
    /// Checked when it carries a credential, else let through as anonymous.
    GatedIfCredentials,
}

pub fn classify(request: &Request) -> Gating {
    match request.mode {
        Some(Ok(RouteMode::Skip)) => Gating::NotGated,
        Some(Ok(RouteMode::Api)) => Gating::Gated,
        Some(Ok(RouteMode::Public)) => Gating::GatedIfCredentials,
        // A typo in a route's mode must not open the route.
        Some(Err(_)) => Gating::Gated,
        None if is_oauth_endpoint(&request.path) => Gating::NotGated,
        None if request.format().is_some() => Gating::Gated,
        None => Gating::NotGated,
    }
}

/// Doorkeeper's own endpoints, unless a proxy could make the path another one: behind a
/// proxy that normalises paths, `/oauth/../issues.json` would reach the API.
fn is_oauth_endpoint(path: &str) -> bool {
    (path == "/oauth" || path.starts_with("/oauth/")) && !may_be_rewritten(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gating(target: &str) -> Gating {
        classify(&Request::new("GET", target))
    }

    #[test]
    fn api_requests_by_extension_or_format_parameter() {
        assert_eq!(gating("/issues.json"), Gating::Gated);
        assert_eq!(gating("/issues.xml?limit=1"), Gating::Gated);
        assert_eq!(gating("/issues?format=json"), Gating::Gated);
        assert_eq!(gating("/issues?format=xml"), Gating::Gated);
        assert_eq!(gating("/issues"), Gating::NotGated);
        assert_eq!(gating("/issues.atom"), Gating::NotGated);
        assert_eq!(gating("/issues?format=csv"), Gating::NotGated);
        assert_eq!(gating("/javascripts/app.js"), Gating::NotGated);
    }

    #[test]
    fn api_paths_as_rails_routes_them() {
        assert_eq!(gating("/issues.json/"), Gating::Gated);
        assert_eq!(gating("/users/current.xml//?key=x"), Gating::Gated);
        assert_eq!(gating("/issues.js%6Fn"), Gating::Gated);
        assert_eq!(gating("/issues%2Exml"), Gating::Gated);
        assert_eq!(gating("/issues/"), Gating::NotGated);
    }

    #[test]
    fn files_named_like_api_paths_are_not_api_requests() {
        assert_eq!(
            gating("/attachments/download/1/report.json"),
            Gating::NotGated
        );
        assert_eq!(gating("/attachments/1/report.xml"), Gating::NotGated);
        assert_eq!(
            gating("/attachments/1/report.xml?format=json"),
            Gating::NotGated
        );
        assert_eq!(
            gating("/projects/p/repository/r/raw/lib/a.json"),
            Gating::NotGated
        );
        // Redmine before 5.1.8 reads `?format=json` on a named download.
        assert_eq!(
            gating("/attachments/download/1/report.pdf?format=json"),
            Gating::Gated
        );
        assert_eq!(gating("/attachments/1/../../issues.json"), Gating::Gated);
        assert_eq!(
            gating("/attachments/1/..%2F..%2Fissues.json"),
            Gating::Gated
        );
        assert_eq!(gating("/attachments/1.json"), Gating::Gated);
    }

    #[test]
    fn oauth_endpoints_are_not_gated_unless_the_path_is_tricky() {
        assert_eq!(gating("/oauth/token"), Gating::NotGated);
        assert_eq!(gating("/oauth/token/info.json"), Gating::NotGated);
        assert_eq!(gating("/oauth/../issues.json"), Gating::Gated);
        assert_eq!(gating("/oauth/%2E%2E/issues.json"), Gating::Gated);
        assert_eq!(gating("/oauth/..%2F..%2Fissues.json"), Gating::Gated);
        assert_eq!(gating("/oauth/..%5Cissues.json"), Gating::Gated);
        assert_eq!(gating("/oauthx/issues.json"), Gating::Gated);
    }

    #[test]
    fn route_mode_overrides() {
        let with_mode = |target: &str, mode: &str| {
            let mut request = Request::new("GET", target);
            request.mode = Some(RouteMode::parse(mode).ok_or_else(|| mode.to_owned()));
            classify(&request)
        };
        assert_eq!(with_mode("/issues.json", "skip"), Gating::NotGated);
        assert_eq!(with_mode("/my/page", "api"), Gating::Gated);
        assert_eq!(
            with_mode("/issues.json", "public"),
            Gating::GatedIfCredentials
        );
        assert_eq!(with_mode("/my/page", "bogus"), Gating::Gated);
    }
}
