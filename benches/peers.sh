# The HTTP peer of benches/run.sh (sourced after benches/common.sh, not
# run): nginx on loopback serving a static copy of the bench log, the
# static-serving peer that a tlog-tiles deployment puts in front of its
# tiles (issue 18). Uses $STELE and $work from common.sh.
#
#   peer_available               nginx is installed, or installed now with
#                                INSTALL_PEERS=1; else it says so (once) and fails
#   start_static_peer URL VKEY   mirrors the log at URL (`stele mirror`) into
#                                a scratch web root, saves one inclusion-proof
#                                answer of URL as /proof.json, and starts nginx
#                                on it; sets PEER_URL and peer_pid
#   stop_static_peer             stops nginx and removes its web root
#
# The web root holds the copy at logs/default/, so nginx answers the URLs
# Stele answers (/logs/default/checkpoint, /logs/default/tile/0/x001/234,
# ...) with byte-identical bodies, and the load tool's tiles mode runs
# unchanged against either.

peer_pid=""
PEER_URL=""
peer_checked=""

peer_available() {
  if [ -z "$peer_checked" ]; then
    if ! command -v nginx >/dev/null && [ "${INSTALL_PEERS:-0}" = 1 ]; then
      echo "nginx: installing the Debian package (INSTALL_PEERS=1)" >&2
      local sudo=()
      [ "$(id -u)" = 0 ] || sudo=(sudo)
      "${sudo[@]}" apt-get install -y nginx >&2
    fi
    if command -v nginx >/dev/null; then
      peer_checked=yes
    else
      peer_checked=no
      echo "nginx is not installed: skipping the nginx peer rows (apt-get install nginx, or run with INSTALL_PEERS=1)" >&2
    fi
  fi
  [ "$peer_checked" = yes ]
}

start_static_peer() { # $1 = the log's URL (…/logs/default), $2 = its vkey
  local root="$work/peer" size port
  rm -rf "$root"
  mkdir -p "$root/www" "$root/tmp"
  "$STELE" mirror "$1" "$root/www/logs/default" --vkey "$2" >&2
  size=$(sed -n 2p "$root/www/logs/default/checkpoint")
  # One proof answer as Stele serves it, byte for byte: a typical size.
  curl -sf "$1/proofs/inclusion?index=$((size / 3))" -o "$root/www/proof.json"
  echo "nginx peer: tiles of a tree of $size entries, a $(stat -c %s "$root/www/proof.json")-byte proof answer" >&2
  # nginx's workers run as nobody when started by root: let them through.
  chmod go+x "$work" "$root"
  chmod -R go+rX "$root/www"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$root/nginx.conf" <<EOT
daemon off;
worker_processes $(nproc);
pid $root/nginx.pid;
error_log $root/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  client_body_temp_path $root/tmp/body;
  proxy_temp_path $root/tmp/proxy;
  fastcgi_temp_path $root/tmp/fastcgi;
  uwsgi_temp_path $root/tmp/uwsgi;
  scgi_temp_path $root/tmp/scgi;
  server {
    listen 127.0.0.1:$port;
    root $root/www;
    # The mirror's staging area (unverified tiles) is never served.
    location ~ /\. { return 404; }
  }
}
EOT
  nginx -p "$root" -c "$root/nginx.conf" -e "$root/error.log" &
  peer_pid=$!
  PEER_URL="http://127.0.0.1:$port"
  for _ in $(seq 50); do curl -sf -o /dev/null "$PEER_URL/logs/default/checkpoint" && return 0; sleep 0.1; done
  cat "$root/error.log" >&2
  return 1
}

stop_static_peer() {
  if [ -n "$peer_pid" ]; then
    kill -QUIT "$peer_pid" 2>/dev/null && wait "$peer_pid" 2>/dev/null || true
    peer_pid=""
  fi
  PEER_URL=""
  rm -rf "$work/peer"
}

# Stop nginx before common.sh's cleanup removes its files.
trap 'stop_static_peer; cleanup' EXIT
