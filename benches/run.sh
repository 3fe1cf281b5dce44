#!/usr/bin/env bash
# Reproduces the tables in BENCHMARKS.md: builds release binaries, starts
# `stele serve` on a fresh PostgreSQL database (and then on SQLite), and runs
# the load tool against it several times, with the raw COPY ceiling measured
# in the same run. Loopback only; every step stops by itself.
#
#   RUNS=3 DURATION=10 CLIENTS=512 BULK_CLIENTS=2 bash benches/run.sh
#
# Results: one JSON object per run in $OUT (default bench-results.jsonl),
# and a table of medians printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-20}
CLIENTS=${CLIENTS:-512}
BULK_CLIENTS=${BULK_CLIENTS:-2}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=${OUT:-bench-results.jsonl}
MODES=${MODES:-"submit bulk proofs tiles"}
BACKENDS=${BACKENDS:-"postgres sqlite"}
# Extra TOML appended to the server configuration, e.g.
# EXTRA_TOML=$'[sequencer]\nmax_wait_ms = 0'
EXTRA_TOML=${EXTRA_TOML:-}

. benches/common.sh
: > "$OUT"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

for backend in $BACKENDS; do
  if [ "$backend" = postgres ]; then
    db="stele_bench_$$"
    psql "$PG_ADMIN" -qc "CREATE DATABASE $db"
    db_url="${PG_ADMIN%/*}/$db"
    ceiling=(--copy-ceiling "$db_url")
  else
    db_url=""
    ceiling=()
  fi
  write_config "$work/$backend.toml" "$work/$backend.key" "$work/$backend-data" "$db_url"
  printf '%s\n' "$EXTRA_TOML" >> "$work/$backend.toml"
  token=$("$STELE" agency add bench --config "$work/$backend.toml" 2>/dev/null | tail -n1)
  start_server "$work/$backend.toml"
  for mode in $MODES; do
    clients=$CLIENTS
    [ "$mode" = bulk ] && clients=$BULK_CLIENTS
    for run in $(seq "$RUNS"); do
      extra=()
      if [ "$mode" = submit ] || [ "$mode" = bulk ]; then extra=("${ceiling[@]}"); fi
      "$LOAD" --url "$URL" --token "$token" --mode "$mode" --clients "$clients" \
        --duration "$DURATION" --server-pid "$server_pid" --label "$backend/$mode/run$run" \
        --json "${extra[@]}" | tee -a "$OUT"
      echo "load after $backend/$mode/run$run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    done
  done
  stop_server
  if [ -n "$db" ]; then psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db"; db=""; fi
done

python3 - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in rows:
    key = r["label"].rsplit("/", 1)[0]
    groups.setdefault(key, []).append(r)
def med(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None]
    return statistics.median(v) if v else None
print(f"{'backend/mode':22} {'runs':>4} {'rate/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'ceiling/s':>10} {'ratio':>6} {'RSS MiB':>8} errors")
for key, rs in groups.items():
    errs = {}
    for r in rs:
        for s, n in r["errors_by_status"].items():
            errs[s] = errs.get(s, 0) + n
    f = lambda x, fmt: (fmt % x) if x is not None else "-"
    print(f"{key:22} {len(rs):>4} {f(med(rs,'rate_per_s'),'%.0f'):>9} {f(med(rs,'p50_ms'),'%.2f'):>8} "
          f"{f(med(rs,'p99_ms'),'%.2f'):>8} {f(med(rs,'max_ms'),'%.1f'):>8} {f(med(rs,'copy_ceiling_rows_per_s'),'%.0f'):>10} "
          f"{f(med(rs,'ratio_to_ceiling'),'%.2f'):>6} {f(med(rs,'server_peak_rss_mib'),'%.0f'):>8} {errs or ''}")
EOF
