--- The client: one method per row of api.lua, plus waiting helpers.
-- Policy lives here (validation, auth, retries, errors); the transport only
-- moves bytes.
local api = require "analytics_engine.api"
local util = require "analytics_engine.util"
local errors = require "analytics_engine.errors"
local retry = require "analytics_engine.retry"
local auth_mod = require "analytics_engine.auth"
local config = require "analytics_engine.config"

local VERSION = "0.1.0"

local _M = { VERSION = VERSION }
local mt = { __index = _M }

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring

local function describe(v)
  if type(v) == "string" then
    local s = #v > 40 and (v:sub(1, 37) .. "...") or v
    return ("'%s'"):format(s:gsub("[%c]", "?"))
  end
  return "(a " .. type(v) .. ")"
end

local function load_transport(name, opts)
  if type(name) == "table" then return name end
  if name == nil then
    -- Inside a yieldable nginx phase the curl transport would block the worker.
    local ngx = rawget(_G, "ngx")
    name = (ngx and ngx.get_phase and pcall(require, "analytics_engine.transport.ngx")) and "ngx" or "curl"
  end
  if name ~= "curl" and name ~= "ngx" then
    error("bad argument: transport must be 'curl', 'ngx' or a transport object, got " .. describe(name), 3)
  end
  return require("analytics_engine.transport." .. name).new(opts)
end

--- Make a client. Settings not given come from AE_* variables and the
-- profile file. Returns the client, or nil and an error for a configuration
-- that cannot work (missing url, malformed instance id, unreadable profile).
function _M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'client' (table expected, got " .. type(opts) .. ")", 2)
  end
  local file_mode
  local ok, core = pcall(require, "analytics_engine.core")
  if ok and core.file_mode then file_mode = core.file_mode end
  local cfg, cerr = config.resolve(opts or {}, opts and opts.getenv, file_mode)
  if not cfg then return nil, errors.invalid("client", cerr) end
  if type(cfg.url) ~= "string" or not cfg.url:find("^https?://[^/]") then
    return nil, errors.invalid("client", cfg.url == nil
      and "no service URL: pass url, set AE_URL or add it to the profile file"
      or "url " .. describe(cfg.url) .. " is not an http(s) URL")
  end
  if not util.is_uuid(cfg.instance_id) then
    return nil, errors.invalid("client", cfg.instance_id == nil
      and "no instance id: pass instance_id, set AE_INSTANCE_ID or add it to the profile file"
      or "instance_id " .. describe(cfg.instance_id) .. " is not a valid id (expected a lower-case UUID)")
  end
  local self = setmetatable({
    url = cfg.url:gsub("/+$", ""),
    instance_id = cfg.instance_id,
    auth = auth_mod.new(cfg.auth, "auth"),
    policy = cfg.retries == false and retry.new { max_attempts = 1 } or retry.new(cfg.retries),
    user_agent = cfg.user_agent or ("analytics-engine-lua/" .. VERSION),
    on_request = cfg.on_request,
  }, mt)
  self.transport = load_transport(cfg.transport, {
    connect_timeout = cfg.connect_timeout or 10, timeout = cfg.timeout or 120,
    cafile = cfg.cafile, capath = cfg.capath, insecure = cfg.insecure == true,
    max_response_size = cfg.max_response_size, proxy = cfg.proxy,
  })
  return self
end

mt.__tostring = function(self) return ("analytics_engine.client(%s, %s)"):format(self.url, self.instance_id) end

