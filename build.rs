//! Stamps the build: `FLEETGATE_COMMIT` (the git commit, or `unknown` outside a git
//! checkout) and `FLEETGATE_BUILT_AT` (UTC, RFC 3339; `SOURCE_DATE_EPOCH` wins, for
//! reproducible builds). Either one, set in the build's environment to a short plain
//! value, wins over both (a container build has no `.git`: its build args land here).
//! Never fails the build.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// A stamp given in the build's environment: 1–64 bytes of letters, digits, `.` `-` `_`
/// `:` `+` (anything else is ignored, so a stray value cannot break `/version`).
fn given(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let plain = |b: u8| b.is_ascii_alphanumeric() || b".-_:+".contains(&b);
    (!v.is_empty() && v.len() <= 64 && v.bytes().all(plain)).then(|| v.to_string())
}

fn main() {
    let given_commit = given("FLEETGATE_COMMIT");
    let given_built_at = given("FLEETGATE_BUILT_AT");
    let commit = given_commit.unwrap_or_else(git_commit);
    println!("cargo:rustc-env=FLEETGATE_COMMIT={commit}");

    let built_at = given_built_at.unwrap_or_else(|| {
        let secs = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            });
        rfc3339(secs)
    });
    println!("cargo:rustc-env=FLEETGATE_BUILT_AT={built_at}");

    // Re-stamp when the commit changes; only name files that exist (a missing one would
    // make cargo rerun this script on every build).
    for f in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
}

/// The checkout's commit, or `unknown`.
fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (proleptic Gregorian, UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
