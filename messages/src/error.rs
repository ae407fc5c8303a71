//! [`ParseError`]: everything that can be wrong with a received message, precisely.

use std::fmt;

/// Why a text frame is not a valid message. Its `Display` is the `errMsg` a relay sends
/// back with ERR 400 (rule 3.7), so it names the offending member by JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The text is not JSON. `message` is serde_json's, including line and column.
    Syntax {
        /// What the JSON parser found wrong, with its position.
        message: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// The text is JSON, but not an object (rule 1.2).
    NotAnObject {
        /// What it is instead, in words: "an array", "a string", ...
        found: &'static str,
    },
    /// The object names the same member twice (rule 2.5).
    DuplicateKey {
        /// The repeated member name.
        key: String,
    },
    /// The object does not match the schema of its `type` (or `type` itself is wrong).
    Schema {
        /// Each violation found, at most [`ParseError::MAX_VIOLATIONS`] of them.
        violations: Vec<Violation>,
    },
}

impl ParseError {
    /// Schema errors beyond this many are not reported: one hostile message must not
    /// produce an unbounded reply.
    pub const MAX_VIOLATIONS: usize = 8;
}

/// One schema violation: where (a JSON pointer into the message) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer (RFC 6901) to the offending member, e.g. `/EpheWssAddr`; for a missing
    /// member, the pointer it would have.
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.message)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { message, .. } => write!(f, "invalid JSON: {message}"),
            Self::NotAnObject { found } => {
                write!(f, "a message must be a JSON object, this is {found}")
            }
            Self::DuplicateKey { key } => write!(f, "duplicate member {key:?}"),
            Self::Schema { violations } => {
                for (i, v) in violations.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{v}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Escape one member name for use in a JSON pointer (RFC 6901 section 3).
pub(crate) fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Cut `text` to at most `max` bytes on a character boundary, marking the cut: an error
/// message quotes the offending value, which may be a megabyte long.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("… (truncated)");
    }
    text
}
