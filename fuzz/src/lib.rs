//! The oracles behind the fuzz targets in `fuzz_targets/`: each takes libFuzzer's bytes,
//! drives one part of the suite, and panics (= a finding) when a property fails.
//!
//! A finding is saved by libFuzzer as `artifacts/<target>/crash-*`; `cargo xtask fuzz`
//! replays every file in `fuzz/regressions/<target>/` first, and each one found also
//! becomes a plain test in the crate it concerns (see README.md, "Fuzzing").

pub mod client_frames;
pub mod members;
pub mod message_parse;
pub mod relay_core;
pub mod session_file;
pub mod session_stream;

mod msg;

/// The reference an oracle checks against: `schema` compiled by jsonschema, offline.
fn reference(schema: &str) -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(schema).expect("the schema is JSON");
    jsonschema::options()
        .offline()
        .build(&schema)
        .expect("the schema compiles")
}
