#!/usr/bin/env bash
# Benchmark 5: the local engine's throughput. Runs the engine issue's own load
# benchmark (bench/engine_load.sh: wrk, keep-alive, get_application_state over
# 10,000 recorded applications, against a trivial-handler baseline measured
# in the same run); without it, a plain wrk run against one application.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need wrk "Debian's wrk"
echo "== 5. engine throughput"
if [ -f "$BENCH_DIR/engine_load.sh" ]; then
  AEFLOW="$AEFLOW" LUA="$LUA" sh "$BENCH_DIR/engine_load.sh" | tee "$BENCH_TMP/engine.txt" | sed 's/^/  /'
  eng=$(sed -n 's/.*get_application_state.*: \([0-9.]*\) req\/s.*/\1/p' "$BENCH_TMP/engine.txt")
  ratio=$(sed -n 's/.*ratio engine\/baseline: \([0-9.]*\).*/\1/p' "$BENCH_TMP/engine.txt")
else
  e=$("$LUA" -e '
    local l = require "analytics_engine.engine.launcher"
    local e = assert(l.start { bin = os.getenv("AEFLOW") })
    print(e.url, e.instance_id, e.username, e.api_key, e.pid, e.data_dir)' )
  read -r url iid user key pid dir <<<"$e"
  _bench_pids+=("$pid")
  auth="ZenApiKey $(printf '%s:%s' "$user" "$key" | base64 -w0)"
  id=$(curl -s -X POST -H "Authorization: $auth" -H 'Content-Type: application/json' \
    -d '{"application_details":{"application":"/bin/true"}}' "$url/v4/analytics_engines/$iid/spark_applications" \
    | "$LUA" -e 'print((io.read("a"):match("\"application_id\":\"([^\"]+)\"")))')
  wrk -t1 -c32 -d10s -H "Authorization: $auth" "$url/v4/analytics_engines/$iid/spark_applications/$id/status" \
    | tee "$BENCH_TMP/engine.txt" | sed 's/^/  /'
  eng=$(awk '/^Requests\/sec:/ { print $2 }' "$BENCH_TMP/engine.txt")
  ratio=""
  rm -rf "$dir"
fi
{ echo "engine_rps=$eng"; echo "engine_over_baseline=$ratio"; } >>"${BENCH_RESULTS:-/dev/null}"
