//! Writes the seed corpus: realistic `CheckRequest`s, encoded with prost, for
//! `corpus/check_request/`, and the same requests as plain text for `corpus/credentials/`.
//!
//! ```sh
//! cd fuzz && cargo run --example seed_corpus
//! ```
//!
//! The output is committed; re-run this only to change the seeds.

use std::path::Path;

use prost::Message as _;
use redmine_authz::envoy::proto::envoy::service::auth::v3::CheckRequest;

// Built as the API tests build their requests.
#[path = "../../tests/support/check_request.rs"]
#[allow(dead_code)]
mod check_request;

struct Seed {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    /// `header_map` with `raw_value` (Envoy's `encode_raw_headers`) instead of `headers`.
    raw: bool,
    mode: Option<&'static str>,
}

fn seed(name: &'static str, path: &str) -> Seed {
    Seed {
        name,
        method: "GET",
        path: path.to_owned(),
        headers: vec![],
        raw: false,
        mode: None,
    }
}

impl Seed {
    fn header(mut self, name: &'static str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name, value.as_ref().to_vec()));
        self
    }
    fn raw(mut self) -> Self {
        self.raw = true;
        self
    }
    fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }
    fn mode(mut self, mode: &'static str) -> Self {
        self.mode = Some(mode);
        self
    }

    fn check_request(&self) -> CheckRequest {
        let mut request = check_request::get(&self.path)
            .method(self.method)
            .id("1234567890");
        if self.raw {
            request = request.raw();
        }
        for (name, value) in &self.headers {
            request = if self.raw {
                request.raw_header(name, value)
            } else {
                request.header(name, &String::from_utf8_lossy(value))
            };
        }
        if let Some(mode) = self.mode {
            request = request.context("redmine_authz_mode", mode);
        }
        request.build()
    }

    /// The request as text lines, a starting point for the structured target's mutations.
    fn text(&self) -> Vec<u8> {
        let mut out = format!("{}\n{}\n", self.method, self.path).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        out
    }
}

const KEY: &str = "d3m0a11ce0000000000000000000000000000a02";

fn seeds() -> Vec<Seed> {
    let huge = "A".repeat(16 * 1024);
    vec![
        seed("api-key-header", "/issues.json").header("x-redmine-api-key", KEY),
        seed("api-key-query", &format!("/issues.json?key={KEY}&limit=25")),
        seed("api-key-xml", "/users/current.xml").header("x-redmine-api-key", KEY),
        seed("api-key-too-long", "/issues.json").header("x-redmine-api-key", "a".repeat(41)),
        seed("api-key-bad-chars", "/issues.json?key=abc%2Fdef"),
        seed("api-key-blank", "/issues.json?key=").header("x-redmine-api-key", " "),
        seed("basic-password", "/issues.json").header("authorization", "Basic YWxpY2U6c2VjcmV0"),
        seed("basic-lowercase", "/projects.xml").header("authorization", "basic YWxpY2U6c2VjcmV0"),
        seed("basic-unpadded", "/issues.json").header("authorization", "Basic YWxpY2U6cHc"),
        seed("basic-colon-password", "/issues.json").header("authorization", "Basic YWxpY2U6cDpx"),
        seed("basic-no-colon", "/issues.json").header("authorization", "Basic YWxpY2U="),
        seed("basic-garbage", "/issues.json").header("authorization", "Basic !!!notbase64"),
        seed("basic-not-utf8", "/issues.json").header("authorization", "Basic /w=="),
        seed("bearer", "/issues.json")
            .header("authorization", "Bearer 0123456789abcdef0123456789abcdef"),
        seed("bearer-query", "/issues.json?access_token=0123456789abcdef"),
        seed(
            "bearer-token-param",
            "/issues.json?bearer_token=0123456789abcdef",
        ),
        seed("bearer-empty", "/issues.json").header("authorization", "Bearer   "),
        seed("digest-scheme", "/issues.json").header("authorization", "Digest username=\"alice\""),
        seed("anonymous", "/issues.json"),
        seed("format-param", "/issues?format=xml").header("x-redmine-api-key", KEY),
        seed("not-gated-web", "/my/page").header("cookie", "_redmine_session=abc"),
        seed("oauth-token", "/oauth/token").method("POST"),
        seed("oauth-dot-dot", "/oauth/../issues.json"),
        seed("oauth-encoded-dots", "/oauth/%2E%2E/users.json?key=abc"),
        seed("encoded-extension", "/issues.js%6Fn/"),
        seed("fragment", "/issues.json#frag?key=abc"),
        seed("trailing-slash", "/users/current.xml//?key=x"),
        seed("ambiguous-keys", "/issues.json?key=aaa&key=bbb"),
        seed("comma-joined", "/issues.json")
            .header("x-redmine-api-key", "aaa")
            .header("x-redmine-api-key", "bbb"),
        seed("switch-user", "/issues.json")
            .header("x-redmine-api-key", KEY)
            .header("x-redmine-switch-user", "bob"),
        seed("spoofed-identity", "/issues.json")
            .header("x-auth-user-id", "1")
            .header("x-auth-user-login", "admin")
            .header("x-auth-user-admin", "true")
            .header("x-redmine-api-key", KEY),
        seed("raw-header-map", "/issues.json")
            .raw()
            .header("x-redmine-api-key", KEY)
            .header("x-custom", b"\xff\xfe"),
        seed("raw-not-utf8-auth", "/issues.json")
            .raw()
            .header("authorization", b"Basic \xff\xfe"),
        seed("raw-repeated", "/issues.json")
            .raw()
            .header("authorization", "Bearer abc")
            .header("authorization", "Basic YWxpY2U6cHc="),
        seed("huge-header", "/issues.json")
            .header("x-redmine-api-key", KEY)
            .header("cookie", &huge),
        seed("huge-basic", "/issues.json").header("authorization", format!("Basic {huge}")),
        seed("mode-public", "/projects.json").mode("public"),
        seed("mode-public-key", "/projects.json")
            .mode("public")
            .header("x-redmine-api-key", KEY),
        seed("mode-skip", "/issues.json").mode("skip"),
        seed("mode-api", "/my/page").mode("api"),
        seed("mode-bogus", "/my/page").mode("Public"),
        seed("post-with-body-key", "/issues.json")
            .method("POST")
            .header("content-type", "application/x-www-form-urlencoded"),
    ]
}

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in ["check_request", "credentials"] {
        std::fs::create_dir_all(root.join(target))?;
    }
    let seeds = seeds();
    for seed in &seeds {
        let file = format!("seed-{}", seed.name);
        std::fs::write(
            root.join("check_request").join(&file),
            seed.check_request().encode_to_vec(),
        )?;
        std::fs::write(root.join("credentials").join(&file), seed.text())?;
    }
    // Not a valid CheckRequest, and an empty one: the decoder's error paths.
    std::fs::write(root.join("check_request/seed-empty"), b"")?;
    std::fs::write(root.join("check_request/seed-truncated"), {
        let mut bytes = seeds[0].check_request().encode_to_vec();
        bytes.truncate(bytes.len() / 2);
        bytes
    })?;
    println!(
        "wrote {} seeds per target to {}",
        seeds.len(),
        root.display()
    );
    Ok(())
}
