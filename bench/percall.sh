#!/usr/bin/env bash
# Benchmark 1: per-call overhead of the Lua client against raw libcurl (the
# floor), a Python requests.Session loop, and one curl process per call.
#   bench/percall.sh [N]     (N keep-alive calls, default 20000; REPEAT=3 runs each)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

N=${1:-${BENCH_N:-20000}}
REPEAT=${REPEAT:-3}
CLI_N=${CLI_N:-1000}
RAW=$BUILD/bench/raw_curl
[ -x "$RAW" ] || die "$RAW is missing (make bench-build)"
need curl "Debian's curl"
"$PYTHON" -c 'import requests' 2>/dev/null || die "python3-requests is missing (make bench-deps)"

start_nginx
URL="$NGINX_URL/v4/analytics_engines/$BENCH_INSTANCE/default_runtime"

# Alternate C and Lua runs so drift in machine load hits both alike; the
# median of REPEAT runs of each counts.
: >"$BENCH_TMP/raw" ; : >"$BENCH_TMP/lua"
for _ in $(seq "$REPEAT"); do
  "$RAW" "$URL" "$BENCH_AUTH" "$N" | awk '{ print $1 / $2 }' >>"$BENCH_TMP/raw"
  "$LUA" "$BENCH_DIR/percall_client.lua" "$NGINX_URL" "$N" | awk '{ print $1 / $2 }' >>"$BENCH_TMP/lua"
done
raw=$(median <"$BENCH_TMP/raw")
lua=$(median <"$BENCH_TMP/lua")
py=$("$PYTHON" "$BENCH_DIR/percall_requests.py" "$URL" "$BENCH_AUTH" "$N" | awk '{ print $1 / $2 }')

# The vendor page's way: one curl process per call, from a shell loop.
t0=$(date +%s.%N)
for _ in $(seq "$CLI_N"); do
  curl -s -o /dev/null -H "Accept: application/json" -H "Authorization: $BENCH_AUTH" "$URL"
done
t1=$(date +%s.%N)
cli=$(calc "($t1 - $t0) / $CLI_N" 9)

us() { calc "$1 * 1e6" 1; }
echo "== 1. per-call overhead: $N keep-alive GET default_runtime calls, nginx on loopback"
printf '  %-34s %9s us/call  %s\n' "raw libcurl (C, the floor)" "$(us "$raw")" "1.00x"
printf '  %-34s %9s us/call  %sx raw libcurl   (target <= 1.15x)\n' "Lua client (ae.client, curl)" \
  "$(us "$lua")" "$(calc "$lua / $raw" 2)"
printf '  %-34s %9s us/call  %sx raw; Lua is %sx faster  (target >= 5x)\n' "Python requests.Session" \
  "$(us "$py")" "$(calc "$py / $raw" 2)" "$(calc "$py / $lua" 1)"
printf '  %-34s %9s us/call  %sx raw; Lua is %sx faster  (%d processes, scaled)\n' "curl CLI, one process per call" \
  "$(us "$cli")" "$(calc "$cli / $raw" 1)" "$(calc "$cli / $lua" 1)" "$CLI_N"
printf '  %-34s %s\n' "runs (s/call) raw:" "$(tr '\n' ' ' <"$BENCH_TMP/raw")"
printf '  %-34s %s\n' "runs (s/call) lua:" "$(tr '\n' ' ' <"$BENCH_TMP/lua")"
{
  echo "percall_raw_us=$(us "$raw")"; echo "percall_lua_us=$(us "$lua")"
  echo "percall_py_us=$(us "$py")"; echo "percall_cli_us=$(us "$cli")"
  echo "percall_lua_over_raw=$(calc "$lua / $raw" 3)"; echo "percall_py_over_lua=$(calc "$py / $lua" 2)"
} >>"${BENCH_RESULTS:-/dev/null}"
