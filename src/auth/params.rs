//! The parameters Redmine reads (`R-PARAM`, docs/decisions.md): `key`, `access_token`,
//! `bearer_token` and `format`, from the query as Rack parses it and from the bodies Rails
//! parses, merged as Rails merges them (the query wins over the body). Facts per Redmine
//! release: docs/redmine-facts.md section 2.
//!
//! Each parameter is read as `params[:name]` holds it in Redmine: absent, nil, a string, or
//! something else (an array or a hash, whose `to_s` is never a key or a format). Where Rack or
//! Rails would raise (a bad `%` escape, a type conflict, a limit, a body it cannot parse),
//! Redmine answers 400 or 500: the gate denies too, it does not guess. Where the Redmine
//! releases the gate is set up for would read a parameter differently, the parameter is
//! [`Slot::Unknown`] and the caller fails closed.

use std::collections::HashMap;

use super::body::BodyFormat;
use super::credentials::is_blank;
use super::request::{Format, RequestBody};
use super::version::RedmineVersion;

mod json;
mod multipart;
mod xml;

/// A parameter the gate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Key,
    AccessToken,
    BearerToken,
    Format,
}

impl Name {
    pub const ALL: [Name; 4] = [
        Name::Key,
        Name::AccessToken,
        Name::BearerToken,
        Name::Format,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::AccessToken => "access_token",
            Self::BearerToken => "bearer_token",
            Self::Format => "format",
        }
    }

    fn of(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == name)
    }

    /// A credential: two different values of it are ambiguous (`R-PARAM-2`), where Rack keeps
    /// the last one.
    fn is_credential(self) -> bool {
        self != Self::Format
    }
}

/// What `params[:name]` holds, as far as the gate needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `nil` (`?key`, JSON `null`, XML `nil="true"`) or `false`.
    Nil,
    /// A string, or what Ruby's `to_s` gives for an integer or `true`.
    Text(String),
    /// An empty array or hash (`?key[]`: Rails drops the nil in `[nil]`): blank.
    Empty,
    /// A non-empty array or hash, a number with a fraction, an uploaded file: present, and
    /// its `to_s` is never an API key, a token or a format.
    Other,
}

impl Value {
    /// Ruby's `present?`.
    pub fn is_present(&self) -> bool {
        match self {
            Self::Nil | Self::Empty => false,
            Self::Text(text) => !is_blank(text),
            Self::Other => true,
        }
    }
}

/// One parameter as Redmine will read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Slot {
    #[default]
    Absent,
    Value(Value),
    /// A credential sent more than once with different values, one of them not blank
    /// (`?key=A&key=B`, `?key=A&key=`): Rack keeps the last, the gate will not guess.
    Conflict,
    /// The releases or deployments the gate is set up for would read it differently.
    Unknown,
}

impl Slot {
    /// The value when it is present (Ruby's `present?`), else `None`; `Err` when the gate
    /// cannot tell.
    pub fn present(&self) -> Result<Option<&Value>, Unreadable> {
        match self {
            Self::Absent => Ok(None),
            Self::Value(value) => Ok(value.is_present().then_some(value)),
            Self::Conflict | Self::Unknown => Err(Unreadable),
        }
    }
}

/// A parameter the gate cannot read as Redmine will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// Rack or Rails would raise reading the parameters: Redmine answers 400 (or 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Rack or Rails cannot read the request's parameters")]
pub struct Malformed;

/// The parameters the gate reads, each as Redmine will read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    slots: [Slot; 4],
}

impl Params {
    pub fn get(&self, name: Name) -> &Slot {
        &self.slots[name as usize]
    }

    /// The format the parameters give (`api_request?`): `Err` when it cannot be told.
    pub fn format(&self) -> Result<Option<Format>, Unreadable> {
        match self.get(Name::Format) {
            Slot::Absent => Ok(None),
            Slot::Value(Value::Text(text)) => Ok(parse_format(text)),
            Slot::Value(_) => Ok(None),
            Slot::Conflict | Slot::Unknown => Err(Unreadable),
        }
    }

    fn slot_mut(&mut self, name: Name) -> &mut Slot {
        &mut self.slots[name as usize]
    }
}

/// `json` and `xml`, case-sensitive, as `api_request?` compares them.
pub fn parse_format(value: &str) -> Option<Format> {
    match value {
        "json" => Some(Format::Json),
        "xml" => Some(Format::Xml),
        _ => None,
    }
}

/// What the parameters are read from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// The query string as sent, without the `?`.
    pub query: &'a str,
    pub method: &'a str,
    /// The `content-type` header (the first, when sent more than once).
    pub content_type: Option<&'a str>,
    /// The `content-length` header, when sent once.
    pub content_length: Option<&'a str>,
    /// `content-type` or `content-length` came more than once: which one a Rack server
    /// passes on is not known.
    pub headers_repeated: bool,
    pub body: Option<&'a RequestBody>,
}

