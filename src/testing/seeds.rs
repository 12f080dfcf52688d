//! Replays every seed of `fuzz/corpus/<target>/` through the body of that fuzz target
//! ([`super::fuzz`]), as an ordinary test: no panic, and every invariant the fuzz target
//! asserts holds. Each target must have seeds, and every corpus directory must belong to
//! a known target.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use super::fuzz;

/// The body of one fuzz target.
type Body = fn(&[u8]);

const TARGETS: &[(&str, Body)] = &[
    ("normalize_path", fuzz::normalize_path),
    ("parse_pattern", fuzz::parse_pattern),
    ("load_manifest", fuzz::load_manifest),
    ("classify", fuzz::classify),
];

fn corpus_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus"))
}

fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = corpus_root().join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Run every seed of `target`; report all failing seeds at once.
fn replay(target: &str) {
    let run = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, run)| *run)
        .expect("known target");
    let files = seeds(target);
    assert!(
        files.len() >= 10,
        "{target}: only {} seeds in fuzz/corpus/{target}",
        files.len()
    );
    let mut failed = Vec::new();
    for file in &files {
        let data = fs::read(file).expect("read seed");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{}: {msg}", file.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} seeds failed:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn normalize_path_seeds() {
    replay("normalize_path");
}

#[test]
fn parse_pattern_seeds() {
    replay("parse_pattern");
}

#[test]
fn load_manifest_seeds() {
    replay("load_manifest");
}

#[test]
fn classify_seeds() {
    replay("classify");
}

#[test]
fn every_corpus_directory_is_a_target() {
    for entry in fs::read_dir(corpus_root()).expect("fuzz/corpus") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // h1_request drives a whole server, so its seeds replay in tests/fuzz_h1.rs.
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name) || name == "h1_request",
            "fuzz/corpus/{name} has no fuzz target"
        );
    }
}

/// The shipped example manifest (`routes/`, once it exists) satisfies the loader
/// invariants too.
#[test]
fn manifest_directories_satisfy_loader_invariants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [root.join("routes")] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        let mut input = String::new();
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            input.push_str(&format!("#--- {name}\n"));
            input.push_str(&fs::read_to_string(&file).expect("read manifest"));
            if !input.ends_with('\n') {
                input.push('\n');
            }
        }
        fuzz::load_manifest(input.as_bytes());
    }
}
