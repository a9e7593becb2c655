//! JSON bodies as Rails reads them (`ActiveSupport::JSON.decode`): an object's members are
//! parameters, anything else is `_json`; numbers and `true` as their `to_s`, arrays without
//! their `null`s (Rails' deep munge).

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Malformed, Name, Params, Slot, Value};

pub(super) fn read(bytes: &[u8]) -> Result<Params, Malformed> {
    let members: Members = serde_json::from_slice(bytes).map_err(|_| Malformed)?;
    let mut params = Params::default();
    for name in Name::ALL {
        let seen = &members.by_name[name as usize];
        // Ruby's JSON keeps the last of repeated members; two different credentials are
        // ambiguous, as in a query.
        let differ = seen.windows(2).any(|w| w[0] != w[1]) && seen.iter().any(Value::is_present);
        *params.slot_mut(name) = match seen.last() {
            None => Slot::Absent,
            Some(_) if differ && name.is_credential() => Slot::Conflict,
            Some(value) => Slot::Value(value.clone()),
        };
    }
    Ok(params)
}

/// The top-level members the gate reads, every value of each in order.
#[derive(Default)]
struct Members {
    by_name: [Vec<Value>; 4],
}

impl<'de> de::Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut members = Members::default();
        while let Some(key) = map.next_key::<String>()? {
            match Name::of(&key) {
                Some(name) => {
                    let value: Member = map.next_value()?;
                    members.by_name[name as usize].push(value.0);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(members)
    }

    // Anything but an object is `{"_json": ...}`: none of the gate's names.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Members, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Members::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Members, E> {
        Ok(Members::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Members, E> {
        Ok(Members::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Members, E> {
        Ok(Members::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Members, E> {
        Ok(Members::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<Members, E> {
        Ok(Members::default())
    }

    fn visit_unit<E>(self) -> Result<Members, E> {
        Ok(Members::default())
    }
}

/// One member's value as `params[:name]` holds it.
struct Member(Value);

impl<'de> de::Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MemberVisitor)
    }
}

struct MemberVisitor;

impl<'de> Visitor<'de> for MemberVisitor {
    type Value = Member;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E>(self, text: &str) -> Result<Member, E> {
        Ok(Member(Value::Text(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<Member, E> {
        Ok(Member(Value::Text(text)))
    }

    fn visit_bool<E>(self, value: bool) -> Result<Member, E> {
        Ok(Member(if value {
            Value::Text("true".to_owned())
        } else {
            Value::Nil
        }))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Member, E> {
        Ok(Member(Value::Text(value.to_string())))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Member, E> {
        Ok(Member(Value::Text(value.to_string())))
    }

    // A fraction, an exponent, or an integer past 64 bits (Ruby keeps those exact: no API
    // key is all digits).
    fn visit_f64<E>(self, _: f64) -> Result<Member, E> {
        Ok(Member(Value::Other))
    }

    fn visit_unit<E>(self) -> Result<Member, E> {
        Ok(Member(Value::Nil))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Member, A::Error> {
        let mut kept = 0usize;
        while let Some(element) = seq.next_element::<Option<IgnoredAny>>()? {
            kept += usize::from(element.is_some());
        }
        Ok(Member(if kept == 0 {
            Value::Empty
        } else {
            Value::Other
        }))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Member, A::Error> {
        let mut members = 0usize;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            members += 1;
        }
        Ok(Member(if members == 0 {
            Value::Empty
        } else {
            Value::Other
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str) -> Result<Slot, Malformed> {
        read(body.as_bytes()).map(|p| p.get(Name::Key).clone())
    }

    #[test]
    fn members_as_rails_holds_them() {
        let text = |s: &str| Ok(Slot::Value(Value::Text(s.to_owned())));
        assert_eq!(key(r#"{"key":"abc"}"#), text("abc"));
        assert_eq!(key(r#"{"k\u0065y":"abc"}"#), text("abc"));
        assert_eq!(key(r#"{"key":123}"#), text("123"));
        assert_eq!(key(r#"{"key":true}"#), text("true"));
        assert_eq!(key(r#"{"key":false}"#), Ok(Slot::Value(Value::Nil)));
        assert_eq!(key(r#"{"key":null}"#), Ok(Slot::Value(Value::Nil)));
        assert_eq!(key(r#"{"key":1.5}"#), Ok(Slot::Value(Value::Other)));
        assert_eq!(key(r#"{"key":[null,null]}"#), Ok(Slot::Value(Value::Empty)));
        assert_eq!(key(r#"{"key":["a"]}"#), Ok(Slot::Value(Value::Other)));
        assert_eq!(key(r#"{"key":{}}"#), Ok(Slot::Value(Value::Empty)));
        assert_eq!(key(r#"{"user":{"key":"abc"}}"#), Ok(Slot::Absent));
        assert_eq!(key(r#"["key"]"#), Ok(Slot::Absent));
        assert_eq!(key(r#""key""#), Ok(Slot::Absent));
        assert_eq!(key(r#"{"key":"a","key":"b"}"#), Ok(Slot::Conflict));
        assert_eq!(key(r#"{"key":"a","key":"a"}"#), text("a"));
        assert_eq!(key(r#"{"key":"a","key":""}"#), Ok(Slot::Conflict));
        assert_eq!(key(r#"{"key":"a""#), Err(Malformed));
        assert_eq!(key("{bad"), Err(Malformed));
    }
}
