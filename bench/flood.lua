-- Benchmark 6 (bench/flood.sh): a legitimate client's latency against the
-- local engine alone, then while bench/flood.py holds IDLE idle and LORIS
-- slow-loris connections for SECONDS. Prints both and writes the key figures
-- to $BENCH_RESULTS when set. Loopback only; stops by itself.
local launcher = require("analytics_engine.engine.launcher")
local util = require("analytics_engine.util")
local cjson = require("cjson")

local IDLE = tonumber(os.getenv("IDLE") or "10000")
local LORIS = tonumber(os.getenv("LORIS") or "1000")
local SECONDS = tonumber(os.getenv("SECONDS_EACH") or "30")
local TIMEOUT = os.getenv("REQUEST_TIMEOUT") or "30"

local e = assert(launcher.start { bin = os.getenv("AEFLOW") or "build/aeflow",
  args = { "--no-jupyter", "--quiet", "--request-timeout", TIMEOUT } })
local port = tonumber(e.url:match(":(%d+)$"))
local path = "/v4/analytics_engines/" .. e.instance_id .. "/default_runtime"
local auth = "ZenApiKey " .. util.b64encode(e.username .. ":" .. e.api_key)

local function run(idle, loris)
  local p = assert(io.popen(("python3 bench/flood.py --port %d --idle %d --loris %d --seconds %d --path %s "
    .. "--auth '%s'"):format(port, idle, loris, SECONDS, path, auth)))
  local out = p:read("a")
  p:close()
  return cjson.decode(out)
end

local ok, err = pcall(function()
  local base = run(0, 0)
  local flood = run(IDLE, LORIS)
  local function line(name, r)
    local l = r.legit
    print(("%-34s %5d/%-5d answered  p50 %7.1f ms  p95 %7.1f ms  max %7.1f ms"):format(name, l.answered,
      l.requests, l.p50_ms or -1, l.p95_ms or -1, l.max_ms or -1))
  end
  line("alone", base)
  line(("%d idle + %d slow-loris held"):format(IDLE, LORIS), flood)
  print(("flood: ramp %.1f s, at least %d connections held, closed by the engine: %d idle, %d slow-loris "
    .. "(request timeout %s s; the flood reopens them)"):format(flood.ramp_s, flood.min_held_under_load or 0,
    flood.closed_by_server.idle, flood.closed_by_server.loris, TIMEOUT))
  local rf = os.getenv("BENCH_RESULTS")
  if rf then
    local f = assert(io.open(rf, "a"))
    f:write(("flood_alone_p50_ms=%s\nflood_alone_p95_ms=%s\nflood_p50_ms=%s\nflood_p95_ms=%s\nflood_max_ms=%s\n"
      .. "flood_answered=%d/%d\n"):format(base.legit.p50_ms, base.legit.p95_ms, flood.legit.p50_ms,
      flood.legit.p95_ms, flood.legit.max_ms, flood.legit.answered, flood.legit.requests))
    f:close()
  end
end)
e:stop()
if not ok then error(err, 0) end
