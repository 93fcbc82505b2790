#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Filled in with the parser this target exercises.
    let _ = data;
});
