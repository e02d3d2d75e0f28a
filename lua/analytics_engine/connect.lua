--- c:connect_cluster(id [, opts]) -> a WebSocket (analytics_engine.ws) to the
-- cluster's `connect` endpoint, authenticated like every other call.
local util = require "analytics_engine.util"
local errors = require "analytics_engine.errors"
local api = require "analytics_engine.api"
local ws = require "analytics_engine.ws"

local _M = {}

function _M.install(client)
  --- opts: timeout (handshake seconds), max_message_size, control_frames.
  function client.connect_cluster(self, id, opts)
    opts = opts or {}
    if type(opts) ~= "table" then error("bad argument #2 to 'connect_cluster' (table expected)", 2) end
    if not util.is_uuid(id) then
      return nil, errors.invalid("connect_cluster", ("cluster_id %s is not a valid id; nothing was sent")
        :format(type(id) == "string" and ("'" .. id:sub(1, 40) .. "'") or ("(a " .. type(id) .. ")")))
    end
    local path = ("%s/%s/spark_clusters/%s/connect"):format(api.BASE, self.instance_id, id)
    local ctx = { method = "GET", path = path, operation = "connect_cluster" }
    local tr = self.transport
    local authz, aerr = self.auth:header_value(function(r) return tr:request(r) end, self.url, tr:now())
    if aerr then return nil, aerr end
    local d = tr.defaults or {}
    local sock, err = ws.connect(self.url:gsub("^http", "ws") .. path, {
      headers = { Authorization = authz, ["User-Agent"] = self.user_agent },
      timeout = opts.timeout, connect_timeout = d.connect_timeout, max_message_size = opts.max_message_size,
      control_frames = opts.control_frames, cafile = d.cafile, capath = d.capath, insecure = d.insecure,
      proxy = d.proxy, scheduler = tr.scheduler,
    })
    if sock then return sock end
    if type(err) == "table" and err.status then
      return nil, errors.from_response({ status = err.status, body = err.body or "", headers = {} }, ctx)
    end
    return nil, errors.from_transport(type(err) == "table" and err or { kind = "other", message = tostring(err) }, ctx)
  end
end

return _M
