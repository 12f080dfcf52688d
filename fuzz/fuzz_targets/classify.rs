//! Fuzz target `classify`: the body (and its invariants) lives in
//! `fleetgate::testing::fuzz::classify` (src/testing/fuzz.rs), which `cargo test` also runs
//! on the seed corpus (src/testing/seeds.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fleetgate::testing::fuzz::classify(data);
});
