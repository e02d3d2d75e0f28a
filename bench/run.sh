#!/usr/bin/env bash
# All benchmarks, or those named: bench/run.sh [percall,concurrency,startup,callgrind,engine,flood,scaling]
# (`make bench` builds first and runs this). Key figures also go to
# build/bench/results.txt (name=value lines) for bench/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-$here/../build}
export BUILD
mkdir -p "$BUILD/bench"
export BENCH_RESULTS=$BUILD/bench/results.txt
which=${1:-percall,concurrency,startup,callgrind,engine,flood,scaling}
{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -srm), $(nproc) cores"
  echo "# curl $(curl --version | head -1 | cut -d' ' -f2), nginx $(nginx -v 2>&1 | cut -d/ -f2)," \
       "python3 $(/usr/bin/python3 -c 'import sys, requests; print(sys.version.split()[0], "requests", requests.__version__)')"
} >"$BENCH_RESULTS"
cat "$BENCH_RESULTS"
status=0
for b in ${which//,/ }; do
  case $b in
    percall|concurrency|startup|callgrind|engine|flood|scaling) bash "$here/$b.sh" || status=1 ;;
    *) echo "bench: unknown benchmark '$b' (percall, concurrency, startup, callgrind, engine, flood, scaling)" >&2; exit 2 ;;
  esac
  echo
done
exit $status
