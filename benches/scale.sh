#!/usr/bin/env bash
# Append rate at two tree sizes on PostgreSQL: fills the log with the bulk
# endpoint to SMALL entries, measures single-record POSTs and inclusion
# proofs, fills on to LARGE entries, measures again, and reports the
# server's peak RSS. Before each measurement a CHECKPOINT flushes what the
# fill dirtied (the rate at a size, not while digesting a bulk load).
# Loopback only.
#
#   SMALL=100000 LARGE=1000000 DURATION=10 CLIENTS=256 bash benches/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL=${SMALL:-100000}
LARGE=${LARGE:-1000000}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-256}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=${OUT:-bench-scale.jsonl}

cargo build --release --bin stele
cargo bench --bench load --no-run
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
STELE="$target_dir/release/stele"
LOAD=$(ls -t "$target_dir"/release/deps/load-* | grep -v '\.d$' | head -n1)

work=$(mktemp -d)
server_pid=""
db="stele_scale_$$"
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db" || true
  rm -rf "$work"
}
trap cleanup EXIT
: > "$OUT"

psql "$PG_ADMIN" -qc "CREATE DATABASE $db"
"$STELE" keygen --origin "bench.stele.test/default" --out "$work/key" >/dev/null 2>&1
cat > "$work/stele.toml" <<EOT
database_url = "${PG_ADMIN%/*}/$db"
data_dir = "$work/data"
[[logs]]
name = "default"
origin = "bench.stele.test/default"
key_file = "$work/key"
EOT
token=$("$STELE" agency add bench --config "$work/stele.toml" 2>/dev/null | tail -n1)
STELE_LOG=warn "$STELE" serve --config "$work/stele.toml" --listen 127.0.0.1:0 --addr-file "$work/addr" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
URL="http://$(head -n1 "$work/addr")"

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
