#!/usr/bin/env bash
# The test suite: unit and integration tests (real PostgreSQL and Redis, Ruby's Rack and Rails
# parsers as the oracle for parameters), the Helm chart and mesh manifests, then the peer tests
# (real Envoy, real Redmine 5.0.4, official Envoy protos).
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
# Ruby with Rack 2 and Rails' parameter parsers: the differential tests (tests/ruby) ask them
# what Redmine reads, and fail in CI without them.
if ! ruby -e 'require "rack"; require "action_dispatch"; require "action_pack/xml_parser"' 2>/dev/null; then
  log "installing ruby, ruby-rack and Rails' parameter parsers"
  apt_install ruby ruby-rack ruby-actionpack ruby-actionpack-xml-parser
fi
cargo test --all-targets
bash scripts/test-chart.sh
if [ "$peers" = 1 ]; then
  bash scripts/test-peers.sh
fi
