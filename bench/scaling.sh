#!/usr/bin/env bash
# Benchmark 7: runner memory, CPU while waiting, requests per application,
# wall time and submission rate for N = SCALING_N (default 100,1000,10000)
# applications in one `aeflow run`, against the engine's own create rate
# (a small Lua client posting the same creates). See scaling.lua. Every runner, engine and application it starts is
# stopped and its temporary directory removed, also on failure or Ctrl-C.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
run_aeflow_bench scaling
