//! Differential test: the strings Redmine reads with Ruby (R-LOGIN-1, R-LOGIN-2, R-BEARER-1)
//! against Ruby itself: `String#strip` for a Basic login, `String#downcase` for the
//! case-insensitive lookup, and Doorkeeper's `/^Bearer /i` for a bearer token, over Unicode
//! spaces, dotted and dotless i, sharp s, final sigma, the Kelvin sign, NUL and tabs.

use std::io::Write as _;
use std::process::{Command, Stdio};

use redmine_authz::auth::{Credential, Login, Request};

/// Strings whose strip, downcase or scheme Ruby and a careless reading disagree on.
const CASES: &[&str] = &[
    "alice",
    " alice ",
    "\talice\t",
    "\u{0}alice\u{0}",
    "\u{b}alice\u{c}\r\n",
    "\u{a0}alice",
    "alice\u{3000}",
    "\u{2003}alice\u{2003}",
    "al\u{0}ice",
    "ADMİN",
    "admın",
    "İ",
    "STRASSE",
    "straße",
    "ẞ",
    "ΟΔΟΣ",
    "Σ",
    "\u{212a}ate",
    "\u{212b}ngstrom",
    "ǅemal",
    "ÀLICE",
    "ＡＬＩＣＥ",
    "Bearer tok",
    "bearer tok",
    "BEARER  tok",
    "Bearer \u{a0}tok",
    "Bearer\ttok",
    "Bearertok",
    "Bearer ",
    "Bearer \u{3000}",
];

#[derive(serde::Deserialize)]
struct Ruby {
    strip: String,
    downcase: String,
    bearer: Option<String>,
}

/// Ruby's answers, or `None` (with a message) where Ruby is not installed outside CI.
fn ask_ruby() -> Option<Vec<Ruby>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ruby/strings_oracle.rb");
    let spawned = Command::new("ruby")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping the Ruby string differential test: no ruby");
            return None;
        }
        Err(e) => panic!("CI needs ruby (scripts/test.sh installs it): {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(CASES).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the Ruby oracle failed");
    Some(serde_json::from_slice(&output.stdout).expect("the Ruby oracle's JSON"))
}

#[test]
fn logins_and_bearer_tokens_read_as_ruby_reads_them() {
    let Some(ruby) = ask_ruby() else {
        return;
    };
    assert_eq!(ruby.len(), CASES.len());
    for (text, ruby) in CASES.iter().zip(ruby) {
        // A login Ruby strips to nothing, or one still holding a NUL (PostgreSQL refuses it:
        // R-LOGIN-3), is looked up by nobody; every other is Ruby's strip.
        let expected =
            (!ruby.strip.is_empty() && !ruby.strip.contains('\0')).then_some(&ruby.strip);
        let login = Login::parse(text);
        assert_eq!(
            login.as_ref().map(Login::as_str),
            expected.map(String::as_str),
            "strip {text:?}"
        );
        if let Some(login) = Login::exact(text) {
            assert_eq!(login.downcased(), ruby.downcase, "downcase {text:?}");
        }
        // What Doorkeeper takes from `Authorization: <text>` (blank: it tries the next source).
        let request = Request::new("GET", "/issues.json").with_header("authorization", text);
        let gate = match Credential::select(&request) {
            Ok(Credential::Bearer(token)) => Some(token.expose().to_owned()),
            _ => None,
        };
        let doorkeeper = ruby.bearer.filter(|token| !token.trim().is_empty());
        assert_eq!(gate, doorkeeper, "bearer {text:?}");
    }
}
