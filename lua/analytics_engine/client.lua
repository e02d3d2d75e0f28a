--- The client: one method per row of api.lua, plus waiting helpers.
-- The generated methods are listed in the analytics_engine.operations page.
-- @classmod analytics_engine.client
-- Policy lives here (validation, auth, retries, errors); the transport only
-- moves bytes.
local api = require("analytics_engine.api")
local util = require("analytics_engine.util")
local errors = require("analytics_engine.errors")
local retry = require("analytics_engine.retry")
local auth_mod = require("analytics_engine.auth")
local config = require("analytics_engine.config")
local waiter = require("analytics_engine.waiter")
local kernel = require("analytics_engine.kernel")
local connect = require("analytics_engine.connect")
local version = require("analytics_engine.version")

local VERSION = version.VERSION

local _M = { VERSION = VERSION }
local mt = { __index = _M }

local type, pairs, ipairs, tostring, select = type, pairs, ipairs, tostring, select
-- cjson.safe directly: util.json_decode only adds a call.
local json_decode = require("cjson.safe").decode

local function describe(v)
  if type(v) == "string" then
    local s = #v > 40 and (v:sub(1, 37) .. "...") or v
    return ("'%s'"):format(s:gsub("[%c]", "?"))
  end
  return "(a " .. type(v) .. ")"
end

-- The profile file's permission check, with the C core loaded only when a
-- profile is read: a client under nginx (cosockets) must not load the core.
local function file_mode(path)
  local ok, core = pcall(require, "analytics_engine.core")
  if ok and core.file_mode then return core.file_mode(path) end
  return nil
end

-- A transport module is required when chosen, not at the top: the curl one
-- loads the C core, which a client under nginx must never load, and the ngx
-- one needs nginx's API.
local function load_transport(name, opts)
  if type(name) == "table" then return name end
  if name == nil then
    -- Under nginx the curl transport would block the worker in a request
    -- handler: cosockets where the phase can yield, curl elsewhere, decided
    -- per call (a client made in init_by_lua also serves handlers).
    local ngx = rawget(_G, "ngx")
    if ngx and ngx.get_phase and ngx.socket then return require("analytics_engine.transport.ngx").auto(opts) end
    name = "curl"
  end
  if name ~= "curl" and name ~= "ngx" then
    error("bad argument: transport must be 'curl', 'ngx' or a transport object, got " .. describe(name), 3)
  end
  return require("analytics_engine.transport." .. name).new(opts)
end

--- Make a client. Settings not given come from AE_* variables and the
-- profile file. Returns the client, or nil and an error for a configuration
-- that cannot work (missing url, malformed instance id, unreadable profile).
-- @tparam[opt] table opts url, instance_id, auth = { token | username + api_key | username + password
-- [, exchange] }, cafile, capath, insecure, proxy, connect_timeout, timeout, retries (a policy table or
-- false), transport ("curl", "ngx" or an object), user_agent, on_request (a function called per request),
-- loop (an analytics_engine.loop: calls made from its tasks suspend the task instead of blocking)
-- @treturn analytics_engine.client the client
-- @return nil and an error object (code "invalid") for a configuration that cannot work
-- @raise a non-table `opts` or an unknown transport name (programmer mistakes)
-- @usage local c = assert(ae.client { url = "https://cpd.example.com", instance_id = "…uuid…",
--                                  auth = { username = "admin", api_key = os.getenv("AE_API_KEY") } })
function _M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'client' (table expected, got " .. type(opts) .. ")", 2)
  end
  local cfg, cerr = config.resolve(opts or {}, opts and opts.getenv, file_mode)
  if not cfg then return nil, errors.invalid("client", cerr) end
  if type(cfg.url) ~= "string" or not cfg.url:find("^https?://[^/]") then
    return nil, errors.invalid("client", cfg.url == nil
      and "no service URL: pass url, set AE_URL or add it to the profile file"
      or "url " .. describe(cfg.url) .. " is not an http(s) URL")
  end
  local base_path = cfg.base_path
  if base_path ~= nil then
    -- A Jupyter Server at its base URL: the kernel operations, no instance.
    if type(base_path) ~= "string" then
      return nil, errors.invalid("client", "base_path " .. describe(base_path) .. " is not a string")
    end
    if base_path:sub(1, 1) ~= "/" then base_path = "/" .. base_path end
    if base_path:sub(-1) ~= "/" then base_path = base_path .. "/" end
  elseif not util.is_uuid(cfg.instance_id) then
    return nil, errors.invalid("client", cfg.instance_id == nil
      and "no instance id: pass instance_id, set AE_INSTANCE_ID or add it to the profile file"
      or "instance_id " .. describe(cfg.instance_id) .. " is not a valid id (expected a lower-case UUID)")
  end
  local self = setmetatable({
    url = cfg.url:gsub("/+$", ""),
    instance_id = cfg.instance_id,
    base_path = base_path,
    auth = auth_mod.new(cfg.auth, "auth"),
    policy = cfg.retries == false and retry.new { max_attempts = 1 } or retry.new(cfg.retries),
    user_agent = cfg.user_agent or ("analytics-engine-lua/" .. VERSION),
    on_request = cfg.on_request,
    loop = cfg.loop,
    header_cache = {}, -- see request_headers
    targets = {},      -- see fixed_target
  }, mt)
  -- Made once: the auth exchange's raw transport call and its clock.
  self.fetch = function(r) return self.transport:request(r) end
  self.clock = function() return self.transport:now() end
  self.transport = load_transport(cfg.transport, {
    connect_timeout = cfg.connect_timeout or 10, timeout = cfg.timeout or 120,
    cafile = cfg.cafile, capath = cfg.capath, insecure = cfg.insecure == true,
    max_response_size = cfg.max_response_size, proxy = cfg.proxy, loop = cfg.loop,
    -- ngx transport only: its connection pool.
    pool = cfg.pool, pool_size = cfg.pool_size, keepalive_timeout = cfg.keepalive_timeout,
  })
  -- What `with` starts from (the credentials live in self.auth only).
  cfg.auth, cfg.getenv = nil, nil
  self.options = cfg
  return self
