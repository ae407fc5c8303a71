//! Property tests: `parse` agrees with the JSON Schema on arbitrary input, and valid
//! messages survive a round trip. Case counts follow `PROPTEST_CASES` (default 256).
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::LazyLock;

use compendium_messages::{Address, Message, Payload, SCHEMA_JSON};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// The reference: the whole schema (the `oneOf`), compiled by jsonschema, independently
/// of the crate's per-type validators.
static REFERENCE: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(SCHEMA_JSON).unwrap();
    jsonschema::options().offline().build(&schema).unwrap()
});

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u16>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        (0u16..1000).prop_map(|n| Value::from(f64::from(n))), // integral floats: 400.0
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("INIT"),
            Just("INITRESP"),
            Just("ROUTE"),
            Just("DELIVER"),
            Just("ERR")
        ]
        .prop_map(|s| Value::String(s.into())),
        "[0-9a-fA-F]{30,33}".prop_map(Value::String),
        any::<u128>().prop_map(|n| Value::String(format!("{n:032x}"))),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop_oneof![Just("type"), Just("EpheWssAddr"), Just("msg"), Just("errCode"), Just("errMsg")]
            .prop_map(String::from),
        1 => ".{0,6}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn payload() -> impl Strategy<Value = Payload> {
    prop::collection::btree_map(".{0,6}", json_value(), 0..4)
        .prop_map(|m| Payload::from_value(&m).unwrap())
}

fn address() -> impl Strategy<Value = Address> {
    any::<u128>().prop_map(Address::from_bits)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::init()),
        address().prop_map(Message::init_resp),
        (address(), payload()).prop_map(|(a, p)| Message::route(a, p)),
        payload().prop_map(Message::deliver),
        (any::<u16>(), ".{0,20}").prop_map(|(c, m)| Message::err(c, m)),
    ]
}

