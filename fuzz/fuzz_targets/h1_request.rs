//! Fuzz target `h1_request`: raw client bytes through a real fleetgate (in-process, on
//! loopback) to a byte-recording upstream; the upstream must only ever receive requests
//! the client's bytes framed. The body lives in `tests/support/h1_fuzz.rs`, which
//! `cargo test` also runs on the seed corpus (`tests/fuzz_h1.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/h1_fuzz.rs"]
mod h1_fuzz;

thread_local! {
    static HARNESS: h1_fuzz::H1Harness = h1_fuzz::H1Harness::start();
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| h.run(data));
});
