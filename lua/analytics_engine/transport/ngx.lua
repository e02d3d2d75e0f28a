--- The nginx transport: HTTP/1.1 in pure Lua on ngx.socket.tcp cosockets, so
-- a request handler waits for the service without blocking the worker.
-- Same interface and result shapes as the curl transport:
--   request(req) -> { status, headers (lower-case names), body } | nil, { kind, message }
-- Keep-alive goes through setkeepalive pools named by host, port, TLS and
-- verification; TLS trust comes from nginx's lua_ssl_trusted_certificate.
-- Pure Lua 5.1: it runs on OpenResty's LuaJIT.
local _M = { name = "ngx" }
local mt = { __index = _M }

local ngx = rawget(_G, "ngx")
local type, tonumber, tostring, pairs, concat = type, tonumber, tostring, pairs, table.concat
local floor, min = math.floor, math.min

local DEFAULT_MAX_RESPONSE = 64 * 1024 * 1024 -- as the C core
local MAX_HEADER_BYTES = 1024 * 1024
local MAX_LINE = 64 * 1024

-- Phases where cosockets may yield; elsewhere (init, init_worker, set,
-- header/body filters, log, balancer) they do not exist.
local YIELDABLE = { rewrite = true, server_rewrite = true, access = true, content = true, timer = true,
                    ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true }

--- True when the running nginx phase can use cosockets.
function _M.yieldable()
  if not (ngx and ngx.get_phase) then return false end
  local ok, phase = pcall(ngx.get_phase)
  return ok and YIELDABLE[phase] == true
end

local function now()
  ngx.update_time()
  return ngx.now()
end

--- opts: connect_timeout, timeout (seconds, total per request), insecure,
-- max_response_size, pool_size, keepalive_timeout (seconds idle in the pool),
-- pool (a name prefix: clients whose locations trust different CAs through
-- lua_ssl_trusted_certificate must not share verified connections).
function _M.new(opts)
  opts = opts or {}
  if not (ngx and ngx.socket and ngx.socket.tcp) then
    error("the ngx transport needs OpenResty or nginx with the lua module (no ngx.socket.tcp)", 3)
  end
  if opts.proxy then
    error("bad argument: the ngx transport does not support proxy; use the curl transport", 3)
  end
  return setmetatable({
    connect_timeout = opts.connect_timeout or 10,
    timeout = opts.timeout or 120,
    insecure = opts.insecure == true,
    max_response_size = opts.max_response_size or DEFAULT_MAX_RESPONSE,
    pool_size = opts.pool_size,
    pool = opts.pool or "ae",
    keepalive_timeout = opts.keepalive_timeout or 60,
    -- Connections this transport opened and took from the pool (observability).
    stats = { connects = 0, reused = 0 },
  }, mt)
end

local function fail(kind, message) return nil, { kind = kind, message = message } end

--- "https://h:1/p?q" -> scheme, host, port, target, host header; or nil, message.
local function parse_url(url)
  local scheme, authority, target = url:match("^(https?)://([^/?#]+)([^#]*)")
  if not scheme then return nil, "unsupported URL (http:// or https:// expected): " .. url:sub(1, 80) end
  if authority:find("@", 1, true) then return nil, "credentials in the URL are not supported" end
  local host, port = authority:match("^%[([%x:.]+)%]:?(%d*)$") -- IPv6 literal
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host then return nil, "bad host in URL: " .. authority end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  if port < 1 or port > 65535 then return nil, "bad port in URL: " .. authority end
  if target == "" then target = "/" elseif target:sub(1, 1) == "?" then target = "/" .. target end
  return scheme, host, port, target, authority
end

-- The kind of a cosocket error, in the curl transport's words.
local function kind_of(err, stage)
  err = tostring(err)
  if err == "timeout" or err:find("timed out", 1, true) then return "timeout" end
  if stage == "connect" then
    if err:find("resolve", 1, true) or err:find("not found", 1, true) or err:find("resolver", 1, true) then
      return "resolve"
    end
    return "connect"
  end
  if stage == "tls" then return "tls" end
  return stage
end

-- For the WebSocket on cosockets (transport/ngx_ws.lua).
_M.parse_url, _M.kind_of = parse_url, kind_of

-- Connection failures that a reused (keep-alive) connection shows when the
-- server closed it while idle; the request never reached the server.
local function stale(err)
  return err == "closed" or err:find("reset", 1, true) or err:find("broken pipe", 1, true)
end

local function check_header(k, v)
  if type(k) ~= "string" or k == "" or k:find("[%c:%s]") then
    error("bad argument: field 'headers' has an invalid name " .. tostring(k), 4)
  end
  if v:find("[%z\r\n]") then
    error("bad argument: field 'headers' value of '" .. k .. "' contains CR, LF or NUL", 4)
  end
end

