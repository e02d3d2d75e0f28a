--- Raw-socket exchanges with a server on loopback through
-- spec/helpers/raw_client.py (Lua cannot half-close a socket, repeat a
-- header libcurl would merge, or send bytes libcurl would encode).
-- conns: { { send = bytes, shut = bool, drip = bytes, every = s }, ... }
-- (bytes are Lua strings: any byte, sent as it is). Results per connection:
-- { data = bytes read, eof = the server closed, dripped = n }.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local cjson = require("cjson")

local _M = {}

_M.CLIENT = "spec/helpers/raw_client.py"

-- raw_client.py reads and writes bytes as latin-1 code points.
local function to_latin1(s)
  return (s:gsub("[\128-\255]", function(c) return utf8.char(c:byte()) end))
end
local function from_latin1(s)
  return (s:gsub(utf8.charpattern, function(c) return string.char(utf8.codepoint(c)) end))
end

local function config(port, conns, timeout)
  local list = {}
  for i, c in ipairs(conns) do
    list[i] = { send = to_latin1(c.send or ""), shut = c.shut or false,
                drip = c.drip and to_latin1(c.drip) or nil, every = c.every }
  end
  local cfg, out = os.tmpname(), os.tmpname()
  os.remove(out)
  local f = assert(io.open(cfg, "wb"))
  f:write(cjson.encode { port = port, timeout = timeout or 5, conns = list })
  f:close()
  return cfg, out
end

local function results(text)
  local res = cjson.decode(text)
  for _, r in ipairs(res) do r.data = from_latin1(r.data) end
  return res
end

--- The port of an engine started by helpers.engine.
function _M.port_of(e) return e.port or tonumber(e.url:match(":(%d+)$")) end

--- Run every connection at once against `port` and wait for all -> results.
function _M.exchange(port, conns, timeout)
  local cfg, out = config(port, conns, timeout)
  assert(os.execute(("timeout 60 python3 %s %s %s >/dev/null 2>&1"):format(_M.CLIENT, cfg, out)),
         "raw_client.py failed")
  local res = results(assert(util.read_file(out)))
  os.remove(cfg)
  os.remove(out)
  return res
end

--- Start the connections in the background (for a server this process
-- answers itself) -> a function that returns the results once they are
-- there, else nil; it raises after `limit` seconds (default 30).
function _M.start(port, conns, timeout, limit)
  local cfg, out = config(port, conns, timeout)
  os.execute(("python3 %s %s %s >/dev/null 2>&1 &"):format(_M.CLIENT, cfg, out))
  local deadline = core.monotime() + (limit or 30)
  return function()
    local s = util.read_file(out)
    if s then
      os.remove(out)
      os.remove(cfg)
      return results(s)
    end
    if core.monotime() > deadline then error("raw client did not finish in time") end
    return nil
  end
end

return _M
