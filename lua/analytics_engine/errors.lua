--- Error objects: every runtime failure of the client is one of these,
-- returned as `nil, err`. They print on one line and never carry a secret:
-- whatever a server said goes through sanitize (credentials masked, control
-- characters shown as \x1b…) when the error is made, so `err.message` is as
-- safe to print as `tostring(err)`.
local util = require("analytics_engine.util")
local sanitize = require("analytics_engine.sanitize")

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

-- "5 attempts over 4.6 s": said once, whatever the message says.
local function tries(e)
  local n = tonumber(e.attempts)
  if not n or n < 2 then return "" end
  if e.elapsed then return (" (%d attempts over %.1f s)"):format(n, e.elapsed) end
  return (" (%d attempts)"):format(n)
end

function mt.__tostring(e)
  local where = e.method and (e.method .. " " .. (e.path or "?")) or (e.operation or "request")
  local what = e.status and (e.status .. " " .. (REASONS[e.status] or "")) or e.code or "error"
  local s = ("%s: %s: %s"):format(where, what:gsub("%s+$", ""), tostring(e.message or ""))
  if e.trace then s = s .. " (trace " .. tostring(e.trace) .. ")" end
  return sanitize.clean((s:gsub("[\r\n]+", " "))) .. tries(e)
end

-- One line, no credential, no control character.
local function one_line(v)
  if v == nil then return nil end
  return sanitize.clean((tostring(v):gsub("[\r\n]+", " ")))
end

--- Make an error. `fields` holds status, code, message, method, path, …
-- Text that may come from a server (message, trace, code) is cleaned here.
function _M.new(fields)
  fields.retryable = fields.retryable or false
  fields.message = one_line(fields.message)
  fields.trace = one_line(fields.trace)
  if type(fields.code) == "string" then fields.code = one_line(fields.code) end
  if type(fields.body) == "string" then fields.body = sanitize.redact(fields.body) end
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
    retry_after = res.headers and res.headers["retry-after"] or nil, -- as sent; retry.parse_retry_after reads it
    body = #body > MAX_BODY_KEPT and body:sub(1, MAX_BODY_KEPT) or body,
    method = ctx.method, path = ctx.path, operation = ctx.operation,
  }
end

-- "host:port" of a URL (the scheme's port when it names none).
local function host_port(url)
  if type(url) ~= "string" then return nil end
  local scheme, rest = url:match("^(%a[%w+.-]*)://([^/?#]*)")
  if not rest then return nil end
  rest = rest:gsub("^.*@", "")
  if rest:find(":%d+$") then return rest end
  return rest .. ":" .. (scheme:lower() == "https" and "443" or "80")
end

-- libcurl's text says the same thing twice ("Couldn't connect to server:
-- Failed to connect to h port p after 0 ms: Couldn't connect to server") and
-- times that mean nothing; say what happened once.
local function transport_message(terr, url)
  local msg = tostring(terr.message or terr.kind or "transport failure")
  local head, tail = msg:match("^([^:]+): (.+)$")
  if head and tail:find(head, 1, true) then msg = tail end
  msg = msg:gsub(" after %d+ ms", ""):gsub(" after (%d+) milliseconds", function(ms)
    return (" after %.1f s"):format(tonumber(ms) / 1000)
  end)
  local where = host_port(url)
  if terr.kind == "connect" and where then
    local why = msg:match(": ([^:]+)$") or msg
    if why:find("[Rr]efused") or why:find("Couldn't connect") then return where .. " refused" end
    return where .. ": " .. why:lower()
  end
  if terr.kind == "resolve" and where then return "cannot resolve " .. where:gsub(":%d+$", "") end
  return msg
end

--- An error from a transport failure (the C core's { kind, message }).
-- ctx.url (when given) names the host the message is about.
function _M.from_transport(terr, ctx)
  return _M.new {
    code = terr.kind or "transport",
    message = transport_message(terr, ctx.url),
    method = ctx.method, path = ctx.path, operation = ctx.operation,
    sent = terr.kind ~= "connect" and terr.kind ~= "resolve",
  }
end

--- A problem found before anything was sent (programmer input at run time).
function _M.invalid(operation, message)
  return _M.new { code = "invalid_argument", message = message, operation = operation, sent = false }
end

return _M
