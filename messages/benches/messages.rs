//! Micro-benchmarks of the per-message work a relay does: parse (fast path and full
//! schema validation), validation alone, and DELIVER encoding, at 256 B and 16 KiB.
//!
//!     cargo bench -p compendium-messages

use compendium_messages::{Message, Payload, SCHEMA_JSON};
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

const SIZES: [usize; 2] = [256, 16 << 10];

fn msg(size: usize) -> String {
    let head = r#"{"kind":"encrypted","seq":7,"ciphertext":""#;
    format!(
        "{head}{}\"}}",
        "A".repeat(size.saturating_sub(head.len() + 2))
    )
}

fn route(size: usize) -> String {
    format!(
        r#"{{"type":"ROUTE","EpheWssAddr":"00112233445566778899aabbccddeeff","msg":{}}}"#,
        msg(size)
    )
}

/// The relay's hot path: a plain ROUTE (taken by the fast path).
#[divan::bench(args = SIZES)]
fn parse_route(bencher: Bencher<'_, '_>, size: usize) {
    let text = route(size);
    bencher.bench(|| Message::parse(black_box(&text)));
}

/// The same ROUTE with its `type` escaped: not the plain form, so it takes the full path
/// (JSON tree, per-type schema validation, serde).
#[divan::bench(args = SIZES)]
fn parse_route_full_path(bencher: Bencher<'_, '_>, size: usize) {
    let text = route(size).replace(r#""ROUTE""#, r#""\u0052OUTE""#);
    bencher.bench(|| Message::parse(black_box(&text)));
}

/// Schema validation alone (jsonschema, the whole `oneOf`), on an already-parsed value.
#[divan::bench(args = SIZES)]
fn validate_route(bencher: Bencher<'_, '_>, size: usize) {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA_JSON).expect("schema");
    let validator = jsonschema::options()
        .offline()
        .build(&schema)
        .expect("validator");
    let value: serde_json::Value = serde_json::from_str(&route(size)).expect("json");
    bencher.bench(|| validator.is_valid(black_box(&value)));
}

/// DELIVER encoding as the relay does it.
#[divan::bench(args = SIZES)]
fn encode_deliver(bencher: Bencher<'_, '_>, size: usize) {
    let payload = Payload::from_json(&msg(size)).expect("payload");
    bencher.bench(|| black_box(&payload).deliver_frame());
}

/// DELIVER encoding through the general serializer, for comparison.
#[divan::bench(args = SIZES)]
fn encode_deliver_serde(bencher: Bencher<'_, '_>, size: usize) {
    let payload = Payload::from_json(&msg(size)).expect("payload");
    bencher.bench(|| Message::deliver(black_box(&payload).clone()).to_json());
}