/// Reads the parameters as `version` reads them. `Any` reads them as every release does and
/// keeps what they agree on.
pub fn read(inputs: &Inputs<'_>, version: RedmineVersion) -> Result<Params, Malformed> {
    if quick_absent(inputs) {
        return Ok(Params::default());
    }
    let rules = rules_for(version);
    // Without `;` or brackets every release reads a query alike: parse it once.
    let rules = if rules.len() > 1 && !reads_differ(inputs) {
        &rules[..1]
    } else {
        rules
    };
    let mut agreed: Option<Params> = None;
    for &rule in rules {
        let mut query = read_pairs(
            inputs.query.as_bytes(),
            QUERY_SEPARATORS[rule.query_separators()],
            rule,
        )?;
        let bodies = read_body(inputs, rule)?;
        let readings = bodies.len();
        for (i, body) in bodies.into_iter().enumerate() {
            // The query is moved into the last merge, copied only for a second reading.
            let query = if i + 1 == readings {
                std::mem::take(&mut query)
            } else {
                query.clone()
            };
            let merged = merge(query, body);
            agreed = Some(match agreed {
                None => merged,
                Some(mut known) => {
                    for name in Name::ALL {
                        if known.get(name) != merged.get(name) {
                            *known.slot_mut(name) = Slot::Unknown;
                        }
                    }
                    known
                }
            });
        }
    }
    Ok(agreed.unwrap_or_default())
}

/// Rails' merge: a name in the query hides the body's, even with a blank or nil value.
fn merge(mut query: Params, mut body: Params) -> Params {
    for name in Name::ALL {
        let slot = std::mem::take(query.slot_mut(name));
        if slot != Slot::Absent {
            *body.slot_mut(name) = slot;
        }
    }
    body
}

/// Most Checks have no body, and a query with no name the gate reads and nothing Rack could
/// fail on (no `%`, no brackets, within every limit): nothing to parse.
fn quick_absent(inputs: &Inputs<'_>) -> bool {
    let query = inputs.query.as_bytes();
    if inputs.body.is_some() || query.len() > RACK2_KEY_SPACE_LIMIT {
        return false;
    }
    if query.iter().any(|b| matches!(b, b'%' | b'[' | b']')) {
        return false;
    }
    // One pass over the names, as written (nothing is encoded): none the gate reads.
    let mut pieces = 0;
    for piece in query.split(|b| matches!(b, b'&' | b';')) {
        pieces += 1;
        let name = piece.split(|&b| b == b'=').next().unwrap_or_default();
        let name = name.trim_ascii_start();
        if Name::ALL.iter().any(|n| n.as_str().as_bytes() == name) {
            return false;
        }
    }
    pieces <= PARAMS_LIMIT
}

/// Whether Rack 2 and Rack 3 could read the request differently: `;`, brackets (also
/// encoded), a query past Rack 2's key space, or a body Rails reads.
fn reads_differ(inputs: &Inputs<'_>) -> bool {
    let query = inputs.query.as_bytes();
    let body_read = inputs
        .body
        .is_some_and(|body| !body.bytes.is_empty() && body_kind(inputs) != BodyKind::Ignored);
    body_read || query.contains(&b';') || !is_flat(query)
}

/// Whether no name can hold a bracket (none written, none encoded) and Rack 2's key space
/// cannot be exceeded: then every release reads the parameters as flat name/value pairs.
fn is_flat(text: &[u8]) -> bool {
    text.len() <= RACK2_KEY_SPACE_LIMIT
        && !text.iter().any(|b| matches!(b, b'[' | b']'))
        && !text
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'5' && matches!(w[2], b'b' | b'B' | b'd' | b'D'))
}

/// Whether some release reads a parameter of one of `names` in `pair` (one `&`-separated
/// piece of a query): after a `;` too, with its name percent-decoded and its brackets read as
/// Rack 2 or 3 reads them.
pub fn names_one_of(pair: &str, names: &[&str]) -> bool {
    pair.split(';').any(|piece| {
        let piece = piece.trim_start_matches(' ');
        let raw = piece.split_once('=').map_or(piece, |(name, _)| name);
        let Some(name) = unescape(raw.as_bytes())
            .ok()
            .and_then(|name| String::from_utf8(name).ok())
        else {
            return false;
        };
        [Rules::Rack2, RACK3]
            .iter()
            .any(|&rules| names.contains(&split_name(rules, &name, 0).0))
    })
}

// --- Rack's rules -------------------------------------------------------------------------

/// Rack's query parser limits (rack 2.2.14+ and 3.1.14+): more bytes or parameters raise.
const BYTESIZE_LIMIT: usize = 4 * 1024 * 1024;
const PARAMS_LIMIT: usize = 4096;
/// Rack 2's total length of the names in one hash.
const RACK2_KEY_SPACE_LIMIT: usize = 65536;

/// How a release parses parameter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rules {
    /// Rack 2.2 (Redmine 4.2 to 5.1): `&` and `;` in queries, leading brackets skipped
    /// (`[key]=` and `key]=` are `key`), nesting up to 100, 64 KiB of names per hash.
    Rack2,
    /// Rack 3.1 (Redmine 6.x, nesting up to 32) and Rails 8.1's own parser (Redmine 7.0,
    /// up to 100): `&` only, a name is literal up to its first `[` after the first character.
    Rack3 { depth_limit: usize },
}

const RACK3: Rules = Rules::Rack3 { depth_limit: 32 };
const RAILS81: Rules = Rules::Rack3 { depth_limit: 100 };

fn rules_for(version: RedmineVersion) -> &'static [Rules] {
    match version {
        // Rack 3's depth limit is the lower: past it, Redmine 6 raises.
        RedmineVersion::Any => &[Rules::Rack2, RACK3],
        RedmineVersion::Release { major, .. } if major < 6 => &[Rules::Rack2],
        RedmineVersion::Release { major: 6, .. } => &[RACK3],
        RedmineVersion::Release { .. } => &[RAILS81],
    }
}

const QUERY_SEPARATORS: [&[u8]; 2] = [b"&;", b"&"];

