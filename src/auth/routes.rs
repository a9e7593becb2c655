//! The format a request's path gives it, as Redmine's router reads the path (R-GATE-1, `R-ROUTE`).
//!
//! Rails routes `/issues.json` with the extension as `params[:format]`, and a format from the
//! path wins over a `format` parameter. A few of Redmine's routes end in a parameter that takes
//! the rest of the path, extension included (`attachments/:id/:filename` with
//! `filename: /.*/`, the repository's `*path`), so `/attachments/1/report.json` is a web
//! download, not the JSON API; some of those routes fix the format to HTML besides, so that a
//! `format` parameter cannot make them API requests either. Which ones do differs between
//! Redmine releases: [`RedmineVersion`].
//!
//! Paths are matched as Rails matches them: repeated and trailing slashes dropped, segments as
//! sent (percent-encoded). Only GET routes take the rest of a path; for other methods these
//! paths lead to no route at all, so the answer for them does not matter.

use super::request::{parse_format, Format};
use super::version::RedmineVersion;

impl RedmineVersion {
    /// `attachments/download/:id/:filename` has `format: 'html'` from 5.1.8, 6.0.5 and 6.1.0
    /// (Redmine #42394); before, it has no format of its own and `?format=json` counts.
    fn download_is_html(self) -> bool {
        match self {
            Self::Any => false,
            Self::Release {
                major,
                minor,
                patch,
            } => match (major, minor) {
                (5, 1) => patch >= 8,
                (6, 0) => patch >= 5,
                _ => (major, minor) >= (6, 1),
            },
        }
    }

    /// The repository's `diff` routes have `format: 'html'` from 6.0.0; before, `format: false`
    /// (no format from the path, `?format=json` counts).
    fn diff_is_html(self) -> bool {
        matches!(self, Self::Release { major, .. } if major >= 6)
    }
}

/// What the path says about the request's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathFormat {
    /// The path ends in `.json` or `.xml`: an API request, whatever the parameters say.
    Api(Format),
    /// The route fixes the format to HTML: not an API request, whatever the extension or the
    /// `format` parameter say.
    Html,
    /// The path gives no API format: the `format` parameter decides.
    Parameters,
}

/// The format `path` gives a GET request to the given Redmine release.
pub fn path_format(path: &str, version: RedmineVersion) -> PathFormat {
    match swallowing_route(path) {
        Some(route) if route.is_html(version) => PathFormat::Html,
        Some(_) => PathFormat::Parameters,
        None => extension_format(path),
    }
}

/// The extension as Rails reads it: percent-decoded (`/issues.js%6Fn` is JSON), trailing
/// slashes dropped. Rails reads only a literal `.` as the separator (`/issues/1%2Ejson` is
/// issue `1.json` as HTML); the gate decodes first, so it gates such paths too: a proxy on the
/// way may decode them. For the same reason another extension (`.atom`) leaves the answer to
/// the `format` parameter, where Rails would let the extension win.
fn extension_format(path: &str) -> PathFormat {
    // Most paths have nothing to decode; this runs more than once per Check.
    let decoded = if path.contains('%') {
        percent_encoding::percent_decode_str(path).decode_utf8_lossy()
    } else {
        std::borrow::Cow::Borrowed(path)
    };
    let routed = decoded.trim_end_matches('/');
    routed
        .rsplit_once('.')
        .filter(|(_, ext)| !ext.contains('/'))
        .and_then(|(_, ext)| parse_format(ext))
        .map_or(PathFormat::Parameters, PathFormat::Api)
}

/// Redmine's GET routes whose last parameter takes the rest of the path, extension included
/// (`config/routes.rb`, the same from 4.2 to 7.0 but for their formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Swallowing {
    /// `attachments/:id/:filename`, `format: 'html'`.
    Attachment,
    /// `attachments/download/:id/:filename`: `format: 'html'` only in later releases.
    Download,
    /// The repository's `browse`, `entry`, `raw`, `changes`, `annotate` and `show`, also under
    /// `revisions/:rev/`, with `(/*path)`: `format: 'html'`.
    RepositoryView,
    /// The repository's `diff(/*path)`, also under `revisions/:rev/`: `format: false`, then
    /// `format: 'html'` from 6.0.
    RepositoryDiff,
}

impl Swallowing {
    fn is_html(self, version: RedmineVersion) -> bool {
        match self {
            Self::Attachment | Self::RepositoryView => true,
            Self::Download => version.download_is_html(),
            Self::RepositoryDiff => version.diff_is_html(),
        }
    }
}

