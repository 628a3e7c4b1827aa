#!/usr/bin/env bash
# Start a throwaway PostgreSQL on 127.0.0.1 for the test suite and print its URL.
# Installs Debian's postgresql package when no server binaries are found.
# Usage: eval "$(scripts/test-postgres.sh start)"   |   scripts/test-postgres.sh stop
set -euo pipefail
PORT="${LOOPML_TEST_PG_PORT:-54329}"
DATA="${LOOPML_TEST_PG_DIR:-/tmp/loopml-test-pg}"
action="${1:-start}"

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  return 1
}

as_pg() {
  if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

BIN="$(find_bin || true)"
if [ -z "$BIN" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "installing postgresql from Debian packages..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
    BIN="$(find_bin)"
  else
    echo "no PostgreSQL found and cannot install it (need root and apt-get)" >&2
    exit 1
  fi
fi

case "$action" in
  start)
    if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
      if [ ! -f "$DATA/PG_VERSION" ]; then
        mkdir -p "$DATA"
        [ "$(id -u)" = "0" ] && chown postgres "$DATA"
        as_pg "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
      fi
      as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
        -o "-h 127.0.0.1 -p $PORT -k $DATA -c fsync=off -c max_connections=200" start >/dev/null
    fi
    as_pg "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='loopml_test'" | grep -q 1 ||
      as_pg "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -qc "CREATE DATABASE loopml_test" >/dev/null
    echo "export LOOPML_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:$PORT/loopml_test"
    ;;
  stop)
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
