# Shared by benches/run.sh and benches/scale.sh (sourced, not run): builds
# the release server and the load tool, makes a scratch directory, and
# cleans up on exit (stops the server, drops the database named in $db).
# Expects PG_ADMIN to be set; with PG_PRIVATE=1 it is replaced by a
# throw-away PostgreSQL cluster configured with deploy/postgresql.conf
# (started here on port PG_PORT, default 5499, and removed on exit), so that
# a tuned server can be measured without touching the shared one.

# PERF=DIR (scale.sh) profiles the server: build it with symbols
# (`profiling` profile: release plus line tables), otherwise plain release.
profile=release
[ -n "${PERF:-}" ] && profile=profiling
cargo build --profile "$profile" --bin stele
cargo bench --bench load --no-run
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
STELE="$target_dir/$profile/stele"
LOAD=$(ls -t "$target_dir"/release/deps/load-* | grep -v '\.d$' | head -n1)

work=$(mktemp -d)
server_pid=""
db=""
pg_dir=""
as_pg=()
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  [ -n "$db" ] && psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db" || true
  if [ -n "$pg_dir" ]; then
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null || true
    rm -rf "$pg_dir"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ "${PG_PRIVATE:-0}" = 1 ]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  [ -n "$pg_bin" ] || pg_bin=$(dirname "$(command -v initdb)")
  pg_port=${PG_PORT:-5499}
  # Not under $work: the cluster's owner must be able to reach it.
  pg_dir=$(mktemp -d /tmp/stele-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then chown postgres "$pg_dir"; as_pg=(runuser -u postgres --); fi
  "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres >/dev/null
  cat deploy/postgresql.conf >> "$pg_dir/data/postgresql.conf"
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1" start >/dev/null
  PG_ADMIN="postgres://postgres@127.0.0.1:$pg_port/postgres"
  echo "PostgreSQL: private cluster on port $pg_port with deploy/postgresql.conf" >&2
fi

# write_config FILE KEY DATA_DIR [DATABASE_URL]: one log "default" signed
# with the key file KEY (created here; its vkey in KEY.vkey). The log's
# table is the file's last, so keys appended to FILE are the log's; TOP_TOML
# (e.g. "cache_bytes = 16777216") goes before it, at the top level. It accepts record types its registry
# does not know (the load tool's `bench.load`), unvalidated; benches/registry.sh
# measures what validation costs.
write_config() {
  "$STELE" keygen --origin "bench.stele.test/default" --out "$2" 2>/dev/null | grep -o 'bench.stele.test/default+[^ ]*' > "$2.vkey"
  {
    # Key files on the embedded database are refused unless meant.
    if [ -n "${4:-}" ]; then echo "database_url = \"$4\""; else echo "embedded = true"; fi
    printf '%s\n' "${TOP_TOML:-}"
    cat <<EOT
data_dir = "$3"
[[logs]]
name = "default"
origin = "bench.stele.test/default"
key_file = "$2"
accept_unregistered_types = true
EOT
  } > "$1"
}

start_server() { # $1 = config file; sets server_pid and URL
  rm -f "$work/addr"
  STELE_LOG=warn "$STELE" serve --config "$1" --listen 127.0.0.1:0 --addr-file "$work/addr" 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
  [ -s "$work/addr" ] || { cat "$work/server.log"; exit 1; }
  URL="http://$(head -n1 "$work/addr")"
}

# profiled LABEL CMD...: runs CMD; with PERF=DIR, records a perf profile of
# the server ($server_pid) meanwhile, to DIR/LABEL.data.
profiled() {
  local label=$1 perf_pid=""
  shift
  if [ -n "${PERF:-}" ]; then
    mkdir -p "$PERF"
    perf record -q -F 499 -g -p "$server_pid" -o "$PERF/$label.data" 2>/dev/null &
    perf_pid=$!
  fi
  "$@"
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
}

stop_server() {
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
}