impl Rules {
    fn query_separators(self) -> usize {
        match self {
            Self::Rack2 => 0,
            Self::Rack3 { .. } => 1,
        }
    }

    fn depth_limit(self) -> usize {
        match self {
            Self::Rack2 => 100,
            Self::Rack3 { depth_limit } => depth_limit,
        }
    }
}

fn count_separators(text: &[u8], separators: &[u8]) -> usize {
    text.iter().filter(|b| separators.contains(b)).count()
}

/// One parsed parameter tree: Rack's nested params before Rails converts them.
#[derive(Debug, Clone)]
enum Node {
    /// `None` for a name without `=`.
    Leaf(Option<Vec<u8>>),
    /// An uploaded file (a multipart part with a file name).
    File,
    List(Vec<Node>),
    Map(Tree),
}

impl Node {
    /// Ruby truthiness, for `params[k] ||= ...`.
    fn is_nil(&self) -> bool {
        matches!(self, Node::Leaf(None))
    }
}

#[derive(Debug, Clone, Default)]
struct Tree {
    entries: HashMap<String, Node>,
    /// Rack 2 counts the names' characters per hash.
    key_space: usize,
}

impl Tree {
    fn set(&mut self, rules: Rules, key: &str, node: Node) -> Result<(), Malformed> {
        if !self.entries.contains_key(key) && rules == Rules::Rack2 {
            self.key_space += key.chars().count();
            if self.key_space > RACK2_KEY_SPACE_LIMIT {
                return Err(Malformed);
            }
        }
        self.entries.insert(key.to_owned(), node);
        Ok(())
    }

    /// `params[k] ||= empty`: an absent or nil entry becomes `empty`.
    fn or_insert(&mut self, rules: Rules, key: &str, empty: Node) -> Result<&mut Node, Malformed> {
        if self.entries.get(key).is_none_or(Node::is_nil) {
            self.set(rules, key, empty)?;
        }
        Ok(self.entries.get_mut(key).expect("just set"))
    }

    fn has_path(&self, key: &str) -> bool {
        // Rack's `params_hash_has_key?`: a name with `[]` is never found.
        if key.contains("[]") {
            return false;
        }
        let mut tree = self;
        let mut parts = key.split(['[', ']']).filter(|p| !p.is_empty()).peekable();
        while let Some(part) = parts.next() {
            match tree.entries.get(part) {
                None => return false,
                Some(Node::Map(child)) => tree = child,
                Some(_) if parts.peek().is_none() => return true,
                Some(_) => return false,
            }
        }
        true
    }
}

/// What a nested `normalize_params` call gives back to its caller.
enum Returned {
    /// The hash it was given.
    Same,
    /// `[v]` (a `[]` name inside an array).
    Array(Vec<Node>),
    /// No name at all.
    Nil,
}

/// Splits a name into its first key and the rest, as the release does at this depth.
fn split_name(rules: Rules, name: &str, depth: usize) -> (&str, &str) {
    match rules {
        Rules::Rack2 => {
            // `\A[\[\]]*([^\[\]]+)\]*`: leading brackets skipped, the key, closing brackets.
            let start = name.find(|c| c != '[' && c != ']');
            let Some(start) = start else {
                return ("", "");
            };
            let end = name[start..]
                .find(['[', ']'])
                .map_or(name.len(), |i| start + i);
            let after = name[end..].trim_start_matches(']');
            (&name[start..end], after)
        }
        Rules::Rack3 { .. } if depth == 0 => {
            // Literal up to the first `[` after the first character.
            let first = name.chars().next().map_or(0, char::len_utf8);
            match name[first..].find('[') {
                Some(i) => name.split_at(first + i),
                None => (name, ""),
            }
        }
        Rules::Rack3 { .. } => {
            if let Some(rest) = name.strip_prefix("[]") {
                ("[]", rest)
            } else if let Some(close) = name.strip_prefix('[').and_then(|n| n.find(']')) {
                (&name[1..close + 1], &name[close + 2..])
            } else {
                (name, "")
            }
        }
    }
}

/// The child key of `x[][y]` or `x[]...` (hash or other nesting inside an array).
fn array_child(rules: Rules, after: &str) -> Option<String> {
    match rules {
        Rules::Rack2 => {
            // Ruby's `^` and `$` match at every line: `(?m)`, as Rack 2's regexps do.
            static HASH_IN_ARRAY: std::sync::LazyLock<regex::Regex> =
                std::sync::LazyLock::new(|| {
                    regex::Regex::new(r"(?m)^\[\]\[([^\[\]]+)\]$").expect("valid")
                });
            static NESTED_IN_ARRAY: std::sync::LazyLock<regex::Regex> =
                std::sync::LazyLock::new(|| regex::Regex::new(r"(?m)^\[\](.+)$").expect("valid"));
            HASH_IN_ARRAY
                .captures(after)
                .or_else(|| NESTED_IN_ARRAY.captures(after))
                .map(|c| c[1].to_owned())
        }
        Rules::Rack3 { .. } => {
            let rest = after.strip_prefix("[]")?;
            let simple = rest
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .filter(|c| !c.is_empty() && !c.contains(['[', ']']));
            Some(simple.unwrap_or(rest).to_owned())
        }
    }
}

