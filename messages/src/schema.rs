//! The embedded protocol schema, compiled once into one validator per message type.
//!
//! The schema's root is a `oneOf` of five objects told apart by `type`. Validating against
//! the `oneOf` reports a single useless error ("not valid under any of the schemas"), so we
//! pick the arm by `type` and validate against that arm alone: for a message whose `type`
//! names an arm, that arm accepts exactly when the `oneOf` does (the other arms' `const`
//! rejects it), and its errors name the offending member.

use std::sync::LazyLock;

use jsonschema::Validator;
use serde_json::{Map, Value};

/// The schema text, as generated into this crate by `cargo xtask codegen` from
/// `schema/message.schema.json` (the copy makes the crate build when vendored alone).
pub const SCHEMA_JSON: &str = include_str!("../schema/message.schema.json");

/// Validation data for one message type.
pub(crate) struct Arm {
    /// The wire value of `type`.
    pub(crate) type_name: String,
    /// Validates a whole message of this type.
    pub(crate) validator: Validator,
    /// Members the schema allows, in schema order (for error messages).
    pub(crate) members: Vec<String>,
    /// Members whose schema only says "a JSON object" (a `$ref` to a definition with no
    /// other constraint but, perhaps, a nesting limit): validation never looks inside them,
    /// so the parser hands the validator `{}` in their place instead of decoding a possibly
    /// large object, and checks the nesting limit itself.
    pub(crate) opaque: Vec<Opaque>,
}

/// A member the validator does not look inside (see [`Arm::opaque`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opaque {
    /// The member's name.
    pub(crate) name: String,
    /// The deepest nesting allowed, `{}` being level 1: the definition's [`MAX_DEPTH`]
    /// keyword (rule 2.7). `None`: no limit.
    pub(crate) max_depth: Option<usize>,
}

/// The schema keyword that limits how deeply an object nests (rule 2.7). JSON Schema has no
/// such keyword, so this is an extension: validators that do not know it ignore it, and
/// this crate enforces it while parsing.
pub(crate) const MAX_DEPTH: &str = "x-maxDepth";

pub(crate) struct Schemas {
    pub(crate) arms: Vec<Arm>,
    /// Whether the schema's INIT and ROUTE arms are exactly what `parse`'s fast path
    /// assumes (see [`fast_path_matches`]); if a schema change breaks that, the fast path
    /// switches itself off and every message takes the full validation.
    pub(crate) fast_path: bool,
    /// The nesting limit of ROUTE's `msg`, which the fast path checks.
    pub(crate) route_msg_max_depth: Option<usize>,
    /// Whether ROUTE's optional `seq` (version 2) is exactly the integer 0..=2^53-1 the
    /// fast path checks (see [`route_seq_matches`]), so that a numbered ROUTE takes the
    /// fast path too.
    pub(crate) route_seq: bool,
    /// Whether ACK is exactly `{"type":"ACK","seq":<that integer>}` (required, nothing
    /// else allowed), so that the fast path takes it too: a resumable client sends one per
    /// 32 messages.
    pub(crate) ack: bool,
}

impl Schemas {
    pub(crate) fn arm(&self, type_name: &str) -> Option<&Arm> {
        self.arms.iter().find(|a| a.type_name == type_name)
    }

    /// "INIT", "INITRESP", ... for error messages.
    pub(crate) fn type_names(&self) -> String {
        let names: Vec<String> = self
            .arms
            .iter()
            .map(|a| format!("{:?}", a.type_name))
            .collect();
        names.join(", ")
    }
}

/// Compiled on first use and shared by every parse.
pub(crate) static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    // The schema is a constant of this crate, not input: `embedded_schema_compiles` tests
    // that this succeeds, so it cannot fail at run time.
    compile(SCHEMA_JSON).expect("the embedded message schema compiles (tested)")
});

/// Keywords that describe without constraining.
const ANNOTATIONS: &[&str] = &["title", "description", "$comment", "examples"];

fn compile(text: &str) -> Result<Schemas, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("schema is not JSON: {e}"))?;
    let defs = root
        .get("$defs")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    let dialect = root.get("$schema").cloned();
    let one_of = root
        .get("oneOf")
        .and_then(Value::as_array)
        .ok_or("schema root has no oneOf")?;
    let mut arms = Vec::with_capacity(one_of.len());
    for arm in one_of {
        let props = arm
            .get("properties")
            .and_then(Value::as_object)
            .ok_or("a oneOf arm has no properties")?;
        let type_name = props
            .get("type")
            .and_then(|t| t.get("const"))
            .and_then(Value::as_str)
            .ok_or("a oneOf arm has no type const")?
            .to_owned();
        let opaque = props
            .iter()
            .filter_map(|(name, schema)| {
                opaque_object(schema, &defs).map(|max_depth| Opaque {
                    name: name.clone(),
                    max_depth,
                })
            })
            .collect();
        let mut doc = arm.as_object().cloned().unwrap_or_default();
        doc.insert("$defs".into(), defs.clone());
        if let Some(dialect) = &dialect {
            doc.insert("$schema".into(), dialect.clone());
        }
        let validator = jsonschema::options()
            .offline()
            .build(&Value::Object(doc))
            .map_err(|e| format!("arm {type_name}: {e}"))?;
        arms.push(Arm {
            type_name,
            validator,
            members: props.keys().cloned().collect(),
            opaque,
        });
    }
    let fast_path = fast_path_matches(&root);
    let route_seq = seq_matches(&root, "ROUTE");
    let ack = seq_matches(&root, "ACK") && ack_matches(&root);
    let route_msg_max_depth = arms
        .iter()
        .find(|arm| arm.type_name == "ROUTE")
        .and_then(|arm| arm.opaque.iter().find(|o| o.name == "msg"))
        .and_then(|msg| msg.max_depth);
    Ok(Schemas {
        arms,
        fast_path,
        route_seq,
        ack,
        route_msg_max_depth,
    })
}

