//! `multipart/form-data` fields as Rack 2.2's multipart parser gives them: each part's
//! `name` with its text, or a file for a part with a file name. Parts are read only in the
//! shape browsers and HTTP clients send (a `Content-Disposition: form-data` with `name` and
//! maybe `filename`, maybe a `Content-Type`, CRLF line ends); Rack's reading of anything else
//! is not modelled, and the body is then unreadable (fail closed).

use std::sync::LazyLock;

use regex::bytes::Regex;

use super::Malformed;

/// Rack cannot read the content type's boundary (`EOFError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unreadable;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Text(Vec<u8>),
    File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    pub name: String,
    pub value: Value,
}

/// Rack's total part and file limits: past them it raises.
const PART_LIMIT: usize = 4096;
const FILE_LIMIT: usize = 128;

/// The boundary of a `multipart/*` content type as Rack finds it; `None` when there is none
/// (Rack then reads the body as a URL-encoded form).
pub(super) fn boundary(content_type: &str) -> Result<Option<Vec<u8>>, Unreadable> {
    static MULTIPART: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?i-u)\Amultipart/.*?boundary([ \t\r\n\x0B\x0C]*)="?([^";,]+)"?"#)
            .expect("valid")
    });
    static SECOND: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i-u)boundary[ \t\r\n\x0B\x0C]*=").expect("valid"));
    let Some(found) = MULTIPART.captures(content_type.as_bytes()) else {
        return Ok(None);
    };
    let whole = found.get(0).expect("match");
    if !found[1].is_empty() || SECOND.is_match(&content_type.as_bytes()[whole.end()..]) {
        return Err(Unreadable);
    }
    Ok(Some(found[2].to_vec()))
}

/// The fields of a body, or `None` when Rack's reading of it is not modelled here.
pub(super) fn fields(body: &[u8], boundary: &[u8]) -> Result<Option<Vec<Field>>, Malformed> {
    let dash_boundary = [b"--", boundary].concat();
    let close = [&dash_boundary[..], b"--"].concat();
    let mut rest = body;
    // Up to the first boundary line (a preamble is skipped).
    loop {
        let Some((line, after)) = next_line(rest) else {
            return Ok(None);
        };
        rest = after;
        match strip(line) {
            l if l == dash_boundary => break,
            l if l == close => {
                return Ok(if rest.is_empty() {
                    Some(Vec::new())
                } else {
                    None
                })
            }
            _ => {}
        }
    }
    let mut fields = Vec::new();
    let (mut parts, mut files) = (0, 0);
    loop {
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            return Ok(None);
        };
        let head = &rest[..head_end + 2];
        rest = &rest[head_end + 4..];
        let Some(part) = Head::parse(head) else {
            return Ok(None);
        };
        // The part's content up to `\r\n--boundary` followed by `\r\n` or `--`.
        let Some(end) = find_delimiter(rest, &dash_boundary) else {
            return Ok(None);
        };
        let content = &rest[..end];
        rest = &rest[end + 2..];
        parts += 1;
        files += usize::from(part.filename.is_some());
        if parts >= PART_LIMIT || files >= FILE_LIMIT {
            return Err(Malformed);
        }
        let name = String::from_utf8(part.name).map_err(|_| Malformed)?;
        match part.filename.as_deref() {
            // An empty file name: no file chosen, no parameter.
            Some([]) => {}
            Some(_) => fields.push(Field {
                name,
                value: Value::File,
            }),
            None => fields.push(Field {
                name,
                value: Value::Text(content.to_vec()),
            }),
        }
        let Some((line, after)) = next_line(rest) else {
            return Ok(None);
        };
        rest = after;
        match strip(line) {
            l if l == dash_boundary => continue,
            l if l == close => return Ok(Some(fields)),
            _ => return Ok(None),
        }
    }
}

/// A part's headers, in the shape that is read.
struct Head {
    name: Vec<u8>,
    filename: Option<Vec<u8>>,
}

impl Head {
    fn parse(head: &[u8]) -> Option<Self> {
        static DISPOSITION: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r#"(?i-u)\Aform-data((?:;[ \t]*[a-z*]+=(?:"(?:\\"|[^"])*"|[^\s()<>,;:\\"/\[\]?=]+)[ \t]*)+)\z"#)
                .expect("valid")
        });
        static PARAMETER: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r#"(?i-u);[ \t]*([a-z*]+)=("(?:\\"|[^"])*"|[^\s()<>,;:\\"/\[\]?=]+)"#)
                .expect("valid")
        });
        let mut disposition = None;
        let lines: Vec<&[u8]> = head.strip_suffix(b"\r\n")?.split(|&b| b == b'\n').collect();
        for (i, line) in lines.iter().enumerate() {
            // CRLF line ends only.
            let line = match line.strip_suffix(b"\r") {
                Some(line) if i + 1 < lines.len() => line,
                None if i + 1 == lines.len() => line,
                _ => return None,
            };
            let (field, value) = line.split_at(line.iter().position(|&b| b == b':')?);
            let value = value[1..].trim_ascii();
            if field.eq_ignore_ascii_case(b"content-disposition") && disposition.is_none() {
                // Rack finds `name=` only before any further `:` in the header.
                if value.contains(&b':') {
                    return None;
                }
                disposition = Some(value);
            } else if field.eq_ignore_ascii_case(b"content-type") {
                // A charset changes the names' and values' encoding in Rack.
                if value
                    .to_ascii_lowercase()
                    .windows(7)
                    .any(|w| w == b"charset")
                {
                    return None;
                }
            } else {
                return None;
            }
        }
        let disposition = DISPOSITION.captures(disposition?)?;
        let (mut name, mut filename) = (None, None);
        for parameter in PARAMETER.captures_iter(&disposition[1]) {
            let slot = match parameter[1].to_ascii_lowercase().as_slice() {
                b"name" => &mut name,
                b"filename" => &mut filename,
                _ => return None,
            };
            if slot.is_some() {
                return None;
            }
            *slot = Some(dequote(&parameter[2]));
        }
        let name = name.filter(|n| !n.is_empty())?;
        // A file name is percent-decoded and unescaped; only its emptiness matters here.
        Some(Self { name, filename })
    }
}

