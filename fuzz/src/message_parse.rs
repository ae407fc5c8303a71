//! `Message::parse` against the reference: the schema compiled by jsonschema.
//!
//! Properties: parse never panics; it accepts a text exactly when the text is one JSON
//! object with no duplicate top-level member that the schema accepts and whose `msg`, if
//! any, nests at most 100 levels (rule 2.7, the schema's `x-maxDepth`, which jsonschema
//! ignores); whatever it accepts survives `to_json` → `parse` unchanged; a rejection's
//! message is short.

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
        // serde_json cannot decode it: parse must refuse it too, except inside the `msg`
        // of a ROUTE — which the relay forwards without decoding (docs/security.md, "About
        // msg") — and so of the DELIVER made from it.
        if let Ok(message) = parsed {
            assert!(
                matches!(message, Message::Route { .. } | Message::Deliver { .. }),
                "accepted undecodable {message:?}"
            );
            assert!(!msg_too_deep(text), "accepted a msg nested too deeply");
        }
        return;
    };
    let too_deep = msg_too_deep(text);
    match parsed {
        Ok(message) => {
            assert!(
                REFERENCE.is_valid(&value),
                "parse accepted what the schema rejects"
            );
            assert!(!too_deep, "parse accepted a msg nested too deeply");
            let keys: Vec<String> = crate::members::members(text)
                .expect("an object")
                .into_iter()
                .map(|(name, _)| name)
                .collect();
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
                too_deep || !REFERENCE.is_valid(&value),
                "parse rejected what the schema accepts: {violations:?}"
            );
        }
        Err(err) => panic!("a rejection this oracle does not know: {err:?}"),
    }
}

/// The nesting limit of `msg` (rule 2.7).
const MAX_MSG_DEPTH: usize = 100;

/// Whether the text's `msg` member (the first one; duplicates are refused anyway) is an
/// object nested deeper than [`MAX_MSG_DEPTH`]. Measured independently of the crate's own
/// measure: one byte at a time, with a string and an escape flag.
fn msg_too_deep(text: &str) -> bool {
    let Some(members) = crate::members::members(text) else {
        return false;
    };
    let Some((_, msg)) = members.iter().find(|(name, _)| name == "msg") else {
        return false;
    };
    if !msg.starts_with('{') {
        return false;
    }
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in msg.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest > MAX_MSG_DEPTH
}

/// libFuzzer's mutation step for this target: half of the time one member-level mutation
/// ([`crate::members`]), otherwise (and for texts that are not objects) libFuzzer's own.
pub fn mutate(data: &mut [u8], size: usize, max_size: usize, seed: u32) -> usize {
    if seed.is_multiple_of(2)
        && let Ok(text) = std::str::from_utf8(&data[..size])
        && let Some(out) = crate::members::mutate(text, seed / 2, mutate_value)
        && out.len() <= max_size
    {
        data[..out.len()].copy_from_slice(out.as_bytes());
        return out.len();
    }
    libfuzzer_sys::fuzzer_mutate(data, size, max_size)
}

/// One member's value after libFuzzer's byte mutations (room to grow included).
fn mutate_value(value: &str) -> String {
    let mut bytes = value.as_bytes().to_vec();
    let len = bytes.len();
    bytes.resize(len * 2 + 16, 0);
    let capacity = bytes.len();
    let new_len = libfuzzer_sys::fuzzer_mutate(&mut bytes, len, capacity);
    String::from_utf8_lossy(&bytes[..new_len]).into_owned()
}