/// The shapes `parse`'s fast path accepts without the general machinery:
/// `{"type":"INIT"}` and `{"type":"ROUTE","EpheWssAddr":<32 lowercase hex>,"msg":{…}}`.
/// True only if the schema says those are valid: INIT requires only `type`; ROUTE
/// requires exactly `type`, `EpheWssAddr` and `msg` and allows no member it does not list
/// (optional members are fine: a message that has one takes the full path); the address is
/// the `^[0-9a-f]{32}$` string; `msg` is an opaque object (whose nesting limit, if any, the
/// fast path checks).
fn fast_path_matches(root: &Value) -> bool {
    let defs = root.get("$defs").cloned().unwrap_or(Value::Null);
    let arm = |name: &str| {
        root.get("oneOf")?.as_array()?.iter().find(|arm| {
            arm.pointer("/properties/type/const")
                .and_then(Value::as_str)
                == Some(name)
        })
    };
    // The members the fast path builds from must be exactly the required ones; optional
    // members may exist (a message that has one takes the full path), and nothing else.
    let required_members = |arm: &Value, members: &[&str]| {
        let props = arm.get("properties").and_then(Value::as_object);
        let mut required: Vec<&str> = arm
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        required.sort_unstable();
        let mut wanted = members.to_vec();
        wanted.sort_unstable();
        props.is_some_and(|p| members.iter().all(|m| p.contains_key(*m)))
            && required == wanted
            && arm.get("additionalProperties") == Some(&Value::Bool(false))
            && arm.get("type").and_then(Value::as_str) == Some("object")
    };
    let Some(init) = arm("INIT") else {
        return false;
    };
    let Some(route) = arm("ROUTE") else {
        return false;
    };
    let address_ok = route
        .pointer("/properties/EpheWssAddr/$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
        .is_some_and(|def| {
            def.get("type").and_then(Value::as_str) == Some("string")
                && def.get("pattern").and_then(Value::as_str) == Some("^[0-9a-f]{32}$")
                && def.as_object().is_some_and(|o| {
                    o.keys().all(|k| {
                        ["type", "pattern"].contains(&k.as_str())
                            || ANNOTATIONS.contains(&k.as_str())
                    })
                })
        });
    let msg_ok = route
        .pointer("/properties/msg")
        .is_some_and(|msg| opaque_object(msg, &defs).is_some());
    required_members(init, &["type"])
        && required_members(route, &["type", "EpheWssAddr", "msg"])
        && address_ok
        && msg_ok
}

/// The largest `seq` (2^53 - 1: exact in every JSON implementation).
pub(crate) const MAX_SEQ: u64 = (1 << 53) - 1;

/// The `oneOf` arm of message type `name`.
fn arm_of<'a>(root: &'a Value, name: &str) -> Option<&'a Value> {
    root.get("oneOf")?.as_array()?.iter().find(|arm| {
        arm.pointer("/properties/type/const")
            .and_then(Value::as_str)
            == Some(name)
    })
}

/// True only if the `seq` of message type `name` is `{"$ref": "#/$defs/X"}` (plus
/// annotations) where X is exactly `{"type": "integer", "minimum": 0, "maximum": 2^53-1}`
/// (plus annotations): what `parse`'s fast path checks of a `seq` in plain digits.
fn seq_matches(root: &Value, name: &str) -> bool {
    let defs = root.get("$defs").cloned().unwrap_or(Value::Null);
    let Some(seq) = arm_of(root, name).and_then(|arm| arm.pointer("/properties/seq")) else {
        return false;
    };
    let only = |o: &Value, keys: &[&str]| {
        o.as_object().is_some_and(|o| {
            o.keys()
                .all(|k| keys.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()))
        })
    };
    let Some(def) = seq
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
    else {
        return false;
    };
    only(seq, &["$ref"])
        && only(def, &["type", "minimum", "maximum"])
        && def.get("type").and_then(Value::as_str) == Some("integer")
        && def.get("minimum").and_then(Value::as_u64) == Some(0)
        && def.get("maximum").and_then(Value::as_u64) == Some(MAX_SEQ)
}