/// WEBrick's `dequote`, as Rack uses it for names: outer quotes off, `\x` is `x`.
fn dequote(value: &[u8]) -> Vec<u8> {
    let inner = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match (b, bytes.clone().next()) {
            (b'\\', Some(&next)) if next != b'\n' => {
                out.push(next);
                bytes.next();
            }
            _ => out.push(b),
        }
    }
    out
}

/// The next line, its `\n` included, and the rest.
fn next_line(text: &[u8]) -> Option<(&[u8], &[u8])> {
    if text.is_empty() {
        return None;
    }
    let end = text
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |i| i + 1);
    Some(text.split_at(end))
}

/// Ruby's `strip` on a line: ASCII white space around, NUL at the end.
fn strip(line: &[u8]) -> &[u8] {
    let line = line.trim_ascii_start();
    let mut end = line.len();
    while end > 0
        && (line[end - 1].is_ascii_whitespace() || line[end - 1] == 0 || line[end - 1] == 0x0b)
    {
        end -= 1;
    }
    &line[..end]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Where a part's content ends: before `\r\n--boundary` that is followed by `\r\n` or `--`.
fn find_delimiter(text: &[u8], dash_boundary: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = find(&text[from..], dash_boundary).map(|i| from + i) {
        let after = &text[at + dash_boundary.len()..];
        if after.starts_with(b"\r\n") || after.starts_with(b"--") {
            // Rack would take a delimiter without the CRLF before it too, and skip two bytes
            // of it: not modelled.
            return (at >= 2 && &text[at - 2..at] == b"\r\n").then_some(at - 2);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(b"--XyZ\r\n");
            out.extend_from_slice(part.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    #[test]
    fn boundaries_as_rack_finds_them() {
        let found = |ct: &str| boundary(ct).map(|b| b.map(|b| String::from_utf8(b).unwrap()));
        assert_eq!(
            found("multipart/form-data; boundary=XyZ"),
            Ok(Some("XyZ".into()))
        );
        assert_eq!(
            found("Multipart/Form-Data; BOUNDARY=\"a b\""),
            Ok(Some("a b".into()))
        );
        assert_eq!(found("multipart/form-data"), Ok(None));
        assert_eq!(found("multipart/form-data; boundary =x"), Err(Unreadable));
        assert_eq!(
            found("multipart/form-data; boundary=x; boundary=y"),
            Err(Unreadable)
        );
    }

    #[test]
    fn fields_names_and_files() {
        let parsed = fields(
            &body(&[
                "Content-Disposition: form-data; name=\"key\"\r\n\r\nabc",
                "content-disposition: form-data; name=\"user[name]\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile",
                "Content-Disposition: form-data; name=\"k\\\"y\"; filename=\"\"\r\n\r\n",
                "Content-Disposition: form-data; name=format\r\n\r\njson\r\n",
            ]),
            b"XyZ",
        )
        .unwrap()
        .unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(
            parsed[0],
            Field {
                name: "key".into(),
                value: Value::Text(b"abc".to_vec())
            }
        );
        assert_eq!(parsed[1].value, Value::File);
        assert_eq!(
            parsed[2],
            Field {
                name: "format".into(),
                value: Value::Text(b"json\r\n".to_vec())
            }
        );
    }

    #[test]
    fn shapes_not_modelled_are_unreadable() {
        for part in [
            "Content-Disposition: form-data; filename=\"key\"\r\n\r\nx",
            "Content-Disposition: form-data; name=\"key\"; filename*=utf-8''k\r\n\r\nx",
            "Content-Disposition: form-data; name=\"key\"\r\nContent-Type: text/plain; charset=utf-16\r\n\r\nx",
            "Content-Disposition: form-data; name=\"key\"\r\nX-Other: 1\r\n\r\nx",
            "Content-Disposition: form-data; filename=\"a:b\"; name=\"key\"\r\n\r\nx",
        ] {
            assert_eq!(fields(&body(&[part]), b"XyZ"), Ok(None), "{part}");
        }
        assert_eq!(fields(b"no boundary here", b"XyZ"), Ok(None));
        assert_eq!(
            fields(
                b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nx",
                b"XyZ"
            ),
            Ok(None)
        );
    }
}
