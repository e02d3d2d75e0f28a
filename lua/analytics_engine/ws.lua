--- A WebSocket for Lua callers, on the C core's client (core.ws_connect).
-- Outside a loop every call blocks up to its timeout; inside one (the `loop`
-- option, when the caller is one of its tasks) the call steps without
-- blocking and the task waits in the loop's one wait (loop:wait_ws), so other
-- tasks run meanwhile.
local loop_mod = require("analytics_engine.loop")
local ngx_ws = require("analytics_engine.transport.ngx_ws")

local _M = {}
local mt = { __index = _M }

_M.CONNECT_TIMEOUT = 30
_M.SEND_TIMEOUT = 30
_M.CLOSE_TIMEOUT = 2

local active = loop_mod.active

-- The C core is loaded by the first connect, not here: the client requires
-- this module, and a client under nginx (cosockets) must not load the core.
-- Inside nginx, where cosockets can yield, a socket is transport/ngx_ws.lua's
-- (same interface) and never the core's blocking one: keep it that way.
local core
local function monotime() return core.monotime() end
local function load_core()
  if ngx_ws.active() then return ngx_ws end
  core = core or require("analytics_engine.core")
  return core
end

-- Repeat method(h, 0, ...) until it answers something other than "timeout",
-- waiting on the socket in between, up to `timeout` seconds (nil: no limit).
local function stepped(self, timeout, method, ...)
  local h, loop = self.h, active(self.loop)
  if not loop then return method(h, timeout, ...) end
  local deadline = timeout and monotime() + timeout
  while true do
    local a, b = method(h, 0, ...)
    if a ~= nil or type(b) ~= "table" or b.kind ~= "timeout" then return a, b end
    local left = deadline and deadline - monotime()
    if left and left <= 0 then return a, b end
    local ok, err = loop:wait_ws(h, left)
    if ok == nil then return nil, err end
  end
end

local function connect_step(h, t) return h:connect(t) end
local function receive_step(h, t) return h:receive(t) end
local function flush_step(h, t) return h:flush(t) end

--- ws.connect(url, opts) -> ws | nil, err. opts: headers, timeout (handshake,
-- seconds), loop, and the core's connect_timeout, max_message_size,
-- cafile, capath, insecure, proxy, control_frames.
function _M.connect(url, opts)
  opts = opts or {}
  local impl = load_core()
  local h, err = impl.ws_connect(url, {
    headers = opts.headers, connect_timeout = opts.connect_timeout, max_message_size = opts.max_message_size,
    cafile = opts.cafile, capath = opts.capath, insecure = opts.insecure, proxy = opts.proxy,
    control_frames = opts.control_frames,
  })
  if not h then return nil, err end
  local self = setmetatable({ h = h, loop = opts.loop, clock = impl.monotime }, mt)
  local ok, cerr = stepped(self, opts.timeout or _M.CONNECT_TIMEOUT, connect_step)
  if not ok then
    h:close(nil, nil, 0)
    return nil, cerr
  end
  return self
end

--- Wrap a core handle (for example one a server accepted).
function _M.wrap(h, loop)
  return setmetatable({ h = h, loop = loop, clock = load_core().monotime }, mt)
end

--- ws:send(data [, { binary = bool, fragment_size = n, timeout = s }]) -> true | nil, err
-- Returns once the message is written (or queued, under a loop, with
-- the rest written while the task waits).
function _M.send(self, data, opts)
  if type(data) ~= "string" then error("bad argument #1 to 'send' (string expected, got " .. type(data) .. ")", 2) end
  local ok, err = self.h:send(data, opts)
  if not ok then return nil, err end
  return stepped(self, opts and opts.timeout or _M.SEND_TIMEOUT, flush_step)
end

--- ws:queue(data [, opts]) -> true | nil, err: the message is queued and
-- written by the socket's next steps (a receive or a send), without waiting.
-- For a socket another task of the loop reads (kernel sessions): a waiting
-- send would wait on the socket beside the reader.
function _M.queue(self, data, opts)
  if type(data) ~= "string" then error("bad argument #1 to 'queue' (string expected, got " .. type(data) .. ")", 2) end
  return self.h:send(data, opts)
end

--- ws:receive([timeout]) -> data, opcode | nil, err (err.kind "timeout", or
-- "closed" with err.code and err.reason after the peer's close).
function _M.receive(self, timeout)
  return stepped(self, timeout, receive_step)
end

function _M.ping(self, data)
  return self.h:ping(data)
end

--- ws:close([code [, reason [, wait]]]) -> true: the close handshake (bounded
-- by CLOSE_TIMEOUT), then the socket is released. Safe to call twice. With
-- `wait` (seconds) the core's own close waits at most that long without
-- stepping the loop (0: send the close frame and release; a socket another
-- task reads is closed so).
function _M.close(self, code, reason, wait)
  local h = self.h
  if wait then return h:close(code or 1000, reason, wait) end
  if h:state() == "open" then
    h:shutdown(code or 1000, reason)
    local clock = self.clock
    local deadline = clock() + _M.CLOSE_TIMEOUT
    while true do -- drain until the peer's close (or a failure, or the deadline)
      local left = deadline - clock()
      if left <= 0 then break end
      local data, err = stepped(self, left, receive_step)
      if data == nil and (type(err) ~= "table" or err.kind ~= "timeout") then break end
    end
  end
  return h:close(nil, nil, 0)
end
mt.__close = _M.close
mt.__gc = function(self) self.h:close(nil, nil, 0) end

function _M.state(self)
  return self.h:state()
end

function _M.fd(self)
  return self.h:fd()
end

return _M