/// True only if ACK requires exactly `type` and `seq`, has no other property and allows
/// no other member.
fn ack_matches(root: &Value) -> bool {
    let Some(ack) = arm_of(root, "ACK") else {
        return false;
    };
    let mut required: Vec<&str> = ack
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    required.sort_unstable();
    let properties = ack
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.len());
    required == ["seq", "type"]
        && properties == Some(2)
        && ack.get("additionalProperties") == Some(&Value::Bool(false))
        && ack.get("type").and_then(Value::as_str) == Some("object")
}

/// Whether `schema` is `{"$ref": "#/$defs/X"}` where X only requires "an object" (and
/// perhaps limits its nesting): `Some` of that limit if so.
fn opaque_object(schema: &Value, defs: &Value) -> Option<Option<usize>> {
    let target = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))?;
    if schema.as_object().is_some_and(|o| o.len() != 1) {
        return None;
    }
    let def = defs.get(target).and_then(Value::as_object)?;
    let only_an_object = def.get("type").and_then(Value::as_str) == Some("object")
        && def
            .keys()
            .all(|k| k == "type" || k == MAX_DEPTH || ANNOTATIONS.contains(&k.as_str()));
    if !only_an_object {
        return None;
    }
    match def.get(MAX_DEPTH) {
        None => Some(None),
        // A limit that is not a whole number >= 1 is not one this crate can enforce.
        Some(limit) => limit
            .as_u64()
            .filter(|&n| n >= 1)
            .and_then(|n| usize::try_from(n).ok())
            .map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schema_compiles() {
        let schemas = compile(SCHEMA_JSON).expect("compiles");
        let names: Vec<&str> = schemas.arms.iter().map(|a| a.type_name.as_str()).collect();
        assert_eq!(names, crate::TYPE_NAMES, "the schema's types, in order");
        let msg = Opaque {
            name: "msg".to_owned(),
            max_depth: Some(100),
        };
        assert_eq!(
            schemas.arm("ROUTE").map(|a| a.opaque.clone()),
            Some(vec![msg.clone()])
        );
        assert_eq!(
            schemas.arm("DELIVER").map(|a| a.opaque.clone()),
            Some(vec![msg])
        );
        assert_eq!(schemas.route_msg_max_depth, Some(100), "rule 2.7");
        assert!(schemas.arm("ERR").is_some_and(|a| a.opaque.is_empty()));
        assert!(
            schemas.fast_path,
            "the shipped schema enables parse's fast path"
        );
        assert!(
            schemas.route_seq,
            "the shipped schema lets a numbered ROUTE take the fast path"
        );
        assert!(
            schemas.ack,
            "the shipped schema lets ACK take the fast path"
        );
    }

    #[test]
    fn a_schema_change_switches_the_fast_path_off_unless_it_only_adds_optional_members() {
        let edited = |edit: &dyn Fn(&mut Value)| {
            let mut root: Value = serde_json::from_str(SCHEMA_JSON).unwrap();
            edit(&mut root);
            fast_path_matches(&root)
        };
        fn route(root: &mut Value) -> &mut Value {
            root["oneOf"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|a| a["properties"]["type"]["const"] == "ROUTE")
                .unwrap()
        }
        assert!(edited(&|_| {}));
        // An optional member: plain ROUTEs keep the fast path; ones with it take the full.
        assert!(edited(&|root| {
            route(root)["properties"]["ttlMs"] = serde_json::json!({"type": "integer"});
        }));
        // A required member, or a different address: off.
        assert!(!edited(&|root| {
            let route = route(root);
            route["properties"]["seq"] = serde_json::json!({"type": "integer"});
            route["required"].as_array_mut().unwrap().push("seq".into());
        }));
        assert!(!edited(&|root| {
            root["$defs"]["EpheWssAddr"]["pattern"] = serde_json::json!("^[0-9a-f]{64}$");
        }));
        assert!(!edited(&|root| {
            route(root)["additionalProperties"] = serde_json::json!(true);
        }));
    }

    #[test]
    fn a_constrained_payload_is_not_opaque() {
        let reference = serde_json::json!({"$ref": "#/$defs/P"});
        let defs = serde_json::json!({"P": {"type": "object", "required": ["x"]}});
        assert_eq!(opaque_object(&reference, &defs), None);
        let defs = serde_json::json!({"P": {"type": "object", "title": "P"}});
        assert_eq!(opaque_object(&reference, &defs), Some(None));
        let defs = serde_json::json!({"P": {"type": "object", "x-maxDepth": 7}});
        assert_eq!(opaque_object(&reference, &defs), Some(Some(7)));
        let defs = serde_json::json!({"P": {"type": "object", "x-maxDepth": 0}});
        assert_eq!(
            opaque_object(&reference, &defs),
            None,
            "no limit it can enforce"
        );
    }
}
