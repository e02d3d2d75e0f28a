--- The one validation layer for request bodies: every decoded body is held
-- to schemas.LIMITS (nesting, sizes, finite numbers, valid UTF-8 without NUL
-- in every key and string), then to its operation's schema in schemas.lua.
--   validate.body(op_name, body) -> true | nil, "field.path must be ..."
-- The message names the field as a client wrote it (a.b[2].c; conf keys with
-- dots stay as they are: application_details.conf.spark.executor.instances).
--   validate.application(body, versions) -> details, extras | nil, message:
-- a create_application body normalised for the engine to keep (its schema is
-- checked again, so a caller need not have called body()).
local util = require("analytics_engine.util")
local schemas = require("analytics_engine.schemas")
local resources = require("analytics_engine.resources")
local duration = require("analytics_engine.duration")

local _M = {}

local null = util.null
local LIMITS = schemas.LIMITS
local utf8len = utf8.len

local function name(path) return path == "" and "the body" or path end

local function join(path, key)
  if type(key) == "number" then return ("%s[%d]"):format(path, key) end
  return path == "" and key or (path .. "." .. key)
end

-- A printable form of a key for a message (it may be the bad part).
local function shown(k)
  if utf8len(k) and not k:find("%z") and not k:find("[%c]") then return k end
  return (k:gsub("[%z\1-\31\127-\255]", function(c) return ("\\x%02x"):format(c:byte()) end))
end

local function check_string(s, path)
  if #s > LIMITS.string then return nil, ("%s is longer than %d bytes"):format(name(path), LIMITS.string) end
  if not utf8len(s) then return nil, name(path) .. " is not valid UTF-8" end
  if s:find("%z") then return nil, name(path) .. " must not contain NUL characters" end
  return true
end

local function is_array(t)
  local n = #t
  if n == 0 then return next(t) == nil end
  for k in pairs(t) do
    if type(k) ~= "number" then return false end
  end
  return true
end

-- The generic limits, over the whole value.
local function generic(v, path, depth)
  local tv = type(v)
  if tv == "string" then return check_string(v, path) end
  if tv == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return nil, name(path) .. " must be a finite number" end
    return true
  end
  if tv ~= "table" then return true end
  if depth > LIMITS.depth then return nil, ("%s nests deeper than %d levels"):format(name(path), LIMITS.depth) end
  local n = 0
  for k, x in pairs(v) do
    n = n + 1
    if n > LIMITS.keys then return nil, ("%s has more than %d entries"):format(name(path), LIMITS.keys) end
    if type(k) == "string" then
      local ok, err = check_string(k, join(path, shown(k)))
      if not ok then return nil, err end
    end
    local ok, err = generic(x, join(path, k), depth + 1)
    if not ok then return nil, err end
  end
  return true
end

local check

local TYPE_NAME = { string = "a string", boolean = "a boolean", integer = "an integer", number = "a number",
                    object = "an object", map = "an object", array = "an array" }
local PLURAL = { string = "strings", object = "objects", boolean = "booleans", integer = "integers",
                 number = "numbers", array = "arrays", map = "objects" }

local function want(node)
  if node.type == "array" and node.items and PLURAL[node.items.type] then
    return "an array of " .. PLURAL[node.items.type]
  end
  return TYPE_NAME[node.type] or node.type
end

local function check_fields(node, v, path)
  for k, sub in pairs(node.fields or {}) do
    local x = v[k]
    if x == nil or x == null then
      if sub.required then return nil, join(path, k) .. " is required" end
    else
      local ok, err = check(sub, x, join(path, k))
      if not ok then return nil, err end
    end
  end
  return true
end

local RESOURCE = resources.PARSE

-- A conf value: Spark's resource keys (resources.check) and the engine's own
-- keys (schemas.ENGINE_CONF) -> true | nil, message (without the field name).
local function check_conf(k, x)
  local parsed, perr = resources.check(k, x)
  if parsed == nil and perr then return nil, perr end
  local kind = schemas.ENGINE_CONF[k]
  if kind == "duration" then
    local n = duration.parse(x)
    if not n or n <= 0 or n > schemas.MAX_DURATION then
      return nil, "must be a duration such as 600, 90s, 15m or 2h, up to 366d"
    end
  elseif kind and not RESOURCE[kind](x) then
    return nil, resources.EXPECT[kind]
  end
  return true
end

