//! The HTTP request as the decision core sees it: parsed once at the edge, protocol-free.

use std::net::IpAddr;

use bytestring::ByteString;

use super::params::{self, Inputs, Malformed, Params};
use super::routes::{self, PathFormat};
use super::version::RedmineVersion;

/// The format Redmine would answer in, which is also the format of a deny body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Xml,
}

/// How a route is gated, from the Envoy context extension `redmine_authz_mode` (R-GATE-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMode {
    /// Gate the request as an API request.
    Api,
    /// Do not gate it.
    Skip,
    /// Gate it when credentials are present, otherwise let it through as anonymous.
    Public,
}

impl RouteMode {
    /// The context extension that carries the mode.
    pub const CONTEXT_KEY: &'static str = "redmine_authz_mode";

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "api" => Some(Self::Api),
            "skip" => Some(Self::Skip),
            "public" => Some(Self::Public),
            _ => None,
        }
    }
}

/// Request headers with lower-case names, in arrival order. A name may occur more than once
/// when Envoy sends `header_map`; with `headers` a repeated header arrives comma-joined.
///
/// Names and values are [`ByteString`]s: those decoded from a `CheckRequest` share the
/// received frame instead of each being copied into its own allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(ByteString, ByteString)>,
    /// Names of headers whose raw value was not UTF-8; their values are not kept.
    not_utf8: Vec<String>,
}

impl Headers {
    pub fn push(&mut self, name: &str, value: &str) {
        self.push_text(ByteString::from(name), ByteString::from(value));
    }

    /// Copies the name only when it has an upper-case letter: Envoy's names are lower-case.
    pub fn push_text(&mut self, name: ByteString, value: ByteString) {
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            ByteString::from(name.to_ascii_lowercase())
        } else {
            name
        };
        self.entries.push((name, value));
    }

    /// Room for `additional` more headers, so moving a request's headers in grows once.
    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
    }

    pub fn push_not_utf8(&mut self, name: &str) {
        self.not_utf8.push(name.to_ascii_lowercase());
    }

    /// All values of `name` (lower-case), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| &**n == name)
            .map(|(_, v)| &**v)
    }

    /// The first value of `name` (lower-case).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| &**v)
    }

    pub fn is_not_utf8(&self, name: &str) -> bool {
        self.not_utf8.iter().any(|n| n == name)
    }

    /// Names of all headers, UTF-8 or not.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .map(|(n, _)| &**n)
            .chain(self.not_utf8.iter().map(String::as_str))
    }

    /// Every header Rack reads under `name`'s variable, whatever its spelling: each as
    /// `(name as sent, value)`, in order.
    pub fn spellings<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| same_rack_name(n, name))
            .map(|(n, v)| (&**n, &**v))
    }

    /// The names as sent of every header Rack reads under `name`'s variable, UTF-8 or not.
    pub fn spelling_names<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.names().filter(move |n| same_rack_name(n, name))
    }

    /// True when some spelling of `name` arrived with a value that is not UTF-8.
    pub fn any_spelling_not_utf8(&self, name: &str) -> bool {
        self.not_utf8.iter().any(|n| same_rack_name(n, name))
    }
}

/// Whether two header names are one variable to Rack, and so to Redmine. Rack (like CGI and
/// WSGI) names a header `HTTP_` + its name upper-cased with `-` as `_`: `X-Redmine-API-Key`,
/// `x_redmine_api_key` and `X-Redmine_API-Key` are all `HTTP_X_REDMINE_API_KEY`.
pub fn same_rack_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && rack_bytes_eq(a.as_bytes(), b.as_bytes())
}

/// Whether Rack's variable for `name` starts with the one for `prefix` (`x_auth_user_id` has
/// the prefix `x-auth-`).
pub fn has_rack_prefix(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len() && rack_bytes_eq(&name.as_bytes()[..prefix.len()], prefix.as_bytes())
}

fn rack_bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let fold = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    a.iter().zip(b).all(|(&x, &y)| fold(x) == fold(y))
}

/// One HTTP request bound for Redmine, as Envoy described it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: ByteString,
    /// The path without the query string.
    pub path: ByteString,
    /// The query string as sent, without the `?`.
    raw_query: ByteString,
    /// Whose reading applies: set by the gate from `--redmine-version` before anything is
    /// read; `RedmineVersion::Any` (fail closed) until then.
    redmine: std::sync::OnceLock<RedmineVersion>,
    /// The parameters Redmine reads from the query and the body, parsed when first asked for
    /// (most Checks have neither a query nor a body, and parse nothing).
    params: std::sync::OnceLock<Result<Params, Malformed>>,
    pub headers: Headers,
    /// The direct peer's address, when Envoy gave one.
    pub source: Option<IpAddr>,
    /// `None` when the route sets no mode; `Some(Err(value))` for an unknown one.
    pub mode: Option<Result<RouteMode, String>>,
    /// The request body when the proxy sent it (Envoy's `with_request_body`); `None` when it
    /// sent none. Its content type is the request's `content-type` header.
    pub body: Option<RequestBody>,
}