proptest! {
    #[test]
    fn valid_messages_round_trip(message in message()) {
        let text = message.to_json();
        prop_assert!(REFERENCE.is_valid(&serde_json::from_str::<Value>(&text).unwrap()));
        prop_assert_eq!(Message::parse(&text).unwrap(), message);
    }

    #[test]
    fn parse_accepts_exactly_what_the_schema_accepts(value in json_value()) {
        let text = value.to_string();
        let parsed = Message::parse(&text);
        prop_assert_eq!(parsed.is_ok(), REFERENCE.is_valid(&value), "{} -> {:?}", text, parsed);
    }

    #[test]
    fn near_messages_agree_with_the_schema(
        ty in prop_oneof![Just("INIT"), Just("INITRESP"), Just("ROUTE"), Just("DELIVER"), Just("ERR"), Just("X")],
        members in prop::collection::btree_map(key(), json_value(), 0..4),
    ) {
        // Mostly-right shapes reach the per-type validators, not just the `type` check.
        let mut object: Map<String, Value> = members.into_iter().collect();
        object.insert("type".into(), json!(ty));
        let value = Value::Object(object);
        let parsed = Message::parse(&value.to_string());
        prop_assert_eq!(parsed.is_ok(), REFERENCE.is_valid(&value), "{} -> {:?}", value, parsed);
    }

    #[test]
    fn address_parsing_matches_the_schema_pattern(s in prop_oneof!["[0-9a-fA-F]{30,34}", ".{0,40}", "[0-9a-f]{32}\n?"]) {
        let as_schema = REFERENCE.is_valid(&json!({"type": "INITRESP", "EpheWssAddr": s}));
        prop_assert_eq!(s.parse::<Address>().is_ok(), as_schema, "{:?}", s);
    }

    #[test]
    fn deliver_frame_is_the_serializer_output(p in payload()) {
        prop_assert_eq!(p.deliver_frame(), Message::deliver(p.clone()).to_json());
    }

    #[test]
    fn near_routes_agree_with_the_schema(
        ty in prop_oneof![Just("\"ROUTE\""), Just("\"INIT\""), Just("\"\\u0052OUTE\""), Just("\"ROUTE \"")],
        address in prop_oneof![
            any::<u128>().prop_map(|n| format!("\"{n:032x}\"")),
            "[0-9a-fA-F]{31,33}".prop_map(|s| format!("\"{s}\"")),
            Just("\"\\u0030123456789abcdef0123456789abcdef\"".to_owned()),
            Just("12".to_owned()),
        ],
        msg in prop_oneof![Just("{}"), Just("{\"a\": [1, {\"b\": null}]}"), Just("[]"), Just("\"{}\""), Just("null")],
        extra in prop_oneof![
            Just(String::new()),
            Just(",\"x\":1".to_owned()),
            Just(",\"msg\":{}".to_owned()),
            // Version 2's numbered ROUTE (the fast path takes plain digits up to 2^53-1).
            prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                (0u64..=9_007_199_254_740_991).prop_map(|n| n.to_string()),
                Just("9007199254740992".to_owned()),
                Just("18446744073709551616".to_owned()),
                Just("1.0".to_owned()),
                Just("1e3".to_owned()),
                Just("-1".to_owned()),
                Just("-0".to_owned()),
                Just("\"7\"".to_owned()),
                Just("null".to_owned()),
            ]
            .prop_map(|seq| format!(",\"seq\":{seq}")),
        ],
        order in 0..3usize,
    ) {
        // Shapes the fast path must judge exactly as the full schema validation does.
        let members = [format!("\"type\":{ty}"), format!("\"EpheWssAddr\":{address}"), format!("\"msg\":{msg}")];
        let mut ordered = members.to_vec();
        ordered.rotate_left(order);
        let text = format!("{{{}{extra}}}", ordered.join(","));
        let parsed = Message::parse(&text);
        let value: Result<Value, _> = serde_json::from_str(&text);
        let schema_accepts = value.as_ref().is_ok_and(|v| REFERENCE.is_valid(v)) && !extra.contains("msg");
        prop_assert_eq!(parsed.is_ok(), schema_accepts, "{} -> {:?}", text, parsed);
        if let (Ok(Message::Route { msg: got, seq, .. }), Ok(v)) = (&parsed, &value) {
            prop_assert_eq!(serde_json::from_str::<Value>(got.as_str()).unwrap(), v["msg"].clone());
            // (`1.0` is an integer to JSON Schema, and to `parse`.)
            prop_assert_eq!(seq.map(|n| n as f64), v["seq"].as_f64());
        }
    }

    #[test]
    fn near_acks_agree_with_the_schema(
        seq in prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            (0u64..=9_007_199_254_740_991).prop_map(|n| n.to_string()),
            Just("9007199254740992".to_owned()),
            Just("1.0".to_owned()),
            Just("-1".to_owned()),
            Just("\"3\"".to_owned()),
            Just("[]".to_owned()),
        ],
        extra in prop_oneof![Just(""), Just(",\"x\":1"), Just(",\"seq\":2")],
        swap in any::<bool>(),
    ) {
        // The fast path's ACK must be judged exactly as the full schema validation does.
        let (a, b) = ("\"type\":\"ACK\"".to_owned(), format!("\"seq\":{seq}"));
        let text = if swap { format!("{{{b},{a}{extra}}}") } else { format!("{{{a},{b}{extra}}}") };
        let parsed = Message::parse(&text);
        let value: Result<Value, _> = serde_json::from_str(&text);
        let schema_accepts = value.as_ref().is_ok_and(|v| REFERENCE.is_valid(v)) && !extra.contains("seq");
        prop_assert_eq!(parsed.is_ok(), schema_accepts, "{} -> {:?}", text, parsed);
        if let (Ok(Message::Ack { seq: got, .. }), Ok(v)) = (&parsed, &value) {
            prop_assert_eq!(Some(*got as f64), v["seq"].as_f64());
        }
    }

    #[test]
    fn msg_nesting_is_limited_to_100_levels_exactly(
        kinds in prop::collection::vec(any::<bool>(), 90..112),
        noise in "[\\[\\]{}\"\\\\a]{0,40}",
        deliver in any::<bool>(),
    ) {
        // `msg` (level 1) holds levels 2.. as objects or arrays, with a string of brackets,
        // quotes and backslashes (JSON-escaped) beside the innermost value (rule 2.7).
        let noise = serde_json::to_string(&noise).unwrap();
        let (mut open, mut close) = (String::new(), String::new());
        for object in &kinds {
            if *object {
                open.push_str(r#"{"k":"#);
                close.insert(0, '}');
            } else {
                open.push('[');
                close.insert(0, ']');
            }
        }
        let msg = format!(r#"{{"noise":{noise},"d":{open}0{close}}}"#);
        let levels = kinds.len() + 1;
        let text = if deliver {
            format!(r#"{{"type":"DELIVER","msg":{msg}}}"#)
        } else {
            format!(r#"{{"type":"ROUTE","EpheWssAddr":"00112233445566778899aabbccddeeff","msg":{msg}}}"#)
        };
        let parsed = Message::parse(&text);
        prop_assert_eq!(parsed.is_ok(), levels <= 100, "{} levels: {:?}", levels, parsed);
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,64}") {
        let _ = Message::parse(&text);
    }
}