end

--- A client like this one with some options changed, for example the loop
-- a workflow run makes; it shares this client's credentials and token cache.
-- @tparam table changes options as for new (not auth)
-- @treturn analytics_engine.client the new client
-- @return nil and an error object (as new)
-- @usage local lc = assert(c:with { loop = loop.new() })
function _M.with(self, changes)
  if type(changes) ~= "table" then
    error("bad argument #1 to 'with' (table expected, got " .. type(changes) .. ")", 2)
  end
  local opts = util.copy(self.options)
  for k, v in pairs(changes) do opts[k] = v end
  opts.auth = self.auth
  -- Settled already: the environment and the profile file are not read again.
  opts.getenv = function() return nil end
  return _M.new(opts)
end

--- A client for a Jupyter Server's own `/api`: the kernel operations
-- (list_kernelspecs, list_kernels, create_kernel, get_kernel, delete_kernel,
-- interrupt_kernel, restart_kernel, connect_kernel) go to `<base_path>api/…`
-- rather than the service's `/v4/analytics_engines/{id}/jkg/api/…`; the
-- others answer an "invalid" error. The same as new with `base_path` and
-- `auth = { token = …, scheme = "token" }` (Jupyter's header form).
-- @tparam table opts url, token, base_path (the server's base_url, "/"), and any option of new
-- @usage local j = assert(ae.jupyter_client { url = "http://127.0.0.1:8888", token = "…" })
function _M.jupyter(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'jupyter_client' (table expected, got " .. type(opts) .. ")", 2)
  end
  if type(opts.token) ~= "string" or opts.token == "" then
    error("bad argument #1 to 'jupyter_client' (token must be a non-empty string)", 2)
  end
  local copts = {}
  for k, v in pairs(opts) do
    if k ~= "token" then copts[k] = v end
  end
  copts.base_path = opts.base_path or "/"
  copts.auth = { token = opts.token, scheme = "token" }
  -- Not the service: its AE_* variables and profile do not apply.
  copts.getenv = copts.getenv or function() return nil end
  return _M.new(copts)
end

mt.__tostring = function(self)
  return ("analytics_engine.client(%s, %s)"):format(self.url, self.base_path or self.instance_id)
end

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

-- The keys each wrapping operation keeps at the top level (api.lua's `lift`),
-- as sets made once rather than per request.
local LIFTED = {}
for _, list in ipairs { api.operations, api.engine_operations } do
  for _, op in ipairs(list) do
    if op.wrap then
      LIFTED[op] = {}
      for _, k in ipairs(op.lift or {}) do LIFTED[op][k] = true end
    end
  end
end

local function wrap_body(op, body)
  if not op.wrap or body[op.wrap] ~= nil then return body end
  local details, out = {}, {}
  local lifted = LIFTED[op]
  for k, v in pairs(body) do
    if lifted[k] then out[k] = v else details[k] = v end
  end
  out[op.wrap] = details
  return out
end

-- What an error names: the request and its operation (made only on failure).
local function context(op, method, path)
  return { method = method, path = path, operation = op.name }
end

local function blank(s) return not s:find("%S") end

-- Decode a success answer: a table, or true when there is no body.
local function decode_success(res, op, path)
  local body = res.body
  if res.status == 204 or body == nil or body == "" then return true end
  local doc, derr = json_decode(body)
  if doc == nil then
    if blank(body) then return true end
    return nil, errors.new {
      status = res.status, code = "bad_response", method = op.method, path = path,
      operation = op.name,
      message = ("the server answered %d with a body that is not valid JSON (%s)"):format(res.status,
        tostring(derr)):gsub("[\r\n]", " "),
      body = body:sub(1, 4096), retryable = false,
    }
  end
  return doc
end

-- The request headers for one Authorization value and content type, kept
-- per client and never changed once made (a queued request may still hold
-- them), so the common call builds none; a transport that can check and
-- format them once (`prepare_headers`) gets them in that form. A client's
-- user agent and transport are fixed when it is made (`with` makes another
-- client): only the Authorization value can change (a refreshed token).
local function request_headers(self, tr, authz, content_type)
  local key = content_type or false
  local c = self.header_cache[key]
  if c and c.authz == authz then return c.headers end
  local h = { Accept = "application/json", ["User-Agent"] = self.user_agent, Authorization = authz,
              ["Content-Type"] = content_type }
  if tr.prepare_headers then h = tr:prepare_headers(h) end
  self.header_cache[key] = { authz = authz, headers = h }
  return h
end

-- One operation's request with auth and the retry policy. `path` includes
-- the query; `url` is self.url .. path.
local function perform(self, op, method, path, url, body, content_type)
  local tr = self.transport
  local policy = self.policy
  local attempt, reauthed = 0, false
  local t0 = tr:now()
  if body then content_type = content_type or "application/json" end
  while true do
    attempt = attempt + 1
    local authz, err = self.auth:header_value(self.fetch, self.url, self.clock)
    local res
    if authz or not err then
      local on_request = self.on_request
      local started = on_request and tr:now()
      local terr
      -- A request that creates is sent once: libcurl would re-send one whose
      -- kept connection closed before an answer, behind our back (the
      -- service may have acted on it); with send_once that is an error the
      -- retry policy calls ambiguous. It still rides a kept connection: a
      -- connection of its own for each cost the runner ~20 % of its CPU at
      -- 10,000 creates.
      res, terr = tr:request { method = method, url = url, headers = request_headers(self, tr, authz, content_type),
                               body = body, send_once = op.creates or nil }
      if on_request then
        on_request { operation = op.name, method = method, path = path, attempt = attempt,
                     status = res and res.status, error = terr and terr.kind, seconds = tr:now() - started,
                     retry_after = res and res.headers["retry-after"] or nil }
      end
      if not res then
        local ctx = context(op, method, path)
        ctx.url = url
        err = errors.from_transport(terr, ctx)
      elseif op.ok_set[res.status] then
        return decode_success(res, op, path)
      else
        err = errors.from_response(res, context(op, method, path))
      end
    end
    -- A rejected token is refreshed once; that attempt does not count.
    if err.status == 401 and not reauthed and self.auth:invalidate() then
      reauthed, attempt = true, attempt - 1
    else
      err.attempts, err.elapsed = attempt, tr:now() - t0
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

--- Send one prepared request with auth and the retry policy.
-- req: { method, path (with query), body (string), content_type }
function _M.send(self, op, req)
  return perform(self, op, req.method or op.method, req.path, self.url .. req.path, req.body, req.content_type)
end

-- An operation's path for this client: under the service's instance, or
-- under a Jupyter Server's base_path. nil and an error for an operation a
-- Jupyter Server does not have.
local function expand(self, op, values)
  local base = self.base_path
  if not base then
    values.instance_id = self.instance_id
    return api.expand(op, values)
  end
  local path = api.expand_jupyter(op, values, base)
  if not path then return nil, errors.invalid(op.name, op.name .. " is not a Jupyter Server operation") end
  return path
end

-- The path and URL of an operation without ids, made once per client.
local function fixed_target(self, op)
  local t = self.targets[op]
  if not t then
    local path, err = expand(self, op, {})
    if not path then return nil, err end
    t = { path = path, url = self.url .. path }
    self.targets[op] = t
  end
  return t
end

local function call(self, op, ...)
  local name, ids = op.name, op.ids
  local nids = #ids
  local path, url
  if nids == 0 then
    local t, err = fixed_target(self, op)
    if not t then return nil, err end
    path, url = t.path, t.url
  else
    local values = {}
    for i = 1, nids do
      local v = (select(i, ...))
      if not util.is_uuid(v) then
        return nil, errors.invalid(name, ("%s %s is not a valid id (expected a lower-case UUID such as "
          .. "e64c907a-e82f-46fd-addc-ccfafbd28b09); nothing was sent"):format(ids[i], describe(v)))
      end
      values[ids[i]] = v
    end
    local err
    path, err = expand(self, op, values)
    if not path then return nil, err end
  end
  local rest = (select(nids + 1, ...))
  local body, content_type
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
    body = encoded
    content_type = op.body == "merge-patch" and "application/merge-patch+json" or "application/json"
  elseif op.query then
    if rest ~= nil and type(rest) ~= "table" then
      return nil, errors.invalid(name, ("the query must be a table, got %s"):format(describe(rest)))
    end
    local q = query_string(op, rest)
    if q ~= "" then path, url = path .. q, nil end
  elseif select("#", ...) > nids then
    return nil, errors.invalid(name, ("takes %d argument(s), got %d"):format(nids, select("#", ...)))
  end
  return perform(self, op, op.method, path, url or (self.url .. path), body, content_type)
end

--- Call an operation by name: ids first, then the body or query table.
-- @param self the client
-- @string name an operation of api.lua (see analytics_engine.operations)
-- @param ... the operation's ids in path order, then its body or query table
-- @treturn table|boolean the decoded answer (true for an answer without a body)
-- @return nil and an error object
-- @raise an unknown operation name
-- @usage local apps = assert(c:call("list_applications", { state = "RUNNING" }))
function _M.call(self, name, ...)
  local op = api.by_name[name]
  if not op then error("bad argument #1 to 'call' (unknown operation " .. describe(name) .. ")", 2) end
  return call(self, op, ...)
end

local function rest_method(op)
  if #op.ids == 0 and not op.body and not op.query then
    -- No ids, body or query: the path is fixed, nothing to check but the count.
    return function(self, ...)
      if select("#", ...) > 0 then return call(self, op, ...) end
      local t, err = fixed_target(self, op)
      if not t then return nil, err end
      return perform(self, op, op.method, t.path, t.url)
    end
  end
  return function(self, ...) return call(self, op, ...) end
end

for _, op in ipairs(api.operations) do _M[op.name] = rest_method(op) end
-- The local engine's own endpoints (a service answers them 404).
for _, op in ipairs(api.engine_operations) do _M[op.name] = rest_method(op) end

-- The WebSocket endpoints: a session object each (kernel.lua, connect.lua),
-- opened at the row's path with the client's auth, TLS options and loop.
local SESSIONS = { connect_kernel = kernel.connect, connect_cluster = connect.connect }

local function websocket_method(op)
  local open = SESSIONS[op.name]
  local id_name = op.ids[1]
  return function(self, id, opts)
    if opts ~= nil and type(opts) ~= "table" then
      error("bad argument #2 to '" .. op.name .. "' (table expected, got " .. type(opts) .. ")", 2)
    end
    if not util.is_uuid(id) then
      return nil, errors.invalid(op.name, ("%s %s is not a valid id; nothing was sent"):format(id_name, describe(id)))
    end
    local path, perr = expand(self, op, { [id_name] = id })
    if not path then return nil, perr end
    local tr = self.transport
    local authz, aerr = self.auth:header_value(self.fetch, self.url, self.clock)
    if aerr then return nil, aerr end
    local d = tr.defaults or {}
    return open(self, {
      id = id, path = path, url = self.url:gsub("^http", "ws") .. path, loop = self.loop,
      context = { method = "GET", path = path, operation = op.name },
      headers = { Authorization = authz, ["User-Agent"] = self.user_agent },
      connect_timeout = d.connect_timeout, cafile = d.cafile, capath = d.capath, insecure = d.insecure,
      proxy = d.proxy,
    }, opts or {})
  end
end

for _, op in ipairs(api.websockets) do _M[op.name] = websocket_method(op) end

_M.TERMINAL_STATES = api.TERMINAL_STATES

--- True for a state no application leaves (case-insensitive; unknown → false).
-- @string state an application state
-- @treturn boolean
-- @usage if c.is_terminal(app.state) then ... end
_M.is_terminal = api.is_terminal

--- Wait until one application is terminal (see analytics_engine.waiter).
_M.wait_for_application = waiter.wait_for_application
--- Wait for many applications with one list request per round (see analytics_engine.waiter).
_M.wait_for_applications = waiter.wait_for_applications

return _M
