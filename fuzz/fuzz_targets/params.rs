//! The parameter model (`auth::params`): any query and body, under any content type and for
//! any Redmine release, is read or refused (400). Nothing panics or hangs, and the releases'
//! combined reading (`any`) refuses whatever one release refuses.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use redmine_authz::auth::params::{self, Inputs};
use redmine_authz::auth::request::RequestBody;
use redmine_authz::auth::RedmineVersion;

#[derive(Debug, Arbitrary)]
enum ContentType {
    Form,
    Multipart,
    Json,
    Xml,
    Other(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    query: String,
    post: bool,
    content_type: Option<ContentType>,
    content_length: Option<String>,
    body: Option<Vec<u8>>,
    partial: bool,
}

fuzz_target!(|input: Input| {
    let content_type = input.content_type.as_ref().map(|ct| match ct {
        ContentType::Form => "application/x-www-form-urlencoded",
        ContentType::Multipart => "multipart/form-data; boundary=XyZ",
        ContentType::Json => "application/json",
        ContentType::Xml => "application/xml",
        ContentType::Other(text) => text.as_str(),
    });
    let body = input.body.map(|bytes| RequestBody {
        bytes: bytes.into(),
        partial: input.partial,
    });
    let inputs = Inputs {
        query: &input.query,
        method: if input.post { "POST" } else { "PUT" },
        content_type,
        content_length: input.content_length.as_deref(),
        headers_repeated: false,
        body: body.as_ref(),
    };
    let any = params::read(&inputs, RedmineVersion::Any);
    for release in ["4.2", "5.0", "6.1", "7.0"] {
        let one = params::read(&inputs, RedmineVersion::parse(release).expect("valid"));
        if one.is_err() {
            assert!(any.is_err(), "{release} refuses what any reads");
        }
    }
});