local function build_request(req, target, host_header)
  local method = req.method or "GET"
  if not method:find("^[%w!#$%%&'*+.^_`|~-]+$") then
    error("bad argument: field 'method' must be an HTTP method name", 3)
  end
  local body = req.body
  if body ~= nil and type(body) ~= "string" then error("bad argument: field 'body' must be a string", 3) end
  local lines = { method, " ", target, " HTTP/1.1\r\n" }
  local seen = {}
  for k, v in pairs(req.headers or {}) do
    v = tostring(v)
    check_header(k, v)
    seen[k:lower()] = true
    lines[#lines + 1] = k .. ": " .. v .. "\r\n"
  end
  if not seen.host then lines[#lines + 1] = "Host: " .. host_header .. "\r\n" end
  if not seen["user-agent"] and req.user_agent then lines[#lines + 1] = "User-Agent: " .. req.user_agent .. "\r\n" end
  if body or method == "POST" or method == "PUT" or method == "PATCH" then
    lines[#lines + 1] = "Content-Length: " .. #(body or "") .. "\r\n"
  end
  lines[#lines + 1] = "\r\n"
  if body then lines[#lines + 1] = body end
  return lines
end

-- A reader that keeps the request's total deadline on every receive.
local function reader(sock, deadline, connect_ms, send_ms)
  return function(pattern)
    local left = deadline - now()
    if left <= 0 then return nil, "timeout" end
    sock:settimeouts(connect_ms, send_ms, floor(left * 1000) + 1)
    return sock:receive(pattern)
  end
end

-- Status line and headers (after any 1xx) -> status, headers, version | nil, kind, message, got_bytes
local function read_head(recv)
  local got = false
  while true do
    local line, err = recv("*l")
    if not line then return nil, err, got end
    got = true
    local version, status = line:match("^HTTP/(%d%.%d) (%d%d%d)")
    if not version then return nil, "protocol", got, "malformed status line" end
    local headers, size = {}, 0
    while true do
      local h, herr = recv("*l")
      if not h then return nil, herr, got end
      if h == "" then break end
      size = size + #h
      if size > MAX_HEADER_BYTES then
        return nil, "too_large", got, "response headers exceed " .. MAX_HEADER_BYTES .. " bytes"
      end
      local name, value = h:match("^([^:%s]+):%s*(.-)%s*$")
      if name then
        name = name:lower()
        local prev = headers[name]
        headers[name] = prev and (prev .. ", " .. value) or value
      end
    end
    status = tonumber(status)
    if status >= 200 or status == 101 then return status, headers, version end
  end
end

local function read_chunked(recv, limit)
  local parts, size = {}, 0
  while true do
    local line, err = recv("*l")
    if not line then return nil, err end
    if #line > MAX_LINE then return nil, "protocol", "chunk size line too long" end
    local n = tonumber(line:match("^%s*(%x+)"), 16)
    if not n then return nil, "protocol", "malformed chunk size" end
    if n == 0 then
      repeat -- trailers, up to the empty line
        local t, terr = recv("*l")
        if not t then return nil, terr end
      until t == ""
      return concat(parts)
    end
    size = size + n
    if size > limit then return nil, "too_large" end
    local data, derr = recv(n)
    if not data then return nil, derr end
    parts[#parts + 1] = data
    local crlf, cerr = recv(2)
    if not crlf then return nil, cerr end
    if crlf ~= "\r\n" then return nil, "protocol", "chunk not followed by CRLF" end
  end
end

-- Read what is left until the server closes, within the size limit.
local function read_to_close(recv, limit)
  local parts, size = {}, 0
  while true do
    local data, err, partial = recv(65536)
    data = data or partial
    if data and #data > 0 then
      size = size + #data
      if size > limit then return nil, "too_large" end
      parts[#parts + 1] = data
    end
    if err == "closed" then return concat(parts) end
    if err then return nil, err end
  end
end

-- One exchange on a connected socket -> res, keepalive | nil, err table, stale_reuse
function _M._exchange(self, sock, req, lines, deadline, ms, reused)
  local recv = reader(sock, deadline, ms.connect, ms.send)
  local bytes, serr = sock:send(lines)
  if not bytes then
    return nil, { kind = kind_of(serr, "send"), message = "send failed: " .. tostring(serr) }, reused and stale(serr)
  end
  local status, headers, version, detail = read_head(recv)
  if not status then
    local kerr, got = headers, version
    local kind = kerr == "protocol" and "recv" or kerr == "too_large" and "too_large" or kind_of(kerr, "recv")
    return nil, { kind = kind, message = detail or ("receiving the response failed: " .. tostring(kerr)) },
           reused and not got and stale(tostring(kerr))
  end
  local limit = req.max_response_size or self.max_response_size
  local body, berr, bdetail
  local keep = version == "1.1" and not (headers.connection or ""):lower():find("close", 1, true)
  local te = (headers["transfer-encoding"] or ""):lower()
  if req.method == "HEAD" or status == 204 or status == 304 or status == 101 then
    body = ""
  elseif te:find("chunked", 1, true) then
    body, berr, bdetail = read_chunked(recv, limit)
  elseif headers["content-length"] then
    local n = tonumber(headers["content-length"]:match("^%d+"))
    if not n then return nil, { kind = "recv", message = "malformed Content-Length" } end
    if n > limit then
      berr = "too_large"
    elseif n == 0 then
      body = ""
    else
      body, berr = recv(n)
    end
  else
    keep = false
    body, berr = read_to_close(recv, limit)
  end
  if not body then
    if berr == "too_large" then
      return nil, { kind = "too_large", message = ("response body exceeds max_response_size (%d bytes)"):format(limit) }
    end
    return nil, { kind = berr == "protocol" and "recv" or kind_of(berr, "recv"),
                  message = bdetail or ("receiving the response body failed: " .. tostring(berr)) }
  end
  return { status = status, headers = headers, body = body }, keep
end

--- req: { method, url, headers, body, timeout?, connect_timeout?, insecure?,
-- max_response_size?, fresh_connect?, send_once? } -> res | nil, { kind, message }
function _M.request(self, req)
  if type(req) ~= "table" then error("bad argument #1 to 'request' (table expected)", 2) end
  if type(req.url) ~= "string" then error("bad argument: field 'url' is required (a string)", 2) end
  local scheme, host, port, target, authority = parse_url(req.url)
  if not scheme then return fail("other", host) end
  local lines = build_request(req, target, authority)
  local insecure = req.insecure
  if insecure == nil then insecure = self.insecure end
  local tls = scheme == "https"
  local pool = ("%s:%s:%d:%s"):format(self.pool, host, port, tls and (insecure and "tls-noverify" or "tls") or "plain")
  -- A request that creates (send_once) never rides a pooled connection: one
  -- that died while idle would leave it unknown whether the server acted on it.
  local fresh = req.fresh_connect == true or req.send_once == true
  if fresh then pool = pool .. ":fresh" end
  local ms = { connect = floor((req.connect_timeout or self.connect_timeout) * 1000),
               send = floor((req.timeout or self.timeout) * 1000) }
  local deadline = now() + (req.timeout or self.timeout)
  local attempt = 0
  while true do
    attempt = attempt + 1
    local sock = ngx.socket.tcp()
    sock:settimeouts(min(ms.connect, ms.send), ms.send, ms.send)
    local ok, cerr = sock:connect(host, port, { pool = pool, pool_size = self.pool_size })
    if not ok then
      return fail(kind_of(cerr, "connect"), ("connecting to %s:%d failed: %s"):format(host, port, tostring(cerr)))
    end
    local reused = (sock:getreusedtimes() or 0) > 0
    local stats = self.stats
    if reused then stats.reused = stats.reused + 1 else stats.connects = stats.connects + 1 end
    if tls and not reused then
      local sess, terr = sock:sslhandshake(nil, host, not insecure)
      if not sess then
        sock:close()
        return fail(kind_of(terr, "tls"), ("TLS handshake with %s:%d failed: %s"):format(host, port, tostring(terr)))
      end
    end
    local res, keep_or_err, retry_stale = self:_exchange(sock, req, lines, deadline, ms, reused)
    if res then
      if keep_or_err and not fresh then
        sock:setkeepalive(floor(self.keepalive_timeout * 1000), self.pool_size)
      else
        sock:close()
      end
      return res
    end
    sock:close()
    -- As libcurl does: a request that failed only because its pooled
    -- connection had gone stale is sent once more on a new connection.
    if not (retry_stale and attempt == 1) then return nil, keep_or_err end
  end
end

function _M.sleep(_, seconds)
  ngx.sleep(seconds)
end

function _M.now()
  return now()
end

function _M.close() end

--- The transport ae.client uses by default when `ngx` exists: cosockets in
-- phases that can yield, the curl transport (the C core) elsewhere, decided
-- per call, so a client made in init_by_lua works in handlers too.
local auto = { name = "auto" }
local auto_mt = { __index = auto }

function _M.auto(opts)
  return setmetatable({ opts = opts or {} }, auto_mt)
end

function auto.pick(self)
  if _M.yieldable() then
    self.ngx_tr = self.ngx_tr or _M.new(self.opts)
    return self.ngx_tr
  end
  if not self.curl_tr then
    local ok, curl = pcall(require, "analytics_engine.transport.curl")
    if not ok then
      return nil, { kind = "other", message = "this nginx phase cannot use cosockets and the C core is not "
        .. "installed for LuaJIT: " .. tostring(curl):match("^[^\n]*") }
    end
    self.curl_tr = curl.new(self.opts)
  end
  return self.curl_tr
end

function auto.request(self, req)
  local tr, err = self:pick()
  if not tr then return nil, err end
  return tr:request(req)
end

function auto.sleep(self, seconds)
  local tr = self:pick()
  if tr then return tr:sleep(seconds) end
end

-- One clock for every phase, so deadlines survive a change of transport.
function auto.now()
  return now()
end

function auto.close(self)
  if self.curl_tr then self.curl_tr:close() end
end

return _M
