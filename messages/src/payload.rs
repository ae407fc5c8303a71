//! [`Payload`]: the application's JSON object, kept as the sender's exact bytes.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::depth::deeper_than;
use crate::schema::SCHEMAS;

/// The `msg` of a ROUTE or DELIVER: any JSON object (schema `$defs/Payload`).
///
/// # Why raw bytes
/// A relay must deliver `msg` unchanged (rule 3.4). A `Payload` produced by
/// [`Message::parse`](crate::Message::parse) holds the sender's text byte for byte — key order,
/// whitespace inside the object, escapes — so a relay forwards it without decoding or
/// re-encoding it, which is both exact and cheap. Two payloads are equal when their JSON
/// texts are identical.
///
/// A payload deserialized through plain serde (for example `serde_json::from_str::<Message>`,
/// which buffers the enum's fields before it knows the variant) is re-encoded from a parsed
/// object: still the same JSON value, but not byte-identical. Use `Message::parse` on the wire.
#[derive(Clone)]
pub struct Payload(Box<RawValue>);

/// Why a value cannot be a [`Payload`].
#[derive(Debug)]
pub struct PayloadError(PayloadErrorKind);

#[derive(Debug)]
enum PayloadErrorKind {
    Json(serde_json::Error),
    NotAnObject(&'static str),
    TooDeep(usize),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            PayloadErrorKind::Json(err) => write!(f, "payload is not valid JSON: {err}"),
            PayloadErrorKind::NotAnObject(found) => {
                write!(f, "a payload must be a JSON object, this is {found}")
            }
            PayloadErrorKind::TooDeep(max) => write!(
                f,
                "a payload may nest at most {max} levels deep, itself being level 1 (rule 2.7)"
            ),
        }
    }
}

impl std::error::Error for PayloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            PayloadErrorKind::Json(err) => Some(err),
            PayloadErrorKind::NotAnObject(_) | PayloadErrorKind::TooDeep(_) => None,
        }
    }
}

impl Payload {
    /// A payload holding `text`, which must be one JSON object (surrounding whitespace is
    /// dropped; everything inside the object is kept as written).
    ///
    /// # Errors
    /// If `text` is not JSON, is JSON but not an object, or nests deeper than the
    /// protocol allows (100 levels, rule 2.7).
    pub fn from_json(text: &str) -> Result<Self, PayloadError> {
        let raw: Box<RawValue> =
            serde_json::from_str(text).map_err(|e| PayloadError(PayloadErrorKind::Json(e)))?;
        Self::from_raw(raw)
    }

    /// A payload holding `value` encoded as JSON; `value` must encode to a JSON object
    /// (a struct, a map, `serde_json::json!({...})`).
    ///
    /// # Errors
    /// If `value` cannot be encoded (e.g. a map with non-string keys), does not encode to
    /// an object, or nests deeper than the protocol allows (100 levels, rule 2.7).
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self, PayloadError> {
        let raw = serde_json::value::to_raw_value(value)
            .map_err(|e| PayloadError(PayloadErrorKind::Json(e)))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: Box<RawValue>) -> Result<Self, PayloadError> {
        match json_kind(raw.get()) {
            "an object" => {}
            other => return Err(PayloadError(PayloadErrorKind::NotAnObject(other))),
        }
        if let Some(max) = SCHEMAS.route_msg_max_depth
            && deeper_than(raw.get(), max)
        {
            return Err(PayloadError(PayloadErrorKind::TooDeep(max)));
        }
        Ok(Self(raw))
    }

    /// Wrap raw text that the caller has already checked is one JSON object.
    pub(crate) fn from_checked_raw(raw: &RawValue) -> Self {
        Self(raw.to_owned())
    }

    /// The DELIVER frame carrying this payload: the same text as
    /// `Message::deliver(payload).to_json()` (a test checks they agree), built without
    /// the general serializer because a relay writes one per message.
    #[must_use]
    pub fn deliver_frame(&self) -> String {
        const HEAD: &str = r#"{"type":"DELIVER","msg":"#;
        // Room for a version 2 relay to insert `"seq":N,` (at most 23 bytes) in place,
        // without a second allocation and copy of the frame.
        const SEQ_ROOM: usize = 24;
        let mut frame = String::with_capacity(HEAD.len() + self.as_str().len() + 1 + SEQ_ROOM);
        frame.push_str(HEAD);
        frame.push_str(self.as_str());
        frame.push('}');
        frame
    }

    /// The payload's JSON text, exactly as it will be written on the wire.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Decode the payload into `T`.
    ///
    /// # Errors
    /// If the object does not have the shape `T` expects.
    pub fn decode<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.0.get())
    }
}

/// What kind of JSON value `text` starts with, in words, for error messages.
pub(crate) fn json_kind(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "a number",
        _ => "not a JSON value",
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({})", self.as_str())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `Box<RawValue>` cannot be deserialized from serde's buffered content (internally
        // tagged enums buffer), so decode an object and re-encode it; see the type's docs.
        let object = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let raw = serde_json::value::to_raw_value(&object).map_err(serde::de::Error::custom)?;
        Self::from_raw(raw).map_err(serde::de::Error::custom)
    }
}
