#!/usr/bin/env bash
# Quick start: run the gate. With DATABASE_URL unset, a local PostgreSQL is brought up and a
# demo database (redmine_authz_demo) is created and seeded; otherwise it serves that database.
# Listens for Envoy on 127.0.0.1:9191 (gRPC) and 127.0.0.1:9090 (/healthz, /readyz).
# Extra arguments go to `redmine-authz serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

ensure_postgres
ensure_redis
cargo build --release --quiet
bin=target/release/redmine-authz

if [ -z "${DATABASE_URL:-}" ]; then
  export DATABASE_URL=postgres://postgres@127.0.0.1:5432/redmine_authz_demo
  if ! psql -h 127.0.0.1 -U postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'redmine_authz_demo'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -qc 'CREATE DATABASE redmine_authz_demo'
  fi
  "$bin" demo-db
fi

exec "$bin" serve --listen "${AUTHZ_LISTEN:-127.0.0.1:9191}" --admin-listen "${AUTHZ_ADMIN_LISTEN:-127.0.0.1:9090}" "$@"
