#!/usr/bin/env bash
# Run every fuzz target for a bounded time and print what each did.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 120 s, every target)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP=1 lets the stable
# toolchain build with the sanitizer flags cargo-fuzz passes. A crash is saved under
# fuzz/artifacts/<target>/ and makes this script exit non-zero; once fixed, copy the input
# to fuzz/corpus/<target>/seed-<what-it-is> so `cargo test` keeps replaying it.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-120}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(normalize_path parse_pattern load_manifest classify h1_request)
fi
status=0
for t in "${targets[@]}"; do
    log=$(mktemp)
    if RUSTC_BOOTSTRAP=1 cargo fuzz run -a "$t" -- -max_total_time="$secs" -print_final_stats=1 \
        -detect_leaks=0 >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "$t: $result, ${execs:-?} execs in ${secs} s, ${cov:-cov: ?}"
    if [ "$result" = FAILED ]; then
        tail -40 "$log"
    fi
    rm -f "$log"
done
exit $status
