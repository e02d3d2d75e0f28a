--- Helpers for bench/engine_load.sh (not a test):
--   lua5.4 bench/engine_load.lua seed DATA_DIR N IDS_FILE
--       N finished applications straight into DATA_DIR/state.db (one transaction),
--       their ids one per line in IDS_FILE
--   lua5.4 bench/engine_load.lua info DATA_DIR      url, iid, auth as shell assignments
--   lua5.4 bench/engine_load.lua get URL AUTH        one GET, the body on stdout
--   lua5.4 bench/engine_load.lua replayed DATA_DIR   status reads answered without Lua, of all
--   lua5.4 bench/engine_load.lua baseline PORT_FILE
--       the baseline: libmicrohttpd through the same core.http_server loop with
--       a trivial Lua handler (no routing, auth, JSON or state); writes its port
--       to PORT_FILE and serves until SIGTERM
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")

local mode = arg[1]

-- A JSON file the engine wrote (engine.json, credentials.json).
local function read(p)
  local f = assert(io.open(p, "rb"))
  local v = util.json_decode(f:read("a"))
  f:close()
  return v
end

if mode == "seed" then
  local state = require("analytics_engine.engine.state")
  local dir, n, ids_file = arg[2], tonumber(arg[3]), arg[4]
  assert(core.mkdir_p(dir, 448))
  local store = assert(state.open(dir .. "/state.db"))
  local ids = {}
  local now = core.time()
  for i = 1, n do
    local id = util.uuid4(core.random_bytes)
    ids[i] = id
    store:put("applications", {
      id = id, state = "FINISHED", details = { application = "bench.sh", arguments = { tostring(i) } },
      runtime = "3.4", template_id = "spark-3.4-local-engine-template", instance_defaults = {},
      spark_application_name = "bench", spark_application_id = ("app-bench-%05d"):format(i),
      creation_ts = now - 60, start_ts = now - 59, finish_ts = now - 58, return_code = "0",
      dir = dir .. "/apps/" .. id,
      transitions = { { state = "ACCEPTED", time = now - 60 }, { state = "RUNNING", time = now - 59 },
                      { state = "FINISHED", time = now - 58 } },
    })
  end
  assert(store:commit())
  store:close()
  local f = assert(io.open(ids_file, "wb"))
  f:write(table.concat(ids, "\n"), "\n")
  f:close()
elseif mode == "baseline" then
  local srv = assert(core.http_server{ host = "127.0.0.1", port = 0 })
  local f = assert(io.open(arg[2] .. ".tmp", "wb"))
  f:write(srv:port(), "\n")
  f:close()
  os.rename(arg[2] .. ".tmp", arg[2])
  core.signal_watch{ "INT", "TERM" }
  local headers = { ["Content-Type"] = "application/json" }
  local body = '{"state":"FINISHED"}'
  while not core.signal_pending() do
    local reqs = srv:poll(0.2)
    if reqs then
      for _, req in ipairs(reqs) do srv:respond(req.id, 200, headers, body) end
    end
  end
  srv:close()
elseif mode == "info" then
  -- shell assignments: url, iid, auth (the ZenApiKey header) of the engine serving DATA_DIR
  local e, c = read(arg[2] .. "/engine.json"), read(arg[2] .. "/credentials.json")
  print(("url='%s' iid='%s' auth='%s'"):format(e.url, e.instance_id,
    "ZenApiKey " .. util.b64encode(c.username .. ":" .. c.api_key)))
elseif mode == "replayed" then
  -- of the engine serving DATA_DIR: its status reads answered without Lua, of all its status reads
  local e, c = read(arg[2] .. "/engine.json"), read(arg[2] .. "/credentials.json")
  local r = assert(core.http_session():request{ method = "GET", url = e.url .. "/engine/v1/stats",
    headers = { Authorization = "ZenApiKey " .. util.b64encode(c.username .. ":" .. c.api_key) } })
  local st = assert(util.json_decode(r.body))
  local rep, all = st.replayed.get_application_state or 0, st.requests.get_application_state or 0
  io.write(("%d of %d (%.2f%%)\n"):format(rep, all, all > 0 and rep / all * 100 or 0))
elseif mode == "get" then
  local r = assert(core.http_session():request{ method = "GET", url = arg[2], headers = { Authorization = arg[3] } })
  assert(r.status == 200, "status " .. r.status .. " " .. tostring(r.body))
  io.write(r.body)
else
  io.stderr:write("usage: engine_load.lua seed DIR N IDS_FILE | baseline PORT_FILE\n")
  os.exit(2)
end
