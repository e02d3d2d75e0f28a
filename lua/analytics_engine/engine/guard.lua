--- The engine's protection against its own bugs: every request handler,
-- WebSocket callback, timer and loop step runs through `call`, so one Lua
-- error ends one request (a 500 in the service's error shape, with a
-- transaction id), never the engine. The error is logged on one line with the
-- trace id, followed by its traceback, on stderr (the engine's log).
--
-- AE_ENGINE_FAIL_POINTS (comma-separated names) makes those points raise on
-- purpose, so specs can prove the protection: an operation name from api.lua
-- or the engine's rows, or "ws_message", "timer", "tick". Never set it in
-- production: it exists only for the suite.
local reply = require("analytics_engine.engine.reply")

local _M = {}

local FAIL = {}
for name in (os.getenv("AE_ENGINE_FAIL_POINTS") or ""):gmatch("[^,%s]+") do FAIL[name] = true end

--- Raise when `name` is one of the deliberate failure points (specs only).
function _M.fail_point(name)
  if FAIL[name] then error(("deliberate failure at %s (AE_ENGINE_FAIL_POINTS)"):format(name), 2) end
end

local function one_line(s)
  return (tostring(s):gsub("[\r\n]+", " | "))
end

--- Log an internal error: one line (where, trace id, message), then the traceback.
function _M.log(where, err, trace)
  local msg, tb = tostring(err), ""
  local cut = msg:find("\nstack traceback:", 1, true)
  if cut then msg, tb = msg:sub(1, cut - 1), msg:sub(cut + 1) end
  io.stderr:write(("engine: internal error in %s (trace %s): %s\n"):format(reply.printable(where), trace or "-",
    reply.printable(one_line(msg))))
  if tb ~= "" then io.stderr:write("  ", (tb:gsub("\n", "\n  ")), "\n") end
  io.stderr:flush()
end

--- call(where, fn, ...) -> true, results... | false (logged)
function _M.call(where, fn, ...)
  local r = table.pack(xpcall(fn, debug.traceback, ...))
  if not r[1] then
    _M.log(where, r[2])
    return false
  end
  return table.unpack(r, 1, r.n)
end

--- The 500 a failed request gets; the log line carries its trace id.
function _M.internal_error(where, err)
  local status, body, headers = reply.error(500, "internal_error",
    "the local engine failed to handle the request (" .. where .. "); see the engine's log")
  _M.log(where, err, body.trace)
  return status, body, headers
end

--- A close code the engine may send, from one it received (or none): 1005
-- (no code), 1006 (abnormal) and 1015 (TLS) are never sent: they become 1000
-- and 1011; anything else outside what RFC 6455 lets an endpoint send is 1011.
function _M.close_code(code)
  if code == nil then return 1000 end
  code = tonumber(code)
  if code == nil or code ~= math.floor(code) then return 1011 end
  if code == 0 or code == 1005 then return 1000 end
  if code == 1006 or code == 1015 then return 1011 end
  if (code >= 1000 and code <= 1003) or (code >= 1007 and code <= 1014) or (code >= 3000 and code <= 4999) then
    return code
  end
  return 1011
end

--- A close reason the engine may send: one line, at most 123 bytes (cut at
-- a character boundary, or the peer would fail the close as invalid UTF-8).
function _M.close_reason(reason)
  if type(reason) ~= "string" then return "" end
  reason = reason:gsub("%c", " ")
  if #reason > 123 then
    reason = reason:sub(1, 123)
    local i = #reason
    while i > 0 and reason:byte(i) >= 0x80 and reason:byte(i) < 0xC0 do i = i - 1 end
    if i > 0 and reason:byte(i) >= 0xC0 then reason = reason:sub(1, i - 1) end
  end
  return reason
end

return _M
