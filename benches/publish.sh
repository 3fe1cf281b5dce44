#!/usr/bin/env bash
# What publishing to object storage costs the writer, and how far behind it
# runs: the load tool's bulk mode (full write load) against a server with
# `[publish]` on (a real S3-compatible server, s3s-fs, on loopback, on the
# same machine) and off, in alternating rounds, each on a fresh database.
# The figure is the median of the per-round ratios on/off of the write rate,
# with the raw COPY ceiling measured in the same run; with publishing on,
# the delay from a checkpoint shown by the log to a bucket checkpoint
# covering it (`stele_publish_delay_seconds`, p50 and p99 over the round)
# and how long the bucket took to catch up after the load stopped; and the
# writer's own CPU time per record (user + system, from /proc), which
# separates what publishing costs the writer from what the S3 server on the
# same cores takes; and the whole machine's busy CPU per record, with the S3
# server's share of it.
#
#   ROUNDS=5 DURATION=15 BULK_CLIENTS=8 BACKEND=postgres bash benches/publish.sh
#
# PUBLISH_CONCURRENCY and PUBLISH_INTERVAL_MS set `[publish]`'s
# `concurrency` (default 16) and `interval_ms` (default 200). S3_ROOT is
# where the S3 server keeps its objects (default: the scratch directory,
# on the disk PostgreSQL writes its WAL to; S3_ROOT=/dev/shm keeps the
# bucket's writes off that disk, as a real bucket on other machines is).
# S3_NICE runs the S3 server at that nice level (19: it gets only the CPU
# the writer, PostgreSQL and the load tool leave — a stand-in for a bucket
# on other machines, whose CPU the writer does not share).
#
# PERF=DIR records a perf profile of the writer per round (DIR/on-1.data...).
# Needs s3s-fs (STELE_S3S_FS, or on PATH: cargo install --locked s3s-fs
# --version 0.14.1 --features binary).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-15}
BULK_CLIENTS=${BULK_CLIENTS:-8}
BACKEND=${BACKEND:-postgres}
MODE=${MODE:-bulk}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=${OUT:-publish-results.jsonl}
S3S=${STELE_S3S_FS:-$(command -v s3s-fs || true)}
[ -x "$S3S" ] || { echo "s3s-fs not found: set STELE_S3S_FS" >&2; exit 1; }

. benches/common.sh
: > "$OUT"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

s3_pid=""
s3_dir=""
# Stops the S3 server and removes its objects (they may live outside $work).
stop_s3() {
  [ -n "$s3_pid" ] && kill "$s3_pid" 2>/dev/null && wait "$s3_pid" 2>/dev/null || true
  [ -n "$s3_dir" ] && rm -rf "$s3_dir"
  s3_pid=""; s3_dir=""
}
trap 'stop_s3; cleanup' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key

metric() { # $1 = metric line prefix
  # awk reads to the end: an early exit would fail curl (pipefail).
  curl -s "$URL/metrics" | awk -v p="$1" '!found && index($0, p) == 1 { print $2; found = 1 }'
}

