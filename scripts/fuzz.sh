#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS (default 30) each and fails on any crash.
#
#   scripts/fuzz.sh                 # all targets, 30 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh check_request
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, -Cpasses=sancov-module). Only
# stable Rust is installed here, so RUSTC_BOOTSTRAP=1 unlocks them on the stable compiler.
# FUZZ_SANITIZER picks the sanitizer (default address; `none` builds faster and runs ~2x
# faster but only catches panics, not memory errors; the crate forbids unsafe code, so
# panics are what matters most).
#
# Seeds live in fuzz/corpus/<target>/ (committed, written by `cargo run --example
# seed_corpus` in fuzz/). New inputs the fuzzer finds go to fuzz/target/corpus/<target>/
# so the committed corpus stays as it is. A crash is saved under fuzz/artifacts/<target>/
# (ignored by git); reproduce it with `cargo fuzz run <target> <file>`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

seconds="${FUZZ_SECONDS:-30}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

passed=0
failed=0
for target in "${targets[@]}"; do
    work="target/corpus/$target"
    log="target/fuzz-$target.log"
    mkdir -p "$work" "corpus/$target"
    echo "fuzz: $target for ${seconds}s (sanitizer: $sanitizer)" >&2
    if cargo fuzz run --sanitizer "$sanitizer" "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -dict=dict/redmine.dict -print_final_stats=1 >"$log" 2>&1; then
        passed=$((passed + 1))
        runs="$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" | tail -n 1 || true)"
        echo "fuzz: $target ok: ${runs:-no run count}" >&2
    else
        failed=$((failed + 1))
        tail -n 40 "$log" >&2
        echo "fuzz: $target FAILED (log: fuzz/$log; crash inputs in fuzz/artifacts/$target/)" >&2
    fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
