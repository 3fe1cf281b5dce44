#!/usr/bin/env bash
# What a witness policy costs: single-record POSTs against a log with a 2-of-3
# policy of three local `stele witness serve` processes (each with its own
# key and SQLite state, on this machine) and against the same log with no
# policy, in alternating rounds; and, with the policy, the time from submit
# to a *witnessed* receipt (`?wait=witnessed`). Figures are medians of the
# per-round ratios (policy/no policy) and of the per-round p50/p99.
#
#   ROUNDS=5 DURATION=15 CLIENTS=256 BACKEND=postgres bash benches/witnesses.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-256}
WAIT_CLIENTS=${WAIT_CLIENTS:-$CLIENTS}
BACKEND=${BACKEND:-postgres}
INTERVAL_MS=${INTERVAL_MS:-1000}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=${OUT:-witnesses-results.jsonl}

. benches/common.sh
: > "$OUT"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

witness_pids=()
stop_witnesses() {
  for p in "${witness_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  witness_pids=()
}
trap 'stop_witnesses; cleanup' EXIT

# start_federation DIR VKEY: three witnesses of the log VKEY and DIR/federation.policy.
start_federation() {
  local dir=$1 vkey=$2
  echo "log $vkey" > "$dir/federation.policy"
  for i in 0 1 2; do
    local wvkey
    wvkey=$("$STELE" witness keygen --name "witness.bench.stele.test/w$i" --out "$dir/w$i.skey" 2>/dev/null)
    cat > "$dir/w$i.toml" <<EOT
key_file = "$dir/w$i.skey"
database = "$dir/w$i.db"
[[logs]]
origin = "bench.stele.test/default"
vkey = "$vkey"
EOT
    rm -f "$dir/w$i.addr"
    STELE_LOG=warn "$STELE" witness serve --config "$dir/w$i.toml" --listen 127.0.0.1:0 --addr-file "$dir/w$i.addr" 2>"$dir/w$i.log" &
    witness_pids+=($!)
    for _ in $(seq 100); do [ -s "$dir/w$i.addr" ] && break; sleep 0.1; done
    echo "witness w$i $wvkey http://$(head -n1 "$dir/w$i.addr")" >> "$dir/federation.policy"
  done
  printf 'group g 2 w0 w1 w2\nquorum g\n' >> "$dir/federation.policy"
}

run_variant() { # $1 = off|on|wait, $2 = round
  local variant=$1 round=$2 db_url="" dir="$work/$1-$2" wait_args=() clients=$CLIENTS
  mkdir -p "$dir"
  if [ "$BACKEND" = postgres ]; then
    db="stele_bench_witness_$$_${variant}_$round"
    psql "$PG_ADMIN" -qc "CREATE DATABASE $db"
    db_url="${PG_ADMIN%/*}/$db"
  fi
  write_config "$dir/stele.toml" "$dir/log.key" "$dir/data" "$db_url"
  if [ "$variant" != off ]; then
    start_federation "$dir" "$(cat "$dir/log.key.vkey")"
    printf 'witness_policy = "%s"\nwitness_interval_ms = %s\n' "$dir/federation.policy" "$INTERVAL_MS" >> "$dir/stele.toml"
  fi
  token=$("$STELE" agency add bench --config "$dir/stele.toml" 2>/dev/null | tail -n1)
  start_server "$dir/stele.toml"
  if [ "$variant" = wait ]; then wait_args=(--wait witnessed); clients=$WAIT_CLIENTS; fi
  "$LOAD" --url "$URL" --token "$token" --mode submit --clients "$clients" \
    --duration "$DURATION" --server-pid "$server_pid" --label "witness-$variant/round$round" \
    "${wait_args[@]}" --json | tee -a "$OUT"
  stop_server
  stop_witnesses
  if [ -n "$db" ]; then psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db"; db=""; fi
}

for round in $(seq "$ROUNDS"); do
  # Rotate the order, so a drift of the machine hits every variant.
  case $((round % 3)) in
    1) order="off on wait" ;;
    2) order="on wait off" ;;
    0) order="wait off on" ;;
  esac
  for v in $order; do run_variant "$v" "$round"; done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    variant, rnd = r["label"].split("/")
    by.setdefault(rnd, {})[variant] = r
ratios, p50w, p99w = [], [], []
for rnd, v in sorted(by.items()):
    off, on, wait = v["witness-off"], v["witness-on"], v["witness-wait"]
    for name, r in (("off", off), ("on", on), ("wait", wait)):
        if r["errors_by_status"]:
            print(f"{rnd}: errors {name}={r['errors_by_status']}")
    ratios.append(on["rate_per_s"] / off["rate_per_s"])
    p50w.append(wait["p50_ms"]); p99w.append(wait["p99_ms"])
    print(f"{rnd}: off {off['rate_per_s']:.0f}/s p99 {off['p99_ms']:.1f} ms | policy {on['rate_per_s']:.0f}/s p99 {on['p99_ms']:.1f} ms | policy/off {ratios[-1]:.3f} | wait=witnessed {wait['rate_per_s']:.0f}/s p50 {wait['p50_ms']:.0f} ms p99 {wait['p99_ms']:.0f} ms")
print(f"median policy/off {statistics.median(ratios):.3f} over {len(ratios)} rounds; "
      f"time to a witnessed receipt: p50 {statistics.median(p50w):.0f} ms, p99 {statistics.median(p99w):.0f} ms (medians of the rounds)")
PY
