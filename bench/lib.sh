# Shared pieces of the benchmarks (sourced, not run): a fixed fast server
# (Debian's nginx answering the seed's example body), a free loopback port,
# and small arithmetic helpers. Every server a benchmark starts is stopped by
# the trap that bench_cleanup installs.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
AEFLOW=${AEFLOW_BIN:-$BUILD/aeflow}
LUA=${LUA:-lua5.4}
PYTHON=${BENCH_PYTHON:-/usr/bin/python3}   # Debian's python3 with Debian's python3-requests
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$BENCH_DIR/?.lua;;"
export LUA_CPATH="$BUILD/?.so;;"

# The seed's example instance id and its GET default_runtime answer.
BENCH_INSTANCE=e64c907a-e82f-46fd-addc-ccfafbd28b09
BENCH_BODY='{"spark_version": "3.3"}'
# ZenApiKey base64("admin:bench-api-key"), the header a client with
# { username = "admin", api_key = "bench-api-key" } sends.
BENCH_AUTH="ZenApiKey $(printf 'admin:bench-api-key' | base64 -w0)"

BENCH_TMP=$(mktemp -d /tmp/ae-bench.XXXXXX)
_bench_pids=()

bench_cleanup() {
  local p
  for p in "${_bench_pids[@]}"; do kill "$p" 2>/dev/null; done
  if [ -f "$BENCH_TMP/nginx.pid" ]; then kill "$(cat "$BENCH_TMP/nginx.pid")" 2>/dev/null; fi
  sleep 0.2
  [ -n "${BENCH_KEEP:-}" ] || rm -rf "$BENCH_TMP"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "bench: $*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is missing (run 'make bench-deps' as root: $2)"
}

# A TCP port on 127.0.0.1 nobody listens on right now.
free_port() {
  local p i
  for i in $(seq 200); do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}

# start_nginx -> sets NGINX_URL. One worker, keep-alive without a request cap
# (nginx closes a connection after 1000 requests by default), no access log.
start_nginx() {
  need nginx "Debian's nginx"
  local port conf="$BENCH_TMP/nginx.conf"
  port=$(free_port) || die "no free port"
  mkdir -p "$BENCH_TMP/nginx"
  cat >"$conf" <<NGINX
daemon on;
worker_processes 1;
pid $BENCH_TMP/nginx.pid;
error_log $BENCH_TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $BENCH_TMP/nginx/body;
  proxy_temp_path $BENCH_TMP/nginx/proxy;
  fastcgi_temp_path $BENCH_TMP/nginx/fastcgi;
  uwsgi_temp_path $BENCH_TMP/nginx/uwsgi;
  scgi_temp_path $BENCH_TMP/nginx/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$port;
    location = /v4/analytics_engines/$BENCH_INSTANCE/default_runtime {
      default_type application/json;
      return 200 '$BENCH_BODY';
    }
  }
}
NGINX
  nginx -c "$conf" -p "$BENCH_TMP/nginx" 2>"$BENCH_TMP/nginx/start.log" \
    || die "nginx did not start: $(cat "$BENCH_TMP/nginx/start.log")"
  NGINX_URL="http://127.0.0.1:$port"
  local i
  for i in $(seq 50); do
    curl -s -o /dev/null "$NGINX_URL/" && return 0
    sleep 0.05
  done
  die "nginx is not answering on $NGINX_URL"
}

stop_nginx() {
  if [ -f "$BENCH_TMP/nginx.pid" ]; then
    kill "$(cat "$BENCH_TMP/nginx.pid")" 2>/dev/null
    rm -f "$BENCH_TMP/nginx.pid"
  fi
}

# run_aeflow_bench NAME: a benchmark whose driver, bench/NAME.lua, times
# `aeflow run` under Debian's /usr/bin/time; it gets the aeflow binary and a
# work folder of its own under BENCH_TMP.
run_aeflow_bench() {
  [ -x /usr/bin/time ] || die "/usr/bin/time is missing (Debian's time; make bench-deps)"
  [ -x "$AEFLOW" ] || die "$AEFLOW is missing (make build)"
  mkdir -p "$BENCH_TMP/$1"
  "$LUA" "$BENCH_DIR/$1.lua" "$AEFLOW" "$BENCH_TMP/$1"
}

# Arithmetic on decimals (bash has none).
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
