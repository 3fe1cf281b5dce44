#!/usr/bin/env bash
# Append rate at two tree sizes on PostgreSQL: fills the log with the bulk
# endpoint to SMALL entries, measures single-record POSTs and inclusion
# proofs, fills on to LARGE entries, measures again, and reports the
# server's peak RSS. Before each measurement a CHECKPOINT flushes what the
# fill dirtied (the rate at a size, not while digesting a bulk load). Each
# measurement is repeated REPEAT times (default 3; the tree grows by a few
# hundred thousand entries meanwhile) and the summary at the end gives the
# medians and the ratio of the median rates. Loopback only.
#
#   PG_PRIVATE=1 SMALL=100000 LARGE=10000000 DURATION=10 CLIENTS=512 bash benches/scale.sh
#
# PG_PRIVATE=1 measures on a throw-away cluster tuned with
# deploy/postgresql.conf (see benches/common.sh). PERF=DIR records a CPU
# profile of the server during each measurement into DIR/LABEL.data.
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL=${SMALL:-100000}
LARGE=${LARGE:-1000000}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-256}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
REPEAT=${REPEAT:-3}
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
  profiled "$1" "$LOAD" --url "$URL" --token "$token" --mode submit --clients "$CLIENTS" --duration "$DURATION" \
    --server-pid "$server_pid" --label "$1" --json | tee -a "$OUT"
}

proofs() { # $1 = label
  profiled "$1" "$LOAD" --url "$URL" --mode proofs --clients 64 --duration "$DURATION" \
    --server-pid "$server_pid" --label "$1" --json | tee -a "$OUT"
}

for size in "$SMALL" "$LARGE"; do
  fill_to "$size"; settle
  for run in $(seq "$REPEAT"); do measure "submit-at-$size.run$run"; done
  for run in $(seq "$REPEAT"); do proofs "proofs-at-$size.run$run"; done
done

python3 - "$OUT" "$SMALL" "$LARGE" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
small, large = sys.argv[2], sys.argv[3]
def runs(prefix):
    return [r for r in rows if r["label"].startswith(prefix + ".run")]
def med(rs, k):
    return statistics.median(r[k] for r in rs)
for r in rows:
    if r["label"].startswith("fill-to-"):
        print(f"{r['label']:24} {r['rate_per_s']:>9.0f}/s over {r['seconds']:.0f} s")
for what in ("submit", "proofs"):
    for size in (small, large):
        rs = runs(f"{what}-at-{size}")
        rates = ", ".join(f"{r['rate_per_s']:.0f}" for r in rs)
        print(f"{what}-at-{size:<14} median {med(rs, 'rate_per_s'):>7.0f}/s  p99 {med(rs, 'p99_ms'):6.1f} ms  (runs: {rates})")
ratio = med(runs(f"submit-at-{large}"), "rate_per_s") / med(runs(f"submit-at-{small}"), "rate_per_s")
print(f"append rate at {large} / at {small}: {ratio:.2f}")
print(f"server peak RSS: {max(r['server_peak_rss_mib'] for r in rows):.0f} MiB")
EOF
