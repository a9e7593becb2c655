#!/usr/bin/env bash
# The Redmine oracle: a real Redmine 5.0.4 (Debian bookworm packages `redmine` and
# `redmine-pgsql`) on 127.0.0.1, seeded with known users, keys and settings. The peer tests
# send it the same requests as the gate and compare the answers
# (tests/peers/test_redmine_oracle.py, tests/peers/test_header_spellings.py); the benchmarks
# compare the gate's speed with it (scripts/bench.sh). tests/peers/conftest.py runs
# `start` and `creds` itself.
#
# Usage (as root, Debian 12):
#   tests/peers/redmine-oracle.sh [start]   install, configure, migrate, seed, start (idempotent)
#   tests/peers/redmine-oracle.sh stop      stop only the server this script started (PID file)
#   tests/peers/redmine-oracle.sh restart
#   tests/peers/redmine-oracle.sh status    is it running and answering?
#   tests/peers/redmine-oracle.sh creds     the seeded credentials (KEY=VALUE lines)
#   tests/peers/redmine-oracle.sh seed      apply the seed data again (the server may be running)
#   tests/peers/redmine-oracle.sh setting NAME VALUE
#                                  e.g. `setting rest_api_enabled 0`, `setting login_required 1`
#                                  (the running server sees it at its next request)
#
# Environment:
#   PORT (default 3000)            listen port, always on 127.0.0.1
#   REDMINE_ORACLE_STATE_DIR       PID file, logs, credentials (default /var/tmp/redmine-oracle)
#   REDMINE_ORACLE_DB              database name       (default redmine_oracle)
#   REDMINE_ORACLE_DB_USER/_PASS   database role/pass  (default redmine_oracle/redmine_oracle)
#   PG_HOST / PG_PORT              PostgreSQL server   (default 127.0.0.1 / 5432)
#
# Only Debian packages are used: redmine redmine-pgsql thin postgresql curl. The server
# (thin in the foreground, `bundle exec thin start`) runs as www-data through `setpriv`, which
# does not fork, so the PID in the PID file is the Ruby server process itself.
set -euo pipefail

PORT="${PORT:-3000}"
BIND=127.0.0.1
STATE_DIR="${REDMINE_ORACLE_STATE_DIR:-/var/tmp/redmine-oracle}"
DB_NAME="${REDMINE_ORACLE_DB:-redmine_oracle}"
DB_USER="${REDMINE_ORACLE_DB_USER:-redmine_oracle}"
DB_PASS="${REDMINE_ORACLE_DB_PASS:-redmine_oracle}"
PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5432}"
PG_VERSION_DEFAULT=15

REDMINE_DIR=/usr/share/redmine
REDMINE_CONF=/etc/redmine/default
RUN_AS=www-data
PIDFILE="$STATE_DIR/redmine.pid"
LOGFILE="$STATE_DIR/redmine.log"
CREDS="$STATE_DIR/credentials.env"
SEED_RB="$STATE_DIR/seed.rb"

