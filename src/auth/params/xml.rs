//! XML bodies as Redmine reads them (actionpack-xml_parser: `Hash.from_xml`): the root element
//! is the one top-level parameter, so `<key>K</key>` is `params[:key]`. Only the root's own
//! text and a few `type`/`nil` attributes are read; where `Hash.from_xml` would make something
//! the gate does not model of a root it reads, the parameter is unknown (fail closed).

use super::{unknown, Malformed, Name, Params, Slot, Value};

/// Nesting beyond this is more than any Redmine API body has; roxmltree stops there too.
const NODES_LIMIT: u32 = 1_000_000;

pub(super) fn read(bytes: &[u8]) -> Result<Params, Malformed> {
    // roxmltree reads UTF-8 only; REXML follows the declared encoding.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(unknown());
    };
    let declared = text.trim_start().starts_with("<?xml")
        && text.split("?>").next().is_some_and(|decl| {
            decl.contains("encoding") && !decl.to_ascii_lowercase().contains("utf-8")
        });
    if declared {
        return Ok(unknown());
    }
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        nodes_limit: NODES_LIMIT,
    };
    let document = roxmltree::Document::parse_with_options(text, options).map_err(|_| Malformed)?;
    let root = document.root_element();
    // `Hash.from_xml` turns `-` into `_` in names.
    let name = root.tag_name().name().replace('-', "_");
    let Some(name) = Name::of(&name) else {
        return Ok(Params::default());
    };
    let mut params = Params::default();
    // Entities from a DTD, namespaces and prefixes: REXML's reading is not modelled.
    let modelled = !text.contains("<!DOCTYPE")
        && root.tag_name().namespace().is_none()
        && root.namespaces().len() == 0
        && root.attributes().all(|a| a.namespace().is_none());
    *params.slot_mut(name) = if modelled {
        typecast(root)?
    } else {
        Slot::Unknown
    };
    Ok(params)
}

/// The root's value after ActiveSupport's `XMLConverter`.
fn typecast(root: roxmltree::Node<'_, '_>) -> Result<Slot, Malformed> {
    let attribute = |name: &str| {
        root.attributes()
            .find(|a| a.name() == name)
            .map(|a| a.value())
    };
    let children: Vec<String> = root
        .children()
        .filter(|c| c.is_element())
        .map(|c| c.tag_name().name().replace('-', "_"))
        .collect();
    // Children named like the attributes the converter reads, or like each other's
    // attributes, merge into arrays: not modelled.
    if children.iter().any(|c| {
        matches!(c.as_str(), "type" | "nil" | "__content__")
            || root.attributes().any(|a| a.name().replace('-', "_") == *c)
    }) {
        return Ok(Slot::Unknown);
    }
    let texts: Vec<&str> = root
        .children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect();
    let joined: String = texts.concat();
    // With children, the text counts only when it is not blank; without, any text node.
    let content = if children.is_empty() {
        (!texts.is_empty()).then_some(joined)
    } else {
        (!super::is_blank(&joined)).then_some(joined)
    };
    let keys = root.attributes().len() + children.len() + usize::from(content.is_some());
    let kind = attribute("type");
    if matches!(kind, Some("symbol" | "yaml")) {
        return Err(Malformed);
    }
    if kind == Some("array") {
        return Ok(if children.is_empty() {
            Slot::Value(Value::Empty)
        } else {
            Slot::Unknown
        });
    }
    if kind == Some("file") {
        return Ok(Slot::Value(Value::Other));
    }
    if let Some(content) = &content {
        if keys == 1 || !super::is_blank(content) {
            return Ok(match kind {
                None | Some("string") => Slot::Value(Value::Text(content.clone())),
                Some("integer") => Slot::Value(Value::Text(ruby_to_i(content))),
                Some("boolean") => Slot::Value(if matches!(content.trim(), "1" | "true") {
                    Value::Text("true".to_owned())
                } else {
                    Value::Nil
                }),
                Some(
                    "date" | "datetime" | "dateTime" | "float" | "decimal" | "base64Binary"
                    | "binary",
                ) => Slot::Unknown,
                // No parser for the type: the text as it is.
                Some(_) => Slot::Value(Value::Text(content.clone())),
            });
        }
    }
    let nil = attribute("nil") == Some("true");
    if kind == Some("string") && !nil {
        return Ok(Slot::Value(Value::Text(String::new())));
    }
    let nothing = keys == 0 || nil;
    let garbage = kind.is_some() && keys == 1;
    Ok(Slot::Value(if !nothing && !garbage {
        Value::Other
    } else {
        Value::Nil
    }))
}

