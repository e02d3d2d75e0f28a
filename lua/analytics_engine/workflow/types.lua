--- What each action sends, by type, so `validate` and `run` agree.
--
-- The request body schemas (analytics_engine.schemas, the ones the local
-- engine enforces) say where the API wants a string, a boolean, an object...
-- After templates are expanded, `coerce` brings an action's argument to those
-- types by one documented rule, the same at validate time and at run time:
--
-- * where a string is wanted, a number becomes its decimal text (whole
--   numbers without ".0": 3, not 3.0) and a boolean "true"/"false";
-- * where a boolean is wanted, the strings "true"/"false" become booleans;
-- * where a number is wanted, a string holding a number becomes that number;
-- * anything else of the wrong type (a table where a string is wanted, "yes"
--   where a boolean is) is an error naming the field: at validate time with
--   the step's file:line, at run time before anything is sent.
--
-- `check_step` runs the same coercion at validate time on every value the
-- step can have: each item of a literal `for_each`, the params as given, and
-- an "unknown" stand-in for the outputs of other steps (their types are only
-- known when they ran).
local schemas = require("analytics_engine.schemas")
local api = require("analytics_engine.api")
local actions = require("analytics_engine.workflow.actions")
local util = require("analytics_engine.util")

local _M = {}

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local fmt = string.format
local null = util.null

-- A value only a run will know (another step's outputs): fits anything.
local UNKNOWN_MT = { __name = "unknown output", __tostring = function() return "(an output)" end }
UNKNOWN_MT.__index = function(t) return t end
_M.UNKNOWN = setmetatable({}, UNKNOWN_MT)
local function unknown(v) return type(v) == "table" and getmetatable(v) == UNKNOWN_MT end
_M.is_unknown = unknown

--- A number as text: whole numbers without a fraction.
function _M.number_text(n)
  local i = math.tointeger(n)
  if i then return tostring(i) end
  if n == n and n ~= math.huge and n ~= -math.huge and n == math.floor(n) and math.abs(n) < 2 ^ 63 then
    return fmt("%d", n)
  end
  return tostring(n)
end

local STR = { type = "string" }
-- An operation's body as a workflow writes it: flat, unless it already holds
-- the wrapping key (the client wraps { application = ... } itself).
local function body_node(op, value)
  local node = schemas[op.name]
  if not node or not op.wrap or not node.fields or not node.fields[op.wrap] then return node end
  if type(value) == "table" and not unknown(value) and value[op.wrap] ~= nil then return node end
  local fields = util.copy(node.fields[op.wrap].fields or {})
  for k, sub in pairs(node.fields) do
    if k ~= op.wrap then fields[k] = sub end
  end
  return { type = "object", fields = fields }
end

--- The schema node an action's argument is checked against (nil: anything).
function _M.node(action, args)
  local spec = actions.list[action]
  if not spec then return nil end
  if spec.arg == "id" then return STR end
  if spec.arg == "ids" then return { type = "ids" } end
  if spec.arg == "none" or spec.arg == "func" then return nil end
  if spec.arg == "call" then
    local op = type(args) == "table" and api.by_name[args.operation]
    return { type = "object", fields = { operation = STR, ids = { type = "array", items = STR },
                                         body = op and body_node(op, args.body) or nil } }
  end
  if action == "kernel" then
    -- create_kernel's name (engine goes as given) and the cells to execute
    local name_node = (schemas.create_kernel and schemas.create_kernel.fields or {}).name or STR
    return { type = "object", fields = { name = name_node, cells = { type = "array", items = STR } } }
  end
  local op = api.by_name[spec.operation]
  return op and body_node(op, args)
end

local function name(path) return path == "" and "the argument" or path end

local function join(path, k)
  if type(k) == "number" then return fmt("%s[%d]", path, k) end
  return path == "" and tostring(k) or (path .. "." .. tostring(k))
end

local function what(v)
  if type(v) == "string" then return fmt("the string %q", #v > 40 and v:sub(1, 37) .. "..." or v) end
  if type(v) == "table" then return "a table" end
  return fmt("the %s %s", type(v), tostring(v))
end

local coerce

local function coerce_table(node, v, path)
  if type(v) ~= "table" then
    return nil, fmt("%s: expected %s, got %s", name(path), node.type == "array" and "an array" or "a table", what(v))
  end
  local out = setmetatable({}, getmetatable(v))
  for k, x in pairs(v) do out[k] = x end
  if node.type == "object" then
    for k, sub in pairs(node.fields or {}) do
      if v[k] ~= nil then
        local y, err = coerce(sub, v[k], join(path, k))
        if err then return nil, err end
        out[k] = y
      end
    end
  elseif node.type == "map" then
    for k, x in pairs(v) do
      local y, err = coerce(node.values, x, join(path, k))
      if err then return nil, err end
      out[k] = y
    end
  elseif node.type == "array" then
    local n = #v
    for k in pairs(v) do
      if math.type(k) ~= "integer" or k < 1 or k > n then
        return nil, fmt("%s: expected an array, got a table with the key %s", name(path), what(k))
      end
    end
    for i, x in ipairs(v) do
      local y, err = coerce(node.items, x, join(path, i))
      if err then return nil, err end
      out[i] = y
    end
  end
  return out
end

--- v brought to node's type: the value, or nil and "path: expected ..., got ...".
function coerce(node, v, path)
  path = path or ""
  if node == nil or node.type == "any" or v == nil or v == null or unknown(v) then return v end
  local t, tv = node.type, type(v)
  if t == "string" then
    if tv == "string" then return v end
    if tv == "number" then return _M.number_text(v) end
    if tv == "boolean" then return tostring(v) end
    return nil, fmt("%s: expected a string, got %s", name(path), what(v))
  elseif t == "boolean" then
    if tv == "boolean" then return v end
    if v == "true" then return true end
    if v == "false" then return false end
    return nil, fmt("%s: expected true or false, got %s", name(path), what(v))
  elseif t == "integer" or t == "number" then
    local n = tonumber(v)
    if tv == "number" or (tv == "string" and n) then
      if t == "integer" and math.tointeger(n) == nil then
        return nil, fmt("%s: expected an integer, got %s", name(path), what(v))
      end
      return n
    end
    return nil, fmt("%s: expected a number, got %s", name(path), what(v))
  elseif t == "ids" then
    if tv == "string" then return v end
    return coerce_table({ type = "array", items = STR }, v, path)
  end
  return coerce_table(node, v, path)
end
_M.coerce = coerce

--- An action's expanded argument brought to the API's types.
function _M.coerce_args(action, args)
  return coerce(_M.node(action, args), args, action)
end

return _M
