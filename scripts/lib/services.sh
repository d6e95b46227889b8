# shellcheck shell=bash
# Throwaway Redis/PostgreSQL instances and node tooling for the test suite.
# Sourced (not executed) by scripts/test and scripts/compile-contracts. Everything lives in one
# private temp dir per run, so two runs (or a developer's own Redis/Postgres) never collide.
#
#   tariff_node_modules     npm ci if needed; exports TARIFF_TEST_NODE_MODULES, TARIFF_TEST_ANVIL_BIN
#   tariff_redis_start      exports TARIFF_TEST_REDIS_URL (unix socket, no TCP)
#   tariff_postgres_start   exports TARIFF_TEST_DATABASE_URL (127.0.0.1, free port)
#   tariff_chromium         apt-installs chromium if needed; exports TARIFF_TEST_CHROMIUM
#   tariff_services_stop    stops both and removes the temp dir; call it from an EXIT trap

TARIFF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARIFF_SVC_DIR=${TARIFF_SVC_DIR:-}

_svc_log() { echo "[services] $*" >&2; }

# apt needs root; a developer running as a normal user gets sudo instead.
_svc_sudo() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Install Debian packages. A fresh machine may have empty/stale package lists, so retry after
# `apt-get update` rather than always paying for it.
_svc_apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  _svc_log "apt-get install $*"
  _svc_sudo apt-get install -y -q --no-install-recommends "$@" </dev/null >&2 ||
    { _svc_sudo apt-get update -q >&2 && _svc_sudo apt-get install -y -q --no-install-recommends "$@" </dev/null >&2; }
}

# Debian's chromium, for the console's browser tests (driven by puppeteer-core from npm).
tariff_chromium() {
  command -v chromium >/dev/null || _svc_apt_install chromium
  TARIFF_TEST_CHROMIUM=$(command -v chromium)
  export TARIFF_TEST_CHROMIUM
  _svc_log "chromium at $TARIFF_TEST_CHROMIUM"
}

# A loopback TCP port nobody listens on right now (pure bash: nothing to install). Something can
# still grab it before the service binds, so callers retry on failure.
_svc_free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

# Stop services of earlier runs that were killed with SIGKILL (their EXIT trap never ran).
_svc_reap_stale() {
  local d pid
  for d in /tmp/tariff-test.*; do
    [ -f "$d/owner.pid" ] || continue
    pid=$(cat "$d/owner.pid")
    kill -0 "$pid" 2>/dev/null && continue  # still in use by a live run
    _svc_log "removing stale $d (owner $pid is gone)"
    TARIFF_SVC_DIR=$d tariff_services_stop
  done
}

_svc_dir() {
  if [ -z "$TARIFF_SVC_DIR" ]; then
    _svc_reap_stale
    TARIFF_SVC_DIR=$(mktemp -d /tmp/tariff-test.XXXXXX)
    chmod 755 "$TARIFF_SVC_DIR"  # the postgres user must be able to traverse it
    echo $$ >"$TARIFF_SVC_DIR/owner.pid"
  fi
}

tariff_node_modules() {
  command -v npm >/dev/null || _svc_apt_install nodejs npm
  # npm rewrites node_modules/.package-lock.json on every install, so it dates the current tree.
  if [ ! -f "$TARIFF_ROOT/node_modules/.package-lock.json" ] ||
     [ "$TARIFF_ROOT/package-lock.json" -nt "$TARIFF_ROOT/node_modules/.package-lock.json" ]; then
    _svc_log "npm ci (node_modules missing or older than package-lock.json)"
    (cd "$TARIFF_ROOT" && npm ci --no-audit --no-fund </dev/null >&2)
  fi
  export TARIFF_TEST_NODE_MODULES="$TARIFF_ROOT/node_modules"
  export TARIFF_TEST_ANVIL_BIN="$TARIFF_TEST_NODE_MODULES/@foundry-rs/anvil-linux-amd64/bin/anvil"
  "$TARIFF_TEST_ANVIL_BIN" --version >/dev/null || { _svc_log "anvil does not run: $TARIFF_TEST_ANVIL_BIN"; return 1; }
  _svc_log "node_modules ready; anvil at $TARIFF_TEST_ANVIL_BIN"
}

