--- Routes requests by the rows of api.lua (plus the engine's own rows).
-- Each row's `full_path` template is compiled into an anchored Lua pattern;
-- a path that matches some row but not its method is a 405, one that matches
-- no row is a 404.
local api = require "analytics_engine.api"

local _M = {}
local mt = { __index = _M }

-- The engine-only endpoints: same row shape as api.lua, never sent by the client.
_M.ENGINE_OPERATIONS = {
  { name = "engine_application_logs", method = "GET", absolute = true,
    path = "/engine/v1/applications/{application_id}/logs", ok = { 200 } },
  { name = "engine_stats", method = "GET", absolute = true, path = "/engine/v1/stats", ok = { 200 } },
}
for _, op in ipairs(_M.ENGINE_OPERATIONS) do op.full_path = op.path end

local function compile(op)
  local names = {}
  local pattern = op.full_path:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
  pattern = pattern:gsub("{([%w_]+)}", function(name)
    names[#names + 1] = name
    return "([^/]+)"
  end)
  return { op = op, pattern = "^" .. pattern .. "$", names = names }
end

--- A router over `ops` (default: api.operations, api.authorize and the engine rows).
function _M.new(ops)
  if not ops then
    ops = {}
    for _, op in ipairs(api.operations) do ops[#ops + 1] = op end
    ops[#ops + 1] = api.authorize
    for _, op in ipairs(_M.ENGINE_OPERATIONS) do ops[#ops + 1] = op end
  end
  local routes = {}
  for i, op in ipairs(ops) do routes[i] = compile(op) end
  return setmetatable({ routes = routes }, mt)
end

--- match(method, path) -> op, params | nil, 404 | nil, 405, allowed_methods
function _M:match(method, path)
  if #path > 1 and path:sub(-1) == "/" then path = path:sub(1, -2) end
  local allowed
  for _, r in ipairs(self.routes) do
    local caps = { path:match(r.pattern) }
    if caps[1] ~= nil then
      if r.op.method == method then
        local params = {}
        for i, name in ipairs(r.names) do params[name] = caps[i] end
        return r.op, params
      end
      allowed = allowed or {}
      allowed[#allowed + 1] = r.op.method
    end
  end
  if allowed then
    table.sort(allowed)
    return nil, 405, table.concat(allowed, ", ")
  end
  return nil, 404
end

return _M
