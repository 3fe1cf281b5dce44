#!/usr/bin/env bash
# What private records cost: single-record POSTs of records shaped like the
# example health.case (subject, diagnosis, date, ~200 bytes of notes) of the
# private type itself (content sealed with XChaCha20-Poly1305 under a fresh
# data key, wrapped by the payload key, stored in the payloads table in the
# same transaction; a commitment in the leaf) against the same records of a
# public copy of the type (same schema, everything in the leaf), in
# alternating rounds on the same machine; then content reads
# (GET .../records/{i}/content: a stele.access entry committed, then the
# payload opened and checked against its commitment) by random index over
# the private records just written. The figure is the median of the
# per-round ratios private/public.
#
#   ROUNDS=5 DURATION=15 CLIENTS=256 BACKEND=postgres bash benches/private.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-256}
BACKEND=${BACKEND:-postgres}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=${OUT:-private-results.jsonl}

. benches/common.sh
: > "$OUT"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# health.case as is (private), and a public copy named bench.case; both open
# to every agency, the private one readable by the load tool's agency.
mkdir -p "$work/types"
sed -e 's/^writers = .*/writers = ["*"]/' -e 's/^readers = .*/readers = ["bench"]/' \
  examples/types/health.case.toml > "$work/types/private.toml"
sed -e 's/^name = .*/name = "bench.case"/' -e 's/^visibility = .*//' -e 's/^readers = .*//' \
  -e 's/^writers = .*/writers = ["*"]/' examples/types/health.case.toml > "$work/types/public.toml"

run_variant() { # $1 = public|private, $2 = round
  local variant=$1 round=$2 db_url="" dir="$work/$1-$2" type=health.case
  [ "$variant" = public ] && type=bench.case
  mkdir -p "$dir"
  if [ "$BACKEND" = postgres ]; then
    db="stele_bench_private_$$_${variant}_$round"
    psql "$PG_ADMIN" -qc "CREATE DATABASE $db"
    db_url="${PG_ADMIN%/*}/$db"
  fi
  write_config "$dir/stele.toml" "$dir/log.key" "$dir/data" "$db_url"
  "$STELE" vault keygen --out "$dir/payload.key" >/dev/null
  sed -i "1i payload_key_file = \"$dir/payload.key\"" "$dir/stele.toml"
  token=$("$STELE" agency add bench --registry-admin --config "$dir/stele.toml" 2>/dev/null | tail -n1)
  start_server "$dir/stele.toml"
  STELE_TOKEN=$token "$STELE" type apply --log "$URL/logs/default" "$work/types/$variant.toml" >&2
  "$LOAD" --url "$URL" --token "$token" --mode submit --shape case --record-type "$type" \
    --clients "$CLIENTS" --duration "$DURATION" --server-pid "$server_pid" \
    --label "$variant/round$round" --json | tee -a "$OUT"
  if [ "$variant" = private ]; then
    # Index 0 is the type's registry entry; every later entry is a private record.
    "$LOAD" --url "$URL" --token "$token" --mode content --first-index 1 \
      --clients "$CLIENTS" --duration "$DURATION" --server-pid "$server_pid" \
      --label "content/round$round" --json | tee -a "$OUT"
  fi
  stop_server
  if [ -n "$db" ]; then psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db"; db=""; fi
}

for round in $(seq "$ROUNDS"); do
  # Alternate which goes first, so a drift of the machine hits both.
  if [ $((round % 2)) = 1 ]; then order="public private"; else order="private public"; fi
  for v in $order; do run_variant "$v" "$round"; done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    variant, rnd = r["label"].split("/")
    by.setdefault(rnd, {})[variant] = r
ratios, reads, read_ratio = [], [], []
for rnd, v in sorted(by.items()):
    a, b, c = v["public"], v["private"], v["content"]
    for name, x in (("public", a), ("private", b), ("content", c)):
        if x["errors_by_status"] or x["transport_errors"]:
            print(f"{rnd}: {name} errors {x['errors_by_status']} transport {x['transport_errors']}")
    ratios.append(b["rate_per_s"] / a["rate_per_s"])
    read_ratio.append(c["rate_per_s"] / a["rate_per_s"])
    reads.append(c["rate_per_s"])
    print(f"{rnd}: public {a['rate_per_s']:.0f}/s  private {b['rate_per_s']:.0f}/s  private/public {ratios[-1]:.3f}"
          f"  p99 public {a['p99_ms']:.1f} ms private {b['p99_ms']:.1f} ms"
          f"  content reads {c['rate_per_s']:.0f}/s (p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms)")
print(f"median private/public {statistics.median(ratios):.3f} over {len(ratios)} rounds; "
      f"content reads {statistics.median(reads):.0f}/s, {statistics.median(read_ratio):.3f} of public submissions")
PY
