#!/usr/bin/env bash
# A/B of two commits, back to back: builds each in a worktree of its own
# (and a target directory of its own), then alternates their own
# `benches/run.sh` ROUNDS times, so that both see the same machine state,
# and prints the medians of each side and their ratio (B / A).
#
#   ROUNDS=3 MODES="submit bulk proofs" bash benches/ab.sh OLD_REV NEW_REV
#
# Everything run.sh takes (DURATION, CLIENTS, BULK_CLIENTS, BACKENDS,
# PG_ADMIN, EXTRA_TOML, TOP_TOML) passes through; RUNS is 1 per round. The worktrees
# and target directories are kept under AB_DIR (default: a directory beside
# the checkout) so that a second A/B of the same commits builds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 REV_A REV_B" >&2; exit 2; }
ROUNDS=${ROUNDS:-3}
AB_DIR=${AB_DIR:-$(cd .. && pwd)/stele-ab}
OUT=${OUT:-ab-results.jsonl}
export RUNS=1 MODES="${MODES:-submit bulk proofs}" BACKENDS="${BACKENDS:-postgres}"
mkdir -p "$AB_DIR"
: > "$OUT"

declare -A tree
for side in A B; do
  rev=$([ "$side" = A ] && echo "$1" || echo "$2")
  sha=$(git rev-parse --short=12 "$rev^{commit}")
  dir="$AB_DIR/$sha"
  [ -d "$dir" ] || git worktree add --detach "$dir" "$sha" >/dev/null
  # The real path: cargo's fingerprints hold source paths.
  dir=$(cd "$dir" && pwd -P)
  tree[$side]="$dir"
  echo "$side = $rev ($sha) in $dir" >&2
done

for round in $(seq "$ROUNDS"); do
  for side in A B; do
    dir=${tree[$side]}
    echo "round $round, side $side" >&2
    (cd "$dir" && CARGO_TARGET_DIR="$dir/target" OUT="$dir/round.jsonl" bash benches/run.sh >/dev/null)
    python3 - "$dir/round.jsonl" "$side" "$round" >> "$OUT" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line)
        r["label"] = f"{sys.argv[2]}/{r['label'].rsplit('/', 1)[0]}/round{sys.argv[3]}"
        print(json.dumps(r))
EOF
  done
done

python3 - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    side, rest = r["label"].split("/", 1)
    key = rest.rsplit("/", 1)[0]
    by.setdefault((key, side), []).append(r)
keys = sorted({k for k, _ in by})
print(f"{'backend/mode':18} {'A rates/s':>28} {'B rates/s':>28} {'A med':>8} {'B med':>8} {'B/A':>5} {'p99 A':>7} {'p99 B':>7}")
for k in keys:
    a, b = by.get((k, "A"), []), by.get((k, "B"), [])
    ra = [r["rate_per_s"] for r in a]; rb = [r["rate_per_s"] for r in b]
    ma, mb = statistics.median(ra), statistics.median(rb)
    pa = statistics.median([r["p99_ms"] for r in a]); pb = statistics.median([r["p99_ms"] for r in b])
    fmt = lambda v: " / ".join(f"{x:.0f}" for x in v)
    print(f"{k:18} {fmt(ra):>28} {fmt(rb):>28} {ma:>8.0f} {mb:>8.0f} {mb/ma:>5.2f} {pa:>7.1f} {pb:>7.1f}")
EOF
