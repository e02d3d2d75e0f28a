--- Routes requests by the rows of api.lua (plus the engine's own rows).
-- Each row's `full_path` template is split into segments, an `{id}` segment
-- matching any one segment, and rows are grouped by segment count; a path
-- that matches some row but not its method is a 405, one that matches no row
-- is a 404.
local api = require("analytics_engine.api")

local _M = {}
local mt = { __index = _M }

-- The engine-only endpoints: api.lua's rows (the client has them as methods too).
_M.ENGINE_OPERATIONS = api.engine_operations

-- Every other /jkg/api path is forwarded to Jupyter as it is (its contents
-- and sessions APIs can write and run): the role that runs code.
_M.JUPYTER_API = { name = "jupyter_api", method = "*", role = "user", absolute = true,
                   path = api.BASE .. "/{instance_id}/jkg/api/*" }
_M.JUPYTER_API.full_path = _M.JUPYTER_API.path

-- The engine's page (engine/page.lua): the dashboard reads (a session cookie
-- or the API's Authorization header); the login form and its POST are open
-- (the POST checks the key itself, and its Origin).
_M.PAGE_DOORS = {
  { name = "page", method = "GET", role = "viewer", cookie = true, path = "/" },
  { name = "page_login_form", method = "GET", path = "/login" },
  { name = "page_login", method = "POST", path = "/login" },
}
for _, op in ipairs(_M.PAGE_DOORS) do op.full_path = op.path end

--- The page's door for a request (HEAD is GET), or nil (the page answers 405).
function _M.page_door(method, path)
  if method == "HEAD" then method = "GET" end
  for _, d in ipairs(_M.PAGE_DOORS) do
    if d.method == method and d.path == path then return d end
  end
end

-- The rows the router matches: api.lua's operations, the token exchange, the
-- WebSockets and the engine's own rows.
local function routed()
  local out = {}
  for _, op in ipairs(api.operations) do out[#out + 1] = op end
  out[#out + 1] = api.authorize
  for _, op in ipairs(api.websockets) do out[#out + 1] = op end
  for _, op in ipairs(_M.ENGINE_OPERATIONS) do out[#out + 1] = op end
  return out
end

--- Every door of the engine, in one list: the routed rows, the Jupyter
-- pass-through and the page. Each has `role` (the least role that may pass)
-- or none (open).
function _M.doors()
  local out = routed()
  out[#out + 1] = _M.JUPYTER_API
  for _, op in ipairs(_M.PAGE_DOORS) do out[#out + 1] = op end
  return out
end

--- The doors as a Markdown table (docs/security.md holds this text; a spec
-- checks that it matches, so the page cannot drift from the data).
function _M.doors_markdown()
  local ranks = { "viewer", "user", "editor", "admin" }
  local lines = { "| door | method | path | least role | " .. table.concat(ranks, " | ") .. " |",
                  "|---|---|---|---|" .. ("---|"):rep(#ranks) }
  for _, d in ipairs(_M.doors()) do
    local row = { d.name, d.method == "*" and "any" or d.method,
                  "`" .. d.full_path:gsub("^" .. api.BASE:gsub("%p", "%%%0"), "…") .. "`",
                  d.role or "none (open)" }
    for _, r in ipairs(ranks) do
      row[#row + 1] = (not d.role or api.ROLE_RANK[r] >= api.ROLE_RANK[d.role]) and "yes" or "403"
    end
    lines[#lines + 1] = "| " .. table.concat(row, " | ") .. " |"
  end
  return table.concat(lines, "\n") .. "\n"
end

-- A route is its path's segments: literal strings, or false where a
-- {parameter} goes (names kept apart). Matching splits the request path once
-- and compares segments, far cheaper than a pattern per row on every request.
local function compile(op)
  local segs, names = {}, {}
  for seg in op.full_path:gmatch("[^/]+") do
    local name = seg:match("^{([%w_]+)}$")
    if name then
      segs[#segs + 1] = false
      names[#segs] = name
    else
      segs[#segs + 1] = seg
    end
  end
  return { op = op, segs = segs, names = names }
end

--- A router over `ops` (default: api.operations, api.authorize, api.websockets
-- and the engine rows).
function _M.new(ops)
  ops = ops or routed()
  local by_len = {}
  for _, op in ipairs(ops) do
    -- a door without a role would be open by omission: refuse to start
    if op.role == nil and op.auth ~= false then error(("operation %s has no role"):format(op.name), 2) end
    if op.role ~= nil and not api.ROLE_RANK[op.role] then
      error(("operation %s has an unknown role '%s'"):format(op.name, tostring(op.role)), 2)
    end
    local r = compile(op)
    local n = #r.segs
    by_len[n] = by_len[n] or {}
    by_len[n][#by_len[n] + 1] = r
  end
  return setmetatable({ by_len = by_len, cache = {}, cached = 0 }, mt)
end

local function matches(r, parts)
  local segs = r.segs
  for i = 1, #segs do
    local s = segs[i]
    if s and s ~= parts[i] then return false end
  end
  return true
end

-- Routed paths remembered, by the raw path: the polls that make most of an
-- engine's load ask the same paths again and again, and a hit is one table
-- lookup instead of a split and a walk over the rows. Bounded: dropped whole
-- when it fills (a client sending ever new paths costs one split each, as
-- without it). Only matches are kept; a 404 or 405 is computed every time.
_M.CACHE_SIZE = 16384

--- match(method, path) -> op, params | nil, 404 | nil, 405, allowed_methods
-- A path's params table is shared by every match of that path (the cache):
-- read it, never change it.
function _M:match(method, path)
  local hit = self.cache[path]
  if hit and hit.method == method then return hit.op, hit.params end
  local op, params, allowed = self:lookup(method, path)
  if op and not hit then
    if self.cached >= _M.CACHE_SIZE then self.cache, self.cached = {}, 0 end
    self.cache[path] = { method = method, op = op, params = params }
    self.cached = self.cached + 1
  end
  return op, params, allowed
end

--- match without the cache.
function _M:lookup(method, path)
  local parts, n = {}, 0
  for seg in path:gmatch("[^/]+") do
    n = n + 1
    parts[n] = seg
  end
  -- "//" or a path not starting with "/" would split like a clean one: refuse them.
  if path:sub(1, 1) ~= "/" or path:find("//", 1, true) then return nil, 404 end
  local allowed
  for _, r in ipairs(self.by_len[n] or {}) do
    if matches(r, parts) then
      -- HEAD is GET without the body (RFC 9110 9.3.2; libmicrohttpd sends no body for it)
      local get = r.op.method == "GET" and not r.op.websocket
      if r.op.method == method or (method == "HEAD" and get) then
        local params = {}
        for i, name in pairs(r.names) do params[name] = parts[i] end
        return r.op, params
      end
      allowed = allowed or {}
      allowed[#allowed + 1] = r.op.method
      if get then allowed[#allowed + 1] = "HEAD" end
    end
  end
  if allowed then
    table.sort(allowed)
    return nil, 405, table.concat(allowed, ", ")
  end
  return nil, 404
end

return _M
