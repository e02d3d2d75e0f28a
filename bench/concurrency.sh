#!/usr/bin/env bash
# Benchmark 2: 1,000 applications (BENCH_APPS) in one `aeflow run` against a
# local engine; see concurrency.lua for what is printed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (Debian's time; make bench-deps)"
[ -x "$AEFLOW" ] || die "$AEFLOW is missing (make build)"
mkdir -p "$BENCH_TMP/concurrency"
"$LUA" "$BENCH_DIR/concurrency.lua" "$AEFLOW" "$BENCH_TMP/concurrency"
