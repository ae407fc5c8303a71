#![no_main]
//! See `compendium_fuzz::session_stream`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| compendium_fuzz::session_stream::run(data));
