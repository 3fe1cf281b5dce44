#!/usr/bin/env bash
# What the record-type registry's validation costs: single-record POSTs of
# valid records of the four public example types (examples/types/), against a log
# where those types are registered (every record checked against its JSON
# Schema and subject pattern, its writer grant, `type_version` in the leaf)
# and against a log that does not know them and accepts them unvalidated
# (`accept_unregistered_types`), in alternating rounds on the same machine.
# The figure is the median of the per-round ratios on/off.
#
#   ROUNDS=5 DURATION=15 CLIENTS=256 BACKEND=postgres bash benches/registry.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-256}
BACKEND=${BACKEND:-postgres}
MODE=${MODE:-submit}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=${OUT:-registry-results.jsonl}

. benches/common.sh
: > "$OUT"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# The example types, open to the load tool's agency.
mkdir -p "$work/types"
for f in examples/types/*.toml; do
  # Public types only: the load tool's shapes are public records.
  grep -q '^visibility = "private"' "$f" && continue
  sed 's/^writers = .*/writers = ["*"]/' "$f" > "$work/types/$(basename "$f")"
done

run_variant() { # $1 = on|off, $2 = round
  local variant=$1 round=$2 db_url="" dir="$work/$1-$2"
  mkdir -p "$dir"
  if [ "$BACKEND" = postgres ]; then
    db="stele_bench_registry_$$_${variant}_$round"
    psql "$PG_ADMIN" -qc "CREATE DATABASE $db"
    db_url="${PG_ADMIN%/*}/$db"
  fi
  write_config "$dir/stele.toml" "$dir/log.key" "$dir/data" "$db_url"
  token=$("$STELE" agency add bench --registry-admin --config "$dir/stele.toml" 2>/dev/null | tail -n1)
  start_server "$dir/stele.toml"
  if [ "$variant" = on ]; then
    STELE_TOKEN=$token "$STELE" type apply --log "$URL/logs/default" "$work"/types/*.toml >&2
  fi
  "$LOAD" --url "$URL" --token "$token" --mode "$MODE" --shape examples --clients "$CLIENTS" \
    --duration "$DURATION" --server-pid "$server_pid" --label "registry-$variant/round$round" \
    --json | tee -a "$OUT"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
  if [ -n "$db" ]; then psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db"; db=""; fi
}

for round in $(seq "$ROUNDS"); do
  # Alternate which goes first, so a drift of the machine hits both.
  if [ $((round % 2)) = 1 ]; then order="off on"; else order="on off"; fi
  for v in $order; do run_variant "$v" "$round"; done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    variant, rnd = r["label"].split("/")
    by.setdefault(rnd, {})[variant] = r
ratios, on, off = [], [], []
for rnd, v in sorted(by.items()):
    a, b = v["registry-off"], v["registry-on"]
    if a["errors_by_status"] or b["errors_by_status"]:
        print(f"{rnd}: errors off={a['errors_by_status']} on={b['errors_by_status']}")
    ratios.append(b["rate_per_s"] / a["rate_per_s"])
    on.append(b["rate_per_s"]); off.append(a["rate_per_s"])
    print(f"{rnd}: off {a['rate_per_s']:.0f}/s  on {b['rate_per_s']:.0f}/s  on/off {ratios[-1]:.3f}  p99 off {a['p99_ms']:.1f} ms on {b['p99_ms']:.1f} ms")
print(f"median on/off {statistics.median(ratios):.3f} over {len(ratios)} rounds "
      f"(rates: off {statistics.median(off):.0f}/s, on {statistics.median(on):.0f}/s)")
PY
