#!/usr/bin/env bash
# Benchmark 3: start-up of `aeflow --version` and `aeflow validate` of the
# fan-out example, median of 50 runs (hyperfine when installed), against
# `lua5.4 -e ''` (the interpreter alone) measured the same way.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ -x "$AEFLOW" ] || die "$AEFLOW is missing (make build)"
RUNS=${RUNS:-50}
cd "$ROOT"

median_ms() { # "command line" -> median wall ms over RUNS runs
  if command -v hyperfine >/dev/null 2>&1; then
    hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$BENCH_TMP/h.json" "$1" >/dev/null 2>&1 \
      || die "hyperfine failed on: $1"
    H="$BENCH_TMP/h.json" "$LUA" -e '
      local util = require "analytics_engine.util"
      local f = io.open(os.getenv("H")) local d = util.json_decode(f:read("a")) f:close()
      io.write(("%.2f"):format(d.results[1].median * 1000))' 
  else
    local i t0 t1
    for i in $(seq "$RUNS"); do
      t0=$(date +%s%N); eval "$1" >/dev/null 2>&1; t1=$(date +%s%N)
      echo $(( (t1 - t0) / 1000 ))
    done | median | awk '{ printf "%.2f", $1 / 1000 }'
  fi
}

base=$(median_ms "$LUA -e ''")
ver=$(median_ms "$AEFLOW --version")
val=$(median_ms "$AEFLOW validate workflows/fanout.lua")
echo "== 3. start-up: median of $RUNS runs$(command -v hyperfine >/dev/null && echo ' (hyperfine -N)')"
printf '  %-40s %7s ms\n' "lua5.4 -e '' (the interpreter alone)" "$base"
printf '  %-40s %7s ms  %sx the interpreter  (target < 20 ms)\n' "aeflow --version" "$ver" "$(calc "$ver / $base" 1)"
printf '  %-40s %7s ms  %sx the interpreter  (target < 20 ms)\n' "aeflow validate workflows/fanout.lua" "$val" \
  "$(calc "$val / $base" 1)"
{ echo "startup_version_ms=$ver"; echo "startup_validate_ms=$val"; echo "startup_lua_ms=$base"; } >>"${BENCH_RESULTS:-/dev/null}"
