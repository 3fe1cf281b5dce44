#!/usr/bin/env bash
# Append rate at two tree sizes on PostgreSQL: fills the log with the bulk
# endpoint to SMALL entries, measures single-record POSTs and inclusion
# proofs, fills on to LARGE entries, measures again, and reports the
# server's peak RSS. Before each measurement a CHECKPOINT flushes what the
# fill dirtied (the rate at a size, not while digesting a bulk load).
# Loopback only.
#
#   SMALL=100000 LARGE=10000000 DURATION=10 CLIENTS=512 bash benches/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL=${SMALL:-100000}
LARGE=${LARGE:-1000000}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-256}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=${OUT:-bench-scale.jsonl}

. benches/common.sh
db="stele_scale_$$"
: > "$OUT"

psql "$PG_ADMIN" -qc "CREATE DATABASE $db"
write_config "$work/stele.toml" "$work/key" "$work/data" "${PG_ADMIN%/*}/$db"
token=$("$STELE" agency add bench --config "$work/stele.toml" 2>/dev/null | tail -n1)
start_server "$work/stele.toml"

settle() { # flush what the fill dirtied, so that it does not weigh on the measurement
  local t0=$SECONDS
  psql "${PG_ADMIN%/*}/$db" -qc CHECKPOINT
  echo "CHECKPOINT after the fill took $(( SECONDS - t0 )) s" >&2
}
fill_to() { # $1 = target tree size
  local size
  size=$(curl -s "$URL/logs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["logs"][0]["tree_size"])')
  [ "$size" -ge "$1" ] && return
  "$LOAD" --url "$URL" --token "$token" --mode bulk --clients 2 --duration 100000 \
    --count $(( $1 - size )) --server-pid "$server_pid" --label "fill-to-$1" --json | tee -a "$OUT"
}
measure() { # $1 = label
  "$LOAD" --url "$URL" --token "$token" --mode submit --clients "$CLIENTS" --duration "$DURATION" \
    --server-pid "$server_pid" --label "$1" --json | tee -a "$OUT"
}

proofs() { # $1 = label
  "$LOAD" --url "$URL" --mode proofs --clients 64 --duration "$DURATION" \
    --server-pid "$server_pid" --label "$1" --json | tee -a "$OUT"
}

fill_to "$SMALL"; settle; measure "submit-at-$SMALL"; proofs "proofs-at-$SMALL"
fill_to "$LARGE"; settle; measure "submit-at-$LARGE"; proofs "proofs-at-$LARGE"
