#!/bin/sh
# Load benchmark of the local engine (not a test): wrk with keep-alive against
# get_application_state, cycling over 10,000 applications on record, and the
# same wrk against a baseline measured in the same run (libmicrohttpd through
# the same core.http_server loop with a trivial Lua handler).
# The baseline is measured twice each round: with the very client script the
# engine gets (the same request function, paths and headers: only the server
# differs, the ratio to it is the headline), and with wrk's static request
# (no script: wrk itself is then ~1.5x faster, so that ratio also counts the
# client's own cost). ROUNDS rounds run the three back to back; the medians
# of the per-round ratios are printed (the machine's speed moves between
# rounds, a ratio within one round much less). Also printed: the servers' own
# CPU per request (from /proc), baseline over engine: it does not move with
# the client's speed. The engine replays the answers of records that did not
# change without entering Lua (--answer-cache, on with --quiet); a second
# engine on a copy of the same data, with --answer-cache 0, is measured in the
# same rounds: every read through Lua (routing, auth, the status handler).
# Target: >= 10,000 req/s.
#   sh bench/engine_load.sh            (make bench-engine builds first)
# Knobs: APPS (10000) DURATION (5s) ROUNDS (5) CONNS (32) THREADS (1) LUA (lua5.4) AEFLOW (build/aeflow)
set -eu
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4}
AEFLOW=${AEFLOW:-build/aeflow}
APPS=${APPS:-10000}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-5}
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
nreq() { awk '/requests in/ { print $1 }' "$1"; }
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime + stime, clock ticks (comm has no spaces here)
rss() { awk '/^VmRSS:/ { printf "%.1f MB", $2 / 1024 }' "/proc/$1/status"; }

# 1. the baseline
"$LUA" bench/engine_load.lua baseline "$work/baseline.port" & pids="$pids $!"
bpid=$!
wait_file "$work/baseline.port"
bport=$(cat "$work/baseline.port")

# 2. the engine with $APPS applications on record
seed_start=$(date +%s.%N)
"$LUA" bench/engine_load.lua seed "$work/data" "$APPS" "$work/ids.txt"
seed_end=$(date +%s.%N)
cp -R "$work/data" "$work/data-lua"
start=$(date +%s.%N)
"$AEFLOW" serve --port 0 --data "$work/data" --quiet > "$work/engine.log" 2>&1 & pids="$pids $!"
epid=$!
wait_file "$work/data/engine.json"
ready=$(date +%s.%N)
"$AEFLOW" serve --port 0 --data "$work/data-lua" --quiet --answer-cache 0 > "$work/engine-lua.log" 2>&1 & pids="$pids $!"
lpid=$!
wait_file "$work/data-lua/engine.json"
# a wrk script per engine (each has its own instance id and key)
wrk_script() {
  eval "$("$LUA" bench/engine_load.lua info "$1")"
  cat <<WRK
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
}
wrk_script "$work/data-lua" > "$work/wrk-lua.lua"
lurl=$url
wrk_script "$work/data" > "$work/wrk.lua"
"$LUA" bench/engine_load.lua get "$url/v4/analytics_engines/$iid/spark_applications/$(head -1 "$work/ids.txt")/status" "$auth" > "$work/one.json"