log() { printf '[redmine-oracle] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Deterministic, realistic-looking 40-hex API keys (same on every machine).
apikey() { printf 'redmine-oracle-api:%s' "$1" | sha1sum | cut -c1-40; }

# ---- seeded identities (fixed, so other tools can rely on them) -----------
ADMIN_LOGIN=admin;        ADMIN_PASSWORD='Oracle-admin-pw-1'
ACTIVE_LOGIN=alice;       ACTIVE_PASSWORD='Oracle-alice-pw-1'
LOCKED_LOGIN=larry;       LOCKED_PASSWORD='Oracle-larry-pw-1'
REGISTERED_LOGIN=reggie;  REGISTERED_PASSWORD='Oracle-reggie-pw-1'
TWOFA_LOGIN=tina;         TWOFA_PASSWORD='Oracle-tina-pw-1'
TWOFA_TOTP_SECRET='JBSWY3DPEHPK3PXPORACLE2FATOTPKEY'   # base32
MUSTCHANGE_LOGIN=mona;    MUSTCHANGE_PASSWORD='Oracle-mona-pw-1'
NOKEY_LOGIN=bob;          NOKEY_PASSWORD='Oracle-bob-pw-1'       # active, no API key
ADMIN_KEY=$(apikey admin)
ACTIVE_KEY=$(apikey alice)
LOCKED_KEY=$(apikey larry)
REGISTERED_KEY=$(apikey reggie)
TWOFA_KEY=$(apikey tina)
MUSTCHANGE_KEY=$(apikey mona)
PUBLIC_PROJECT=oracle-public

need_root() { [ "$(id -u)" -eq 0 ] || die "run as root"; }

as_redmine() {
  # Run a command in the Redmine tree as www-data, production env, no fork.
  ( cd "$REDMINE_DIR" && exec setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups \
      env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 \
          RAILS_ENV=production REDMINE_LANG=en "$@" )
}

psql_admin() {
  # Superuser access: peer auth on the local socket as postgres, else TCP trust.
  if runuser -u postgres -- psql -p "$PG_PORT" -Atqc 'select 1' >/dev/null 2>&1; then
    runuser -u postgres -- psql -p "$PG_PORT" -v ON_ERROR_STOP=1 -Atq "$@"
  else
    psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -Atq "$@"
  fi
}

apt_install() {
  local i
  for i in $(seq 1 30); do
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=60 \
         -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" \
         >>"$LOGFILE.setup" 2>&1; then
      return 0
    fi
    log "apt-get install failed (dpkg lock?), retry $i/30"; sleep 10
  done
  tail -30 "$LOGFILE.setup" >&2
  die "apt-get install $* failed"
}

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed'; }

step_install() {
  local missing=() p
  for p in postgresql redmine redmine-pgsql thin curl; do
    pkg_installed "$p" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && { log "packages already installed"; return 0; }
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Preseed dbconfig-common: do not let it touch the database; we write database.yml.
  debconf-set-selections <<'EOF'
redmine redmine/instances/default/dbconfig-install boolean false
redmine redmine/instances/default/dbconfig-upgrade boolean false
redmine redmine/instances/default/dbconfig-remove boolean false
redmine redmine/instances/default/database-type select pgsql
EOF
  if ! apt-cache policy redmine 2>/dev/null | grep 'Candidate: 5\.' >/dev/null; then
    log "apt-get update (no redmine 5.x candidate in the package lists yet)"
    apt-get update -o DPkg::Lock::Timeout=60 >>"$LOGFILE.setup" 2>&1 || log "apt-get update failed (continuing)"
  fi
  apt_install "${missing[@]}"
}

step_postgres() {
  if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
    log "starting PostgreSQL"
    local v
    v=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3==p {print $1" "$2; exit}')
    [ -n "$v" ] || v="$PG_VERSION_DEFAULT main"
    # shellcheck disable=SC2086
    pg_ctlcluster --skip-systemctl-redirect $v start || true
    local i; for i in $(seq 1 30); do pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break; sleep 1; done
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" || die "PostgreSQL not reachable on $PG_HOST:$PG_PORT"
  fi
  psql_admin -c "DO \$\$BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER') THEN
        CREATE ROLE \"$DB_USER\" LOGIN PASSWORD '$DB_PASS';
      ELSE
        ALTER ROLE \"$DB_USER\" LOGIN PASSWORD '$DB_PASS';
      END IF; END\$\$;"
  if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
    log "creating database $DB_NAME"
    psql_admin -c "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_USER\" ENCODING 'UTF8' TEMPLATE template0"
  fi
}

step_configure() {
  mkdir -p "$STATE_DIR"
  local tmp; tmp=$(mktemp)
  cat > "$tmp" <<EOF
# written by redmine-oracle.sh
production:
  adapter: postgresql
  database: $DB_NAME
  host: $PG_HOST
  port: $PG_PORT
  username: $DB_USER
  password: "$DB_PASS"
  encoding: utf8
EOF
  if ! cmp -s "$tmp" "$REDMINE_CONF/database.yml"; then
    install -o root -g "$RUN_AS" -m 0640 "$tmp" "$REDMINE_CONF/database.yml"
    log "wrote $REDMINE_CONF/database.yml"
  fi
  rm -f "$tmp"
  # secret_key.txt is created by the package postinst; make sure it exists.
  if [ ! -s "$REDMINE_CONF/secret_key.txt" ]; then
    ruby -rsecurerandom -e 'puts SecureRandom.hex(16)' > "$REDMINE_CONF/secret_key.txt"
    chown root:"$RUN_AS" "$REDMINE_CONF/secret_key.txt"; chmod 0640 "$REDMINE_CONF/secret_key.txt"
  fi
}

step_migrate() {
  log "running db:migrate"
  as_redmine SCHEMA=/dev/null bundle exec rake db:migrate redmine:plugins:migrate >>"$LOGFILE.setup" 2>&1 || { tail -30 "$LOGFILE.setup" >&2; die "db:migrate failed"; }
  if [ "$(psql_admin -d "$DB_NAME" -c 'SELECT count(*) FROM trackers')" = 0 ]; then
    log "loading default data (en)"
    as_redmine bundle exec rake redmine:load_default_data >>"$LOGFILE.setup" 2>&1 || { tail -30 "$LOGFILE.setup" >&2; die "load_default_data failed"; }
  fi
}

write_seed_rb() {
  cat > "$SEED_RB" <<'RUBY'
# Idempotent seed for redmine-authz's Redmine oracle. Reads everything from ENV.
ActionMailer::Base.perform_deliveries = false
e = ENV

def upsert_user(login:, password:, admin: false, status: User::STATUS_ACTIVE,
                must_change: false, firstname: nil)
  u = User.find_by(login: login) || User.new
  u.login = login
  u.firstname = firstname || login.capitalize
  u.lastname = 'Oracle'
  u.mail = "#{login}@oracle.invalid" if u.mail.blank?
  u.language = 'en'
  u.admin = admin
  u.auth_source_id = nil
  unless u.persisted? && u.check_password?(password)
    u.password = password
    u.password_confirmation = password
  end
  u.status = User::STATUS_ACTIVE if u.new_record?
  u.save!
  # Columns that validations/callbacks may reset: force them.
  u.update_columns(status: status, must_change_passwd: must_change, admin: admin)
  u.reload
end

def set_api_key(user, key)
  t = Token.find_by(user_id: user.id, action: 'api')
  t ||= Token.create!(user: user, action: 'api')
  t.update_columns(value: key) if t.value != key
end

Setting.rest_api_enabled = '1'
Setting.login_required = '0'
Setting.twofa = '1'            # optional (default)
Setting.password_max_age = '0'

admin = upsert_user(login: e['ADMIN_LOGIN'], password: e['ADMIN_PASSWORD'], admin: true,
                    firstname: 'Redmine')
alice = upsert_user(login: e['ACTIVE_LOGIN'], password: e['ACTIVE_PASSWORD'])
larry = upsert_user(login: e['LOCKED_LOGIN'], password: e['LOCKED_PASSWORD'],
                    status: User::STATUS_LOCKED)
reggie = upsert_user(login: e['REGISTERED_LOGIN'], password: e['REGISTERED_PASSWORD'],
                     status: User::STATUS_REGISTERED)
tina = upsert_user(login: e['TWOFA_LOGIN'], password: e['TWOFA_PASSWORD'])
mona = upsert_user(login: e['MUSTCHANGE_LOGIN'], password: e['MUSTCHANGE_PASSWORD'],
                   must_change: true)
bob = upsert_user(login: e['NOKEY_LOGIN'], password: e['NOKEY_PASSWORD'])

# 2FA (TOTP) for tina: twofa_scheme + key (ciphered only if a cipher key is configured)
if tina.twofa_scheme != 'totp' || tina.twofa_totp_key != e['TWOFA_TOTP_SECRET']
  tina.twofa_totp_key = e['TWOFA_TOTP_SECRET']
  tina.twofa_scheme = 'totp'
  tina.save!
end

set_api_key(admin, e['ADMIN_KEY'])
set_api_key(alice, e['ACTIVE_KEY'])
set_api_key(larry, e['LOCKED_KEY'])
set_api_key(reggie, e['REGISTERED_KEY'])
set_api_key(tina, e['TWOFA_KEY'])
set_api_key(mona, e['MUSTCHANGE_KEY'])
Token.where(user_id: bob.id, action: 'api').delete_all

# A public project with one issue, so /issues.json is non-trivial for anonymous users.
proj = Project.find_by(identifier: e['PUBLIC_PROJECT'])
unless proj
  proj = Project.new(name: 'Oracle Public', identifier: e['PUBLIC_PROJECT'], is_public: true)
  proj.trackers = Tracker.all
  proj.enabled_module_names = Redmine::AccessControl.available_project_modules
  proj.save!
end
if proj.issues.empty?
  Issue.create!(project: proj, tracker: proj.trackers.first, author: admin,
                subject: 'Oracle public issue', status: IssueStatus.first,
                priority: IssuePriority.default || IssuePriority.first)
end
manager = Role.where(builtin: 0).order(:position).first
if manager && !Member.exists?(user_id: alice.id, project_id: proj.id)
  Member.create!(principal: alice, project: proj, roles: [manager])
end

puts "seed ok: " + User.where(login: [admin, alice, larry, reggie, tina, mona, bob].map(&:login))
  .order(:id).map {|u| "#{u.login}(id=#{u.id},status=#{u.status},admin=#{u.admin},mcp=#{u.must_change_passwd},2fa=#{u.twofa_scheme.inspect})"}.join(' ')
RUBY
  chmod 0644 "$SEED_RB"
}

seed_env() {
  local v
  for v in ADMIN_LOGIN ADMIN_PASSWORD ACTIVE_LOGIN ACTIVE_PASSWORD LOCKED_LOGIN LOCKED_PASSWORD \
           REGISTERED_LOGIN REGISTERED_PASSWORD TWOFA_LOGIN TWOFA_PASSWORD TWOFA_TOTP_SECRET \
           MUSTCHANGE_LOGIN MUSTCHANGE_PASSWORD NOKEY_LOGIN NOKEY_PASSWORD \
           ADMIN_KEY ACTIVE_KEY LOCKED_KEY REGISTERED_KEY TWOFA_KEY MUSTCHANGE_KEY PUBLIC_PROJECT; do
    printf '%s=%s\n' "$v" "${!v}"
  done
}

step_seed() {
  mkdir -p "$STATE_DIR"; chmod 0755 "$STATE_DIR"
  write_seed_rb
  log "seeding users / API keys / settings"
  local envargs=()
  mapfile -t envargs < <(seed_env)
  as_redmine "${envargs[@]}" bundle exec rails runner "$SEED_RB" 2>&1 | tee -a "$LOGFILE.setup" | grep -E '^seed ok|Error|error' >&2 \
    || die "seed failed (see $LOGFILE.setup)"
  grep -q '^seed ok' < <(tail -5 "$LOGFILE.setup") || die "seed failed (see $LOGFILE.setup)"
}

write_creds() {
  {
    echo "REDMINE_URL=http://$BIND:$PORT"
    echo "REDMINE_VERSION=$(redmine_version)"
    echo "REDMINE_PID=$(cat "$PIDFILE" 2>/dev/null || true)"
    seed_env
  } > "$CREDS"
  chmod 0644 "$CREDS"
}

redmine_version() {
  dpkg-query -W -f='${Version}' redmine 2>/dev/null || echo unknown
}

is_running() {
  [ -s "$PIDFILE" ] || return 1
  local pid; pid=$(cat "$PIDFILE")
  [ -d "/proc/$pid" ] || return 1
  # Make sure the PID still belongs to our server (guards against PID reuse).
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "thin.* -p $PORT --tag redmine-oracle" || return 1
}

answering() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://$BIND:$PORT/issues.json" || true)
  [ "$code" = 200 ] || [ "$code" = 401 ]
}

