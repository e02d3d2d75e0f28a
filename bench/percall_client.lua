-- Benchmark 1, the Lua side: N keep-alive get_instance_default_runtime calls
-- through ae.client (curl transport, ZenApiKey auth), timed with the core's
-- monotonic clock around the loop only (start-up is benchmark 3's business).
--   lua5.4 bench/percall_client.lua URL N   -> prints "seconds calls"
local ae = require("analytics_engine")
local core = require("analytics_engine.core")

local url, n = arg[1], tonumber(arg[2] or "20000")
assert(url and n, "usage: percall_client.lua URL N")

local c = assert(ae.client {
  url = url, instance_id = "e64c907a-e82f-46fd-addc-ccfafbd28b09",
  auth = { username = "admin", api_key = "bench-api-key" },
  transport = "curl",
})
-- One warm-up call opens the connection, as raw_curl's first call does.
local first = assert(c:get_instance_default_runtime())
assert(first.spark_version == "3.3", "unexpected body")

local t0 = core.monotime()
for i = 2, n do
  local rt, err = c:get_instance_default_runtime()
  if not rt then error("call " .. i .. ": " .. tostring(err)) end
end
local t1 = core.monotime()
io.write(("%.6f %d\n"):format(t1 - t0, n - 1))
