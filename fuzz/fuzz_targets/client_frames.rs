#![no_main]
//! See `compendium_fuzz::client_frames`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| compendium_fuzz::client_frames::run(data));