local function query_string(op, q)
  if q == nil then return "" end
  local parts = {}
  for _, k in ipairs(op.query) do
    local v = q[k]
    if v ~= nil then
      if type(v) == "table" then v = table.concat(v, ",") end
      parts[#parts + 1] = k .. "=" .. util.url_encode(v)
    end
  end
  return #parts > 0 and ("?" .. table.concat(parts, "&")) or ""
end

local function wrap_body(op, body)
  if not op.wrap or body[op.wrap] ~= nil then return body end
  local details, out = {}, {}
  local lifted = {}
  for _, k in ipairs(op.lift or {}) do lifted[k] = true end
  for k, v in pairs(body) do
    if lifted[k] then out[k] = v else details[k] = v end
  end
  out[op.wrap] = details
  return out
end

-- Decode a success answer: a table, or true when there is no body.
local function decode_success(res, ctx)
  local body = res.body
  if res.status == 204 or body == nil or body:find("^%s*$") then return true end
  local doc, derr = util.json_decode(body)
  if doc == nil then
    return nil, errors.new {
      status = res.status, code = "bad_response", method = ctx.method, path = ctx.path,
      operation = ctx.operation,
      message = ("the server answered %d with a body that is not valid JSON (%s)"):format(res.status,
        tostring(derr)):gsub("[\r\n]", " "),
      body = body:sub(1, 4096), retryable = false,
    }
  end
  return doc
end

--- Send one prepared request with auth and the retry policy.
-- req: { method, path (with query), body (string) , content_type }
function _M.send(self, op, req)
  local tr = self.transport
  local ctx = { method = req.method, path = req.path, operation = op.name }
  local policy = self.policy
  local fetch = function(r) return tr:request(r) end
  local attempt, reauthed = 0, false
  while true do
    attempt = attempt + 1
    local headers = { Accept = "application/json", ["User-Agent"] = self.user_agent }
    if req.body then headers["Content-Type"] = req.content_type or "application/json" end
    local authz, err = self.auth:header_value(fetch, self.url, tr:now())
    local res
    if authz or not err then
      headers.Authorization = authz
      local started = tr:now()
      local terr
      -- A fresh connection for requests that create: libcurl would otherwise
      -- re-send one whose reused connection dropped, behind our back.
      res, terr = tr:request { method = req.method, url = self.url .. req.path, headers = headers, body = req.body,
                               fresh_connect = op.creates or nil }
      if self.on_request then
        self.on_request { operation = op.name, method = req.method, path = req.path, attempt = attempt,
                          status = res and res.status, error = terr and terr.kind, seconds = tr:now() - started }
      end
      if not res then
        err = errors.from_transport(terr, ctx)
      elseif op.ok_set[res.status] then
        return decode_success(res, ctx)
      else
        err = errors.from_response(res, ctx)
      end
    end
    -- A rejected token is refreshed once; that attempt does not count.
    if err.status == 401 and not reauthed and self.auth:invalidate() then
      reauthed, attempt = true, attempt - 1
    else
      err.attempts = attempt
      err.retryable = retry.retryable(err, op.creates)
      if not err.retryable or attempt >= policy.max_attempts then
        if not err.retryable and op.creates and err.sent ~= false and not err.status then
          err.ambiguous = true
          err.message = err.message .. " (the request may have been accepted; not sent again)"
        end
        return nil, err
      end
      local after = res and retry.parse_retry_after(res.headers["retry-after"])
      tr:sleep(retry.delay(policy, attempt, after))
    end
  end
end

--- Call an operation by name: ids first, then the body or query table.
function _M.call(self, name, ...)
  local op = api.by_name[name]
  if not op then error("bad argument #1 to 'call' (unknown operation " .. describe(name) .. ")", 2) end
  local values = { instance_id = self.instance_id }
  local n = select("#", ...)
  local args = { ... }
  for i, id in ipairs(op.ids) do
    local v = args[i]
    if not util.is_uuid(v) then
      return nil, errors.invalid(name, ("%s %s is not a valid id (expected a lower-case UUID such as "
        .. "e64c907a-e82f-46fd-addc-ccfafbd28b09); nothing was sent"):format(id, describe(v)))
    end
    values[id] = v
  end
  local rest = args[#op.ids + 1]
  local req = { method = op.method, path = api.expand(op, values) }
  if op.body then
    if rest == nil and op.optional_body then rest = {} end
    if type(rest) ~= "table" then
      return nil, errors.invalid(name, ("the request body must be a table, got %s; nothing was sent")
        :format(describe(rest)))
    end
    local encoded, jerr = util.json_encode(wrap_body(op, rest))
    if not encoded then
      return nil, errors.invalid(name, "the request body cannot be encoded as JSON: " .. tostring(jerr))
    end
    req.body = encoded
    req.content_type = op.body == "merge-patch" and "application/merge-patch+json" or "application/json"
  elseif op.query then
    if rest ~= nil and type(rest) ~= "table" then
      return nil, errors.invalid(name, ("the query must be a table, got %s"):format(describe(rest)))
    end
    req.path = req.path .. query_string(op, rest)
  elseif n > #op.ids then
    return nil, errors.invalid(name, ("takes %d argument(s), got %d"):format(#op.ids, n))
  end
  return self:send(op, req)
end

for _, op in ipairs(api.operations) do
  local name = op.name
  _M[name] = function(self, ...) return self:call(name, ...) end
end

local TERMINAL = { FINISHED = true, FAILED = true, STOPPED = true, AUTO_TERMINATED = true,
                   OPS_TERMINATED = true, ERROR = true, KILLED = true }
_M.TERMINAL_STATES = TERMINAL

--- True for a state no application leaves (case-insensitive; unknown → false).
function _M.is_terminal(state)
  return type(state) == "string" and TERMINAL[state:upper()] == true
end

require("analytics_engine.waiter").install(_M)

return _M
