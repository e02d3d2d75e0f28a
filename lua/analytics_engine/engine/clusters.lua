--- The local engine's cluster `connect` WebSocket
-- (GET /v4/analytics_engines/{instance_id}/spark_clusters/{cluster_id}/connect).
-- A local "cluster" has no Spark behind it, so the socket speaks a small
-- line protocol of the engine's own (docs/websocket.md):
--   on open           the engine sends {"cluster_id":…,"state":"ACTIVE","engine":"local"} (text)
--   any message       echoed back with the same opcode (text or binary)
--   "!close CODE [R]" the engine closes with CODE and reason R
--   "!ping DATA"      the engine pings; when the client's pong arrives it sends "pong DATA"
--   "!fragment N TXT" the engine sends TXT in frames of N bytes
-- Messages over MAX_MESSAGE bytes close the socket with 1009.
local util = require "analytics_engine.util"
local reply = require "analytics_engine.engine.reply"
local guard = require "analytics_engine.engine.guard"

local _M = {}

_M.MAX_MESSAGE = 1024 * 1024

local function on_news(eng, h)
  while true do
    guard.fail_point("ws_message")
    local data, op = h:receive(0)
    if data == nil then
      if op.kind ~= "timeout" then -- closed or failed: forget it
        eng.sockets[h] = nil
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

--- The connect door (api.websockets' connect_cluster; the engine's one check
-- has admitted the caller): find the cluster, upgrade. Returns an error
-- reply, or a function that answers by itself (the upgrade).
function _M.connect(eng, ctx)
  local req, cid = ctx.req, ctx.params.cluster_id
  if not util.is_uuid(cid) then
    return reply.error(400, "invalid_cluster_id", ("cluster_id '%s' is not a valid id"):format(cid))
  end
  local c = eng.store:get("clusters", cid)
  if not c then return reply.error(404, "cluster_not_found", ("cluster %s does not exist"):format(cid)) end
  if c.state ~= "ACTIVE" then
    return reply.error(409, "cluster_not_active", ("cluster %s is %s, not ACTIVE"):format(cid, tostring(c.state)))
  end
  return function(respond)
    local h, aerr = eng.server:accept_websocket(req.id, { max_message_size = _M.MAX_MESSAGE, control_frames = true })
    if not h then
      return respond(reply.error(400, "not_a_websocket", "connect needs a WebSocket upgrade: " .. tostring(aerr)))
    end
    eng.sockets = eng.sockets or {}
    eng.sockets[h] = on_news
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
