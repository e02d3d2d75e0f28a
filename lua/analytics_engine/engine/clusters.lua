--- The local engine's clusters, all in one place: the REST handlers (create,
-- list, get, delete), the tick that makes an accepted cluster ACTIVE, and the
-- `connect` WebSocket
-- (GET /v4/analytics_engines/{instance_id}/spark_clusters/{cluster_id}/connect).
-- A local "cluster" has no Spark behind it, so the socket speaks a small
-- line protocol of the engine's own (docs/websocket.md):
--   on open           the engine sends {"cluster_id":…,"state":"ACTIVE","engine":"local"} (text)
--   any message       echoed back with the same opcode (text or binary)
--   "!close CODE [R]" the engine closes with CODE and reason R
--   "!ping DATA"      the engine pings; when the client's pong arrives it sends "pong DATA"
--   "!fragment N TXT" the engine sends TXT in frames of N bytes
-- Messages over MAX_MESSAGE bytes close the socket with 1009.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local reply = require("analytics_engine.engine.reply")
local guard = require("analytics_engine.engine.guard")

local _M = {}
local H = {}
_M.handlers = H -- merged into the engine's handlers by name (api.lua's operations)

local null = util.null

local function find_cluster(eng, id)
  if not util.is_uuid(id) then
    return nil, reply.error(400, "invalid_cluster_id", ("cluster_id '%s' is not a valid id"):format(id))
  end
  local rec = eng.store:get("clusters", id)
  if not rec then return nil, reply.error(404, "cluster_not_found", ("cluster %s does not exist"):format(id)) end
  return rec
end

_M.MAX_MESSAGE = 1024 * 1024

local function on_news(eng, h, cid)
  while true do
    guard.fail_point("ws_message")
    local data, op = h:receive(0)
    if data == nil then
      if op.kind ~= "timeout" then -- closed or failed: forget it
        eng.sockets[h] = nil
        if eng.cluster_sockets and eng.cluster_sockets[cid] then eng.cluster_sockets[cid][h] = nil end
        h:close(nil, nil, 0)
      end
      return
    end
    if op == "pong" then
      h:send("pong " .. data)
    elseif op == "ping" then -- answered by the core already
      local _ = data
    elseif op == "text" and data:sub(1, 1) == "!" then
      local cmd, rest = data:match("^!(%a+)%s*(.*)$")
      if cmd == "close" then
        -- codes that must not be sent (1005, 1006, 1015, out of range) become 1000/1011
        local code, reason = rest:match("^(%d+)%s*(.*)$")
        h:shutdown(guard.close_code(code), guard.close_reason(reason))
      elseif cmd == "ping" then
        h:ping(rest:sub(1, 125))
      elseif cmd == "fragment" then
        local n, txt = rest:match("^(%d+)%s(.*)$")
        h:send(txt or "", { fragment_size = tonumber(n) or 1 })
      else
        h:send(data)
      end
    else
      h:send(data, { binary = op == "binary" })
    end
  end
end

function H.create_cluster(eng, ctx)
  -- the shapes are schemas.create_cluster's, checked before a handler runs
  local d = ctx.body.cluster_details
  local conf = d.conf ~= nil and d.conf ~= null and util.copy(d.conf) or {}
  local s = eng.store:settings()
  local version = s.default_runtime.spark_version
  if type(d.runtime) == "table" and d.runtime.spark_version ~= nil then
    version = d.runtime.spark_version
    if not eng.versions.set[version] then
      return reply.bad_request(("cluster_details.runtime.spark_version must be one of %s"):format(eng.versions.text))
    end
  end
  local now = core.time()
  local id = util.uuid4(core.random_bytes)
  local rec = { id = id, name = type(d.name) == "string" and d.name or ("cluster-" .. id:sub(1, 8)),
                conf = conf, runtime = version, state = "ACCEPTED", creation_ts = now, start_ts = now }
  eng.store:put("clusters", rec)
  eng.clusters_pending[id] = rec
  return 202, { id = id, cluster_id = id, state = rec.state }