tariff_redis_start() {
  command -v redis-server >/dev/null || _svc_apt_install redis-server
  _svc_dir
  local d="$TARIFF_SVC_DIR/redis"
  mkdir -p "$d"
  # --port 0 disables TCP entirely (it is not "pick a port"); the socket is private to this run.
  redis-server --port 0 --unixsocket "$d/redis.sock" --unixsocketperm 700 \
    --save '' --appendonly no --dir "$d" --daemonize yes \
    --pidfile "$d/redis.pid" --logfile "$d/redis.log"
  for _ in $(seq 100); do [ -S "$d/redis.sock" ] && break; sleep 0.05; done
  [ -S "$d/redis.sock" ] || { _svc_log "redis did not start:"; cat "$d/redis.log" >&2; return 1; }
  export TARIFF_TEST_REDIS_URL="unix://$d/redis.sock"
  _svc_log "redis-server $(redis-server --version | grep -o 'v=[^ ]*') at $TARIFF_TEST_REDIS_URL"
}

# Newest installed PostgreSQL's bin dir (Debian keeps them in /usr/lib/postgresql/<major>/bin).
_svc_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true; }

tariff_postgres_start() {
  [ -n "$(_svc_pg_bin)" ] || _svc_apt_install postgresql
  _svc_dir
  local bin d="$TARIFF_SVC_DIR/pg" port attempt run=()
  bin=$(_svc_pg_bin)
  mkdir -p "$d"
  # Postgres refuses to run as root, so as root we run it as the `postgres` user.
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    chown postgres: "$d"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" "$bin/initdb" -D "$d/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >"$d/initdb.log" 2>&1 ||
    { cat "$d/initdb.log" >&2; return 1; }
  # Retry on a new port if another process grabbed ours between picking and binding.
  for attempt in 1 2 3 4 5; do
    port=$(_svc_free_port)
    # fsync/full_page_writes off: the cluster is thrown away, durability only costs time.
    # max_connections raised because nextest runs many tests at once, each with its own pool.
    if "${run[@]}" "$bin/pg_ctl" -D "$d/data" -l "$d/postgres.log" -w -t 30 \
         -o "-p $port -k $d -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
         start >/dev/null; then
      export TARIFF_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
      _svc_log "postgres $("$bin/postgres" --version | awk '{print $3}') at $TARIFF_TEST_DATABASE_URL"
      return 0
    fi
    _svc_log "postgres failed to start on port $port (attempt $attempt)"
  done
  cat "$d/postgres.log" >&2
  return 1
}

# Idempotent: safe to call twice, or when nothing was started. Never fails (it runs in traps).
tariff_services_stop() {
  local d=$TARIFF_SVC_DIR bin
  [ -n "$d" ] && [ -d "$d" ] || return 0
  if [ -f "$d/redis/redis.pid" ]; then
    local rpid
    rpid=$(cat "$d/redis/redis.pid")
    kill "$rpid" 2>/dev/null || true
    # Wait for it to exit: a Redis still shutting down writes its log, and `rm -rf` below would
    # then fail and abort the caller's EXIT trap under `set -e`.
    for _ in $(seq 50); do kill -0 "$rpid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$rpid" 2>/dev/null || true
  fi
  bin=$(_svc_pg_bin)
  if [ -f "$d/pg/data/postmaster.pid" ] && [ -n "$bin" ]; then
    # -m immediate: no checkpoint needed for a cluster we are about to delete.
    if [ "$(id -u)" -eq 0 ]; then
      runuser -u postgres -- "$bin/pg_ctl" -D "$d/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    else
      "$bin/pg_ctl" -D "$d/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$d" || { sleep 0.5; rm -rf "$d"; } || _svc_log "could not remove $d"
  _svc_log "stopped services and removed $d"
  [ "$d" = "$TARIFF_SVC_DIR" ] && TARIFF_SVC_DIR=
  return 0
}
