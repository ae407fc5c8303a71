//! [`Message::parse`]: text → validated [`Message`], with precise errors.
//!
//! Three steps, each with its own error:
//! 1. split the top-level object into members whose values stay raw text ([`RawObject`]);
//! 2. validate against the schema of the message's `type` — decoding every member except
//!    opaque objects such as `msg`, which the schema never looks inside;
//! 3. build the generated [`Message`] and put the raw `msg` text back into it.

use jsonschema::error::ValidationErrorKind;
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use serde_json::value::RawValue;

use crate::depth::deeper_than;
use crate::error::{ParseError, Violation, pointer_token, truncate};
use crate::payload::{Payload, json_kind};
use crate::raw::{RawError, RawObject};
use crate::schema::{Arm, SCHEMAS};
use crate::{Address, Message};

/// The most of an offending value (or member name) an error text quotes, so an ERR frame
/// stays short whatever the input.
const MAX_QUOTE_BYTES: usize = 200;

impl Message {
    /// Parse and validate one message received as a WebSocket text frame.
    ///
    /// Accepts exactly the texts that are one JSON object, have no duplicate member
    /// names, and are valid against the protocol schema. The `msg` of a ROUTE or DELIVER
    /// keeps the sender's exact bytes (see [`Payload`]).
    ///
    /// # Errors
    /// A [`ParseError`] saying precisely what is wrong: a JSON syntax error with its
    /// position, a non-object, a duplicate member, or each schema violation with the JSON
    /// pointer of the member concerned.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let object = RawObject::parse(text).map_err(|err| match err {
            RawError::Syntax(e) => ParseError::Syntax {
                message: e.to_string(),
                line: e.line(),
                column: e.column(),
            },
            RawError::NotAnObject => ParseError::NotAnObject {
                found: json_kind(text),
            },
        })?;
        if let Some(key) = object.duplicate_key() {
            return Err(ParseError::DuplicateKey {
                key: truncate(key.to_owned(), MAX_QUOTE_BYTES),
            });
        }
        if SCHEMAS.fast_path
            && let Some(message) = fast_path(&object)
        {
            return Ok(message);
        }
        let arm = select_arm(&object)?;

        let mut instance = Map::with_capacity(object.members.len());
        let mut too_deep = Vec::new();
        for (key, raw) in &object.members {
            let opaque = arm.opaque.iter().find(|o| o.name == *key);
            let value = match opaque {
                Some(opaque) if raw.get().starts_with('{') => {
                    if let Some(max) = opaque.max_depth
                        && deeper_than(raw.get(), max)
                    {
                        too_deep.push(Violation {
                            pointer: format!("/{}", pointer_token(key)),
                            message: format!(
                                "nested more than {max} levels deep ({key} itself is level 1; rule 2.7)"
                            ),
                        });
                    }
                    Value::Object(Map::new())
                }
                _ => decode_member(key, raw.get())?,
            };
            instance.insert(key.clone().into_owned(), value);
        }
        let instance = Value::Object(instance);
        let mut violations = violations(arm, &instance);
        violations.extend(too_deep);
        violations.truncate(ParseError::MAX_VIOLATIONS);
        if !violations.is_empty() {
            return Err(ParseError::Schema { violations });
        }

        let mut message = Message::deserialize(integral_floats_as_integers(instance))
            .map_err(|e| schema_error("", e.to_string()))?;
        if let Message::Route { msg, .. } | Message::Deliver { msg, .. } = &mut message
            && let Some(raw) = object.get("msg")
        {
            *msg = Payload::from_checked_raw(raw);
        }
        Ok(message)
    }
}

/// The messages a relay sees most — INIT, ROUTE plain or numbered, and ACK — in
/// their plain form, built straight from the raw
/// members — no JSON tree, no validator run. `None` sends the message down the full path
/// (which also gives a too deeply nested `msg` its precise error).
/// Taken only when the schema says exactly these shapes (`Schemas::fast_path`); the
/// property tests check that `parse` still accepts exactly what the schema accepts.
fn fast_path(object: &RawObject<'_>) -> Option<Message> {
    let member = |name: &str| object.get(name).map(RawValue::get);
    match (object.members.len(), member("type")?) {
        (1, "\"INIT\"") => Some(Message::new_init()),
        // Version 2's numbered ROUTE (rule 6.5).
        (4, "\"ROUTE\"") if SCHEMAS.route_seq => {
            let seq = plain_seq(member("seq")?)?;
            let mut route = plain_route(object)?;
            if let Message::Route { seq: s, .. } = &mut route {
                *s = Some(seq);
            }
            Some(route)
        }
        (3, "\"ROUTE\"") => plain_route(object),
        (2, "\"ACK\"") if SCHEMAS.ack => Some(Message::new_ack(plain_seq(member("seq")?)?)),
        _ => None,
    }
}

