# Shared by benches/run.sh and benches/scale.sh (sourced, not run): builds
# the release server and the load tool, makes a scratch directory, and
# cleans up on exit (stops the server, drops the database named in $db).
# Expects PG_ADMIN to be set.

cargo build --release --bin stele
cargo bench --bench load --no-run
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
STELE="$target_dir/release/stele"
LOAD=$(ls -t "$target_dir"/release/deps/load-* | grep -v '\.d$' | head -n1)

work=$(mktemp -d)
server_pid=""
db=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  [ -n "$db" ] && psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db" || true
  rm -rf "$work"
}
trap cleanup EXIT

# write_config FILE KEY DATA_DIR [DATABASE_URL]: one log "default" signed
# with the key file KEY (created here).
write_config() {
  "$STELE" keygen --origin "bench.stele.test/default" --out "$2" >/dev/null 2>&1
  {
    [ -n "${4:-}" ] && echo "database_url = \"$4\""
    cat <<EOT
data_dir = "$3"
[[logs]]
name = "default"
origin = "bench.stele.test/default"
key_file = "$2"
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

stop_server() {
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
}
