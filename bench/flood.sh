#!/bin/sh
# Benchmark 6: a legitimate client's latency while 10,000 idle and 1,000
# slow-loris connections are held against the local engine (bench/flood.lua,
# bench/flood.py). Not a test: spec/engine_flood_spec.lua asserts the answers.
#   sh bench/flood.sh        (make bench-flood builds first)
# Knobs: IDLE (10000) LORIS (1000) SECONDS_EACH (30) REQUEST_TIMEOUT (30) AEFLOW (build/aeflow)
set -eu
cd "$(dirname "$0")/.."
export LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;"
export LUA_CPATH="$PWD/build/?.so;;"
exec "${LUA:-lua5.4}" bench/flood.lua