/// A request body as the proxy forwarded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestBody {
    pub bytes: bytes::Bytes,
    /// The body may be less than the client sent: the proxy cut it at its buffer limit
    /// (Envoy: `allow_partial_message` and `x-envoy-auth-partial-body: true`), or its length
    /// is not the request's `Content-Length`. What Redmine will read from it is unknown.
    pub partial: bool,
}

impl Request {
    /// Builds a request from a raw request target (`/path?query`).
    pub fn new(method: &str, target: &str) -> Self {
        Self::from_target(ByteString::from(method), ByteString::from(target))
    }

    /// As [`Request::new`], with the path and query sharing `target`'s bytes.
    pub fn from_target(method: ByteString, target: ByteString) -> Self {
        // A fragment never reaches a server, but a hostile client may send one; Envoy and
        // Rack drop it, so the gate must judge the path without it.
        let without_fragment = target.split('#').next().unwrap_or_default();
        let (path, query) = match without_fragment.split_once('?') {
            Some((path, query)) => (path, query),
            None => (without_fragment, ""),
        };
        Self {
            method,
            path: target.slice_ref(path),
            raw_query: target.slice_ref(query),
            ..Self::default()
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Reads the request as `version` does. The gate calls it before reading anything; a
    /// second call, or one after the parameters were read, changes nothing.
    pub fn read_as(&self, version: RedmineVersion) {
        let _ = self.redmine.set(version);
    }

    /// As [`Request::read_as`], for building requests.
    pub fn with_redmine_version(self, version: RedmineVersion) -> Self {
        self.read_as(version);
        self
    }

    pub fn redmine_version(&self) -> RedmineVersion {
        self.redmine.get().copied().unwrap_or_default()
    }

    /// `key`, `access_token`, `bearer_token` and `format` as Redmine reads them (`R-PARAM`), from
    /// the query and the body; `Err` where Rack or Rails would raise.
    pub fn params(&self) -> Result<&Params, Malformed> {
        let version = self.redmine_version();
        self.params
            .get_or_init(|| {
                // In any spelling Rack reads as the header; sent twice, not read at all. Only a
                // body needs them: most Checks have none, and skip the header scans.
                let once = |name| {
                    if self.body.is_none() {
                        return (None, false);
                    }
                    let mut values = self.headers.spellings(name).map(|(_, value)| value);
                    let first = values.next();
                    (first, values.next().is_some())
                };
                let (content_type, content_type_repeated) = once("content-type");
                let (content_length, content_length_repeated) = once("content-length");
                params::read(
                    &Inputs {
                        query: &self.raw_query,
                        method: &self.method,
                        content_type,
                        content_length: content_length.filter(|_| !content_length_repeated),
                        headers_repeated: content_type_repeated || content_length_repeated,
                        body: self.body.as_ref(),
                    },
                    version,
                )
            })
            .as_ref()
            .map_err(|&e| e)
    }

    /// The values of `name` in the query as written, split at `&` and percent-decoded (for
    /// tests and tools: decisions read [`Request::params`]).
    pub fn query_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        form_urlencoded::parse(self.raw_query.as_bytes())
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The query's parameter names that Rack reads as one of `names` (`key`, `%6Bey`, `key[]`,
    /// `[key]`), both as written and decoded, for a proxy to remove: whether it matches names
    /// before or after decoding them, each is gone. A proxy splits the query at `&` only, so
    /// where Rack 2 finds a name after a `;` (`x=1;key=K`), the whole `&` piece's name goes.
    pub fn raw_parameter_names(&self, names: &[&str]) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        for pair in self.raw_query.split('&') {
            let raw = pair.split_once('=').map_or(pair, |(name, _)| name);
            let decoded: String = form_urlencoded::parse(raw.as_bytes())
                .next()
                .map(|(name, _)| name.into_owned())
                .unwrap_or_default();
            if params::names_one_of(pair, names) {
                for name in [raw, decoded.as_str()] {
                    if !found.iter().any(|f| f == name) {
                        found.push(name.to_owned());
                    }
                }
            }
        }
        found
    }

    /// The client to hold responsible for failures: the direct peer, or with `trusted_hops`
    /// proxies in front of Envoy, the entry that many places from the right of
    /// `X-Forwarded-For` (the last trusted proxy appended it). Too few entries: the peer.
    pub fn client_address(&self, trusted_hops: usize) -> Option<IpAddr> {
        if trusted_hops == 0 {
            return self.source;
        }
        let forwarded: Vec<&str> = self
            .headers
            .get_all("x-forwarded-for")
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        forwarded
            .len()
            .checked_sub(trusted_hops)
            .and_then(|index| forwarded[index].parse().ok())
            .or(self.source)
    }

    /// Redmine's `params[:format]`: a format from the path (its extension, or the route's own)
    /// wins over the `format` parameter.
    pub fn format(&self) -> Option<Format> {
        match routes::path_format(&self.path, self.redmine_version()) {
            PathFormat::Api(format) => Some(format),
            PathFormat::Html => None,
            PathFormat::Parameters => self.format_parameter(),
        }
    }

    /// The `format` parameter's format. Parameters the gate cannot read as Redmine will make
    /// the request an API request (gated: fail closed).
    fn format_parameter(&self) -> Option<Format> {
        match self.params().map(Params::format) {
            Ok(Ok(format)) => format,
            Ok(Err(params::Unreadable)) | Err(Malformed) => Some(Format::Json),
        }
    }
}

pub(super) use params::parse_format;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_address_from_trusted_hops() {
        let mut request =
            Request::new("GET", "/").with_header("x-forwarded-for", "198.51.100.7, 203.0.113.1");
        request.source = Some("10.0.0.5".parse().unwrap());
        assert_eq!(request.client_address(0), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(
            request.client_address(1),
            Some("203.0.113.1".parse().unwrap())
        );
        assert_eq!(
            request.client_address(2),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(request.client_address(3), Some("10.0.0.5".parse().unwrap()));
        let spoofed = Request::new("GET", "/").with_header("x-forwarded-for", "not-an-ip");
        assert_eq!(spoofed.client_address(1), None);
    }

    #[test]
    fn parameters_are_read_however_they_are_encoded() {
        let key = |target: &str| {
            Request::new("GET", target)
                .with_redmine_version(RedmineVersion::parse("5.0").unwrap())
                .params()
                .map(|p| p.get(params::Name::Key).clone())
        };
        let text = |s: &str| Ok(params::Slot::Value(params::Value::Text(s.to_owned())));
        assert_eq!(key("/issues.json?key=a"), text("a"));
        // Encoded names are the same parameter to Rack: never skipped by the quick look.
        assert_eq!(key("/issues.json?%6Bey=a"), text("a"));
        assert_eq!(key("/issues.json?key=%20a%2Bb+c"), text(" a+b c"));
        assert_eq!(
            key("/issues.json?keys=1&monkey=2&x=key"),
            Ok(params::Slot::Absent)
        );
        assert_eq!(key("/issues.json"), Ok(params::Slot::Absent));
        // The fragment is no part of the query, or of the path.
        assert_eq!(key("/issues.json?key=a#frag?key=b"), text("a"));
        let request = Request::new("GET", "/issues.json#?key=b");
        assert_eq!(&*request.path, "/issues.json");
        assert_eq!(request.query_all("key").count(), 0);
    }

    #[test]
    fn format_from_the_extension_then_the_parameters() {
        let format = |target: &str| Request::new("GET", target).format();
        assert_eq!(format("/issues.xml?format=json"), Some(Format::Xml));
        assert_eq!(format("/issues?x=1;format=json"), Some(Format::Json));
        assert_eq!(format("/issues?format=JSON"), None);
        assert_eq!(format("/issues?format[]=json"), None);
        // Unreadable parameters: gated, to be denied.
        assert_eq!(format("/issues?a=%zz"), Some(Format::Json));
        let mut posted = Request::new("POST", "/issues")
            .with_header("content-type", "application/json")
            .with_header("content-length", "17");
        posted.body = Some(RequestBody {
            bytes: bytes::Bytes::from_static(br#"{"format":"xml"}"#),
            partial: false,
        });
        assert_eq!(posted.format(), Some(Format::Xml));
    }

    #[test]
    fn the_configured_release_reaches_the_routes() {
        let download = |version: &str| {
            Request::new("GET", "/attachments/download/1/report.pdf?format=json")
                .with_redmine_version(RedmineVersion::parse(version).unwrap())
                .format()
        };
        assert_eq!(download("5.0"), Some(Format::Json));
        assert_eq!(download("6.1"), None);
        assert_eq!(download("any"), Some(Format::Json));
    }
}
