//! Request bodies as Rails reads them: which ones it parses into `params` (and so may take a
//! `key` or a `format` from), and whether the gate saw enough of one to know (R-PARAM-5).

use super::decision::Reason;
use super::request::{Headers, Request};

/// The parser Rails gives a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/x-www-form-urlencoded`, and a POST without a content type (Rack's rule).
    Form,
    /// `multipart/form-data`, and the `multipart/related` and `multipart/mixed` bodies Rack
    /// parses the same way.
    Multipart,
    /// `application/json`, `text/x-json`, `application/jsonrequest` (not `+json` types).
    Json,
    /// `application/xml`, `text/xml`, `application/x-xml` (actionpack-xml_parser).
    Xml,
}

impl BodyFormat {
    /// The parser for a `Content-Type` value: its media type as Rack and Rails read it (up to
    /// the first `;` or `,`, trimmed, case-insensitive). `None` for a body Rails leaves alone,
    /// such as an upload's `application/octet-stream`.
    pub fn from_content_type(value: &str) -> Option<Self> {
        let media_type = media_type(value);
        let is = |name: &str| media_type.eq_ignore_ascii_case(name);
        if is("application/x-www-form-urlencoded") {
            Some(Self::Form)
        } else if is("multipart/form-data") || is("multipart/related") || is("multipart/mixed") {
            Some(Self::Multipart)
        } else if is("application/json") || is("text/x-json") || is("application/jsonrequest") {
            Some(Self::Json)
        } else if is("application/xml") || is("text/xml") || is("application/x-xml") {
            Some(Self::Xml)
        } else {
            None
        }
    }
}

fn media_type(content_type: &str) -> &str {
    content_type
        .split([';', ','])
        .next()
        .unwrap_or_default()
        .trim()
}

/// Whether Rails may parse this request's body: a content type it parses in any spelling Rack
/// reads as `Content-Type` (the gate cannot tell which one the upstream keeps), or a POST
/// without one, which Rack reads as a form.
pub fn rails_parses_body(request: &Request) -> bool {
    let headers = &request.headers;
    if headers.any_spelling_not_utf8("content-type") {
        return true;
    }
    let mut typed = false;
    for (_, value) in headers.spellings("content-type") {
        if BodyFormat::from_content_type(value).is_some() {
            return true;
        }
        typed |= !media_type(value).is_empty();
    }
    !typed && &*request.method == "POST"
}

/// Why the gate cannot know what Redmine will read from this request's body, if it cannot:
/// Rails parses the body and the proxy cut it (`BodyTooLarge`) or did not send it at all
/// (`BodyNotForwarded`). A credential there would be guessed at, so the request is denied.
/// Bodies Rails does not parse (uploads) are never needed.
pub fn unchecked_body(request: &Request) -> Option<Reason> {
    let reason = match &request.body {
        Some(body) if body.partial => Reason::BodyTooLarge,
        Some(_) => return None,
        None if declares_body(&request.headers) => Reason::BodyNotForwarded,
        None => return None,
    };
    rails_parses_body(request).then_some(reason)
}

/// The request says a body follows: a `Content-Length` other than 0 (or one that is not a
/// number), or a `Transfer-Encoding`. An HTTP/2 request may have a body and neither.
fn declares_body(headers: &Headers) -> bool {
    match content_length(headers) {
        Some(length) => length != Some(0),
        None => headers.first("transfer-encoding").is_some(),
    }
}