/// A `seq` in plain digits within 0..=2^53-1; any other spelling of a number (1.0, 1e3)
/// is the schema's to judge.
fn plain_seq(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n <= crate::schema::MAX_SEQ)
}

/// A ROUTE's `EpheWssAddr` and `msg`, if plain: a string of 32 lowercase hex characters
/// (no escapes), and an object within the nesting limit.
fn plain_route(object: &RawObject<'_>) -> Option<Message> {
    let address = object
        .get("EpheWssAddr")?
        .get()
        .strip_prefix('"')?
        .strip_suffix('"')?;
    let address: Address = address.parse().ok()?;
    let msg = object.get("msg")?;
    let within_depth = SCHEMAS
        .route_msg_max_depth
        .is_none_or(|max| !deeper_than(msg.get(), max));
    (msg.get().starts_with('{') && within_depth)
        .then(|| Message::new_route(address, Payload::from_checked_raw(msg)))
}

/// The schema arm named by the message's `type`, or the error that `type` deserves.
fn select_arm(object: &RawObject<'_>) -> Result<&'static Arm, ParseError> {
    let schemas = &*SCHEMAS;
    let Some(raw) = object.get("type") else {
        return Err(schema_error(
            "/type",
            "\"type\" is a required property".into(),
        ));
    };
    match decode_member("type", raw.get())? {
        Value::String(name) => schemas.arm(&name).ok_or_else(|| {
            schema_error(
                "/type",
                format!(
                    "{:?} is not a message type (expected one of {})",
                    truncate(name, MAX_QUOTE_BYTES),
                    schemas.type_names()
                ),
            )
        }),
        other => Err(schema_error(
            "/type",
            format!(
                "{} is not of type \"string\"",
                truncate(other.to_string(), MAX_QUOTE_BYTES)
            ),
        )),
    }
}

/// Decode one member's raw text. The text is already known to be well-formed JSON, but
/// decoding can still refuse it (a number beyond f64, nesting beyond serde_json's limit).
fn decode_member(key: &str, raw: &str) -> Result<Value, ParseError> {
    serde_json::from_str(raw).map_err(|e| ParseError::Syntax {
        message: format!("in member {key:?}: {e}"),
        line: e.line(),
        column: e.column(),
    })
}

fn violations(arm: &Arm, instance: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    for error in arm.validator.iter_errors(instance) {
        let path = error.instance_path().as_str().to_owned();
        match error.kind() {
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                out.push(Violation {
                    pointer: format!("{path}/{}", pointer_token(name)),
                    message: truncate(error.to_string(), MAX_QUOTE_BYTES),
                });
            }
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for name in unexpected {
                    // The name is the sender's: quote it briefly, like any offending value.
                    let short = truncate(pointer_token(name), MAX_QUOTE_BYTES);
                    out.push(Violation {
                        pointer: format!("{path}/{short}"),
                        message: truncate(
                            format!(
                                "unexpected member {name:?} ({} has only {})",
                                arm.type_name,
                                arm.members
                                    .iter()
                                    .map(|m| format!("{m:?}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                            MAX_QUOTE_BYTES,
                        ),
                    });
                }
            }
            _ => out.push(Violation {
                pointer: path,
                message: truncate(error.to_string(), MAX_QUOTE_BYTES),
            }),
        }
        if out.len() >= ParseError::MAX_VIOLATIONS {
            out.truncate(ParseError::MAX_VIOLATIONS);
            break;
        }
    }
    out
}

fn schema_error(pointer: &str, message: String) -> ParseError {
    ParseError::Schema {
        violations: vec![Violation {
            pointer: pointer.to_owned(),
            message,
        }],
    }
}

/// JSON Schema counts `400.0` as an integer; serde's integer types do not. Converting such
/// numbers makes `parse` accept exactly what the schema accepts.
fn integral_floats_as_integers(value: Value) -> Value {
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            let as_int = n.as_f64().filter(|f| f.fract() == 0.0).and_then(|f| {
                // Exact conversions only: within ±2^53 every integral f64 is exact.
                const EXACT: f64 = 9_007_199_254_740_992.0;
                (f.abs() <= EXACT).then(|| Number::from(f as i64))
            });
            Value::Number(as_int.unwrap_or(n))
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(integral_floats_as_integers).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, integral_floats_as_integers(v)))
                .collect(),
        ),
        other => other,
    }
}
