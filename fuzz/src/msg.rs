//! `msg` objects for structured scripts: a few shapes that stress byte-exact forwarding.

use arbitrary::Arbitrary;

/// A JSON object to route, rendered to exact bytes by [`Msg::render`].
#[derive(Arbitrary, Debug, Clone)]
pub enum Msg {
    Empty,
    Number(i64),
    Text(String),
    /// Objects nested this deep (mod 160: past the protocol's limit of 100, rule 2.7, and
    /// serde_json's recursion limit of 128).
    Nested(u8),
    /// Whitespace, key order and number spellings a re-encoder would change.
    Spelled,
    /// A member whose value is any text: usually not JSON, so the ROUTE is invalid.
    Raw(String),
}

impl Msg {
    /// The exact bytes of the object.
    pub fn render(&self) -> String {
        match self {
            Self::Empty => "{}".into(),
            Self::Number(n) => format!(r#"{{"n":{n}}}"#),
            Self::Text(s) => serde_json::json!({ "s": s }).to_string(),
            Self::Nested(depth) => {
                let depth = usize::from(*depth) % 160;
                format!("{}{{}}{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
            }
            Self::Spelled => r#"{ "z" : [1, 2.50, -0.0e0, 1E400] ,"a":null, "a":"dup" }"#.into(),
            Self::Raw(raw) => format!(r#"{{"r":{raw}}}"#),
        }
    }
}
