//! Fuzz target `classify`: the body (and its invariants) lives in
//! `fleetgate::fuzz_support::classify`, which tests/fuzz_seeds.rs also runs on the seed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fleetgate::fuzz_support::classify(data);
});
