//! `Message::parse` against the reference: the schema compiled by jsonschema.
//!
//! Properties: parse never panics; it accepts a text exactly when the text is one JSON
//! object with no duplicate top-level member that the schema accepts; whatever it
//! accepts survives `to_json` → `parse` unchanged; a rejection's message is short.

use std::sync::LazyLock;

use compendium_messages::{Message, ParseError, SCHEMA_JSON};
use serde_json::Value;

static REFERENCE: LazyLock<jsonschema::Validator> = LazyLock::new(|| crate::reference(SCHEMA_JSON));

/// One input.
pub fn run(data: &[u8]) {
    // Text frames are UTF-8 by the time anything parses them (tungstenite checks).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Message::parse(text);
    if let Err(err) = &parsed {
        let len = err.to_string().len();
        assert!(len < 4096, "an error message of {len} bytes");
    }
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        // serde_json cannot decode it: parse must refuse it too, except inside a ROUTE's
        // `msg`, which the relay forwards without decoding (docs/security.md, "About msg").
        if let Ok(message) = parsed {
            assert!(
                matches!(message, Message::Route { .. }),
                "accepted undecodable {message:?}"
            );
        }
        return;
    };
    match parsed {
        Ok(message) => {
            assert!(
                REFERENCE.is_valid(&value),
                "parse accepted what the schema rejects"
            );
            let keys = serde_json::from_str::<TopKeys>(text).expect("an object").0;
            let mut unique = keys.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                unique.len(),
                keys.len(),
                "parse accepted duplicate members: {keys:?}"
            );
            let again = Message::parse(&message.to_json()).expect("to_json output parses");
            assert_eq!(again, message, "round trip changed the message");
        }
        Err(ParseError::Syntax { message, .. }) => {
            panic!("parse says {message:?} about valid JSON")
        }
        Err(ParseError::NotAnObject { .. }) => assert!(!value.is_object()),
        // serde_json keeps the last duplicate, so the schema never sees the first.
        Err(ParseError::DuplicateKey { .. }) => assert!(value.is_object()),
        Err(ParseError::Schema { violations }) => {
            assert!(!violations.is_empty());
            assert!(
                !REFERENCE.is_valid(&value),
                "parse rejected what the schema accepts: {violations:?}"
            );
        }
        Err(err) => panic!("a rejection this oracle does not know: {err:?}"),
    }
}

/// The top-level member names of an object, duplicates included (serde_json's `Map`
/// would keep only the last).
struct TopKeys(Vec<String>);

impl<'de> serde::Deserialize<'de> for TopKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = TopKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TopKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(TopKeys(keys))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}
