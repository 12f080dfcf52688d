//! Replays the seed corpus of the `h1_request` fuzz target (`fuzz/corpus/h1_request/seed-*`)
//! through the same body the fuzzer runs (tests/support/h1_fuzz.rs): raw client bytes
//! through a real fleetgate to a byte-recording upstream, which must only ever receive
//! requests the client's bytes framed.

#[path = "support/h1_fuzz.rs"]
mod h1_fuzz;

#[test]
fn h1_request_seeds_hold_the_framing_invariant() {
    let harness = h1_fuzz::H1Harness::start();
    let dir = std::path::Path::new("fuzz/corpus/h1_request");
    let mut seeds: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 20, "{} seeds", seeds.len());
    for seed in seeds {
        let data = std::fs::read(&seed).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness.run(&data)));
        assert!(
            result.is_ok(),
            "seed {} broke the invariant",
            seed.display()
        );
    }
}