/// Rack's `normalize_params`: stores `value` under `name` in `params`.
fn normalize(
    rules: Rules,
    params: &mut Tree,
    name: &str,
    value: Node,
    depth: usize,
) -> Result<Returned, Malformed> {
    if depth >= rules.depth_limit() {
        return Err(Malformed);
    }
    let (key, after) = split_name(rules, name, depth);
    if key.is_empty() {
        // Rack 2 returns `Array(v)` for a bare `[]`; Rack 3 gets here with `[]` as the key.
        return Ok(match (rules, value) {
            (_, Node::Leaf(None)) => Returned::Nil,
            (Rules::Rack2, value) if name == "[]" => Returned::Array(vec![value]),
            _ => Returned::Nil,
        });
    }
    if after.is_empty() {
        if key == "[]" && depth != 0 && matches!(rules, Rules::Rack3 { .. }) {
            return Ok(Returned::Array(vec![value]));
        }
        params.set(rules, key, value)?;
    } else if after == "[" {
        params.set(rules, name, value)?;
    } else if after == "[]" {
        let Node::List(list) = params.or_insert(rules, key, Node::List(Vec::new()))? else {
            return Err(Malformed);
        };
        list.push(value);
    } else if let Some(child) = array_child(rules, after) {
        let Node::List(list) = params.or_insert(rules, key, Node::List(Vec::new()))? else {
            return Err(Malformed);
        };
        match list.last_mut() {
            Some(Node::Map(last)) if !last.has_path(&child) => {
                normalize(rules, last, &child, value, depth + 1)?;
            }
            _ => {
                let mut fresh = Tree::default();
                let node = match normalize(rules, &mut fresh, &child, value, depth + 1)? {
                    Returned::Same => Node::Map(fresh),
                    Returned::Array(items) => Node::List(items),
                    Returned::Nil => Node::Leaf(None),
                };
                list.push(node);
            }
        }
    } else {
        let Node::Map(child) = params.or_insert(rules, key, Node::Map(Tree::default()))? else {
            return Err(Malformed);
        };
        let mut child = std::mem::take(child);
        let node = match normalize(rules, &mut child, after, value, depth + 1)? {
            Returned::Same => Node::Map(child),
            Returned::Array(items) => Node::List(items),
            Returned::Nil => Node::Leaf(None),
        };
        params.set(rules, key, node)?;
    }
    Ok(Returned::Same)
}

/// `URI.decode_www_form_component`: `+` is a space, `%XX` a byte, any other `%` raises.
fn unescape(text: &[u8]) -> Result<Vec<u8>, Malformed> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let high = text.get(i + 1).copied().and_then(hex);
                let low = text.get(i + 2).copied().and_then(hex);
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(Malformed);
                };
                out.push((high * 16 + low) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// Rack's `parse_nested_query` of `text` split at `separators` (each followed by any spaces),
/// then Rails' checks; what it gives for the names the gate reads.
fn read_pairs(text: &[u8], separators: &[u8], rules: Rules) -> Result<Params, Malformed> {
    if text.is_empty() {
        return Ok(Params::default());
    }
    if text.len() > BYTESIZE_LIMIT || count_separators(text, separators) >= PARAMS_LIMIT {
        return Err(Malformed);
    }
    if is_flat(text) {
        return read_flat(text, separators);
    }
    let mut tree = Tree::default();
    let mut seen = Occurrences::default();
    for pair in pieces(text, separators) {
        let (name, value) = split_pair(pair);
        let name = String::from_utf8(unescape(name)?).map_err(|_| Malformed)?;
        let value = value.map(unescape).transpose()?;
        store(rules, &mut tree, &mut seen, &name, Node::Leaf(value))?;
    }
    finish(tree, seen)
}

/// [`read_pairs`] for a text with no brackets: every name is a top-level key, the last value
/// wins, and only the gate's names' values are kept (the hot path: `?key=...`).
fn read_flat(text: &[u8], separators: &[u8]) -> Result<Params, Malformed> {
    // Each tracked name's first value, its last when set again, and what the ambiguity rule
    // needs (`Occurrences`, without copying a value).
    let mut first: [Option<Option<Vec<u8>>>; 4] = Default::default();
    let mut last: [Option<Option<Vec<u8>>>; 4] = Default::default();
    let (mut differs, mut not_blank) = ([false; 4], [false; 4]);
    // Names whose last value is not UTF-8, which Rails refuses.
    let mut not_utf8: Vec<Vec<u8>> = Vec::new();
    for pair in pieces(text, separators) {
        let (name, value) = split_pair(pair);
        let name = unescape_cow(name)?;
        let value = value.map(unescape_cow).transpose()?;
        std::str::from_utf8(&name).map_err(|_| Malformed)?;
        if name.is_empty() {
            continue;
        }
        let utf8 = value
            .as_deref()
            .is_none_or(|v| std::str::from_utf8(v).is_ok());
        if !utf8 && !not_utf8.iter().any(|n| *n == *name) {
            not_utf8.push(name.to_vec());
        } else if utf8 && !not_utf8.is_empty() {
            not_utf8.retain(|n| *n != *name);
        }
        if let Some(tracked) = std::str::from_utf8(&name).ok().and_then(Name::of) {
            let i = tracked as usize;
            let value = value.map(std::borrow::Cow::into_owned);
            not_blank[i] |= !Occurrence::is_blank_value(value.as_deref());
            match &first[i] {
                None => first[i] = Some(value),
                Some(seen) => {
                    differs[i] |= seen.as_deref() != value.as_deref();
                    last[i] = Some(value);
                }
            }
        }
    }
    if !not_utf8.is_empty() {
        return Err(Malformed);
    }
    let mut params = Params::default();
    for name in Name::ALL {
        let i = name as usize;
        *params.slot_mut(name) = if name.is_credential() && differs[i] && not_blank[i] {
            Slot::Conflict
        } else {
            match last[i].take().or_else(|| first[i].take()) {
                None => Slot::Absent,
                Some(None) => Slot::Value(Value::Nil),
                // Checked UTF-8 above.
                Some(Some(bytes)) => Slot::Value(Value::Text(
                    String::from_utf8(bytes).map_err(|_| Malformed)?,
                )),
            }
        };
    }
    Ok(params)
}

/// The pieces of `text` between separators, each separator followed by any spaces.
fn pieces<'a>(text: &'a [u8], separators: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(text);
    std::iter::from_fn(move || loop {
        let current = rest?;
        let end = current
            .iter()
            .position(|b| separators.contains(b))
            .unwrap_or(current.len());
        rest = (end < current.len()).then(|| {
            let mut tail = &current[end + 1..];
            while let [b' ', after @ ..] = tail {
                tail = after;
            }
            tail
        });
        if end > 0 {
            return Some(&current[..end]);
        }
    })
}