end

function H.list_clusters(eng)
  local out = util.array()
  for _, c in ipairs(eng.store:list("clusters")) do
    out[#out + 1] = { id = c.id, name = c.name, state = c.state, start_time = util.iso_time(c.start_ts),
                      end_time = c.finish_ts and util.iso_time(c.finish_ts) or nil,
                      finish_time = c.finish_ts and util.iso_time(c.finish_ts) or nil,
                      default_runtime = { spark_version = c.runtime } }
  end
  return 200, { clusters = out }
end

function H.get_cluster(eng, ctx)
  local c, st, b, h = find_cluster(eng, ctx.params.cluster_id)
  if not c then return st, b, h end
  return 200, {
    cluster_details = { name = c.name, conf = util.copy(c.conf or {}), runtime = { spark_version = c.runtime } },
    mode = "stand-alone",
    cluster_id = c.id,
    state = c.state,
    creation_time = util.long_time(c.creation_ts),
    start_time = util.long_time(c.start_ts),
    finish_time = c.finish_ts and util.long_time(c.finish_ts) or nil,
  }
end

function H.delete_cluster(eng, ctx)
  local c, st, b, h = find_cluster(eng, ctx.params.cluster_id)
  if not c then return st, b, h end
  if c.state ~= "STOPPED" then
    c.state = "STOPPED"
    c.finish_ts = core.time()
    eng.clusters_pending[c.id] = nil
    eng.store:touch("clusters", c)
  end
  -- A stopped cluster's sessions end with it (1001: going away), as the
  -- service's would; each is forgotten when its close handshake ends.
  for sock in pairs((eng.cluster_sockets or {})[c.id] or {}) do
    pcall(sock.shutdown, sock, 1001, "the cluster was stopped")
  end
  return 204
end

--- Clusters become ACTIVE on the tick after they are accepted.
function _M.tick(eng)
  for id, c in pairs(eng.clusters_pending) do
    c.state = "ACTIVE"
    c.start_ts = core.time()
    eng.clusters_pending[id] = nil
    eng.store:touch("clusters", c)
  end
end

--- The connect door (api.websockets' connect_cluster; the engine's one check
-- has admitted the caller): find the cluster, upgrade. Returns an error
-- reply, or a function that answers by itself (the upgrade).
function H.connect_cluster(eng, ctx)
  local req, cid = ctx.req, ctx.params.cluster_id
  local c, st, b, hd = find_cluster(eng, cid)
  if not c then return st, b, hd end
  if c.state ~= "ACTIVE" then
    return reply.error(409, "cluster_not_active", ("cluster %s is %s, not ACTIVE"):format(cid, tostring(c.state)))
  end
  return function(respond)
    local h, aerr, akind = eng.server:accept_websocket(req.id, { max_message_size = _M.MAX_MESSAGE,
                                                                 control_frames = true })
    if not h then return respond(reply.not_upgraded("connect", aerr, akind)) end
    eng.sockets = eng.sockets or {}
    eng.sockets[h] = function(e, sock) return on_news(e, sock, cid) end
    eng.cluster_sockets = eng.cluster_sockets or {}
    -- weak: a socket whose callback failed (dispatch drops it) is not held here
    eng.cluster_sockets[cid] = eng.cluster_sockets[cid] or setmetatable({}, { __mode = "k" })
    eng.cluster_sockets[cid][h] = true
    h:send(util.json_encode { cluster_id = cid, state = c.state, engine = "local" })
  end
end

--- Called by the engine loop with the server's sockets that have news.
function _M.dispatch(eng, socks)
  local map = eng.sockets
  if not map then return end
  for _, h in ipairs(socks) do
    local fn = map[h]
    -- A callback that fails ends its own socket (1011), not the engine.
    if fn and not guard.call("a WebSocket callback", fn, eng, h) then
      map[h] = nil
      pcall(h.close, h, 1011, "internal error", 0)
    end
  end
end

return _M
