--- Request handlers for spec/ngx_spec.lua; they run inside nginx (LuaJIT).
-- The spec writes the targets (engines and client options) into the
-- module `ae_spec_targets` from init_by_lua.
local cjson = require("cjson.safe")
local ae = require("analytics_engine")

local ngx = rawget(_G, "ngx")
local _M = {}

-- Clients are made once per worker, outside any request (as users do in
-- init_worker_by_lua), and shared by every request.
local clients = {}

local function client(name)
  local c = clients[name]
  if c then return c end
  local t = require("ae_spec_targets")[name]
  if not t then error("no target " .. tostring(name)) end
  c = assert(ae.client(t))
  clients[name] = c
  return c
end

function _M.init_worker()
  for name in pairs(require("ae_spec_targets")) do client(name) end
end

local function tr_of(c)
  local tr = c.transport
  if tr.pick then tr = tr:pick() end
  return tr
end

--- GET /call?target=fast&op=get_instance_default_runtime → JSON report.
function _M.call()
  local args = ngx.req.get_uri_args()
  local c = client(args.target or "fast")
  local op = args.op or "get_instance_default_runtime"
  local started = ngx.now()
  local res, err
  if op == "start_spark_history_server" then
    res, err = c:start_spark_history_server { cores = "1", memory = "1G" }
  elseif op == "cluster_echo" then -- a WebSocket session (transport/ngx_ws.lua)
    local ws
    ws, err = c:connect_cluster(args.id)
    if ws then
      res = { hello = ws:receive(10) }
      ws:send("echo me")
      res.echo = ws:receive(10)
      ws:close()
    end
  else
    res, err = c[op](c)
  end
  ngx.update_time()
  local tr = tr_of(c)
  ngx.header.content_type = "application/json"
  ngx.say(cjson.encode {
    ok = res ~= nil,
    result = type(res) == "table" and res or nil,
    transport = tr.name,
    seconds = ngx.now() - started,
    stats = tr.stats,
    error = err and { code = err.code, status = err.status, message = tostring(err), retryable = err.retryable,
                      attempts = err.attempts, ambiguous = err.ambiguous } or nil,
  })
end

--- The transport the default client uses in the current phase.
function _M.transport_name()
  return tr_of(client("fast")).name
end

return _M
