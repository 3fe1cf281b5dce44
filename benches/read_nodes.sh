#!/usr/bin/env bash
# Reads served by one node against a writer plus two read nodes, on the same
# machine: a private PostgreSQL primary (deploy/postgresql.conf) with the
# writer, a streaming replica of it (pg_basebackup -R) with two read nodes,
# the log filled with FILL_S seconds of bulk writes first. Each round runs
# the load tool's proofs and tiles modes with CLIENTS clients against the
# writer alone ("one") and spread over writer, read node a and read node b
# ("three"), in alternating order; the figure is the median of the
# per-round ratios three/one.
#
#   ROUNDS=3 DURATION=10 CLIENTS=64 bash benches/read_nodes.sh
#
# All of it shares the machine's cores: this measures what splitting the
# read path over processes and a replica costs or gains on one host, not
# what more hosts would give.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-64}
FILL_S=${FILL_S:-8}
MODES=${MODES:-proofs tiles}
OUT=${OUT:-read-nodes-results.jsonl}
export PG_PRIVATE=1
PG_ADMIN=unused

. benches/common.sh
: > "$OUT"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

replica_dir=$(mktemp -d /tmp/stele-pg-replica.XXXXXX)
replica_port=$((pg_port + 1))
readers=()
stop_all() {
  for p in "${readers[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$replica_dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$replica_dir"
  cleanup
}
trap stop_all EXIT

db=stele_bench_read_nodes
psql "$PG_ADMIN" -qc "CREATE DATABASE $db"
db_url="${PG_ADMIN%/*}/$db"
write_config "$work/writer.toml" "$work/log.key" "$work/writer-data" "$db_url"
token=$("$STELE" agency add bench --config "$work/writer.toml" 2>/dev/null | tail -n1)
start_server "$work/writer.toml"
writer_url=$URL writer_pid=$server_pid
"$LOAD" --url "$writer_url" --token "$token" --mode bulk --clients 4 --duration "$FILL_S" --json > "$work/fill.json"
echo "filled: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["tree_size_after"] if "tree_size_after" in r else r)' "$work/fill.json")" >&2

[ "$(id -u)" = 0 ] && chown postgres "$replica_dir"
"${as_pg[@]}" "$pg_bin/pg_basebackup" -h 127.0.0.1 -p "$pg_port" -U postgres -D "$replica_dir/data" -R -X stream -c fast >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$replica_dir/data" -l "$replica_dir/server.log" -w \
  -o "-p $replica_port -k $replica_dir -c listen_addresses=127.0.0.1" start >/dev/null
replica_url="postgres://postgres@127.0.0.1:$replica_port/$db"

reader_urls=()
for name in a b; do
  mkdir -p "$work/reader-$name"
  cat > "$work/reader-$name.toml" <<EOT
database_url = "$replica_url"
data_dir = "$work/reader-$name"
[read_node]
writer_url = "$writer_url"
[[logs]]
name = "default"
origin = "bench.stele.test/default"
vkey = "$(cat "$work/log.key.vkey")"
accept_unregistered_types = true
EOT
  rm -f "$work/addr-$name"
  STELE_LOG=warn "$STELE" serve --config "$work/reader-$name.toml" --listen 127.0.0.1:0 \
    --addr-file "$work/addr-$name" 2>"$work/reader-$name.log" &
  readers+=($!)
  for _ in $(seq 100); do [ -s "$work/addr-$name" ] && break; sleep 0.1; done
  [ -s "$work/addr-$name" ] || { cat "$work/reader-$name.log"; exit 1; }
  url="http://$(head -n1 "$work/addr-$name")"
  for _ in $(seq 300); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "$url/readyz" >/dev/null || { cat "$work/reader-$name.log"; exit 1; }
  reader_urls+=("$url")
done
# The read nodes serve the writer's tree before anything is measured.
want=$(curl -s "$writer_url/logs/default/checkpoint" | sed -n 2p)
for url in "${reader_urls[@]}"; do
  for _ in $(seq 300); do [ "$(curl -s "$url/logs/default/checkpoint" | sed -n 2p)" = "$want" ] && break; sleep 0.1; done
done
echo "tree size $want on the writer and both read nodes" >&2

measure() { # $1 = mode, $2 = one|three, $3 = round
  local urls=(--url "$writer_url")
  [ "$2" = three ] && urls+=(--url "${reader_urls[0]}" --url "${reader_urls[1]}")
  "$LOAD" "${urls[@]}" --mode "$1" --clients "$CLIENTS" --duration "$DURATION" \
    --label "$1/$2/round$3" --json | tee -a "$OUT"
}

for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    if [ $((round % 2)) = 1 ]; then order="one three"; else order="three one"; fi
    for v in $order; do measure "$mode" "$v" "$round"; done
  done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    mode, variant, rnd = r["label"].split("/")
    by.setdefault(mode, {}).setdefault(rnd, {})[variant] = r
for mode, rounds in by.items():
    ratios = []
    for rnd, v in sorted(rounds.items()):
        one, three = v["one"], v["three"]
        ratios.append(three["rate_per_s"] / one["rate_per_s"])
        errors = sum(sum(x["errors_by_status"].values()) + x["transport_errors"] for x in (one, three))
        print(f"{mode} {rnd}: one node {one['rate_per_s']:.0f}/s (p99 {one.get('p99_ms')} ms), "
              f"writer + two read nodes {three['rate_per_s']:.0f}/s (p99 {three.get('p99_ms')} ms), ratio {ratios[-1]:.2f}; errors {errors}")
    med = statistics.median
    print(f"{mode}: median ratio (writer + two read nodes) / (one node) {med(ratios):.2f} over {len(ratios)} rounds; "
          f"one {med([v['one']['rate_per_s'] for v in rounds.values()]):.0f}/s, "
          f"three {med([v['three']['rate_per_s'] for v in rounds.values()]):.0f}/s")
PY
