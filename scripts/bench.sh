#!/usr/bin/env bash
# Runs every benchmark of BENCHMARKS.md and writes benches/results/ (results.json, summary.md,
# latency.svg). Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379; compares with
# Redmine on 127.0.0.1:3000 when it answers (bash tests/peers/redmine-oracle.sh start).
#
#   scripts/bench.sh            full run (about 8 minutes; the first one also seeds 1M users)
#   scripts/bench.sh --quick    shorter runs, to check the benchmark itself
#   scripts/bench.sh --soak     only the soak: 10 minutes at half the maximum (benches/results/soak.md)
#
# Servers are pinned to core 0 and the load generator to core 1 (taskset): run it on a
# quiet machine. Environment: BENCH_DATABASE_URL, BENCH_REDIS_URL override the servers.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
[[ "${1:-}" == "--quick" ]] && quick=(--quick)
soak=0
[[ "${1:-}" == "--soak" ]] && soak=1

command -v taskset >/dev/null || { echo "bench: taskset (util-linux) is needed" >&2; exit 1; }
if (( $(nproc) < 2 )); then
    echo "bench: needs two cores (server on one, load generator on the other)" >&2
    exit 1
fi
command -v h2load >/dev/null || echo "bench: h2load (Debian nghttp2-client) not found; the load generator check is skipped" >&2

echo "== building (release profile: the gate, the floor and the load generator alike)"
# The bench profile shares target/release and would leave its own build of the binary
# there: build it first, and the release profile last.
cargo bench --no-run --bench decision --bench cache_tiers
# shellcheck source=scripts/release-binaries.sh
source scripts/release-binaries.sh
# A copy: the criterion runs below would put the bench profile's build back in its place.
server="$target_dir/bench-gate/redmine-authz"
mkdir -p "$(dirname "$server")"
cp "$target_dir/release/redmine-authz" "$server"

echo "== preparing the bench databases (kept between runs)"
"$load" prepare

if [[ "$soak" == 1 ]]; then
    echo "== soak: half the maximum for ${SOAK_SECONDS:-600} s (server on core 0)"
    taskset -c 1 "$load" soak --server "$server" --seconds "${SOAK_SECONDS:-600}" --out benches/results
    exit 0
fi

echo "== criterion: decision core and one lookup per cache tier (load generator core)"
criterion_args=()
[[ ${#quick[@]} -gt 0 ]] && criterion_args=(--warm-up-time 1 --measurement-time 2)
taskset -c 1 cargo bench --bench decision -- "${criterion_args[@]}"
taskset -c 1 cargo bench --bench cache_tiers -- "${criterion_args[@]}"

echo "== load scenarios (servers on core 0, load generator on core 1)"
taskset -c 1 "$load" run \
    --server "$server" \
    --floor "$floor" \
    --criterion "$target_dir/criterion" \
    --out benches/results \
    "${quick[@]}"

echo "== done: benches/results/summary.md, benches/results/latency.svg"
