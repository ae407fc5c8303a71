//! The conformance suite's session-file loader (`session::parse`), which reads files
//! written by people and by other projects.
//!
//! Properties: nothing panics; a rejection names the file, points at a place that exists
//! in the input (or at the whole file) and stays short however long the input's values;
//! what loads is valid against the session schema, declares every actor its steps use,
//! survives serialising and loading again unchanged, and becomes a case.

use std::sync::LazyLock;

use compendium_conformance::case::Case;
use compendium_conformance::session::{self, SESSION_SCHEMA};
use serde_json::Value;

static REFERENCE: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| crate::reference(SESSION_SCHEMA));

/// One input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let value = serde_json::from_str::<Value>(text).ok();
    match session::parse("fuzz.json", text) {
        Err(err) => {
            assert_eq!(err.file, "fuzz.json");
            assert!(!err.message.is_empty());
            // Quoted values are elided to 400 bytes (plus the marker saying how much).
            let len = err.message.len();
            assert!(len < 450, "an error message of {len} bytes");
            let shown = err.to_string().len();
            assert!(shown < 1000, "an error of {shown} bytes");
            match &value {
                None => assert_eq!(err.pointer, "", "a pointer into text that is not JSON"),
                Some(value) => assert!(
                    err.pointer.is_empty() || value.pointer(&err.pointer).is_some(),
                    "the error points at {:?}, which the input does not have",
                    err.pointer
                ),
            }
        }
        Ok(loaded) => {
            let value = value.expect("what loads is JSON");
            assert!(REFERENCE.is_valid(&value), "loaded what the schema rejects");
            let actors = value["actors"].as_object().expect("actors is an object");
            for step in value["steps"].as_array().expect("steps is an array") {
                if let Some(actor) = step.get("actor").and_then(Value::as_str) {
                    assert!(actors.contains_key(actor), "undeclared actor {actor:?}");
                }
            }
            let again = serde_json::to_string(&loaded).expect("a loaded session serialises");
            let reloaded = session::parse("again.json", &again)
                .unwrap_or_else(|e| panic!("a loaded session does not load again: {e}"));
            assert_eq!(reloaded, loaded);
            let _ = Case::from_session(loaded);
        }
    }
}
