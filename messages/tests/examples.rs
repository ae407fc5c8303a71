//! The schema's example files: every valid one parses, every invalid one is rejected with
//! a precise message (snapshotted, so a change of wording is a reviewed diff).
#![allow(clippy::unwrap_used, missing_docs)]

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use compendium_messages::{Message, ParseError};

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
    let mut report = String::new();
    for (name, text) in examples("invalid") {
        match Message::parse(&text) {
            Ok(m) => panic!("{name} was accepted as {m:?}"),
            Err(e) => writeln!(report, "{name}: {e}").unwrap(),
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

#[test]
fn serde_alone_is_not_enough() {
    // serde ignores extra keys on a unit variant, so only schema validation rejects this.
    let text = r#"{"type":"INIT","extra":true}"#;
    assert!(serde_json::from_str::<Message>(text).is_ok());
    let err = Message::parse(text).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"/extra: unexpected member "extra" (INIT has only "type")"#
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
    // Inside `msg` the relay does not decode: a deep but well-formed object passes through.
    let deep_msg = format!(
        r#"{{"type":"DELIVER","msg":{{"a":{}{}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(Message::parse(&deep_msg).is_ok());
}
