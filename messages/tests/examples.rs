//! The schema's example files: every valid one parses, every invalid one is rejected with
//! a precise message (snapshotted, so a change of wording is a reviewed diff).
#![allow(clippy::unwrap_used, missing_docs)]

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use compendium_messages::{Message, ParseError, SCHEMA_JSON, TYPE_NAMES};

fn examples(kind: &str) -> Vec<(String, String)> {
    // The crate's own mirror of `schema/examples` (kept current by `cargo xtask codegen`),
    // so these tests also run in a vendored copy.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schema/examples")
        .join(kind);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn every_valid_example_parses_and_round_trips() {
    for (name, text) in examples("valid") {
        let message = Message::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = Message::parse(&message.to_json()).unwrap();
        assert_eq!(message, again, "{name}");
    }
}

#[test]
fn every_invalid_example_is_rejected_precisely() {
    // The list of types in "not a message type" errors grows with the schema; the snapshot
    // shows where it goes, and this checks it is the schema's list.
    let types = TYPE_NAMES
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Likewise the members a type allows, in "X has only ..." errors.
    let members: Vec<(String, String)> = TYPE_NAMES
        .iter()
        .map(|t| {
            (
                format!("{t} has only {}", members_of(t)),
                format!("{t} has only <its members>"),
            )
        })
        .collect();
    let mut report = String::new();
    for (name, text) in examples("invalid") {
        match Message::parse(&text) {
            Ok(m) => panic!("{name} was accepted as {m:?}"),
            Err(e) => {
                let mut e = e.to_string().replace(&types, "<the schema's types>");
                for (list, placeholder) in &members {
                    e = e.replace(list, placeholder);
                }
                writeln!(report, "{name}: {e}").unwrap();
            }
        }
    }
    insta::assert_snapshot!(report);
}

#[test]
fn route_keeps_the_senders_msg_bytes() {
    let text = fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/examples/valid/route-rich-msg.json"),
    )
    .unwrap();
    let Message::Route { msg, .. } = Message::parse(&text).unwrap() else {
        panic!("not a ROUTE")
    };
    let start = text.find("{\"z\"").unwrap();
    let end = text.find("\"},").unwrap() + 2;
    assert_eq!(msg.as_str(), &text[start..end]);
}

/// `"msg", "type"`: the members the schema allows in `type_name`, as errors list them.
fn members_of(type_name: &str) -> String {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA_JSON).unwrap();
    let arm = schema["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["properties"]["type"]["const"] == type_name)
        .unwrap();
    let names: Vec<String> = arm["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| format!("{k:?}"))
        .collect();
    names.join(", ")
}

#[test]
fn serde_alone_is_not_enough() {
    // serde ignores extra keys on a unit variant, so only schema validation rejects this.
    let text = r#"{"type":"INIT","extra":true}"#;
    assert!(serde_json::from_str::<Message>(text).is_ok());
    let err = Message::parse(text).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            r#"/extra: unexpected member "extra" (INIT has only {})"#,
            members_of("INIT")
        )
    );
}

#[test]
fn errors_carry_structure() {
    match Message::parse("{\n  \"type\": }") {
        Err(ParseError::Syntax { line, column, .. }) => assert_eq!((line, column), (2, 11)),
        other => panic!("{other:?}"),
    }
    match Message::parse(r#"{"type":"ROUTE","msg":{}}"#) {
        Err(ParseError::Schema { violations }) => {
            assert_eq!(violations.len(), 1);
            assert_eq!(violations[0].pointer, "/EpheWssAddr");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn huge_offending_values_are_quoted_briefly() {
    let big = "x".repeat(1 << 20);
    let text = format!(r#"{{"type":"ROUTE","EpheWssAddr":"{big}","msg":{{}}}}"#);
    let err = Message::parse(&text).unwrap_err().to_string();
    assert!(err.len() < 400, "{} bytes", err.len());
    assert!(err.starts_with("/EpheWssAddr: "), "{err}");
}

/// Found by the `message_parse` fuzz target: unexpected member names were quoted in full
/// in each violation's pointer, so eight long names made an error of any size.
#[test]
fn long_unexpected_member_names_are_quoted_briefly() {
    let names: String = (0..10)
        .map(|i| format!(r#","{i}{}":1"#, "n".repeat(100_000)))
        .collect();
    let text = format!(r#"{{"type":"INIT"{names}}}"#);
    let err = Message::parse(&text).unwrap_err();
    let ParseError::Schema { violations } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(violations.len(), ParseError::MAX_VIOLATIONS);
    for v in violations {
        assert!(v.pointer.len() < 250, "a {}-byte pointer", v.pointer.len());
        assert!(v.pointer.starts_with("/0nnn") || v.pointer.starts_with('/'));
    }
    let text = err.to_string();
    assert!(text.len() < 4096, "{} bytes", text.len());
}

#[test]
fn deep_nesting_never_overflows_the_stack() {
    let deep = "[".repeat(100_000);
    assert!(matches!(
        Message::parse(&deep),
        Err(ParseError::NotAnObject { .. })
    ));
    let in_member = format!(r#"{{"type":"INIT","x":{}}}"#, "[".repeat(100_000));
    assert!(Message::parse(&in_member).is_err());
    // Inside `msg` nothing is decoded, and the depth is measured without recursion.
    let deep_msg = format!(
        r#"{{"type":"DELIVER","msg":{{"a":{}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(
        Message::parse(&deep_msg).unwrap_err().to_string(),
        "/msg: nested more than 100 levels deep (msg itself is level 1; rule 2.7)"
    );
}

/// Rule 2.7: `msg` itself is level 1; 100 levels pass, 101 do not, on the fast path (a plain
/// ROUTE) and on the full path alike, whatever the brackets inside strings.
#[test]
fn msg_nests_at_most_100_levels() {
    let nested = |levels: usize| {
        let inner = levels - 1;
        format!(
            r#"{{"s":"[[[{{{{{{","d":{}{}}}"#,
            "[".repeat(inner),
            "]".repeat(inner)
        )
    };
    for (levels, ok) in [
        (1, true),
        (99, true),
        (100, true),
        (101, false),
        (102, false),
    ] {
        let msg = if levels == 1 {
            "{}".to_owned()
        } else {
            nested(levels)
        };
        for text in [
            format!(
                r#"{{"type":"ROUTE","EpheWssAddr":"00112233445566778899aabbccddeeff","msg":{msg}}}"#
            ),
            format!(
                r#"{{"msg":{msg},"type":"ROUTE","EpheWssAddr":"00112233445566778899aabbccddeeff"}}"#
            ),
            format!(r#"{{"type":"DELIVER","msg":{msg}}}"#),
        ] {
            let parsed = Message::parse(&text);
            assert_eq!(parsed.is_ok(), ok, "{levels} levels: {parsed:?}");
            if let Ok(Message::Route { msg: got, .. } | Message::Deliver { msg: got, .. }) = parsed
            {
                assert_eq!(got.as_str(), msg, "forwarded unchanged");
                // A receiver using serde_json (limit 128) can decode what was accepted.
                got.decode::<serde_json::Value>().unwrap();
            }
        }
    }
}