/// A piece's name and value: split at the first `=`; no `=` is a nil value.
fn split_pair(pair: &[u8]) -> (&[u8], Option<&[u8]>) {
    match pair.iter().position(|&b| b == b'=') {
        Some(eq) => (&pair[..eq], Some(&pair[eq + 1..])),
        None => (pair, None),
    }
}

/// [`unescape`], borrowing when there is nothing to decode.
fn unescape_cow(text: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, Malformed> {
    if text.iter().any(|b| matches!(b, b'%' | b'+')) {
        unescape(text).map(std::borrow::Cow::Owned)
    } else {
        Ok(std::borrow::Cow::Borrowed(text))
    }
}

/// Stores one parameter, noting what each name the gate reads was set to.
fn store(
    rules: Rules,
    tree: &mut Tree,
    seen: &mut Occurrences,
    name: &str,
    value: Node,
) -> Result<(), Malformed> {
    let (key, after) = split_name(rules, name, 0);
    if let Some(tracked) = Name::of(key) {
        let occurrence = match &value {
            Node::Leaf(value) if after.is_empty() => Occurrence::Scalar(value.clone()),
            _ => Occurrence::Nested,
        };
        if after != "[" {
            seen.note(tracked, occurrence);
        }
    }
    normalize(rules, tree, name, value, 0).map(|_| ())
}

/// What a name was set to, each time it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Occurrence {
    Scalar(Option<Vec<u8>>),
    Nested,
}

impl Occurrence {
    fn is_blank(&self) -> bool {
        match self {
            Self::Scalar(value) => Self::is_blank_value(value.as_deref()),
            Self::Nested => false,
        }
    }

    /// A nil value, or a blank string (Ruby's `blank?`).
    fn is_blank_value(value: Option<&[u8]>) -> bool {
        value.is_none_or(|v| std::str::from_utf8(v).is_ok_and(is_blank))
    }
}

/// What each name the gate reads was set to: the first value, and whether another one
/// differed from it or any was not blank.
#[derive(Debug, Default)]
struct Occurrences {
    first: [Option<Occurrence>; 4],
    differs: [bool; 4],
    not_blank: [bool; 4],
}

impl Occurrences {
    fn note(&mut self, name: Name, occurrence: Occurrence) {
        let i = name as usize;
        self.not_blank[i] |= !occurrence.is_blank();
        match &self.first[i] {
            None => self.first[i] = Some(occurrence),
            Some(first) => self.differs[i] |= *first != occurrence,
        }
    }

    /// Two different values of a credential, one of them not blank.
    fn conflict(&self, name: Name) -> bool {
        let i = name as usize;
        name.is_credential() && self.differs[i] && self.not_blank[i]
    }
}

/// Rails' view of the tree: every string value must be UTF-8 (else 400), and arrays lose
/// their nils; then the gate's names.
fn finish(tree: Tree, seen: Occurrences) -> Result<Params, Malformed> {
    for node in tree.entries.values() {
        check_encoding(node)?;
    }
    let mut params = Params::default();
    for name in Name::ALL {
        let slot = params.slot_mut(name);
        if seen.conflict(name) {
            *slot = Slot::Conflict;
        } else if let Some(node) = tree.entries.get(name.as_str()) {
            *slot = Slot::Value(value_of(node));
        }
    }
    Ok(params)
}

fn check_encoding(node: &Node) -> Result<(), Malformed> {
    match node {
        Node::Leaf(Some(bytes)) => std::str::from_utf8(bytes)
            .map(|_| ())
            .map_err(|_| Malformed),
        Node::Leaf(None) | Node::File => Ok(()),
        Node::List(items) => items.iter().try_for_each(check_encoding),
        Node::Map(tree) => tree.entries.values().try_for_each(check_encoding),
    }
}

fn value_of(node: &Node) -> Value {
    match node {
        Node::Leaf(None) => Value::Nil,
        // Checked UTF-8 by `check_encoding`.
        Node::Leaf(Some(bytes)) => Value::Text(String::from_utf8_lossy(bytes).into_owned()),
        Node::List(items) if items.iter().all(Node::is_nil) => Value::Empty,
        Node::Map(tree) if tree.entries.is_empty() => Value::Empty,
        Node::File | Node::List(_) | Node::Map(_) => Value::Other,
    }
}

// --- Bodies -------------------------------------------------------------------------------

