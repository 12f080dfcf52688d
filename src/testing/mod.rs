//! Test-only support, compiled for `cargo test` (`cfg(test)`) and for the fuzz targets
//! (`cargo fuzz` builds with `--cfg fuzzing`), never into the release library.
//!
//! * [`fuzz`] holds the bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the
//!   invariants they assert.
//! * [`reference`] is a deliberately naive classifier that the compiled automaton is
//!   checked against.
//! * `seeds` (tests) replays every seed of `fuzz/corpus/<target>/` through its target's
//!   body; `props` (tests) checks the automaton against the reference matcher on
//!   generated manifests; `normalize_props` (tests) checks the path normalizer's
//!   properties on generated strings.

pub mod fuzz;
pub mod reference;

#[cfg(test)]
mod normalize_props;
#[cfg(test)]
mod props;
#[cfg(test)]
mod seeds;