step_start() {
  if is_running; then
    log "already running (pid $(cat "$PIDFILE")) on $BIND:$PORT"
  else
    if curl -s -o /dev/null --max-time 3 "http://$BIND:$PORT/"; then
      die "port $PORT on $BIND is already in use by something else"
    fi
    log "starting Redmine (thin) on $BIND:$PORT"
    : >>"$LOGFILE"
    # setsid/nohup/setpriv all exec(), so $! is the Ruby server process itself.
    ( cd "$REDMINE_DIR" && exec setsid nohup setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups \
        env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 RAILS_ENV=production \
        RAILS_LOG_TO_STDOUT=1 \
        bundle exec thin start -R config.ru -e production -a "$BIND" -p "$PORT" --tag redmine-oracle \
        </dev/null >>"$LOGFILE" 2>&1 ) &
    echo $! > "$PIDFILE"
  fi
  local i
  for i in $(seq 1 120); do
    if answering; then
      log "Redmine answering on http://$BIND:$PORT (pid $(cat "$PIDFILE"))"
      return 0
    fi
    is_running || { tail -40 "$LOGFILE" >&2; die "server process exited"; }
    sleep 1
  done
  tail -40 "$LOGFILE" >&2
  die "server did not answer within 120s"
}

cmd_stop() {
  if [ ! -s "$PIDFILE" ]; then log "not running (no PID file)"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  if ! is_running; then
    log "PID $pid is not our server any more; removing stale PID file"; rm -f "$PIDFILE"; return 0
  fi
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 30); do [ -d "/proc/$pid" ] || break; sleep 1; done
  if [ -d "/proc/$pid" ]; then log "pid $pid still alive, sending KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$PIDFILE"
  log "stopped"
}

