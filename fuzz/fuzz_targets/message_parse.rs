#![no_main]
//! See `compendium_fuzz::message_parse`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| compendium_fuzz::message_parse::run(data));
libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    compendium_fuzz::message_parse::mutate(data, size, max_size, seed)
});