/// Ruby's `String#to_i` as decimal text: leading white space, a sign, digits (single `_`
/// between them), up to the first other character; nothing is `0`.
fn ruby_to_i(text: &str) -> String {
    let text = text.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let bytes = rest.as_bytes();
    let mut digits = String::new();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'0'..=b'9' => digits.push(b as char),
            b'_' if i > 0
                && bytes[i - 1].is_ascii_digit()
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {}
            _ => break,
        }
    }
    let digits = digits.trim_start_matches('0');
    match (digits.is_empty(), negative) {
        (true, _) => "0".to_owned(),
        (false, true) => format!("-{digits}"),
        (false, false) => digits.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(body: &str, name: Name) -> Result<Slot, Malformed> {
        read(body.as_bytes()).map(|p| p.get(name).clone())
    }

    fn key(body: &str) -> Result<Slot, Malformed> {
        slot(body, Name::Key)
    }

    #[test]
    fn the_root_is_the_parameter() {
        let text = |s: &str| Ok(Slot::Value(Value::Text(s.to_owned())));
        assert_eq!(key("<key>abc</key>"), text("abc"));
        assert_eq!(
            key("<?xml version=\"1.0\"?>\n<key>a&amp;b</key>"),
            text("a&b")
        );
        assert_eq!(key("<key><![CDATA[abc]]></key>"), text("abc"));
        assert_eq!(key("<user><key>abc</key></user>"), Ok(Slot::Absent));
        assert_eq!(key("<key type=\"integer\"> 0012_3x</key>"), text("123"));
        assert_eq!(key("<key type=\"boolean\">true</key>"), text("true"));
        assert_eq!(
            key("<key type=\"boolean\">no</key>"),
            Ok(Slot::Value(Value::Nil))
        );
        assert_eq!(key("<key nil=\"true\"/>"), Ok(Slot::Value(Value::Nil)));
        assert_eq!(key("<key/>"), Ok(Slot::Value(Value::Nil)));
        assert_eq!(key("<key type=\"string\"/>"), text(""));
        assert_eq!(key("<key> </key>"), text(" "));
        assert_eq!(key("<key foo=\"bar\">abc</key>"), text("abc"));
        assert_eq!(key("<key foo=\"bar\"/>"), Ok(Slot::Value(Value::Other)));
        assert_eq!(key("<key><a>1</a></key>"), Ok(Slot::Value(Value::Other)));
        assert_eq!(key("<key type=\"array\"/>"), Ok(Slot::Value(Value::Empty)));
        assert_eq!(key("<key type=\"yaml\">x</key>"), Err(Malformed));
        assert_eq!(key("<key xmlns=\"urn:x\">abc</key>"), Ok(Slot::Unknown));
        assert_eq!(
            key("<key type=\"date\">2020-01-01</key>"),
            Ok(Slot::Unknown)
        );
        assert_eq!(
            slot("<access-token>t</access-token>", Name::AccessToken),
            text("t")
        );
        assert_eq!(slot("<format>json</format>", Name::Format), text("json"));
        assert_eq!(key("<key>abc"), Err(Malformed));
        assert_eq!(key("<a/><b/>"), Err(Malformed));
    }
}
