//! The benchmarks in CI: every bench target builds (`cargo bench --no-run`), and the load
//! harness's fleetgate path answers (`benches/load/run.sh --smoke`: fleetgate in front of
//! the in-repo upstream, a few curl requests over HTTP/1.1 and h2c). Timings are never
//! asserted here; the figures come from the harness itself (docs/performance.md).
//!
//! Both build in their own target directory, `target/ci-bench`, so they never wait for
//! the lock of the directory this test itself was built in.

use std::path::Path;
use std::process::Command;

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir());
    c
}

fn target_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-bench")
}

#[test]
fn benches_build_and_the_load_harness_smoke_run_passes() {
    let built = cargo()
        .args(["bench", "--no-run", "--locked", "--quiet"])
        .status()
        .expect("cargo runs");
    assert!(built.success(), "cargo bench --no-run failed");

    let smoke = Command::new("bash")
        .arg("benches/load/run.sh")
        .arg("--smoke")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&smoke.stdout);
    assert!(
        smoke.status.success() && stdout.contains("load smoke: ok"),
        "benches/load/run.sh --smoke failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&smoke.stderr)
    );
}