/// The body's parameters as the release reads them: one reading, or two when the deployment
/// decides (a JSON or XML body without `Content-Length` is read by some Rack servers only).
fn read_body(inputs: &Inputs<'_>, rules: Rules) -> Result<Vec<Params>, Malformed> {
    let Some(body) = inputs.body else {
        return Ok(vec![Params::default()]);
    };
    let kind = body_kind(inputs);
    if kind == BodyKind::Ignored || body.bytes.is_empty() {
        return Ok(vec![Params::default()]);
    }
    if body.partial {
        return Ok(vec![credentials_unknown()]);
    }
    if inputs.headers_repeated {
        // Which type or length the Rack server passes on is unknown: so is anything the body
        // may set.
        return Ok(vec![unknown()]);
    }
    let bytes = &body.bytes[..];
    match kind {
        BodyKind::Json | BodyKind::Xml => {
            let params = if kind == BodyKind::Json {
                json::read(bytes)?
            } else {
                xml::read(bytes)?
            };
            // Rails parses JSON and XML only with a `Content-Length` above zero.
            match inputs.content_length.map(ruby_to_i) {
                Some(length) if length > 0 => Ok(vec![params]),
                Some(_) => Ok(vec![Params::default()]),
                None => Ok(vec![params, Params::default()]),
            }
        }
        BodyKind::Form => {
            // Rack drops one trailing NUL (old Safari sent it).
            let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
            Ok(vec![read_pairs(bytes, b"&", rules)?])
        }
        BodyKind::Multipart(boundary) => {
            let Some(fields) = multipart::fields(bytes, &boundary)? else {
                return Ok(vec![credentials_unknown()]);
            };
            let (mut tree, mut seen) = (Tree::default(), Occurrences::default());
            for field in fields {
                let value = match field.value {
                    multipart::Value::Text(text) => Node::Leaf(Some(text)),
                    multipart::Value::File => Node::File,
                };
                store(rules, &mut tree, &mut seen, &field.name, value)?;
            }
            Ok(vec![finish(tree, seen)?])
        }
        BodyKind::MultipartUnreadable => Ok(vec![credentials_unknown()]),
        BodyKind::Ignored => unreachable!("returned above"),
    }
}

fn unknown() -> Params {
    Params {
        slots: std::array::from_fn(|_| Slot::Unknown),
    }
}

/// A body the gate cannot read whole (cut by the proxy) or in a shape it does not model
/// (multipart): the credentials it may hold are unknown, so a gated request fails closed
/// (413 for a cut body, `R-PARAM-5`; else ambiguous). A `format` in it is not looked for: a
/// web form's large upload must not become a gated request, and an API request Redmine finds
/// there only is one the gate does not vouch for (no identity headers), as for the web UI.
fn credentials_unknown() -> Params {
    let mut params = unknown();
    *params.slot_mut(Name::Format) = Slot::Absent;
    params
}

/// Ruby's `to_i` of a `Content-Length`: leading digits, else 0.
fn ruby_to_i(value: &str) -> u64 {
    let digits = value.trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end]
        .parse()
        .unwrap_or(if end > 0 { u64::MAX } else { 0 })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyKind {
    Json,
    Xml,
    Form,
    Multipart(Vec<u8>),
    /// Rack cannot read the boundary (it raises `EOFError`, which Rails 6.1 swallows).
    MultipartUnreadable,
    Ignored,
}

