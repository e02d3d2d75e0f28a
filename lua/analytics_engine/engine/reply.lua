--- How the engine answers: JSON bodies and the service's error shape.
-- Handlers return `status, body, headers`; `reply.error` makes the triple for
-- a failure: {"errors":[{code, message}], "trace", "status_code"} plus the
-- X-Global-Transaction-ID header carrying the same trace.
local core = require "analytics_engine.core"
local util = require "analytics_engine.util"

local _M = {}

local JSON = "application/json"

local function trace()
  return util.hex(core.random_bytes(16))
end
_M.trace = trace

function _M.error(status, code, message, headers)
  local t = trace()
  local h = { ["X-Global-Transaction-ID"] = t }
  if headers then for k, v in pairs(headers) do h[k] = v end end
  return status, { errors = { { code = code, message = message } }, trace = t, status_code = status }, h
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
