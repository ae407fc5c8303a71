//! The suite's own integrity: every rule of docs/protocol.md has a case, ids are stable
//! and unique, quoted requirements really are quotes, and bad session files get errors
//! that name the file and the field.

use std::collections::{BTreeMap, BTreeSet};

use compendium_conformance::case;
use compendium_conformance::session;

fn protocol_md() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .expect("docs/protocol.md")
}

/// The rule numbers of docs/protocol.md: every "**N.M Title.**" paragraph.
fn rules(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|line| line.strip_prefix("**"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|n| n.split('.').count() == 2 && n.split('.').all(|p| p.parse::<u32>().is_ok()))
        .map(str::to_owned)
        .collect()
}

/// Text without Markdown emphasis and with whitespace folded, for quote checks.
fn plain(text: &str) -> String {
    text.replace(['`', '*'], "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_rule_has_a_case_and_every_case_a_rule() {
    let doc = protocol_md();
    let rules = rules(&doc);
    assert!(rules.len() >= 25, "found only {rules:?}");
    let cases = case::all().expect("load");
    let covered: BTreeSet<String> = cases.iter().map(|c| c.meta.rule.clone()).collect();
    let uncovered: Vec<&String> = rules.difference(&covered).collect();
    assert!(
        uncovered.is_empty(),
        "rules without a conformance case: {uncovered:?}"
    );
    let unknown: Vec<&String> = covered.difference(&rules).collect();
    assert!(
        unknown.is_empty(),
        "cases citing rules docs/protocol.md does not have: {unknown:?}"
    );
}

#[test]
fn ids_are_unique_and_match_their_rule() {
    let mut seen = BTreeMap::new();
    for case in case::all().expect("load") {
        let id = case.meta.id.clone();
        assert!(
            id.starts_with(&format!("{}/", case.meta.rule)),
            "{id} is not under rule {}",
            case.meta.rule
        );
        assert!(seen.insert(id.clone(), ()).is_none(), "duplicate id {id}");
    }
}

#[test]
fn every_requirement_is_quoted_from_the_protocol() {
    let doc = plain(&protocol_md());
    for case in case::all().expect("load") {
        // A quote may elide with "…": each fragment must appear, in order.
        let mut rest = doc.as_str();
        for fragment in case
            .meta
            .requirement
            .split('…')
            .map(plain)
            .filter(|f| !f.is_empty())
        {
            let at = rest.find(&fragment).unwrap_or_else(|| {
                panic!(
                    "{}: its requirement is not quoted from docs/protocol.md:\n{fragment}",
                    case.meta.id
                )
            });
            rest = &rest[at + fragment.len()..];
        }
    }
}

#[test]
fn list_output() {
    let listing: String = case::all()
        .expect("load")
        .iter()
        .map(|c| {
            format!(
                "{:<8} {:<6} {}\n",
                c.meta.id, c.meta.level, c.meta.description
            )
        })
        .collect();
    insta::assert_snapshot!(listing);
}

#[test]
fn bad_session_files_name_the_file_and_the_field() {
    let base = r#"{"id":"3.3/9","rule":"3.3","level":"MUST","description":"d","requirement":"r","actors":{"A":{}},"steps":[STEP]}"#;
    let cases = [
        ("not json", "{".to_owned(), "bad.json: not JSON: EOF while parsing an object at line 1 column 1"),
        (
            "unknown action",
            base.replace("STEP", r#"{"action":"shout","actor":"A"}"#),
            r#"bad.json: /steps/0: unknown action "shout"; expected one of send, send_text, send_binary, ping, expect, expect_silence, eventually, close, drop"#,
        ),
        (
            "step field missing",
            base.replace("STEP", r#"{"action":"send","actor":"A"}"#),
            r#"bad.json: /steps/0: "json" is a required property"#,
        ),
        (
            "matcher typo",
            base.replace("STEP", r#"{"action":"expect","actor":"A","match":{"tpye":"ERR"}}"#),
            r#"bad.json: /steps/0: /match: Additional properties are not allowed ('tpye' was unexpected)"#,
        ),
        ("bad id", base.replace("3.3/9", "three").replace("STEP", r#"{"action":"close","actor":"A"}"#), r#"bad.json: /id: "three" does not match "^[0-9]+\.[0-9]+/[0-9]+$""#),
        (
            "unknown actor",
            base.replace("STEP", r#"{"action":"close","actor":"B"}"#),
            r#"bad.json: /steps/0/actor: actor "B" is not declared in "actors""#,
        ),
        (
            "unbound placeholder",
            base.replace("STEP", r#"{"action":"send","actor":"A","json":{"type":"ROUTE","EpheWssAddr":"$B","msg":{}}}"#),
            "bad.json: /steps/0: placeholder $B is used before any expectation binds it",
        ),
    ];
    for (what, text, expected) in cases {
        let err = session::parse("bad.json", &text).expect_err(what);
        assert_eq!(err.to_string(), expected, "{what}");
    }
}

#[test]
fn the_session_schema_is_the_one_codegen_used() {
    // The generated types come from this file; a drift is caught by `cargo xtask codegen
    // --check` and xtask's test. Here: the embedded copy is the file itself.
    let on_disk =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/session.schema.json"))
            .expect("read");
    assert_eq!(session::SESSION_SCHEMA, on_disk);
}

#[test]
fn errors_about_huge_values_show_both_ends_and_stay_short() {
    let base = r#"{"id":"3.3/9","rule":"3.3","level":"MUST","description":"d","requirement":"r","actors":{"A":{}},"steps":[STEP]}"#;
    let close = r#"{"action":"close","actor":"A"}"#;
    let huge = "x".repeat(100_000);
    let cases = [
        (
            "huge id",
            base.replace("3.3/9", &huge).replace("STEP", close),
            r#"bad.json: /id: "xxx"#,
            r#"xxx" does not match "^[0-9]+\.[0-9]+/[0-9]+$""#,
        ),
        (
            "huge action",
            base.replace("STEP", &format!(r#"{{"action":"{huge}","actor":"A"}}"#)),
            r#"bad.json: /steps/0: unknown action "xxx"#,
            "expected one of send, send_text, send_binary, ping, expect, expect_silence, eventually, close, drop",
        ),
        (
            "huge actor",
            base.replace("STEP", &format!(r#"{{"action":"close","actor":"{huge}"}}"#)),
            r#"bad.json: /steps/0/actor: actor "xxx"#,
            r#"xxx" is not declared in "actors""#,
        ),
        (
            "huge member name",
            base.replace(
                "STEP",
                &format!(r#"{{"action":"close","actor":"A","{huge}":1}}"#),
            ),
            "bad.json: /steps/0: Additional properties are not allowed ('xxx",
            "xxx' was unexpected)",
        ),
    ];
    for (what, text, start, end) in cases {
        let shown = session::parse("bad.json", &text)
            .expect_err(what)
            .to_string();
        assert!(shown.len() < 600, "{what}: {} bytes", shown.len());
        assert!(shown.starts_with(start), "{what}: {shown}");
        assert!(shown.ends_with(end), "{what}: {shown}");
        assert!(shown.contains(" bytes left out)…"), "{what}: {shown}");
    }
}
