--- How the engine answers: JSON bodies and the service's error shape.
-- Handlers return `status, body, headers`; `reply.error` makes the triple for
-- a failure: {"errors":[{code, message}], "trace", "status_code"} plus the
-- X-Global-Transaction-ID header carrying the same trace.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local sanitize = require("analytics_engine.sanitize")

local _M = {}

local JSON = "application/json"

local function trace()
  return util.hex(core.random_bytes(16))
end
_M.trace = trace

--- s with every byte that is not part of valid UTF-8 replaced: by
-- `replacement`, or shown as \xNN. A message naming a client's bytes (a
-- request target, an id) stays strict JSON, and a log line stays text.
function _M.utf8(s, replacement)
  if type(s) ~= "string" or utf8.len(s) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local ok, bad = utf8.len(s, i)
    if ok then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, bad - 1)
    out[#out + 1] = replacement or ("\\x%02x"):format(s:byte(bad))
    i = bad + 1
  end
  return table.concat(out)
end

--- What the engine's log shows of a client's bytes: valid UTF-8 with control
-- characters visible, so a request cannot write escapes to the terminal.
function _M.printable(s)
  return sanitize.escape(_M.utf8(tostring(s)))
end

function _M.error(status, code, message, headers)
  message = _M.utf8(message)
  local t = trace()
  local h = { ["X-Global-Transaction-ID"] = t }
  if headers then for k, v in pairs(headers) do h[k] = v end end
  return status, { errors = { { code = code, message = message } }, trace = t, status_code = status }, h
end

--- The answer to an upgrade server:accept_websocket refused (its err, kind):
-- 426 with `Sec-WebSocket-Version: 13` for another version (RFC 6455 §4.4),
-- else 400 not_a_websocket. `what` names the door ("connect", "channels").
function _M.not_upgraded(what, err, kind)
  if kind == "version" then
    return _M.error(426, "unsupported_websocket_version", what .. ": " .. tostring(err),
      { ["Sec-WebSocket-Version"] = "13" })
  end
  return _M.error(400, "not_a_websocket", what .. " needs a WebSocket upgrade: " .. tostring(err))
end

function _M.bad_request(message) return _M.error(400, "bad_request", message) end
function _M.not_found(code, message) return _M.error(404, code, message) end

--- Encode a handler's result into what server:respond takes.
-- A string body is sent as is (text/plain unless the handler set a type).
function _M.encode(status, body, headers)
  local h = headers or {}
  if body == nil then return status, h, nil end
  if type(body) == "string" then
    h["Content-Type"] = h["Content-Type"] or "text/plain; charset=utf-8"
    return status, h, body
  end
  local s, err = util.json_encode(body)
  if not s then
    return _M.encode(_M.error(500, "internal_error", "could not encode the response: " .. tostring(err)))
  end
  h["Content-Type"] = JSON
  -- cjson 2.1.0 escapes every "/"; "\\/" can only be that escape, so undo it.
  return status, h, (s:gsub("\\/", "/"))
end

return _M
