#!/usr/bin/env bash
# Start moto's S3 server on 127.0.0.1 for the test suite (one process for the whole run) and print its URL.
# moto ("moto[s3]" with flask and flask-cors in the test extra) is pure Python from PyPI: no cloud, no container. The tests
# make their own bucket per worker and a prefix per test (tests/conftest.py); any credentials work.
# Usage: eval "$(scripts/test-s3.sh start)"   |   scripts/test-s3.sh stop
# VENV (default .venv) is where moto_server is installed.
set -euo pipefail
PORT="${LOOPML_TEST_S3_PORT:-54330}"
DIR="${LOOPML_TEST_S3_DIR:-/tmp/loopml-test-s3}"
MOTO="${VENV:-.venv}/bin/moto_server"
action="${1:-start}"

up() {  # something answers on the port
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

case "$action" in
  start)
    if ! up; then
      if [ ! -x "$MOTO" ]; then
        echo "no $MOTO: install the test extra (pip install -e '.[test]') or set VENV" >&2
        exit 1
      fi
      mkdir -p "$DIR"
      # detached from this shell (setsid, no stdio of ours): `eval "$(...)"` returns while it keeps serving
      setsid "$MOTO" -H 127.0.0.1 -p "$PORT" </dev/null >"$DIR/server.log" 2>&1 &
      echo $! >"$DIR/pid"
      for _ in $(seq 300); do  # readiness by polling the port, up to 30 s
        up && break
        kill -0 "$(cat "$DIR/pid")" 2>/dev/null || { echo "moto_server exited; see $DIR/server.log" >&2; exit 1; }
        sleep 0.1
      done
      up || { echo "moto_server did not listen on 127.0.0.1:$PORT within 30 s; see $DIR/server.log" >&2; exit 1; }
    fi
    echo "export LOOPML_TEST_S3_ENDPOINT=http://127.0.0.1:$PORT"
    ;;
  stop)
    if [ -f "$DIR/pid" ]; then
      kill "$(cat "$DIR/pid")" 2>/dev/null || true
      rm -f "$DIR/pid"
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