run_variant() { # $1 = off|on, $2 = round
  local variant=$1 round=$2 db_url="" dir="$work/$1-$2" ceiling=()
  mkdir -p "$dir"
  if [ "$BACKEND" = postgres ]; then
    db="stele_bench_publish_$$_${variant}_$round"
    psql "$PG_ADMIN" -qc "CREATE DATABASE $db"
    db_url="${PG_ADMIN%/*}/$db"
    ceiling=(--copy-ceiling "$db_url")
  fi
  write_config "$dir/stele.toml" "$dir/log.key" "$dir/data" "$db_url"
  if [ "$variant" = on ]; then
    port=$((20000 + RANDOM % 20000))
    s3_dir=$(mktemp -d "${S3_ROOT:-$work}/s3.XXXXXX")
    mkdir -p "$s3_dir/tiles"
    nice -n "${S3_NICE:-0}" "$S3S" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
      --secret-key "$AWS_SECRET_ACCESS_KEY" "$s3_dir" >"$dir/s3.log" 2>&1 &
    s3_pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    # Before the log's table, after the top-level keys.
    sed -i "/^\[\[logs\]\]/i [publish]\nurl = \"s3://tiles/logs\"\nendpoint = \"http://127.0.0.1:$port\"\nmax_lag_s = 600\nconcurrency = ${PUBLISH_CONCURRENCY:-16}\ninterval_ms = ${PUBLISH_INTERVAL_MS:-200}" "$dir/stele.toml"
  fi
  token=$("$STELE" agency add bench --config "$dir/stele.toml" 2>/dev/null | tail -n1)
  start_server "$dir/stele.toml"
  profiled "$variant-$round" "$LOAD" --url "$URL" --token "$token" --mode "$MODE" --clients "$BULK_CLIENTS" \
    --duration "$DURATION" --server-pid "$server_pid" ${s3_pid:+--other-pid "$s3_pid"} --label "$variant/round$round" \
    --json "${ceiling[@]}" > "$dir/row.json"
  if [ "$variant" = on ]; then
    # Catching up after the load: until the bucket has the served size.
    size=$(metric 'stele_tree_size{log="default"}')
    start=$(date +%s.%N)
    for _ in $(seq 1200); do
      [ "$(metric 'stele_published_tree_size{log="default"}')" = "$size" ] && break
      sleep 0.1
    done
    end=$(date +%s.%N)
    curl -s "$URL/metrics" | grep '^stele_publish_delay_seconds_bucket' | grep 'log="default"' > "$dir/delay.txt" || true
    curl -s "$URL/metrics" | grep '^stele_publish_objects_total' > "$dir/objects.txt" || true
    python3 - "$dir/row.json" "$dir/delay.txt" "$start" "$end" "$size" "$(metric 'stele_published_tree_size{log="default"}')" <<'PY' | tee -a "$OUT"
import json, re, sys
row = json.load(open(sys.argv[1]))
buckets = []
for line in open(sys.argv[2]):
    le = re.search(r'le="([^"]+)"', line).group(1)
    buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
total = buckets[-1][1] if buckets else 0
def q(p):
    for le, n in buckets:
        if total and n >= p * total:
            return le
    return None
row["publish_delay_p50_s"] = q(0.50)
row["publish_delay_p99_s"] = q(0.99)
row["publish_checkpoints"] = total
row["catch_up_s"] = float(sys.argv[4]) - float(sys.argv[3])
row["tree_size"] = int(float(sys.argv[5]))
row["published_size"] = int(float(sys.argv[6] or 0))
objects = {}
for line in open(sys.argv[1].replace("row.json", "objects.txt")):
    outcome = re.search(r'outcome="([^"]+)"', line).group(1)
    objects[outcome] = objects.get(outcome, 0) + float(line.split()[-1])
row["publish_objects"] = objects
print(json.dumps(row))
PY
  else
    tee -a "$OUT" < "$dir/row.json"
  fi
  stop_server
  stop_s3
  if [ -n "$db" ]; then psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db"; db=""; fi
}

for round in $(seq "$ROUNDS"); do
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
ratios = []
for rnd, v in sorted(by.items()):
    off, on = v["off"], v["on"]
    ratios.append(on["rate_per_s"] / off["rate_per_s"])
    print(f"{rnd}: off {off['rate_per_s']:.0f}/s (ceiling {off.get('copy_ceiling_rows_per_s') or 0:.0f}), "
          f"on {on['rate_per_s']:.0f}/s (ceiling {on.get('copy_ceiling_rows_per_s') or 0:.0f}), on/off {ratios[-1]:.2f}; "
          f"delay p50 {on['publish_delay_p50_s']} s, p99 {on['publish_delay_p99_s']} s over {on['publish_checkpoints']:.0f} checkpoints; "
          f"caught up {on['catch_up_s']:.1f} s after the load ({on['published_size']} of {on['tree_size']}); "
          f"writer CPU per record off {off.get('server_cpu_us_per_op') or 0:.1f} µs, on {on.get('server_cpu_us_per_op') or 0:.1f} µs; "
          f"machine CPU per record off {off.get('machine_cpu_us_per_op') or 0:.1f} µs, on {on.get('machine_cpu_us_per_op') or 0:.1f} µs "
          f"(the S3 server {1e6 * (on.get('other_cpu_s') or 0) / max(on['ops'], 1):.1f} µs)")
on = [v["on"] for v in by.values()]
off = [v["off"] for v in by.values()]
med = statistics.median
print(f"median on/off write rate: {med(ratios):.2f} ({len(ratios)} rounds); "
      f"off {med([r['rate_per_s'] for r in off]):.0f}/s, on {med([r['rate_per_s'] for r in on]):.0f}/s; "
      f"delay p50 {med([r['publish_delay_p50_s'] for r in on])} s, p99 {med([r['publish_delay_p99_s'] for r in on])} s; "
      f"catch-up {med([r['catch_up_s'] for r in on]):.1f} s; "
      f"writer CPU per record on/off {med([v['on']['server_cpu_us_per_op'] / v['off']['server_cpu_us_per_op'] for v in by.values()]):.2f}")
PY
