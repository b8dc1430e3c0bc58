#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kes_fuzz::ciphertext(data));
