--- c:connect_cluster(id [, opts]) -> a WebSocket (analytics_engine.ws) to the
-- cluster's `connect` endpoint, authenticated like every other call. The
-- client makes the method from api.lua's row and hands this module the
-- target (URL, headers, TLS options, loop); the session is the socket.
local errors = require("analytics_engine.errors")
local ws = require("analytics_engine.ws")

local _M = {}

-- The error of a failed WebSocket open: the server's answer, or the transport's.
function _M.error(err, ctx)
  if type(err) == "table" and err.status then
    return errors.from_response({ status = err.status, body = err.body or "", headers = {} }, ctx)
  end
  return errors.from_transport(type(err) == "table" and err or { kind = "other", message = tostring(err) }, ctx)
end

--- Open the socket. target: url, headers, context, loop and the TLS options
-- (from the client); opts: timeout (handshake seconds), max_message_size,
-- control_frames.
function _M.connect(_, target, opts)
  local sock, err = ws.connect(target.url, {
    headers = target.headers, timeout = opts.timeout, connect_timeout = target.connect_timeout,
    max_message_size = opts.max_message_size, control_frames = opts.control_frames,
    cafile = target.cafile, capath = target.capath, insecure = target.insecure, proxy = target.proxy,
    loop = target.loop,
  })
  if sock then return sock end
  return nil, _M.error(err, target.context)
end

return _M