/// The swallowing route `path` takes, if any. Such a route exempts a path ending in `.json`,
/// so a path a proxy could turn into another path on its way to Redmine never takes one:
/// behind a proxy that resolves dot segments, `/attachments/1/../../issues.json` is the API.
fn swallowing_route(path: &str) -> Option<Swallowing> {
    // The quick way out, for the paths most Checks carry.
    let trimmed = path.trim_start_matches('/');
    let candidate = match trimmed.as_bytes().first() {
        Some(b'a') => trimmed.starts_with("attachments/"),
        Some(b'p') => trimmed
            .strip_prefix("projects/")
            .and_then(|rest| rest.trim_start_matches('/').split_once('/'))
            .is_some_and(|(_, rest)| rest.trim_start_matches('/').starts_with("repository/")),
        _ => false,
    };
    if !candidate {
        return None;
    }
    let mut segments = trimmed.split('/').filter(|segment| !segment.is_empty());
    let route = match segments.next()? {
        "attachments" => match segments.next()? {
            id if is_id(id) => segments.next().map(|_| Swallowing::Attachment),
            "download" => (is_id(segments.next()?) && segments.next().is_some())
                .then_some(Swallowing::Download),
            _ => None,
        },
        "projects" => repository_route(segments),
        _ => None,
    }?;
    // Ruby's `.` in the routes' `/.*/` does not match a newline.
    (!may_be_rewritten(path) && !path.contains('\n')).then_some(route)
}

/// `projects/:id/repository/:repository_id/` then an action, with the rest of `segments`.
fn repository_route<'a>(mut segments: impl Iterator<Item = &'a str>) -> Option<Swallowing> {
    if !is_param(segments.next()?) || segments.next()? != "repository" {
        return None;
    }
    if !is_param(segments.next()?) {
        return None;
    }
    let mut action = segments.next()?;
    let under_revision = action == "revisions";
    if under_revision {
        if !is_revision(segments.next()?) {
            return None;
        }
        action = segments.next()?;
    }
    let has_path = segments.next().is_some();
    match action {
        "browse" | "entry" | "raw" | "annotate" => Some(Swallowing::RepositoryView),
        "changes" if !under_revision => Some(Swallowing::RepositoryView),
        // `show/*path` needs a path; `revisions/:rev/show(/*path)` does not.
        "show" if under_revision || has_path => Some(Swallowing::RepositoryView),
        "diff" => Some(Swallowing::RepositoryDiff),
        _ => None,
    }
}

