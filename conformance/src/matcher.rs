//! Does a received frame satisfy a session's [`Matcher`]?

use compendium_messages::Message;

use crate::bindings::Bindings;
use crate::jsoneq::{Exact, expect_eq};
use crate::peer::{Received, clip};
use crate::session::{Matcher, MatcherFrame};

/// The frame kind a matcher expects.
pub(crate) fn expected_kind(matcher: &Matcher) -> MatcherFrame {
    matcher.frame.unwrap_or(MatcherFrame::Text)
}

/// Check `frame` against `matcher`, binding placeholders.
///
/// # Errors
/// The first unmet requirement, with what was received.
pub fn check(matcher: &Matcher, frame: &Received, bindings: &mut Bindings) -> Result<(), String> {
    let kind = expected_kind(matcher);
    match (kind, frame) {
        (MatcherFrame::Text, Received::Text(text)) => check_text(matcher, text, bindings),
        (MatcherFrame::Binary, Received::Binary(_)) => Ok(()),
        (MatcherFrame::Pong, Received::Pong(payload)) => match &matcher.text {
            Some(text) if text.as_bytes() != payload.as_slice() => Err(format!(
                "expected pong {text:?}, got pong {:?}",
                String::from_utf8_lossy(payload)
            )),
            _ => Ok(()),
        },
        (MatcherFrame::Close, Received::Close(close)) => match (matcher.close_code, close) {
            (None, _) => Ok(()),
            (Some(want), Some((code, _))) if i64::from(*code) == want => Ok(()),
            (Some(want), _) => Err(format!("expected close {want}, got {frame}")),
        },
        (kind, frame) => Err(format!("expected a {kind} frame, got {frame}")),
    }
}

fn check_text(matcher: &Matcher, text: &str, bindings: &mut Bindings) -> Result<(), String> {
    if let Some(want) = matcher.type_ {
        match Message::parse(text) {
            Ok(message) if message.type_name() == want.to_string() => {}
            Ok(message) => {
                return Err(format!(
                    "expected {want}, got {}: {}",
                    message.type_name(),
                    clip(text)
                ));
            }
            Err(err) => {
                return Err(format!(
                    "expected a valid {want}, got an invalid message ({err}): {}",
                    clip(text)
                ));
            }
        }
    }
    let needs_tree = matcher.json.is_some()
        || matcher.json_text.is_some()
        || !matcher.fields.is_empty()
        || !matcher.patterns.is_empty();
    let tree = if needs_tree {
        Some(Exact::parse(text).map_err(|e| format!("expected JSON, got ({e}): {}", clip(text)))?)
    } else {
        None
    };
    if let (Some(want), Some(tree)) = (&matcher.json, &tree) {
        expect_eq(want, tree, bindings).map_err(|e| format!("{e}; frame: {}", clip(text)))?;
    }
    if let (Some(want), Some(tree)) = (&matcher.json_text, &tree) {
        let want = bindings.substitute_text(want)?;
        let want_tree =
            Exact::parse(&want).map_err(|e| format!("the session's json_text is not JSON: {e}"))?;
        if &want_tree != tree {
            return Err(format!(
                "expected (JSON-equal) {}, got {}",
                clip(&want),
                clip(text)
            ));
        }
    }
    if let Some(tree) = &tree {
        for (name, want) in &matcher.fields {
            let got = tree
                .member(name)
                .ok_or_else(|| format!("expected member {name:?}, frame: {}", clip(text)))?;
            expect_eq(want, got, bindings).map_err(|e| format!("member {name:?}: {e}"))?;
        }
        let mut patterns: Vec<_> = matcher.patterns.iter().collect();
        patterns.sort();
        for (name, pattern) in patterns {
            let regex = regex::Regex::new(pattern)
                .map_err(|e| format!("the session's pattern {pattern:?} is invalid: {e}"))?;
            match tree.member(name) {
                Some(Exact::String(value)) if regex.is_match(value) => {}
                Some(Exact::String(value)) => {
                    return Err(format!(
                        "member {name:?} = {value:?} does not match /{pattern}/"
                    ));
                }
                _ => {
                    return Err(format!(
                        "expected a string member {name:?}, frame: {}",
                        clip(text)
                    ));
                }
            }
        }
    }
    if !matcher.raw_members.is_empty() {
        let members: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
            serde_json::from_str(text)
                .map_err(|e| format!("expected a JSON object ({e}): {}", clip(text)))?;
        let mut wanted: Vec<_> = matcher.raw_members.iter().collect();
        wanted.sort();
        for (name, want) in wanted {
            let want = bindings.substitute_text(want)?;
            match members.get(name) {
                Some(raw) if raw.get() == want => {}
                Some(raw) => {
                    return Err(format!(
                        "member {name:?} is not byte-identical: expected {}, got {}",
                        clip(&want),
                        clip(raw.get())
                    ));
                }
                None => return Err(format!("expected member {name:?}, frame: {}", clip(text))),
            }
        }
    }
    if let Some(want) = &matcher.text {
        let want = bindings.substitute_text(want)?;
        if want != text {
            return Err(format!(
                "expected exactly {}, got {}",
                clip(&want),
                clip(text)
            ));
        }
    }
    Ok(())
}
