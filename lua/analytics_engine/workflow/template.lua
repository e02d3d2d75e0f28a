--- `${name}` templating for step arguments.
--
-- `expand(value, scope)` returns a deep copy of `value` in which every string
-- (table values, not keys) has its `${path}` references replaced. A path is
-- dot-separated and walks tables: `${date}`, `${params.date}`, `${item}`,
-- `${outputs.ingest.application_id}`, `${outputs.reports.1.return_code}`. A
-- bare name not in `scope` is looked up in `scope.params`. At each level the
-- longest key that matches wins, so step names containing dots still resolve.
-- `$${` is a literal `${`. A string that is exactly one reference keeps the
-- value's type (a number stays a number, a table a table); otherwise values
-- are interpolated as text (whole numbers without ".0"; a table cannot be).
-- `expand_args` also brings the result to the types the API wants
-- (workflow/types.lua), the same rule `validate` applies.
local util = require("analytics_engine.util")
local types = require("analytics_engine.workflow.types")

local _M = {}

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local getmetatable, setmetatable = getmetatable, setmetatable
local concat = table.concat
local find, sub = string.find, string.sub

-- Splits a string into literal pieces and references; calls on_ref(path) for
-- each reference and on_lit(text) for each literal. Returns true or nil, err.
local function scan(s, on_lit, on_ref)
  local i, n = 1, #s
  while i <= n do
    local a = find(s, "$", i, true)
    if not a then
      on_lit(sub(s, i))
      break
    end
    if sub(s, a, a + 2) == "$${" then
      on_lit(sub(s, i, a - 1) .. "${")
      i = a + 3
    elseif sub(s, a, a + 1) == "${" then
      if a > i then on_lit(sub(s, i, a - 1)) end
      local b = find(s, "}", a + 2, true)
      if not b then
        return nil, ("unterminated '${' in %q"):format(s)
      end
      local path = sub(s, a + 2, b - 1):match("^%s*(.-)%s*$")
      if path == "" then
        return nil, ("empty '${}' in %q"):format(s)
      end
      local ok, err = on_ref(path)
      if not ok then return nil, err end
      i = b + 1
    else
      on_lit(sub(s, i, a))
      i = a + 1
    end
  end
  return true
end

local function split(path)
  local parts = {}
  for p in (path .. "."):gmatch("(.-)%.") do parts[#parts + 1] = p end
  return parts
end

-- Walks `parts[i..]` down from `t`, trying the longest joined key first.
local function walk(t, parts, i)
  if i > #parts then return true, t end
  if type(t) ~= "table" then return false end
  for j = #parts, i, -1 do
    local key = concat(parts, ".", i, j)
    local v = t[key]
    if v == nil then
      local num = tonumber(key)
      if num then v = t[num] end
    end
    if v ~= nil then
      local ok, found = walk(v, parts, j + 1)
      if ok then return true, found end
    end
  end
  return false
end

--- Resolve one path in a scope: value, or nil, false when missing.
function _M.lookup(scope, path)
  local parts = split(path)
  local ok, v = walk(scope, parts, 1)
  if ok then return v, true end
  if type(scope.params) == "table" then
    ok, v = walk(scope.params, parts, 1)
    if ok then return v, true end
  end
  return nil, false
end

local function missing(path, s)
  return ("unknown template name '%s' in %q"):format(path, s)
end

local function expand_string(s, scope)
  if not find(s, "$", 1, true) then return s end
  local whole = s:match("^%${%s*([^}]-)%s*}$")
  if whole and whole ~= "" then
    local v, ok = _M.lookup(scope, whole)
    if not ok then return nil, missing(whole, s) end
    return util.deepcopy(v)
  end
  local out = {}
  local ok, err = scan(s, function(text) out[#out + 1] = text end, function(path)
    local v, found = _M.lookup(scope, path)
    if not found then return nil, missing(path, s) end
    if type(v) == "number" then
      v = types.number_text(v)
    elseif type(v) == "table" and not (getmetatable(v) or {}).__tostring then
      return nil, ("'${%s}' is a table: it can be a whole value (\"${%s}\") but not part of the string %q")
        :format(path, path, s)
    end
    out[#out + 1] = tostring(v)
    return true
  end)
  if not ok then return nil, err end
  return concat(out)
end

local function expand(v, scope)
  local t = type(v)
  if t == "string" then return expand_string(v, scope) end
  if t ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do
    local y, err = expand(x, scope)
    if err then return nil, err end
    c[k] = y
  end
  return setmetatable(c, getmetatable(v))
end

--- The scope a step's templates are expanded in, the same for `validate`
-- (plan.lua, with outputs unknown) and the runner: every param by its name,
-- and params, outputs, item, index, run_id.
function _M.scope(params, outputs, item, index, run_id)
  local scope = util.copy(params)
  scope.params, scope.outputs, scope.item, scope.index, scope.run_id = params, outputs, item, index, run_id
  return scope
end

--- Deep copy of `value` with every `${path}` expanded from `scope`.
-- Returns the copy, or nil, "unknown template name 'x' in \"${x}\"".
function _M.expand(value, scope)
  local v, err = expand(value, scope or {})
  if err then return nil, err end
  return v
end

--- A step's argument for one attempt: expanded from `scope`, then brought to
-- the API's types. Returns it, or nil and a message naming the field.
function _M.expand_args(step, scope)
  local v, err = _M.expand(step.args, scope)
  if err then return nil, err end
  return types.coerce_args(step.action, v)
end

local function collect(v, seen, out)
  local t = type(v)
  if t == "string" then
    if not find(v, "$", 1, true) then return true end
    return scan(v, function() end, function(path)
      if not seen[path] then
        seen[path] = true
        out[#out + 1] = path
      end
      return true
    end)
  elseif t == "table" then
    -- Keys in a stable order, so messages do not depend on hashing.
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      local ta, tb = type(a), type(b)
      if ta ~= tb then return ta < tb end
      if ta == "number" or ta == "string" then return a < b end
      return tostring(a) < tostring(b)
    end)
    for _, k in ipairs(keys) do
      local ok, err = collect(v[k], seen, out)
      if not ok then return nil, err end
    end
  end
  return true
end

--- The paths referenced in `value` (strings inside tables too), each once,
-- in a stable order. Returns the list, or nil, err for a malformed string.
function _M.names(value)
  local out = {}
  local ok, err = collect(value, {}, out)
  if not ok then return nil, err end
  return out
end

--- The first segment of a path ("outputs" for "outputs.ingest.id").
function _M.root(path)
  return (path:match("^[^.]*"))
end

return _M
