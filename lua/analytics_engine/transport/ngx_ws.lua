--- A WebSocket client on nginx cosockets (ngx.socket.tcp), for kernel and
-- cluster sessions inside nginx handlers: a session waits by yielding, so it
-- never blocks the worker (the C core's WebSocket would). RFC 6455 client
-- side, as lua-resty-websocket does it: masked frames, fragmented messages
-- reassembled, pings answered, the close handshake, a message size limit.
--
-- It offers the part of the C core that ws.lua and kernel.lua use (ws_connect
-- and the handle's connect/send/flush/receive/ping/shutdown/close/state, plus
-- monotime, time, sleep, random_bytes), with the same results and error
-- shapes, so they take it in place of the core when `active()` is true.
local ngx_transport = require("analytics_engine.transport.ngx")

-- LuaJIT's bit library: this module only runs inside nginx (LuaJIT); the
-- pcall keeps it loadable (and inert) on Lua 5.4.
local has_bit, bit = pcall(require, "bit")

local ngx = rawget(_G, "ngx")
local byte, char, concat, floor = string.byte, string.char, table.concat, math.floor
local unpack = table.unpack or rawget(_G, "unpack") -- LuaJIT has the global

local _M = {}
local Handle = {}
local handle_mt = { __index = Handle, __name = "analytics_engine.NgxWebSocket" }

_M.MAX_MESSAGE_SIZE = 16 * 1024 * 1024 -- as the C core's default
local GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
local FOREVER_MS = 24 * 3600 * 1000 -- no timeout given: the core's limit is as long
local MID_FRAME_MS = 30 * 1000 -- the rest of a frame once its first byte came

--- True inside nginx in a phase where cosockets can yield.
function _M.active()
  return has_bit and ngx_transport.yieldable()
end

function _M.monotime()
  return ngx_transport.now()
end

function _M.time()
  return ngx_transport.now()
end

function _M.sleep(seconds)
  ngx.sleep(seconds)
end

--- n random bytes from the kernel's generator (a short file read), for
-- WebSocket keys, masks and message ids.
function _M.random_bytes(n)
  local f = io.open("/dev/urandom", "rb")
  local s = f and f:read(n)
  if f then f:close() end
  if s and #s == n then return s end
  local t = {}
  for i = 1, n do t[i] = char(math.random(0, 255)) end
  return concat(t)
end

local function ms(seconds)
  if seconds == nil then return FOREVER_MS end
  return math.max(1, floor(seconds * 1000)) -- 0 would mean nginx's default
end

local function err(kind, message, extra)
  local e = { kind = kind, message = message }
  for k, v in pairs(extra or {}) do e[k] = v end
  return nil, e
end

local function timeout(what)
  return err("timeout", "websocket: timed out " .. what)
end

--- ws_connect(url, opts) -> handle (not connected yet: handle:connect(timeout)).
-- opts: headers (name -> value), connect_timeout, max_message_size, insecure,
-- control_frames (hand pings and pongs to receive too). cafile/capath come
-- from nginx's lua_ssl_trusted_certificate, as for the ngx transport.
function _M.ws_connect(url, opts)
  opts = opts or {}
  if opts.proxy then error("bad argument: the nginx WebSocket does not support 'proxy'", 2) end
  local scheme, host, port, target, authority = ngx_transport.parse_url((url:gsub("^ws", "http")))
  if not scheme then return err("other", "websocket: " .. tostring(host)) end
  for k, v in pairs(opts.headers or {}) do
    if type(k) ~= "string" or k:find("[%c:%s]") or type(v) ~= "string" or v:find("[%z\r\n]") then
      error("bad argument: field 'headers' must map header names to strings", 2)
    end
  end
  return setmetatable({
    tls = scheme == "https", host = host, port = port, target = target, authority = authority,
    headers = opts.headers or {}, connect_timeout = opts.connect_timeout or 10,
    insecure = opts.insecure, control_frames = opts.control_frames,
    max = opts.max_message_size or _M.MAX_MESSAGE_SIZE,
    st = "connecting", parts = {}, size = 0,
  }, handle_mt)
end

function Handle:fail(kind, message, extra)
  self.st = "failed"
  if self.sock then self.sock:close() end
  self.last = { kind = kind, message = message }
  for k, v in pairs(extra or {}) do self.last[k] = v end
  return nil, self.last
end

-- The result for a call on a handle that is no longer open.
function Handle:gone()
  if self.last then return nil, self.last end
  return err("closed", "websocket: closed")
end

-- Read the 101 and check it; on another status keep the status and body.
function Handle:handshake(key)
  local sock = self.sock
  local line, rerr = sock:receive("*l")
  if not line then return self:fail(ngx_transport.kind_of(rerr, "recv"), "websocket handshake: " .. rerr) end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then return self:fail("handshake", "websocket handshake: the server's answer is not HTTP/1.x") end
  local headers = {}
  while true do
    local h, herr = sock:receive("*l")
    if not h then return self:fail(ngx_transport.kind_of(herr, "recv"), "websocket handshake: " .. herr) end
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.-)%s*$")
    if k then headers[k:lower()] = v end
  end
  if status ~= 101 then
    local n = math.min(tonumber(headers["content-length"]) or 0, 4096)
    local body = n > 0 and sock:receive(n) or ""
    return self:fail("handshake", ("websocket handshake: the server answered %d instead of 101"):format(status),
      { status = status, body = body })
  end
  if not (headers.upgrade or ""):lower():find("websocket", 1, true) then
    return self:fail("handshake", "websocket handshake: 101 without 'Upgrade: websocket'")
  end
  if headers["sec-websocket-accept"] ~= ngx.encode_base64(ngx.sha1_bin(key .. GUID)) then
    return self:fail("handshake", "websocket handshake: wrong Sec-WebSocket-Accept")
  end
  self.st = "open"
  return true
