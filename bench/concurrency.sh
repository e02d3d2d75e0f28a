#!/usr/bin/env bash
# Benchmark 2: 1,000 applications (BENCH_APPS) in one `aeflow run` against a
# local engine; see concurrency.lua for what is printed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
run_aeflow_bench concurrency
