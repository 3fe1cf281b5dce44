#!/usr/bin/env bash
# Reproduces the tables in BENCHMARKS.md: builds release binaries, starts
# `stele serve` on a fresh PostgreSQL database (and then on SQLite), and runs
# the load tool against it several times, with the ceilings and peers of
# issue 18 measured in the same run. Loopback only; every step stops by itself.
#
#   RUNS=3 DURATION=10 CLIENTS=512 BULK_CLIENTS=2 bash benches/run.sh
#
# Ceilings and peers, each measured for DURATION seconds right after the run
# it is compared with:
#   - PostgreSQL submit and bulk: the raw binary COPY ceiling (load
#     --copy-ceiling), 1,000 rows per durable transaction.
#   - PostgreSQL: one sequential client in single-POST mode (the
#     "sequential" rows, with every submit run), and the raw durable
#     single-row INSERT latency, one connection, autocommit (load
#     --insert-latency).
#   - SQLite submit and bulk: the raw SQLite ceiling (load --sqlite-ceiling),
#     1,000-row inserts per transaction into a fresh WAL database with
#     synchronous=FULL.
#   - proofs and tiles: nginx on loopback (benches/peers.sh) serving a static
#     copy of the bench log, made with `stele mirror` after the write modes:
#     "nginx-tiles" runs the tiles mode against it (same clients, same tile
#     paths), "nginx-static" GETs one inclusion-proof answer of the server
#     saved as a file (load --mode get --path /proof.json). Without nginx
#     installed the script says so and skips these rows; INSTALL_PEERS=1
#     installs it (`apt-get install -y nginx`).
#
# Results: one JSON object per run in $OUT (default bench-results.jsonl), a
# table of medians, and issue 18's ratios (medians of the runs' ratios).
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
# EXTRA_TOML=$'[sequencer]\nmax_wait_ms = 0'; top-level keys go in TOP_TOML,
# e.g. TOP_TOML='cache_bytes = 16777216' (benches/common.sh).
EXTRA_TOML=${EXTRA_TOML:-}

. benches/common.sh
. benches/peers.sh
: > "$OUT"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# load LABEL ARGS...: one run of the load tool, its JSON line appended to $OUT.
load() {
  local label=$1
  shift
  "$LOAD" --token "$token" --duration "$DURATION" --label "$label" --json "$@" | tee -a "$OUT"
  echo "load after $label: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

for backend in $BACKENDS; do
  if [ "$backend" = postgres ]; then
    db="stele_bench_$$"
    psql "$PG_ADMIN" -qc "CREATE DATABASE $db"
    db_url="${PG_ADMIN%/*}/$db"
    ceiling=(--copy-ceiling "$db_url")
  else
    db_url=""
    ceiling=(--sqlite-ceiling "$work/sqlite-ceiling.db")
  fi
  write_config "$work/$backend.toml" "$work/$backend.key" "$work/$backend-data" "$db_url"
  printf '%s\n' "$EXTRA_TOML" >> "$work/$backend.toml"
  token=$("$STELE" agency add bench --config "$work/$backend.toml" 2>/dev/null | tail -n1)
  start_server "$work/$backend.toml"
  for mode in $MODES; do
    clients=$CLIENTS
    [ "$mode" = bulk ] && clients=$BULK_CLIENTS
    # The read modes' peer serves the log as it is after the write modes.
    if { [ "$mode" = proofs ] || [ "$mode" = tiles ]; } && [ -z "$peer_pid" ] && peer_available; then
      start_static_peer "$URL/logs/default" "$(cat "$work/$backend.key.vkey")"
    fi
    for run in $(seq "$RUNS"); do
      extra=()
      if [ "$mode" = submit ] || [ "$mode" = bulk ]; then extra=("${ceiling[@]}"); fi
      load "$backend/$mode/run$run" --url "$URL" --server-pid "$server_pid" \
        --mode "$mode" --clients "$clients" "${extra[@]}"
      if [ "$mode" = submit ] && [ "$backend" = postgres ]; then
        load "$backend/sequential/run$run" --url "$URL" --server-pid "$server_pid" \
          --mode submit --clients 1 --insert-latency "$db_url"
      fi
      if [ -n "$peer_pid" ] && [ "$mode" = tiles ]; then
        load "$backend/nginx-tiles/run$run" --url "$PEER_URL" --mode tiles --clients "$clients"
      fi
      if [ -n "$peer_pid" ] && [ "$mode" = proofs ]; then
        load "$backend/nginx-static/run$run" --url "$PEER_URL" --mode get --path /proof.json \
          --clients "$clients"
      fi
    done
  done
  stop_static_peer
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
    r["ceiling_rows_per_s"] = r.get("copy_ceiling_rows_per_s") or r.get("sqlite_ceiling_rows_per_s")
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
          f"{f(med(rs,'p99_ms'),'%.2f'):>8} {f(med(rs,'max_ms'),'%.1f'):>8} {f(med(rs,'ceiling_rows_per_s'),'%.0f'):>10} "
          f"{f(med(rs,'ratio_to_ceiling'),'%.2f'):>6} {f(med(rs,'server_peak_rss_mib'),'%.0f'):>8} {errs or ''}")

# Issue 18's ratios: each the median of the runs' own ratios (a run's
# figure over the ceiling or peer measured right next to it, in that run).
def by_run(key):
    return {r["label"].rsplit("/", 1)[1]: r for r in groups.get(key, [])}
def own(field):
    return lambda key: [r[field] for r in groups[key] if r.get(field) is not None]
def p50_over_insert(key):
    return [r["p50_ms"] / r["insert_p50_ms"] for r in groups[key] if r.get("insert_p50_ms")]
def over_peer(peer_mode):
    def ratios(key):
        peer = by_run(key.rsplit("/", 1)[0] + "/" + peer_mode)
        return [r["rate_per_s"] / peer[run]["rate_per_s"]
                for run, r in by_run(key).items() if run in peer and peer[run]["rate_per_s"]]
    return ratios
measures = {
    "postgres": [
        ("submit", "single-record POSTs / raw COPY ceiling", "≥ 0.35", own("ratio_to_ceiling")),
        ("bulk", "bulk / raw COPY ceiling", "≥ 0.85", own("ratio_to_ceiling")),
        ("sequential", "time to receipt of one sequential client / raw single-row INSERT latency (p50)",
         "≤ 3", p50_over_insert),
    ],
    "sqlite": [
        ("submit", "SQLite single POSTs / SQLite raw ceiling", "≥ 0.35", own("ratio_to_ceiling")),
        ("bulk", "SQLite bulk / SQLite raw ceiling", "", own("ratio_to_ceiling")),
    ],
}
reads = [
    ("tiles", "full tiles/s / nginx serving the same tiles", "≥ 1.0", over_peer("nginx-tiles")),
    ("proofs", "inclusion proofs/s / nginx serving a static file of the same size", "≥ 0.7",
     over_peer("nginx-static")),
]
print()
print(f"{'backend':9} {'issue 18 measure (median of the runs)':80} {'ratio':>6} {'runs':>4}  target")
for backend in dict.fromkeys(k.split("/", 1)[0] for k in groups):
    for mode, label, target, ratios in measures.get(backend, []) + reads:
        key = f"{backend}/{mode}"
        if key not in groups:
            continue  # not run (MODES)
        vs = ratios(key)
        value = f"{statistics.median(vs):.2f}" if vs else "-"
        print(f"{backend:9} {label:80} {value:>6} {len(vs):>4}  {target}")
EOF
