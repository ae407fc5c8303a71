#![no_main]
//! See `compendium_fuzz::session_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| compendium_fuzz::session_file::run(data));
