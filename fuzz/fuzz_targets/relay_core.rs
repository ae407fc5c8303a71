#![no_main]
//! See `compendium_fuzz::relay_core`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| compendium_fuzz::relay_core::run(data));