function check(node, v, path)
  local t = node.type
  if node.resource then -- a Spark size: a string, or a plain number, that parses in range
    if (type(v) ~= "string" and type(v) ~= "number") or not RESOURCE[node.resource](v) then
      return nil, name(path) .. " " .. resources.EXPECT[node.resource]
    end
    return true
  end
  if t == "any" then return true end
  if t == "string" then
    if type(v) ~= "string" then return nil, name(path) .. " must be a string" end
    if node.min and #v < node.min then
      return nil, name(path) .. (node.min == 1 and " must be a non-empty string"
        or (" must be at least %d bytes"):format(node.min))
    end
    if node.max and #v > node.max then return nil, ("%s is longer than %d bytes"):format(name(path), node.max) end
    return true
  end
  if t == "boolean" then
    if type(v) ~= "boolean" then return nil, name(path) .. " must be a boolean" end
    return true
  end
  if t == "integer" or t == "number" then
    if type(v) ~= "number" or (t == "integer" and v ~= math.floor(v)) then
      return nil, name(path) .. " must be " .. TYPE_NAME[t]
    end
    if (node.min and v < node.min) or (node.upto and v > node.upto) then
      return nil, ("%s must be %s between %s and %s"):format(name(path), TYPE_NAME[t], node.min, node.upto)
    end
    return true
  end
  if type(v) ~= "table" then return nil, name(path) .. " must be " .. want(node) end
  if t == "array" then
    if not is_array(v) then return nil, name(path) .. " must be " .. want(node) end
    if node.max and #v > node.max then
      return nil, ("%s has more than %d items"):format(name(path), node.max)
    end
    for i, x in ipairs(v) do
      local ok, err = check(node.items, x, join(path, i))
      if not ok then
        -- a wrong item type reads as the array's type, as the handlers always said
        if type(x) ~= "table" and node.items.type ~= "any" and type(x) ~= node.items.type then
          return nil, name(path) .. " must be " .. want(node)
        end
        return nil, err
      end
    end
    return true
  end
  -- object or map: a JSON object (an empty table counts, whatever it was)
  if next(v) ~= nil and is_array(v) then return nil, name(path) .. " must be " .. want(node) end
  if t == "object" then return check_fields(node, v, path) end
  local n, size = 0, 0
  for k, x in pairs(v) do
    n = n + 1
    if node.max and n > node.max then return nil, ("%s has more than %d keys"):format(name(path), node.max) end
    size = size + #tostring(k) + (type(x) == "string" and #x or 0)
    if node.bytes and size > node.bytes then
      return nil, ("%s holds more than %d bytes"):format(name(path), node.bytes)
    end
    local kp = join(path, tostring(k))
    if not (node.values.nullable and x == null) then
      local ok, err = check(node.values, x, kp)
      if not ok then return nil, err end
      if node.conf then
        local cok, cerr = check_conf(k, x)
        if not cok then return nil, kp .. " " .. cerr end
      end
    end
  end
  return true
end

--- Check a decoded body against the generic limits and its operation's
-- schema -> true | nil, message.
function _M.body(op_name, body)
  local schema = schemas[op_name]
  if type(schema) ~= "table" or not schema.type then schema = nil end
  local root = schema and schema.root or ""
  local ok, err = generic(body, root, 1)
  if not ok then return nil, err end
  if schema then return check(schema, body, root) end
  return true
end

---------------------------------------------------------------------------
-- application bodies

local STRING_FIELDS = { "class", "name", "jars", "packages", "repositories", "files", "archives" }

-- A Lua sequence (1..n, nothing else): stricter than the limits' is_array.
local function is_list(t)
  local n = #t
  for k in pairs(t) do
    if type(k) ~= "number" or k ~= math.floor(k) or k < 1 or k > n then return false end
  end
  return true
end

--- A JSON object (a table that is not a non-empty sequence).
function _M.is_object(t)
  return type(t) == "table" and (next(t) == nil or not is_list(t))
end

local function absent(v) return v == nil or v == null end

--- A create_application body -> details, extras (the normalised copy the
-- engine keeps) | nil, message. Its shapes are schemas.create_application's,
-- checked here too so a caller that skipped body() is held to them; this
-- adds what the schema cannot know (the engine's Spark versions).
function _M.application(body, versions)
  local ok, err = check(schemas.create_application, body, "")
  if not ok then return nil, err end
  local d = body.application_details
  local out = { application = d.application }
  if not absent(d.arguments) then out.arguments = util.array(util.copy(d.arguments)) end
  for _, f in ipairs(STRING_FIELDS) do
    if not absent(d[f]) then out[f] = d[f] end
  end
  if not absent(d.conf) then out.conf = util.copy(d.conf) end
  if not absent(d.env) then out.env = util.copy(d.env) end
  local v = not absent(d.runtime) and d.runtime.spark_version or nil
  if not absent(v) then
    if not versions.set[v] then
      return nil, ("application_details.runtime.spark_version must be one of %s"):format(versions.text)
    end
    out.runtime = { spark_version = v }
  end
  local extras = {}
  if not absent(body.volumes) then extras.volumes = util.array(util.deepcopy(body.volumes)) end
  if not absent(body.queuing_enabled) then extras.queuing_enabled = body.queuing_enabled end
  return out, extras
end

return _M
