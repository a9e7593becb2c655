# Sourced by the other scripts: bring up the local PostgreSQL and Redis the service and its
# tests use, installing them from Debian's packages on a machine that has neither.

log() { printf '[redmine-authz] %s\n' "$*" >&2; }

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then log "need root to apt-get install $*"; return 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=120 "$@" >/dev/null \
    || { apt-get update -o DPkg::Lock::Timeout=120 >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=120 "$@" >/dev/null; }
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  log "starting PostgreSQL"
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not come up on 127.0.0.1:5432"; return 1; }
  # Tests connect as postgres over TCP without a password, as on the CI machines.
  if ! psql -h 127.0.0.1 -U postgres -Atqc 'select 1' >/dev/null 2>&1; then
    log "PostgreSQL refuses postgres@127.0.0.1 without a password; set TEST_DATABASE_URL"
  fi
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return 0; fi
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing Redis"
    apt_install redis-server
  fi
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "Redis did not come up on 127.0.0.1:6379"; return 1
}