end

--- handle:connect([timeout]) -> true | nil, err
function Handle:connect(t)
  if self.st == "open" then return true end
  if self.st ~= "connecting" then return self:gone() end
  local sock = ngx.socket.tcp()
  self.sock = sock
  sock:settimeouts(ms(self.connect_timeout), ms(t), ms(t))
  local ok, cerr = sock:connect(self.host, self.port)
  if not ok then
    return self:fail(ngx_transport.kind_of(cerr, "connect"),
      ("websocket: connecting to %s:%d failed: %s"):format(self.host, self.port, cerr))
  end
  if self.tls then
    local _, terr = sock:sslhandshake(nil, self.host, not self.insecure)
    if terr then return self:fail("tls", "websocket: TLS handshake with " .. self.host .. " failed: " .. terr) end
  end
  local key = ngx.encode_base64(_M.random_bytes(16))
  local lines = { "GET ", self.target, " HTTP/1.1\r\nHost: ", self.authority,
                  "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
                  key, "\r\n" }
  for k, v in pairs(self.headers) do lines[#lines + 1] = k .. ": " .. v .. "\r\n" end
  lines[#lines + 1] = "\r\n"
  local sent, serr = sock:send(lines)
  if not sent then return self:fail(ngx_transport.kind_of(serr, "send"), "websocket handshake: " .. serr) end
  return self:handshake(key)
end

-- One masked frame (clients always mask).
local function frame(opcode, payload, fin)
  local n = #payload
  local head = { char((fin and 0x80 or 0) + opcode) }
  if n < 126 then
    head[2] = char(0x80 + n)
  elseif n < 65536 then
    head[2] = char(0x80 + 126, floor(n / 256), n % 256)
  else
    local b = {}
    for i = 8, 1, -1 do b[i] = n % 256; n = floor(n / 256) end
    head[2] = char(0x80 + 127, b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8])
  end
  local mask = _M.random_bytes(4)
  head[3] = mask
  local m = { byte(mask, 1, 4) }
  local out, bxor = {}, bit.bxor
  for i = 1, #payload, 4096 do -- in chunks: string.char takes a bounded number of arguments
    local chunk = { byte(payload, i, math.min(i + 4095, #payload)) }
    for j = 1, #chunk do chunk[j] = bxor(chunk[j], m[(i + j - 2) % 4 + 1]) end
    out[#out + 1] = char(unpack(chunk))
  end
  head[4] = concat(out)
  return concat(head)
end

function Handle:write(data, what)
  local ok, serr = self.sock:send(data)
  if not ok then return self:fail(ngx_transport.kind_of(serr, "send"), "websocket: " .. what .. ": " .. serr) end
  return true
end

--- handle:send(data [, { binary = bool, fragment_size = n }]) -> true | nil, err
-- Written when it returns (the cosocket yields until then).
function Handle:send(data, opts)
  if self.st ~= "open" then return self:gone() end
  if self.shutdown_called then return err("closed", "websocket: send after shutdown") end
  local opcode = opts and opts.binary and 2 or 1
  local step = opts and opts.fragment_size or 0
  if step <= 0 or step >= #data then return self:write(frame(opcode, data, true), "sending") end
  local frames = {}
  for i = 1, #data, step do
    frames[#frames + 1] = frame(i == 1 and opcode or 0, data:sub(i, i + step - 1), i + step > #data)
  end
  return self:write(concat(frames), "sending")
end

function Handle:flush()
  if self.st == "open" or self.st == "ended" then return true end
  return self:gone()
end

function Handle:ping(data)
  if self.st ~= "open" then return self:gone() end
  data = data or ""
  if #data > 125 then error("bad argument #2 to 'ping' (a ping carries at most 125 bytes)", 2) end
  return self:write(frame(9, data, true), "sending a ping")
end

--- handle:shutdown([code [, reason]]): send our close frame.
function Handle:shutdown(code, reason)
  if self.st ~= "open" or self.shutdown_called then return true end
  self.shutdown_called = true
  local payload = ""
  if code then payload = char(floor(code / 256), code % 256) .. (reason or ""):sub(1, 123) end
  return self:write(frame(8, payload, true), "closing")
end

-- The peer's close frame: answer it (unless we started), then the end.
function Handle:closed_by_peer(payload)
  local code, reason = 1005, ""
  if #payload >= 2 then
    local a, b = byte(payload, 1, 2)
    code, reason = a * 256 + b, payload:sub(3)
  end
  if not self.shutdown_called then
    self.shutdown_called = "peer"
    self.sock:send(frame(8, payload:sub(1, 2), true))
  end
  self.st = "ended"
  self.close_code, self.close_reason = code, reason
  local shown = reason:gsub("[%c\127]", "?")
  self.last = { kind = "closed", code = code, reason = reason,
                message = ("websocket: closed by %s with code %d%s"):format(
                  self.shutdown_called == "peer" and "the peer" or "us", code, shown ~= "" and ": " .. shown or "") }
  return nil, self.last
end

-- Read n bytes of a frame that has begun.
function Handle:read(n)
  if n == 0 then return "" end
  local s, rerr = self.sock:receive(n)
  if not s then return self:fail(ngx_transport.kind_of(rerr, "recv"), "websocket: receiving: " .. rerr) end
  return s
end

--- handle:receive([timeout]) -> data, opcode ("text", "binary"; "ping" and
-- "pong" only with control_frames) | nil, err (kind "timeout", or "closed"
-- with code and reason after the close handshake).
function Handle:receive(t)
  if self.st ~= "open" then return self:gone() end
  local sock = self.sock
  while true do
    -- The caller's timeout covers the wait for a frame; once its first byte
    -- is here the rest is read with a long one, so a frame is never split
    -- between two calls.
    sock:settimeout(ms(t))
    local b1, rerr = sock:receive(1)
    if not b1 then
      if rerr == "timeout" then return timeout("receiving") end
      return self:fail(ngx_transport.kind_of(rerr, "recv"), "websocket: receiving: " .. rerr)
    end
    sock:settimeout(MID_FRAME_MS)
    local h2, e2 = self:read(1)
    if not h2 then return nil, e2 end
    local fin, opcode = byte(b1) >= 128, byte(b1) % 16
    local masked, len = byte(h2) >= 128, byte(h2) % 128
    if len >= 126 then
      local ext, e3 = self:read(len == 126 and 2 or 8)
      if not ext then return nil, e3 end
      len = 0
      for i = 1, #ext do len = len * 256 + byte(ext, i) end
    end
    if self.size + len > self.max then
      self:shutdown(1009, "message too big")
      return self:fail("too_large", ("websocket: a message over %d bytes"):format(self.max))
    end
    local mask = masked and self:read(4) or nil
    local payload, e4 = self:read(len)
    if not payload then return nil, e4 end
    if mask then -- servers do not mask; accept it anyway
      local m, p = { byte(mask, 1, 4) }, {}
      for i = 1, #payload do p[i] = char(bit.bxor(byte(payload, i), m[(i - 1) % 4 + 1])) end
      payload = concat(p)
    end
    if opcode == 8 then
      return self:closed_by_peer(payload)
    elseif opcode == 9 then
      self:write(frame(10, payload, true), "answering a ping")
      if self.control_frames then return payload, "ping" end
    elseif opcode == 10 then
      if self.control_frames then return payload, "pong" end
    elseif opcode <= 2 then
      if opcode ~= 0 then self.kind = opcode == 2 and "binary" or "text" end
      self.parts[#self.parts + 1] = payload
      self.size = self.size + #payload
      if fin then
        local data = concat(self.parts)
        self.parts, self.size = {}, 0
        return data, self.kind
      end
    else
      self:shutdown(1002, "unknown opcode")
      return self:fail("protocol", ("websocket: unknown opcode %d"):format(opcode))
    end
  end
end

--- handle:close([code [, reason [, timeout]]]) -> true: the close handshake
-- (waiting up to `timeout` seconds, default 1, for the peer's close), then
-- the socket is released. Safe to call twice.
function Handle:close(code, reason, t)
  if self.st == "open" then
    self:shutdown(code or 1000, reason)
    local deadline = _M.monotime() + (t or 1)
    while self.st == "open" do
      local left = deadline - _M.monotime()
      if left <= 0 then break end
      local data, rerr = self:receive(left)
      if data == nil and rerr and rerr.kind == "timeout" then break end
    end
  end
  if self.sock and self.st ~= "closed" then self.sock:close() end
  self.st = "closed"
  return true
end

function Handle:state()
  return self.st
end

function Handle:close_info()
  return self.close_code, self.close_reason
end

function Handle.fd(_)
  return nil -- a cosocket has no descriptor for a loop to poll; nginx waits for it
end

return _M
