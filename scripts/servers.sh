#!/usr/bin/env bash
# Local servers for parallel optimize, on 127.0.0.1 only:
#   pg-start / pg-stop          a PostgreSQL 15 cluster (databases `optuna` and `mlflow`)
#   mlflow-start / mlflow-stop  an MLflow tracking server backed by that cluster
# State lives in $TAGIFAI_SERVERS_DIR (default .servers/); ports from PG_PORT / MLFLOW_PORT.
# Prints the URL a started server answers on.
#
# PostgreSQL asks for a password (scram-sha-256), generated on first start and kept in
# $ROOT/pgpass, readable by its owner only; clients find it through PGPASSFILE (the Makefile
# and the tests export it), so the password is never on a command line or in a URL.
set -euo pipefail

ROOT=${TAGIFAI_SERVERS_DIR:-$PWD/.servers}
PG_PORT=${PG_PORT:-5433}
MLFLOW_PORT=${MLFLOW_PORT:-5002}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
MLFLOW=${MLFLOW:-mlflow}
PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT"
# 32 workers x 3 (tagifai/study.py's pool) + the MLflow server's 40 + room for psql and the UI.
PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-200}
export PGPASSFILE="$ROOT/pgpass"

die() { echo "servers.sh: $*" >&2; exit 1; }

# PostgreSQL refuses to run as root: run its tools as the postgres user when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL not found (install postgresql-15; PG_BIN=$PG_BIN)"
  mkdir -p "$ROOT/pg"
  chmod 755 "$ROOT"
  [ "$(id -u)" = 0 ] && chown postgres: "$ROOT/pg"
  if [ ! -f "$ROOT/pg/PG_VERSION" ]; then
    secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
    (umask 077; echo "127.0.0.1:*:*:postgres:$secret" >"$ROOT/pgpass")
    # initdb reads the password from a file only the postgres user can read, removed after.
    (umask 077; echo "$secret" >"$ROOT/pg-pwfile")
    [ "$(id -u)" = 0 ] && chown postgres: "$ROOT/pg-pwfile"
    as_pg "$PG_BIN/initdb" -D "$ROOT/pg" -U postgres --auth=scram-sha-256 \
      --pwfile="$ROOT/pg-pwfile" -E UTF8 >"$ROOT/initdb.log"
    rm -f "$ROOT/pg-pwfile"
  fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$ROOT/pg" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$ROOT/pg" -w -t 60 -l "$ROOT/pg/server.log" \
      -o "-p $PG_PORT -k $ROOT/pg -c listen_addresses=127.0.0.1 -c max_connections=$PG_MAX_CONNECTIONS" \
      start >/dev/null
  fi
  # The postgres user cannot read the owner's pgpass: its tools get the password this way.
  PGPASSWORD=$(cut -d: -f5 "$ROOT/pgpass" 2>/dev/null || true)
  export PGPASSWORD
  for db in optuna mlflow; do
    if ! as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc \
        "select 1 from pg_database where datname = '$db'" | grep -q 1; then
      as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
    fi
  done
  unset PGPASSWORD
  echo "$PG_URL/optuna"
}

pg_stop() {
  [ -f "$ROOT/pg/PG_VERSION" ] || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$ROOT/pg" -m fast -w stop >/dev/null 2>&1 || true
}

mlflow_start() {
  mkdir -p "$ROOT/mlflow-artifacts"
  if [ -f "$ROOT/mlflow.pid" ] && kill -0 "$(cat "$ROOT/mlflow.pid")" 2>/dev/null; then
    echo "http://127.0.0.1:$MLFLOW_PORT"; return 0
  fi
  # No job-runner side processes: tagifai needs only tracking and artifacts.
  # The server's own database pools (one for runs, one for the registry, in each of its 2
  # workers; a worker serves many requests at once, each holding a connection: 3 + 2 ran
  # dry at 16 workers): MLflow pings connections before use; 2 x 2 x (5 + 5) = 40 at most,
  # recycled before PostgreSQL or a proxy drops them idle.
  MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=5 MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=5 \
  MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE=1800 \
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$MLFLOW" server --backend-store-uri "$PG_URL/mlflow" \
    --artifacts-destination "$ROOT/mlflow-artifacts" \
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 2 >"$ROOT/mlflow.log" 2>&1 &
  echo $! >"$ROOT/mlflow.pid"
  for _ in $(seq 120); do
    if curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null; then
      echo "http://127.0.0.1:$MLFLOW_PORT"; return 0
    fi
    kill -0 "$(cat "$ROOT/mlflow.pid")" 2>/dev/null || { tail -n 20 "$ROOT/mlflow.log" >&2; die "mlflow server exited"; }
    sleep 1
  done
  die "mlflow server did not answer on port $MLFLOW_PORT within 120 s (see $ROOT/mlflow.log)"
}

mlflow_stop() {
  [ -f "$ROOT/mlflow.pid" ] || return 0
  pid=$(cat "$ROOT/mlflow.pid")
  # setsid made the server a process-group leader: stop it and all its workers.
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$ROOT/mlflow.pid"
}

case "${1:-}" in
  pg-start) pg_start ;;
  pg-stop) pg_stop ;;
  mlflow-start) mlflow_start ;;
  mlflow-stop) mlflow_stop ;;
  *) die "usage: $0 pg-start|pg-stop|mlflow-start|mlflow-stop" ;;
esac