/// Whether a proxy that normalises or decodes paths could hand Redmine another path than this
/// one: a dot segment, a backslash, or an encoded dot, slash or backslash
/// (`/oauth/..%2F..%2Fissues.json`). Such a path is never exempt from the gate.
pub fn may_be_rewritten(path: &str) -> bool {
    let bytes = path.as_bytes();
    let is_dot_segment = |segment: &[u8]| segment == b"." || segment == b"..";
    let mut segment_start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        match byte {
            b'\\' => return true,
            b'%' => {
                let encoded = (
                    bytes.get(i + 1),
                    bytes.get(i + 2).map(u8::to_ascii_lowercase),
                );
                if matches!(
                    encoded,
                    (Some(b'2'), Some(b'e' | b'f')) | (Some(b'5'), Some(b'c'))
                ) {
                    return true;
                }
            }
            b'/' => {
                if is_dot_segment(&bytes[segment_start..i]) {
                    return true;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    is_dot_segment(&bytes[segment_start..])
}

/// `:id` with `id: /\d+/`, as sent.
fn is_id(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
}

/// A parameter with Rails' default constraint: no `.` (it starts the format).
fn is_param(segment: &str) -> bool {
    !segment.contains('.')
}

/// `:rev` with `rev: /[a-z0-9.\-_]+/`, as sent.
fn is_revision(segment: &str) -> bool {
    segment
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: RedmineVersion = RedmineVersion::Any;

    fn release(value: &str) -> RedmineVersion {
        RedmineVersion::parse(value).unwrap()
    }

    fn api(path: &str) -> PathFormat {
        path_format(path, ANY)
    }

    #[test]
    fn extensions_give_the_format_as_rails_reads_them() {
        assert_eq!(api("/issues.json"), PathFormat::Api(Format::Json));
        assert_eq!(api("/issues/1.xml"), PathFormat::Api(Format::Xml));
        assert_eq!(api("/issues.json//"), PathFormat::Api(Format::Json));
        assert_eq!(api("/issues.js%6Fn"), PathFormat::Api(Format::Json));
        assert_eq!(api("/issues"), PathFormat::Parameters);
        assert_eq!(api("/issues.atom"), PathFormat::Parameters);
        assert_eq!(api("/issues.JSON"), PathFormat::Parameters);
        assert_eq!(api("/a.json/issues"), PathFormat::Parameters);
        // Attachments by id, thumbnails and downloads without a file name keep the API.
        assert_eq!(api("/attachments/1.json"), PathFormat::Api(Format::Json));
        assert_eq!(
            api("/attachments/download/1.json"),
            PathFormat::Api(Format::Json)
        );
        assert_eq!(
            api("/attachments/thumbnail/1/100.json"),
            PathFormat::Api(Format::Json)
        );
    }

    #[test]
    fn attachment_file_names_swallow_the_extension() {
        for version in [ANY, release("4.2"), release("5.0.4"), release("6.1.3")] {
            for path in [
                "/attachments/1/report.json",
                "/attachments/1/report.xml",
                "/attachments/12/a/b.json/",
                "/attachments//1//report.json",
                "/attachments/1/.json",
            ] {
                assert_eq!(path_format(path, version), PathFormat::Html, "{path}");
            }
        }
        // Releases without `format: 'html'` on downloads: `?format=json` still counts.
        for version in [ANY, release("4.2.11"), release("5.0.4"), release("5.1.7")] {
            assert_eq!(
                path_format("/attachments/download/1/report.json", version),
                PathFormat::Parameters
            );
        }
        for version in [
            release("5.1.8"),
            release("6.0.5"),
            release("6.1"),
            release("7.0"),
        ] {
            assert_eq!(
                path_format("/attachments/download/1/report.json", version),
                PathFormat::Html
            );
        }
        assert_eq!(
            path_format("/attachments/download/1/report.json", release("6.0.4")),
            PathFormat::Parameters
        );
    }

    #[test]
    fn repository_paths_swallow_the_extension() {
        let repository = "/projects/p/repository/r";
        for view in ["browse", "entry", "raw", "changes", "annotate"] {
            assert_eq!(api(&format!("{repository}/{view}")), PathFormat::Html);
            assert_eq!(
                api(&format!("{repository}/{view}/lib/a.json")),
                PathFormat::Html
            );
        }
        for view in ["browse", "show", "entry", "raw", "annotate"] {
            assert_eq!(
                api(&format!("{repository}/revisions/v1.2-rc_3/{view}/a.xml")),
                PathFormat::Html
            );
        }
        assert_eq!(api(&format!("{repository}/show/a.json")), PathFormat::Html);
        // `diff` has `format: false` before 6.0, `format: 'html'` after.
        for diff in ["diff", "diff/a.json", "revisions/abc/diff/a.json"] {
            let path = format!("{repository}/{diff}");
            assert_eq!(api(&path), PathFormat::Parameters, "{path}");
            assert_eq!(
                path_format(&path, release("5.1.13")),
                PathFormat::Parameters
            );
            assert_eq!(path_format(&path, release("6.0.0")), PathFormat::Html);
        }
    }

    #[test]
    fn paths_that_do_not_take_those_routes_keep_their_extension() {
        for path in [
            // No such routes: Rails answers 404, the gate gates.
            "/projects/p/repository/r/browse.json",
            "/projects/p/repository/r/show.json",
            "/projects/p/repository/r/revisions/1.json",
            "/projects/p/repository/r/revisions/ABC/entry/a.json",
            "/projects/p/repository/r/revisions/a%2Eb/entry/a.json",
            "/projects/p/repository/r/revisions/abc/changes/a.json",
            "/projects/p.x/repository/r/browse/a.json",
            "/projects/p/repository/r.x/browse/a.json",
            "/projects/p/repositories/r/browse/a.json",
            "/attachments/%31/report.json",
            "/attachments/1x/report.json",
            "/attachments/download/x/report.json",
            "/Attachments/1/report.json",
            "/issues/1/report.json",
        ] {
            assert_eq!(api(path), PathFormat::Api(Format::Json), "{path}");
        }
        // `show/*path` needs a path.
        assert_eq!(api("/projects/p/repository/r/show"), PathFormat::Parameters);
        assert_eq!(api("/attachments/1"), PathFormat::Parameters);
        assert_eq!(api("/attachments/1/"), PathFormat::Parameters);
        assert_eq!(api("/attachments/download/1/"), PathFormat::Parameters);
    }

    #[test]
    fn paths_a_proxy_could_rewrite_never_swallow() {
        for path in [
            "/attachments/1/../../issues.json",
            "/attachments/1/./x/../../../issues.json",
            "/attachments/1/%2E%2E/%2e%2e/issues.json",
            "/attachments/1/..%2F..%2Fissues.json",
            "/attachments/1/..%5C..%5Cissues.json",
            "/attachments/1/..\\..\\issues.json",
            "/projects/p/repository/r/raw/../../../../../issues.json",
            "/attachments/1/x.json\n",
        ] {
            assert_ne!(api(path), PathFormat::Html, "{path:?}");
        }
        assert!(may_be_rewritten("/oauth/%2e%2e/issues.json"));
        assert!(may_be_rewritten("/oauth/x%2Fy"));
        assert!(may_be_rewritten("/oauth/x/.."));
        assert!(may_be_rewritten("/oauth/.//token"));
        assert!(!may_be_rewritten("/oauth/.well-known/..x"));
        assert!(!may_be_rewritten("/attachments/1/r%C3%A9sum%C3%A9..json"));
        assert!(!may_be_rewritten("/oauth/token"));
    }
}