/// Which parser reads the body, by `Content-Type` as Rails reads it ([`BodyFormat`]). Rails
/// decides what a form is by the same reading, so a request with no content type (a POST is
/// a form to Rack alone) has no body parameters.
fn body_kind(inputs: &Inputs<'_>) -> BodyKind {
    let Some(content_type) = inputs.content_type else {
        return BodyKind::Ignored;
    };
    match BodyFormat::from_content_type(content_type) {
        Some(BodyFormat::Json) => BodyKind::Json,
        Some(BodyFormat::Xml) => BodyKind::Xml,
        Some(BodyFormat::Form) => BodyKind::Form,
        Some(BodyFormat::Multipart) => match multipart::boundary(content_type) {
            Ok(Some(boundary)) => BodyKind::Multipart(boundary),
            // No boundary: Rack reads the body as a URL-encoded form.
            Ok(None) => BodyKind::Form,
            Err(multipart::Unreadable) => BodyKind::MultipartUnreadable,
        },
        None => BodyKind::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDMINE_5: RedmineVersion = RedmineVersion::Release {
        major: 5,
        minor: 0,
        patch: 4,
    };
    const REDMINE_6: RedmineVersion = RedmineVersion::Release {
        major: 6,
        minor: 1,
        patch: 0,
    };

    fn query(text: &str, version: RedmineVersion) -> Result<Params, Malformed> {
        read(
            &Inputs {
                query: text,
                method: "GET",
                ..Inputs::default()
            },
            version,
        )
    }

    fn slot(text: &str, name: Name, version: RedmineVersion) -> Result<Slot, Malformed> {
        query(text, version).map(|p| p.get(name).clone())
    }

    fn text(value: &str) -> Result<Slot, Malformed> {
        Ok(Slot::Value(Value::Text(value.to_owned())))
    }

    #[test]
    fn rack2_separators_and_spaces() {
        let key = |q| slot(q, Name::Key, REDMINE_5);
        assert_eq!(key("x=1;key=abc"), text("abc"));
        assert_eq!(key("x=1;  key=abc"), text("abc"));
        assert_eq!(key("x=1& key=abc"), text("abc"));
        assert_eq!(key(" key=abc"), Ok(Slot::Absent), "only after a separator");
        assert_eq!(key("key"), Ok(Slot::Value(Value::Nil)));
        assert_eq!(key("key=a=b"), text("a=b"));
        assert_eq!(key("&&;key=abc&"), text("abc"));
    }

    #[test]
    fn rack2_names() {
        let key = |q| slot(q, Name::Key, REDMINE_5);
        assert_eq!(key("[key]=abc"), text("abc"));
        assert_eq!(key("key]=abc"), text("abc"));
        assert_eq!(key("]]key=abc"), text("abc"));
        assert_eq!(key("key[]=abc"), Ok(Slot::Value(Value::Other)));
        assert_eq!(
            key("key[]"),
            Ok(Slot::Value(Value::Empty)),
            "Rails drops [nil]'s nil"
        );
        assert_eq!(key("key[a]=1"), Ok(Slot::Value(Value::Other)));
        assert_eq!(key("key[[]]=1"), Ok(Slot::Value(Value::Nil)));
        assert_eq!(
            key("key[=1"),
            Ok(Slot::Absent),
            "`key[` is a name of its own"
        );
        assert_eq!(key("k%65y=abc"), text("abc"));
        assert_eq!(key("key+=abc"), Ok(Slot::Absent));
    }

    #[test]
    fn rack3_names_and_separators() {
        let key = |q| slot(q, Name::Key, REDMINE_6);
        assert_eq!(key("x=1;key=abc"), Ok(Slot::Absent));
        assert_eq!(slot("key=abc;x=1", Name::Key, REDMINE_6), text("abc;x=1"));
        assert_eq!(key("[key]=abc"), Ok(Slot::Absent));
        assert_eq!(key("key]=abc"), Ok(Slot::Absent));
        assert_eq!(key("key[]=abc"), Ok(Slot::Value(Value::Other)));
        assert_eq!(key("key%5B%5D=abc"), Ok(Slot::Value(Value::Other)));
        assert_eq!(key("key[]"), Ok(Slot::Value(Value::Empty)));
        assert_eq!(key("]key=abc"), Ok(Slot::Absent));
        assert_eq!(
            key("key[=abc"),
            Ok(Slot::Absent),
            "`key[` is a name of its own"
        );
        assert_eq!(key("k%65y=abc"), text("abc"));
        assert_eq!(key("x=1&  key=abc"), text("abc"));
        // Nesting and conflicts as Rack 3.1 reads them.
        assert_eq!(query("a=1&a[b]=2", REDMINE_6), Err(Malformed));
        assert_eq!(query("a[]=1&a[b]=2", REDMINE_6), Err(Malformed));
        assert!(query("a[][b]=1&a[][b]=2&a[][]=3", REDMINE_6).is_ok());
        assert_eq!(key("key[a][]=1&key[a][]=2"), Ok(Slot::Value(Value::Other)));
        // Depth: Redmine 6 (Rack 3.1) stops at 32, 7.0 (Rails 8.1) at 100.
        let deep = format!("a{}=1", "[b]".repeat(40));
        assert_eq!(query(&deep, REDMINE_6), Err(Malformed));
        assert!(query(&deep, RedmineVersion::parse("7.0").unwrap()).is_ok());
        assert!(query(&deep, REDMINE_5).is_ok());
        assert_eq!(
            query(&format!("a{}=1", "[b]".repeat(100)), REDMINE_5),
            Err(Malformed)
        );
    }

    #[test]
    fn repeated_credentials_are_conflicts() {
        let key = |q| slot(q, Name::Key, REDMINE_5);
        assert_eq!(key("key=a&key=b"), Ok(Slot::Conflict));
        assert_eq!(key("key=a&key="), Ok(Slot::Conflict));
        assert_eq!(key("key=&key=a"), Ok(Slot::Conflict));
        assert_eq!(key("key=a;key=a"), text("a"));
        assert_eq!(key("key=&key=+"), text(" "), "all blank: Rack's last");
        assert_eq!(key("key[]=a&key=a"), Ok(Slot::Conflict));
        // The format is no credential: Rack's last wins.
        assert_eq!(
            slot("format=json&format=xml", Name::Format, REDMINE_5),
            text("xml")
        );
    }

    #[test]
    fn what_rack_or_rails_refuse() {
        for bad in [
            "a=%",
            "a=%zz",
            "%g0=1",
            "a=1&a[b]=2",
            "a[]=1&a[b]=2",
            "a=%FF",
            "%FF=1",
        ] {
            assert_eq!(query(bad, REDMINE_5).map(|_| bad), Err(Malformed));
        }
        // The value Rack drops is never checked by Rails.
        assert!(query("a=%FF&a=1", REDMINE_5).is_ok());
        assert!(query("a[b]=2&a=1", REDMINE_5).is_ok());
        let many = vec!["a=1"; PARAMS_LIMIT + 1].join("&");
        assert_eq!(query(&many, REDMINE_5), Err(Malformed));
        assert!(query(&many[4..], REDMINE_5).is_ok());
        let long_names = (0..70).map(|i| format!("{i:0>1000}=1")).collect::<Vec<_>>();
        assert_eq!(query(&long_names.join("&"), REDMINE_5), Err(Malformed));
        assert!(query(&long_names.join("&"), REDMINE_6).is_ok());
    }

    #[test]
    fn credential_names_for_a_proxy_to_remove() {
        let names = ["key", "access_token"];
        for pair in [
            "key=a",
            "%6Bey=a",
            "key[]=a",
            "[key]=a",
            "key]",
            "x=1;key=a",
            "x;  access_token=t",
        ] {
            assert!(names_one_of(pair, &names), "{pair}");
        }
        for pair in ["keys=a", "x=key", "monkey=1", "k%zzy=1", "ke+y=1"] {
            assert!(!names_one_of(pair, &names), "{pair}");
        }
    }

    #[test]
    fn any_release_fails_closed_where_they_differ() {
        let any = RedmineVersion::Any;
        assert_eq!(slot("x=1;key=junk", Name::Key, any), Ok(Slot::Unknown));
        assert_eq!(slot("[key]=abc", Name::Key, any), Ok(Slot::Unknown));
        assert_eq!(
            slot("x=1;format=json", Name::Format, any),
            Ok(Slot::Unknown)
        );
        assert_eq!(slot("key=abc&x=1", Name::Key, any), text("abc"));
        assert_eq!(query("a=1;a[b]=2", any), Err(Malformed), "Rack 2 raises");
    }

    fn body(method: &str, content_type: &str, bytes: &'static [u8]) -> Result<Params, Malformed> {
        let body = RequestBody {
            bytes: bytes::Bytes::from_static(bytes),
            partial: false,
        };
        let length = bytes.len().to_string();
        read(
            &Inputs {
                query: "",
                method,
                content_type: (!content_type.is_empty()).then_some(content_type),
                content_length: Some(&length),
                headers_repeated: false,
                body: Some(&body),
            },
            REDMINE_5,
        )
    }

    #[test]
    fn bodies_rails_parses() {
        let key = |method, ct, bytes| body(method, ct, bytes).map(|p| p.get(Name::Key).clone());
        assert_eq!(key("PUT", "application/json", br#"{"key":"k"}"#), text("k"));
        assert_eq!(
            key("PUT", "Text/X-JSON; charset=utf-8", br#"{"key":"k"}"#),
            text("k")
        );
        assert_eq!(
            key("PUT", "application/vnd.api+json", br#"{"key":"k"}"#),
            Ok(Slot::Absent)
        );
        assert_eq!(key("PUT", "application/xml", b"<key>k</key>"), text("k"));
        assert_eq!(
            key("PUT", "application/x-www-form-urlencoded", b"a=1;key=k"),
            Ok(Slot::Absent)
        );
        assert_eq!(
            key("PUT", "application/x-www-form-urlencoded", b"a=1&key=k\0"),
            text("k")
        );
        assert_eq!(
            key("POST", "", b"key=k"),
            Ok(Slot::Absent),
            "Rails: no content type, no form, even for a POST"
        );
        assert_eq!(key("PUT", "", b"key=k"), Ok(Slot::Absent));
        assert_eq!(
            key("PUT", "multipart/form-data", b"key=k"),
            text("k"),
            "no boundary"
        );
        assert_eq!(
            key(
                "POST",
                "multipart/form-data; boundary=b",
                b"--b\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk\r\n--b--\r\n"
            ),
            text("k")
        );
        assert_eq!(key("PUT", "application/json", b"{bad"), Err(Malformed));
        assert_eq!(key("PUT", "text/plain", b"{bad"), Ok(Slot::Absent));
    }

    #[test]
    fn the_query_wins_over_the_body() {
        let body = RequestBody {
            bytes: bytes::Bytes::from_static(br#"{"key":"frombody","format":"json"}"#),
            partial: false,
        };
        let read_with = |query| {
            read(
                &Inputs {
                    query,
                    method: "POST",
                    content_type: Some("application/json"),
                    content_length: Some("34"),
                    headers_repeated: false,
                    body: Some(&body),
                },
                REDMINE_5,
            )
            .unwrap()
        };
        assert_eq!(read_with("").get(Name::Key), &text("frombody").unwrap());
        assert_eq!(read_with("key=q").get(Name::Key), &text("q").unwrap());
        assert_eq!(read_with("key").get(Name::Key), &Slot::Value(Value::Nil));
        assert_eq!(read_with("").format(), Ok(Some(Format::Json)));
        // Without a Content-Length, whether Rails parses JSON depends on the server.
        let unsure = read(
            &Inputs {
                query: "",
                method: "POST",
                content_type: Some("application/json"),
                content_length: None,
                headers_repeated: false,
                body: Some(&body),
            },
            REDMINE_5,
        )
        .unwrap();
        assert_eq!(unsure.get(Name::Key), &Slot::Unknown);
        // Two content types: which one the Rack server passes on is not known.
        let twice = read(
            &Inputs {
                query: "",
                method: "POST",
                content_type: Some("application/json"),
                content_length: Some("34"),
                headers_repeated: true,
                body: Some(&body),
            },
            REDMINE_5,
        )
        .unwrap();
        assert_eq!(twice.get(Name::Key), &Slot::Unknown);
        // A body the proxy cut: its credentials are unknown, a format in it is not looked for.
        let cut = RequestBody {
            bytes: body.bytes.clone(),
            partial: true,
        };
        let cut = read(
            &Inputs {
                query: "",
                method: "POST",
                content_type: Some("application/json"),
                content_length: Some("99999"),
                headers_repeated: false,
                body: Some(&cut),
            },
            REDMINE_5,
        )
        .unwrap();
        assert_eq!(cut.get(Name::Key), &Slot::Unknown);
        assert_eq!(cut.format(), Ok(None));
    }
}