cmd_status() {
  if is_running; then
    echo "running pid=$(cat "$PIDFILE") url=http://$BIND:$PORT answering=$(answering && echo yes || echo no)"
  else
    echo "not running"; return 1
  fi
}

cmd_setting() {
  local name="$1" value="$2"
  [[ "$name" =~ ^[a-z_]+$ ]] || die "bad setting name"
  as_redmine bundle exec rails runner "Setting.send('${name}=', ARGV[0]); puts \"#{'${name}'}=#{Setting.send('${name}').inspect}\"" "$value"
}

cmd_start() {
  need_root
  mkdir -p "$STATE_DIR"
  step_install
  step_postgres
  step_configure
  step_migrate
  step_seed
  step_start
  write_creds
  cat "$CREDS"
}

case "${1:-start}" in
  start)   cmd_start ;;
  stop)    need_root; cmd_stop ;;
  restart) need_root; cmd_stop; cmd_start ;;
  status)  cmd_status ;;
  creds)   [ -s "$CREDS" ] && cat "$CREDS" || { seed_env; }; ;;
  seed)    need_root; step_configure; step_seed ;;
  setting) need_root; [ $# -eq 3 ] || die "usage: $0 setting NAME VALUE"; cmd_setting "$2" "$3" ;;
  *) echo "usage: $0 [start|stop|restart|status|creds|seed|setting NAME VALUE]" >&2; exit 2 ;;
esac