/// What `Content-Length` says: `None` without one, `Some(None)` when it is not one number.
pub fn content_length(headers: &Headers) -> Option<Option<u64>> {
    let mut values = headers.get_all("content-length");
    let Some(first) = values.next() else {
        return headers.is_not_utf8("content-length").then_some(None);
    };
    let one_number = values.next().is_none() && !headers.is_not_utf8("content-length");
    Some(first.parse().ok().filter(|_| one_number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::request::RequestBody;

    #[test]
    fn content_types_as_rails_reads_them() {
        use BodyFormat::*;
        for (value, format) in [
            ("application/x-www-form-urlencoded", Some(Form)),
            (
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
                Some(Form),
            ),
            ("multipart/form-data; boundary=x", Some(Multipart)),
            ("multipart/mixed; boundary=x", Some(Multipart)),
            ("multipart/related; boundary=x", Some(Multipart)),
            ("application/json", Some(Json)),
            ("application/json;charset=utf-8", Some(Json)),
            (" text/x-json ", Some(Json)),
            ("application/jsonrequest", Some(Json)),
            ("application/xml", Some(Xml)),
            ("TEXT/XML; charset=utf-8", Some(Xml)),
            ("application/x-xml", Some(Xml)),
            // Rack and Rails read the type before the first comma.
            ("application/json, application/octet-stream", Some(Json)),
            ("application/octet-stream, application/json", None),
            ("application/octet-stream", None),
            ("application/vnd.api+json", None),
            ("application/merge-patch+json", None),
            ("text/plain", None),
            ("multipart/byteranges; boundary=x", None),
            ("", None),
        ] {
            assert_eq!(BodyFormat::from_content_type(value), format, "{value:?}");
        }
    }

    fn with_body(mut request: Request, bytes: &'static [u8], partial: bool) -> Request {
        request.body = Some(RequestBody {
            bytes: bytes::Bytes::from_static(bytes),
            partial,
        });
        request
    }

    #[test]
    fn a_parsed_body_not_seen_whole_is_unchecked() {
        let form = |method| {
            Request::new(method, "/issues.json")
                .with_header("content-type", "application/x-www-form-urlencoded")
                .with_header("content-length", "70000")
        };
        assert_eq!(
            unchecked_body(&with_body(form("POST"), b"key=", true)),
            Some(Reason::BodyTooLarge)
        );
        // Rails parses bodies of every method.
        assert_eq!(
            unchecked_body(&with_body(form("GET"), b"key=", true)),
            Some(Reason::BodyTooLarge)
        );
        assert_eq!(
            unchecked_body(&with_body(form("PUT"), b"key=", false)),
            None
        );
        assert_eq!(unchecked_body(&form("PUT")), Some(Reason::BodyNotForwarded));
        // An upload Rails does not parse is never needed.
        let upload = Request::new("POST", "/uploads.json")
            .with_header("content-type", "application/octet-stream")
            .with_header("content-length", "70000");
        assert_eq!(
            unchecked_body(&with_body(upload.clone(), b"\0", true)),
            None
        );
        assert_eq!(unchecked_body(&upload), None);
        // ...unless another spelling of Content-Type says it is a form.
        let spelled = upload.with_header("content_type", "application/x-www-form-urlencoded");
        assert_eq!(unchecked_body(&spelled), Some(Reason::BodyNotForwarded));
    }

    #[test]
    fn a_post_without_a_content_type_is_a_form() {
        let post = Request::new("POST", "/issues.json").with_header("content-length", "9");
        assert_eq!(unchecked_body(&post), Some(Reason::BodyNotForwarded));
        assert_eq!(
            unchecked_body(&with_body(post.clone(), b"key=", true)),
            Some(Reason::BodyTooLarge)
        );
        let blank = post.clone().with_header("content-type", "");
        assert_eq!(unchecked_body(&blank), Some(Reason::BodyNotForwarded));
        let put = Request::new("PUT", "/issues/1.json").with_header("content-length", "9");
        assert_eq!(unchecked_body(&put), None);
    }

    #[test]
    fn only_a_declared_body_can_be_missing() {
        let json = |length: Option<&str>, chunked: bool| {
            let mut request = Request::new("POST", "/issues.json")
                .with_header("content-type", "application/json");
            if let Some(length) = length {
                request = request.with_header("content-length", length);
            }
            if chunked {
                request = request.with_header("transfer-encoding", "chunked");
            }
            unchecked_body(&request)
        };
        assert_eq!(json(None, false), None);
        assert_eq!(json(Some("0"), false), None);
        assert_eq!(json(Some("2"), false), Some(Reason::BodyNotForwarded));
        assert_eq!(json(Some("junk"), false), Some(Reason::BodyNotForwarded));
        assert_eq!(json(None, true), Some(Reason::BodyNotForwarded));
    }

    #[test]
    fn content_length_is_one_number_or_unreadable() {
        let length = |values: &[&str]| {
            let mut headers = Headers::default();
            for value in values {
                headers.push("content-length", value);
            }
            content_length(&headers)
        };
        assert_eq!(length(&[]), None);
        assert_eq!(length(&["12"]), Some(Some(12)));
        assert_eq!(length(&["12,12"]), Some(None));
        assert_eq!(length(&["12", "12"]), Some(None));
        assert_eq!(length(&["-1"]), Some(None));
        let mut headers = Headers::default();
        headers.push_not_utf8("content-length");
        assert_eq!(content_length(&headers), Some(None));
    }
}