# 3. ROUNDS rounds, each: baseline (same client script), baseline (static request), engine,
#    engine with every read through Lua
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
: > "$work/rounds.txt"
r=1
while [ "$r" -le "$ROUNDS" ]; do
  c0=$(cpu "$bpid")
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$work/wrk.lua" "http://127.0.0.1:$bport" > "$work/baseline.txt"
  c1=$(cpu "$bpid")
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$bport/" > "$work/static.txt"
  c2=$(cpu "$epid")
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$work/wrk.lua" "$url" > "$work/engine.txt"
  c3=$(cpu "$epid")
  c3l=$(cpu "$lpid")
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$work/wrk-lua.lua" "$lurl" > "$work/engine-lua.txt"
  c4=$(cpu "$lpid")
  b=$(rps "$work/baseline.txt"); st=$(rps "$work/static.txt"); e=$(rps "$work/engine.txt"); l=$(rps "$work/engine-lua.txt")
  # the servers' own CPU per request (ticks per request, from /proc): what the client's speed cannot move
  bc=$(calc "($c1 - $c0) / $(nreq "$work/baseline.txt")"); ec=$(calc "($c3 - $c2) / $(nreq "$work/engine.txt")")
  lc=$(calc "($c4 - $c3l) / $(nreq "$work/engine-lua.txt")")
  echo "$b $st $e $(calc "$e / $b") $(calc "$e / $st") $(calc "$bc / $ec") $l $(calc "$l / $b") $(calc "$bc / $lc")" \
    >> "$work/rounds.txt"
  echo "engine_load: round $r: baseline $b req/s (static request $st), engine $e req/s," \
    "ratio $(calc "int($e / $b * 100 + 0.5) / 100") (to static $(calc "int($e / $st * 100 + 0.5) / 100")," \
    "server CPU per request $(calc "int($bc / $ec * 100 + 0.5) / 100")); every read through Lua $l req/s," \
    "ratio $(calc "int($l / $b * 100 + 0.5) / 100") (server CPU per request $(calc "int($bc / $lc * 100 + 0.5) / 100"))"
  r=$((r + 1))
done
base=$(cut -d' ' -f1 "$work/rounds.txt" | median)
static=$(cut -d' ' -f2 "$work/rounds.txt" | median)
eng=$(cut -d' ' -f3 "$work/rounds.txt" | median)
ratio=$(cut -d' ' -f4 "$work/rounds.txt" | median)
ratio_static=$(cut -d' ' -f5 "$work/rounds.txt" | median)
ratio_cpu=$(cut -d' ' -f6 "$work/rounds.txt" | median)
lua_rps=$(cut -d' ' -f7 "$work/rounds.txt" | median)
lua_ratio=$(cut -d' ' -f8 "$work/rounds.txt" | median)
lua_cpu=$(cut -d' ' -f9 "$work/rounds.txt" | median)
min_ratio=$(cut -d' ' -f4 "$work/rounds.txt" | sort -n | head -1)
min_cpu=$(cut -d' ' -f6 "$work/rounds.txt" | sort -n | head -1)
replayed=$("$LUA" bench/engine_load.lua replayed "$work/data")
erss=$(rss "$epid"); lrss=$(rss "$lpid")

echo "engine_load: $APPS applications on record (seeded in $(calc "$seed_end - $seed_start")s, engine ready in $(calc "$ready - $start")s)"
echo "engine_load: one answer: $(cat "$work/one.json")"
echo "engine_load: medians of $ROUNDS rounds of $DURATION each ($CONNS connections, keep-alive):"
echo "engine_load: baseline (core.http_server + trivial Lua handler, same client script): $base req/s (static request: $static req/s)"
echo "engine_load: engine get_application_state (ZenApiKey, keep-alive, $CONNS connections): $eng req/s"
echo "  last round: $(grep -E "Latency" "$work/engine.txt" | sed 's/  */ /g')"
grep -E "Non-2xx" "$work/engine.txt" | sed 's/^/  /' || true
echo "engine_load: ratio engine/baseline: $(calc "int($ratio * 100 + 0.5) / 100") (median per-round ratio; to the static-request baseline: $(calc "int($ratio_static * 100 + 0.5) / 100"))"
echo "engine_load: server CPU per request, baseline/engine: $(calc "int($ratio_cpu * 100 + 0.5) / 100") (median; 1 = the engine costs the glue nothing more)"
echo "engine_load: lowest round: ratio $(calc "int($min_ratio * 100 + 0.5) / 100"), server CPU per request $(calc "int($min_cpu * 100 + 0.5) / 100")"
echo "engine_load: status reads the engine's server answered without Lua (kept answers): $replayed"
echo "engine_load: every read through Lua (--answer-cache 0): $lua_rps req/s, ratio $(calc "int($lua_ratio * 100 + 0.5) / 100")," \
  "server CPU per request $(calc "int($lua_cpu * 100 + 0.5) / 100") (medians)"
echo "engine_load: engine RSS at the end: $erss (every read through Lua: $lrss)"
echo "engine_load: target >= 10000 req/s: $(calc "($eng >= 10000) ? \"met\" : \"NOT met\"")"
