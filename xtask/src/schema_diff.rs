//! What changed in the message schema since the last `cargo xtask codegen`, and what each
//! change means for compatibility (docs/protocol.md section 5). The "before" is the copy
//! codegen mirrored into `messages/schema/` the last time it ran.

use std::fmt;

use serde_json::Value;

/// One change to one message type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// The message type concerned (its `type` value).
    pub(crate) message: String,
    /// What changed and what it means.
    pub(crate) what: String,
    /// Whether it breaks existing peers or code (a new protocol version, section 5).
    pub(crate) breaking: bool,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = if self.breaking {
            "BREAKING"
        } else {
            "compatible"
        };
        write!(f, "{class}: {}: {}", self.message, self.what)
    }
}

/// A shape of the schema, as far as compatibility goes.
struct Shape<'a> {
    direction: &'a str,
    members: Vec<&'a str>,
    required: Vec<&'a str>,
}

fn shapes(schema: &Value) -> Vec<(&str, Shape<'_>)> {
    let Some(arms) = schema.get("oneOf").and_then(Value::as_array) else {
        return Vec::new();
    };
    arms.iter()
        .filter_map(|arm| {
            let name = arm.pointer("/properties/type/const")?.as_str()?;
            let members = arm
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| {
                    p.keys()
                        .map(String::as_str)
                        .filter(|k| *k != "type")
                        .collect()
                })
                .unwrap_or_default();
            let required = arm
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let direction = arm
                .get("x-direction")
                .and_then(Value::as_str)
                .unwrap_or("(no x-direction)");
            Some((
                name,
                Shape {
                    direction,
                    members,
                    required,
                },
            ))
        })
        .collect()
}

/// The changes from `old` to `new`, per message type in the new schema's order, then the
/// removed types.
pub(crate) fn changes(old: &Value, new: &Value) -> Vec<Change> {
    let (old, new) = (shapes(old), shapes(new));
    let mut out = Vec::new();
    let change = |message: &str, breaking: bool, what: String| Change {
        message: message.to_owned(),
        what,
        breaking,
    };
    for (name, shape) in &new {
        let constructor = format!("Message::new_{}", name.to_lowercase());
        let Some((_, before)) = old.iter().find(|(n, _)| n == name) else {
            let what = match shape.direction {
                "client-to-server" => format!(
                    "new client-to-server type: older relays answer it ERR 400 (unknown type, \
                     rule 3.7); compendium-server answers ERR 501 (rule 3.12) until relay.rs \
                     implements it; build it with {constructor}"
                ),
                _ => format!(
                    "new server-to-client type: clients that do not know it reject it; send it \
                     only to clients that asked for it (docs/protocol.md section 5); build it \
                     with {constructor}"
                ),
            };
            out.push(change(name, false, what));
            continue;
        };
        if before.direction != shape.direction {
            out.push(change(
                name,
                true,
                format!(
                    "direction changed from {} to {}",
                    before.direction, shape.direction
                ),
            ));
        }
        let senders = if shape.direction == "client-to-server" {
            "client"
        } else {
            "server"
        };
        for member in &shape.members {
            let required = shape.required.contains(member);
            if !before.members.contains(member) {
                out.push(if required {
                    change(
                        name,
                        true,
                        format!(
                            "new required member {member:?}: every {senders} that sends {name} \
                             must send it, and every receiver of the old shape refuses it; \
                             {constructor} takes it as a new parameter, so the build fails \
                             wherever {name} is constructed"
                        ),
                    )
                } else if shape.direction == "client-to-server" {
                    change(
                        name,
                        false,
                        format!(
                            "new optional member {member:?}: older relays answer ERR 400 to a \
                             {name} that has it (rule 2.2), so clients send it only to relays \
                             that know it; {constructor} leaves it absent"
                        ),
                    )
                } else {
                    change(
                        name,
                        false,
                        format!(
                            "new optional member {member:?}: strict clients reject a {name} \
                             that has it, so relays send it only to clients that asked for it \
                             (docs/protocol.md section 5); {constructor} leaves it absent"
                        ),
                    )
                });
            } else if required != before.required.contains(member) {
                let what = if required {
                    format!("member {member:?} became required")
                } else {
                    format!("member {member:?} became optional")
                };
                out.push(change(name, true, what));
            }
        }
        for member in &before.members {
            if !shape.members.contains(member) {
                out.push(change(name, true, format!("member {member:?} removed")));
            }
        }
    }
    for (name, _) in &old {
        if !new.iter().any(|(n, _)| n == name) {
            out.push(change(name, true, "type removed".to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema(arms: Value) -> Value {
        json!({ "oneOf": arms })
    }

    fn route(extra: Value, required: &[&str]) -> Value {
        let mut properties = json!({"type": {"const": "ROUTE"}, "msg": {}});
        if let (Some(p), Some(e)) = (properties.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        json!({"x-direction": "client-to-server", "properties": properties, "required": required})
    }

    #[test]
    fn each_kind_of_change_is_classified() {
        let old = schema(json!([route(json!({}), &["type", "msg"])]));
        let optional = schema(json!([route(json!({"ttlMs": {}}), &["type", "msg"])]));
        let required = schema(json!([route(json!({"seq": {}}), &["type", "msg", "seq"])]));
        let ping = schema(json!([
            route(json!({}), &["type", "msg"]),
            {"x-direction": "client-to-server", "properties": {"type": {"const": "PING"}}}
        ]));
        let summary = |new: &Value| -> Vec<String> {
            changes(&old, new).iter().map(ToString::to_string).collect()
        };
        assert!(changes(&old, &old).is_empty());
        let optional = summary(&optional);
        assert_eq!(optional.len(), 1);
        assert!(
            optional[0].starts_with("compatible: ROUTE: new optional member \"ttlMs\""),
            "{optional:?}"
        );
        let required = summary(&required);
        assert!(
            required[0].starts_with("BREAKING: ROUTE: new required member \"seq\""),
            "{required:?}"
        );
        assert!(required[0].contains("the build fails wherever ROUTE is constructed"));
        let ping = summary(&ping);
        assert!(
            ping[0].starts_with("compatible: PING: new client-to-server type"),
            "{ping:?}"
        );
        assert_eq!(
            summary(&schema(json!([]))),
            ["BREAKING: ROUTE: type removed"]
        );
    }
}
