--- The default transport: the C core's libcurl session.
-- Outside a scheduler a request blocks; inside one (the workflow runner sets
-- `scheduler`) it is started on the shared multi handle and the calling
-- coroutine yields until the answer arrives.
local core = require "analytics_engine.core"

local _M = { name = "curl" }
local mt = { __index = _M }

function _M.new(opts)
  opts = opts or {}
  return setmetatable({
    session = core.http_session { max_idle = opts.max_idle or 16 },
    scheduler = opts.scheduler,
    defaults = {
      connect_timeout = opts.connect_timeout,
      timeout = opts.timeout,
      cafile = opts.cafile, capath = opts.capath,
      insecure = opts.insecure,
      max_response_size = opts.max_response_size,
      proxy = opts.proxy,
    },
  }, mt)
end

--- req: { method, url, headers, body, timeout? } → res | nil, { kind, message }
function _M.request(self, req)
  for k, v in pairs(self.defaults) do
    if req[k] == nil then req[k] = v end
  end
  local sched = self.scheduler
  if sched and sched:owns(coroutine.running()) then
    return sched:http(self.session, req)
  end
  return self.session:request(req)
end

function _M.sleep(self, seconds)
  local sched = self.scheduler
  if sched and sched:owns(coroutine.running()) then
    return sched:sleep(seconds)
  end
  core.sleep(seconds)
end

function _M.now()
  return core.monotime()
end

function _M.close(self)
  self.session:close()
end

return _M
