#!/usr/bin/env bash
# The test suite: unit and integration tests (real PostgreSQL and Redis), the Helm chart and
# mesh manifests, then the peer tests (real Envoy, real Redmine 5.0.4, official Envoy protos).
# Brings up and installs what it needs on a fresh machine.
#   scripts/test.sh            everything
#   scripts/test.sh --no-peers `cargo test` and the chart only
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

peers=1
[ "${1:-}" = "--no-peers" ] && peers=0

ensure_postgres
ensure_redis
cargo test --all-targets
bash scripts/test-chart.sh
if [ "$peers" = 1 ]; then
  bash scripts/test-peers.sh
fi
