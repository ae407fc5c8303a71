#![no_main]
//! See `compendium_fuzz::message_parse`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| compendium_fuzz::message_parse::run(data));
