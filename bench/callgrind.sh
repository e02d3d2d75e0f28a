#!/usr/bin/env bash
# Benchmark 4: instructions per call (valgrind --tool=callgrind) for
# benchmark 1's client side, Lua client against raw libcurl. Each side runs
# twice, with 2 and with N+2 calls; the difference / N is the per-call cost,
# free of start-up. Instruction counts barely move between runs on a noisy
# machine, so a regression shows as a number.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need valgrind "Debian's valgrind"
N=${1:-${CALLGRIND_N:-2000}}
RAW=$BUILD/bench/raw_curl
[ -x "$RAW" ] || die "$RAW is missing (make bench-build)"
start_nginx
URL="$NGINX_URL/v4/analytics_engines/$BENCH_INSTANCE/default_runtime"

irefs() { # out-file command... -> total instructions
  local out=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>"$out.log" \
    || die "callgrind failed: $(tail -3 "$out.log")"
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out.log"
}
per_call() { # name command-prefix... (the call count is appended)
  local name=$1; shift
  local a b
  a=$(irefs "$BENCH_TMP/$name.small" "$@" 2)
  b=$(irefs "$BENCH_TMP/$name.big" "$@" $((N + 2)))
  echo $(( (b - a) / N ))
}
raw=$(per_call raw "$RAW" "$URL" "$BENCH_AUTH")
lua=$(per_call lua "$LUA" "$BENCH_DIR/percall_client.lua" "$NGINX_URL")

# Where the Lua client's instructions go (inclusive, per call).
incl() { # file function-regex -> instructions per call
  callgrind_annotate --inclusive=yes "$1" 2>/dev/null | awk -v re="$2" -v n="$N" '
    $0 ~ re { gsub(",", "", $1); print int($1 / n); exit }' || true  # awk's early exit: SIGPIPE upstream
}
big=$BENCH_TMP/lua.big
echo "== 4. instructions per call (callgrind, $N calls, start-up subtracted)"
printf '  %-44s %9d instr/call  1.00x\n' "raw libcurl (C)" "$raw"
printf '  %-44s %9d instr/call  %sx raw libcurl\n' "Lua client (ae.client, curl)" "$lua" "$(calc "$lua / $raw" 2)"
echo "  where the Lua client's go (inclusive, approximate: includes the first call):"
for f in "s_request:core request (C, libcurl multi)" "curl_multi_perform:  libcurl multi_perform" \
         "push_response:  response -> Lua table" "read_request:  request table -> C" \
         "xfer_start:  easy handle set-up (options kept)" "collect:  finished transfer back to the pool"; do
  printf '    %-42s %9s instr/call\n' "${f#*:}" "$(incl "$big" "${f%%:*}")"
done
core=$(incl "$big" "s_request")
printf '    %-42s %9d instr/call\n' "Lua layers (client, auth, transport, JSON)" $((lua - core))
{ echo "callgrind_raw=$raw"; echo "callgrind_lua=$lua"; echo "callgrind_ratio=$(calc "$lua / $raw" 2)"; } \
  >>"${BENCH_RESULTS:-/dev/null}"
