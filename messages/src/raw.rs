//! The first step of parsing: split a message's top-level object into members whose
//! values stay raw JSON text, so `msg` can be forwarded byte for byte and never decoded.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of a JSON object in document order, values unparsed.
pub(crate) struct RawObject<'a> {
    pub(crate) members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// How the input failed to be a JSON object.
pub(crate) enum RawError {
    /// Not JSON at all (serde_json's message carries line and column).
    Syntax(serde_json::Error),
    /// JSON, but the top-level value is not an object.
    NotAnObject,
}

impl<'a> RawObject<'a> {
    pub(crate) fn parse(text: &'a str) -> Result<Self, RawError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let object = de
            .deserialize_map(ObjectVisitor)
            .and_then(|object| de.end().map(|()| object))
            .map_err(|err| match err.classify() {
                serde_json::error::Category::Data => RawError::NotAnObject,
                _ => RawError::Syntax(err),
            })?;
        Ok(object)
    }

    /// The first member named `name` (duplicates are reported separately).
    pub(crate) fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }

    /// The first key that occurs more than once, if any.
    pub(crate) fn duplicate_key(&self) -> Option<&str> {
        // Valid messages have at most three members; a hostile one may have a million,
        // so only small objects get the quadratic scan.
        if self.members.len() <= 16 {
            for (i, (key, _)) in self.members.iter().enumerate() {
                if self.members[..i].iter().any(|(k, _)| k == key) {
                    return Some(key);
                }
            }
            None
        } else {
            let mut seen = std::collections::HashSet::with_capacity(self.members.len());
            self.members
                .iter()
                .map(|(k, _)| k.as_ref())
                .find(|k| !seen.insert(*k))
        }
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = RawObject<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4).min(16));
        while let Some(Key(key)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            members.push((key, value));
        }
        Ok(RawObject { members })
    }
}

/// A key borrowed from the input when it has no escapes, owned otherwise.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}
