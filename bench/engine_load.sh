#!/bin/sh
# Load benchmark of the local engine (not a test): wrk with keep-alive against
# get_application_state, cycling over 10,000 applications on record, and the
# same wrk against a baseline measured in the same run (libmicrohttpd through
# the same core.http_server loop with a trivial Lua handler). Prints req/s of
# both and the ratio. Target: >= 10,000 req/s on a 2-core machine.
#   sh bench/engine_load.sh            (make bench-engine builds first)
# Knobs: APPS (10000) DURATION (10s) CONNS (32) THREADS (1) LUA (lua5.4) AEFLOW (build/aeflow)
set -eu
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4}
AEFLOW=${AEFLOW:-build/aeflow}
APPS=${APPS:-10000}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
command -v wrk >/dev/null || { echo "engine_load: wrk is not installed (Debian package wrk)" >&2; exit 1; }
export LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;"
export LUA_CPATH="$PWD/build/?.so;;"

work=$(mktemp -d)
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

wait_file() { i=0; while [ ! -s "$1" ]; do i=$((i + 1)); [ $i -gt 200 ] && { echo "engine_load: $1 never appeared" >&2; exit 1; }; sleep 0.05; done; }
rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
calc() { awk "BEGIN { print $1 }"; }

# 1. the baseline
"$LUA" bench/engine_load.lua baseline "$work/baseline.port" & pids="$pids $!"
wait_file "$work/baseline.port"
bport=$(cat "$work/baseline.port")
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$bport/" > "$work/baseline.txt"
base=$(rps "$work/baseline.txt")

# 2. the engine with $APPS applications on record
seed_start=$(date +%s.%N)
"$LUA" bench/engine_load.lua seed "$work/data" "$APPS" "$work/ids.txt"
seed_end=$(date +%s.%N)
start=$(date +%s.%N)
"$AEFLOW" serve --port 0 --data "$work/data" --quiet > "$work/engine.log" 2>&1 & pids="$pids $!"
wait_file "$work/data/engine.json"
ready=$(date +%s.%N)
eval "$("$LUA" bench/engine_load.lua info "$work/data")"
cat > "$work/wrk.lua" <<WRK
local ids, i = {}, 0
for l in io.lines("$work/ids.txt") do ids[#ids + 1] = l end
local prefix = "/v4/analytics_engines/$iid/spark_applications/"
local headers = { Authorization = "$auth", Accept = "application/json" }
request = function()
  i = i % #ids + 1
  return wrk.format("GET", prefix .. ids[i] .. "/status", headers)
end
local bad = 0
response = function(status) if status ~= 200 then bad = bad + 1 end end
done = function() if bad > 0 then io.stderr:write("engine_load: ", bad, " answers were not 200\n") end end
WRK
"$LUA" bench/engine_load.lua get "$url/v4/analytics_engines/$iid/spark_applications/$(head -1 "$work/ids.txt")/status" "$auth" > "$work/one.json"
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$work/wrk.lua" "$url" > "$work/engine.txt"
eng=$(rps "$work/engine.txt")

echo "engine_load: $APPS applications on record (seeded in $(calc "$seed_end - $seed_start")s, engine ready in $(calc "$ready - $start")s)"
echo "engine_load: one answer: $(cat "$work/one.json")"
echo "engine_load: baseline (core.http_server + trivial Lua handler): $base req/s"
grep -E "Latency|requests in" "$work/baseline.txt" | sed 's/^/  /'
echo "engine_load: engine get_application_state (ZenApiKey, keep-alive, $CONNS connections): $eng req/s"
grep -E "Latency|requests in|Non-2xx" "$work/engine.txt" | sed 's/^/  /'
echo "engine_load: ratio engine/baseline: $(calc "int($eng / $base * 100 + 0.5) / 100")"
echo "engine_load: target >= 10000 req/s: $(calc "($eng >= 10000) ? \"met\" : \"NOT met\"")"
