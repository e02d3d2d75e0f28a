--- The default transport: the C core's libcurl session.
-- Outside a loop a request blocks; inside one (the `loop` option, when the
-- caller is one of its tasks) it is started on the shared multi handle and
-- the calling task suspends until the answer arrives.
local core = require("analytics_engine.core")
local loop_mod = require("analytics_engine.loop")

local active = loop_mod.active

local _M = { name = "curl" }
local mt = { __index = _M }

function _M.new(opts)
  opts = opts or {}
  local defaults = {
    connect_timeout = opts.connect_timeout,
    timeout = opts.timeout,
    cafile = opts.cafile, capath = opts.capath,
    insecure = opts.insecure,
    max_response_size = opts.max_response_size,
    proxy = opts.proxy,
  }
  return setmetatable({
    -- The session holds the options every request gets (a request's own
    -- fields still win), so a request table carries only what changes.
    -- max_idle: the core chooses (no easy-handle reuse on libcurls that mishandle it)
    session = core.http_session { max_idle = opts.max_idle, defaults = defaults },
    loop = opts.loop,
    defaults = defaults, -- read by the WebSocket connectors (kernel.lua, connect.lua)
  }, mt)
end

--- req: { method, url, headers, body, timeout? } → res | nil, { kind, message }
function _M.request(self, req)
  local loop = active(self.loop)
  if loop then return loop:http(self.session, req) end
  return self.session:request(req)
end

--- Header lines checked and formatted once (core.http_headers), for headers
-- sent unchanged on many requests; usable as a request's `headers`.
function _M.prepare_headers(_, headers)
  return core.http_headers(headers)
end

function _M.sleep(self, seconds)
  local loop = active(self.loop)
  if loop then return loop:sleep(seconds) end
  core.sleep(seconds)
end

_M.now = core.monotime

function _M.close(self)
  self.session:close()
end

return _M
