--- Error objects: every runtime failure of the client is one of these,
-- returned as `nil, err`. They print on one line and never carry a secret.
local util = require "analytics_engine.util"

local _M = {}

local mt = { __name = "analytics_engine.Error" }
_M.mt = mt

local REASONS = {
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [409] = "Conflict", [410] = "Gone", [413] = "Payload Too Large",
  [415] = "Unsupported Media Type", [429] = "Too Many Requests", [500] = "Internal Server Error",
  [502] = "Bad Gateway", [503] = "Service Unavailable", [504] = "Gateway Timeout",
}
_M.REASONS = REASONS

local MAX_BODY_KEPT = 4096

function mt.__tostring(e)
  local where = e.method and (e.method .. " " .. (e.path or "?")) or (e.operation or "request")
  local what = e.status and (e.status .. " " .. (REASONS[e.status] or "")) or e.code or "error"
  local s = ("%s: %s: %s"):format(where, what:gsub("%s+$", ""), e.message or "")
  if e.trace then s = s .. " (trace " .. e.trace .. ")" end
  return (s:gsub("[\r\n]+", " "))
end

--- Make an error. `fields` holds status, code, message, method, path, …
function _M.new(fields)
  fields.retryable = fields.retryable or false
  return setmetatable(fields, mt)
end

function _M.is_error(v)
  return getmetatable(v) == mt
end

-- The service puts its message in different places depending on the component
-- that answered; take the first one present.
local function message_of(doc)
  if type(doc) ~= "table" then return nil end
  local errs = doc.errors
  if type(errs) == "table" and type(errs[1]) == "table" then
    local m = errs[1].message or errs[1].description
    if type(m) == "string" then return m, errs[1].code end
  end
  for _, k in ipairs { "error", "message", "errorMessage", "error_description" } do
    local m = doc[k]
    if type(m) == "string" then return m, doc.code or doc.error_code end
    if type(m) == "table" and type(m.message) == "string" then return m.message, m.code end
  end
  return nil
end

--- An error from an HTTP answer whose status is not a success.
function _M.from_response(res, ctx)
  local body = res.body or ""
  local doc = util.json_decode(body)
  local message, code = message_of(doc)
  if not message then
    local ct = res.headers and res.headers["content-type"] or ""
    if ct:find("html", 1, true) then
      message = "the server answered with an HTML page, not JSON"
    elseif body ~= "" and not doc then
      message = "the server answered with a body that is not JSON"
    else
      message = REASONS[res.status] or ("HTTP " .. res.status)
    end
  end
  local trace = type(doc) == "table" and type(doc.trace) == "string" and doc.trace or nil
  local txid = res.headers and res.headers["x-global-transaction-id"]
  return _M.new {
    status = res.status,
    code = type(code) == "string" and code or ("http_" .. res.status),
    message = message,
    trace = trace or txid,
    transaction_id = txid,
    body = #body > MAX_BODY_KEPT and body:sub(1, MAX_BODY_KEPT) or body,
    method = ctx.method, path = ctx.path, operation = ctx.operation,
  }
end

--- An error from a transport failure (the C core's { kind, message }).
function _M.from_transport(terr, ctx)
  return _M.new {
    code = terr.kind or "transport",
    message = terr.message or tostring(terr.kind),
    method = ctx.method, path = ctx.path, operation = ctx.operation,
    sent = terr.kind ~= "connect" and terr.kind ~= "resolve",
  }
end

--- A problem found before anything was sent (programmer input at run time).
function _M.invalid(operation, message)
  return _M.new { code = "invalid_argument", message = message, operation = operation, sent = false }
end

return _M
