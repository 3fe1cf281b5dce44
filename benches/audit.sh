#!/usr/bin/env bash
# How fast `stele monitor --audit` checks a log, against the in-process
# ceiling of the same work on the same entries (issue 18): a log filled by
# the load tool's bulk mode on a fresh PostgreSQL database, copied with
# `stele mirror`; then, ROUNDS times alternating, the audit (`stele
# monitor --audit --tree-only --once`, fresh state: every entry bundle and
# hash tile fetched, every leaf hashed, the tree rebuilt and checked against
# the checkpoint) timed against the live server, and the ceiling
# (`examples/audit_ceiling.rs`: the same bundles already in memory, only the
# leaf hashes and the tree). The figure is the median of the per-round
# ratios audit/ceiling (entries/s).
#
#   ROUNDS=3 FILL=15 BULK_CLIENTS=4 bash benches/audit.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
FILL=${FILL:-15}
BULK_CLIENTS=${BULK_CLIENTS:-4}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=${OUT:-audit-results.jsonl}

. benches/common.sh
cargo build --release --example audit_ceiling
CEILING="$target_dir/release/examples/audit_ceiling"
: > "$OUT"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

db="stele_bench_audit_$$"
psql "$PG_ADMIN" -qc "CREATE DATABASE $db"
write_config "$work/stele.toml" "$work/log.key" "$work/data" "${PG_ADMIN%/*}/$db"
token=$("$STELE" agency add bench --config "$work/stele.toml" 2>/dev/null | tail -n1)
start_server "$work/stele.toml"
"$LOAD" --url "$URL" --token "$token" --mode bulk --clients "$BULK_CLIENTS" \
  --duration "$FILL" --label fill --json > "$work/fill.json"
vkey=$(cat "$work/log.key.vkey")
"$STELE" mirror "$URL/logs/default" "$work/mirror" --vkey "$vkey" >&2
size=$(sed -n 2p "$work/mirror/checkpoint")
echo "log: $size entries" >&2

for round in $(seq "$ROUNDS"); do
  rm -f "$work/state"
  start=$(date +%s.%N)
  "$STELE" monitor "$URL/logs/default" --vkey "$vkey" --state "$work/state" \
    --once --audit --tree-only > "$work/audit.out"
  end=$(date +%s.%N)
  grep -q "audited: the $size entries" "$work/audit.out" || {
    cat "$work/audit.out" >&2
    exit 1
  }
  "$CEILING" "$work/mirror" > "$work/ceiling.json"
  python3 - "$round" "$size" "$start" "$end" "$work/ceiling.json" <<'PY' | tee -a "$OUT"
import json, sys
rnd, size, start, end = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ceiling = json.load(open(sys.argv[5]))
audit = size / (end - start)
print(json.dumps({"round": rnd, "entries": size, "audit_seconds": end - start,
                  "audit_entries_per_s": audit, "ceiling_entries_per_s": ceiling["entries_per_s"],
                  "ratio": audit / ceiling["entries_per_s"]}))
PY
done
stop_server

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in rows:
    print(f"round {r['round']}: audit {r['audit_entries_per_s']:.0f} entries/s ({r['audit_seconds']:.1f} s), "
          f"in-process ceiling {r['ceiling_entries_per_s']:.0f} entries/s, ratio {r['ratio']:.2f}")
print(f"median audit / in-process hashing: {statistics.median(r['ratio'] for r in rows):.2f} "
      f"over {len(rows)} rounds, {rows[0]['entries']} entries (target ≥ 0.5)")
PY
