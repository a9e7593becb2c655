#!/usr/bin/env bash
# Flame graphs of the floor and the gate under the same load, and their difference:
#
#   scripts/profile.sh [MIX]     # MIX: api-key (default), basic, wrong-key, flood
#
# Writes benches/results/flame-floor.svg, flame-gate-MIX.svg and flame-diff-MIX.svg (the
# gate's profile against the floor's, both scaled to the same number of samples: red is
# where the gate spends more of a Check's time). Servers on core 0, `load drive` on core 1,
# `perf record --call-graph dwarf` on the server for 6 s; extra gate flags in GATE_FLAGS
# (e.g. GATE_FLAGS="--l1-capacity 0" for Redis hits). Needs perf (Debian linux-perf), taskset,
# jq, PostgreSQL and Redis as for scripts/bench.sh; installs inferno (crates.io) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

mix=${1:-api-key}
case "$mix" in
api-key | basic | wrong-key | flood) ;;
*)
    echo "usage: scripts/profile.sh [api-key|basic|wrong-key|flood]" >&2
    exit 2
    ;;
esac
for tool in perf taskset jq; do
    command -v "$tool" >/dev/null || {
        echo "profile: $tool is needed" >&2
        exit 1
    }
done
command -v inferno-flamegraph >/dev/null || cargo install inferno --locked

echo "== building (release profile, as scripts/bench.sh)"
# shellcheck source=scripts/release-binaries.sh
source scripts/release-binaries.sh
"$load" prepare

out=benches/results
mkdir -p "$out/logs" # git-ignored: the folded stacks, for your own digging
work=$(mktemp -d)
port=19391
server_pid=
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

wait_for_port() {
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "profile: nothing listens on $port" >&2
    exit 1
}

# profile NAME COMMAND...: the server under load for 6 s, folded stacks in $work/NAME.folded.
profile() {
    local name=$1
    shift
    taskset -c 0 "$@" >/dev/null 2>"$work/$name.log" &
    server_pid=$!
    wait_for_port
    sleep 1 # the gate loads its key filter once it listens
    taskset -c 1 "$load" drive --port "$port" --mix "$mix" --seconds 2 2>/dev/null
    perf record -F 1999 --call-graph dwarf,16384 -o "$work/$name.data" -p "$server_pid" -- sleep 6 \
        2>"$work/$name.perf.log" &
    local recorder=$!
    taskset -c 1 "$load" drive --port "$port" --mix "$mix" --seconds 7
    wait "$recorder"
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    perf script -i "$work/$name.data" 2>/dev/null | inferno-collapse-perf >"$work/$name.folded"
    cp "$work/$name.folded" "$out/logs/$name-$mix.folded"
}

echo "== floor"
profile floor "$floor" --listen "127.0.0.1:$port"
echo "== gate ($mix)"
# Production settings, as the load scenarios: both cache tiers, a pool of 16.
# shellcheck disable=SC2086 # GATE_FLAGS is a list of flags
profile gate "$target_dir/release/redmine-authz" serve \
    --listen "127.0.0.1:$port" \
    --database-url postgres://postgres@127.0.0.1:5432/authz_bench_10k \
    --redis-url redis://127.0.0.1:6379 --redis-key-prefix "authz-profile-$$:" \
    --db-max-connections 16 ${GATE_FLAGS:-}

inferno-flamegraph --minwidth 0.5 --title "floor: constant allow, load drive --mix $mix" \
    <"$work/floor.folded" >"$out/flame-floor.svg"
inferno-flamegraph --minwidth 0.5 --title "gate: load drive --mix $mix ${GATE_FLAGS:-}" \
    <"$work/gate.folded" >"$out/flame-gate-$mix.svg"
inferno-diff-folded --normalize "$work/floor.folded" "$work/gate.folded" |
    inferno-flamegraph --minwidth 0.5 --title "gate against floor, same samples (red: more in the gate)" \
        >"$out/flame-diff-$mix.svg"
redis-cli -h 127.0.0.1 --scan --pattern "authz-profile-$$:*" | xargs -r redis-cli -h 127.0.0.1 DEL >/dev/null || true
echo "== $out/flame-floor.svg, $out/flame-gate-$mix.svg, $out/flame-diff-$mix.svg"
