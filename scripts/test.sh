#!/usr/bin/env bash
# The test suite: unit and integration tests (real PostgreSQL), then the peer tests (real
# Envoy, real Redmine 5.0.4, official Envoy protos). Brings up what it needs on a fresh machine.
#   scripts/test.sh            everything
#   scripts/test.sh --no-peers only `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

peers=1
[ "${1:-}" = "--no-peers" ] && peers=0

ensure_postgres
ensure_redis
cargo test --all-targets
if [ "$peers" = 1 ]; then
  bash scripts/test-peers.sh
fi
