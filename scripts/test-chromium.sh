#!/usr/bin/env bash
# Find (or install) Debian's chromium for the web UI's browser tests and print its path.
# Playwright drives it headless; Playwright's own browser download is not used.
# Usage: eval "$(scripts/test-chromium.sh)"
set -euo pipefail

find_chromium() {
  local c
  for c in "${LOOPML_TEST_CHROMIUM:-}" "$(command -v chromium || true)" "$(command -v chromium-browser || true)" /usr/bin/chromium; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

BIN="$(find_chromium || true)"
if [ -z "$BIN" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "installing chromium from Debian packages..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq chromium >&2
    BIN="$(find_chromium)"
  else
    echo "no chromium found and cannot install it (need root and apt-get): sudo apt-get install chromium" >&2
    exit 1
  fi
fi
echo "export LOOPML_TEST_CHROMIUM=$BIN"
