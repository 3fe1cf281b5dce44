#!/usr/bin/env bash
# Schemathesis (every check) against a live `stele serve` started here on
# loopback in a scratch directory (the quick start: embedded SQLite, the
# `demo` agency), for a bounded time. Fails on any failure it finds, and if
# the server logged an internal error or a panic meanwhile.
#
#   STELE_BIN=target/debug/stele PYTHON=python3.12 MAX_TIME=120 bash tests/schemathesis/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
stele=$(realpath "${STELE_BIN:?set STELE_BIN to the stele binary}")
python=${PYTHON:-python3}
max_time=${MAX_TIME:-120}
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install -q -r "$here/requirements.txt"

(cd "$work" && STELE_LOG=info exec "$stele" serve --listen 127.0.0.1:0 --addr-file addr --data-dir data) > "$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -s "$work/addr" ] && break; sleep 0.1; done
[ -s "$work/addr" ] || { cat "$work/serve.log"; echo "FATAL: stele serve did not start" >&2; exit 1; }
addr=$(head -n1 "$work/addr")
token=$(grep -o 'demo\.[A-Za-z0-9_-]*' "$work/serve.log" | head -n1)
[ -n "$token" ] || { cat "$work/serve.log"; echo "FATAL: no demo token printed" >&2; exit 1; }

status=0
"$work/venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run \
  "http://$addr/openapi.json" -H "Authorization: Bearer $token" \
  --checks all --max-time "$max_time" --workers 2 --seed "${SEED:-20261202}" || status=$?

if grep -E 'internal error|panicked' "$work/serve.log" >/dev/null; then
  grep -E 'internal error|panicked' "$work/serve.log" | head -20
  echo "FATAL: the server logged internal errors during the run" >&2
  status=1
fi
exit "$status"
