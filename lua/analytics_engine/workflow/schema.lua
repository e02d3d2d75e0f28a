--- Declarative validation of workflow files.
--
-- A record schema is a table of fields; each field names a type from
-- `types` (or lists allowed values with `one_of`, or nests a record with
-- `record`), and may be `required`, carry a `default`, need another field
-- (`needs`) or belong to one action (`action`). `check` walks a value against
-- a record, rejects unknown keys (suggesting the closest known one) and
-- returns a normalised copy, or nil and a one-line "path: message".
-- The step schema is built from actions.lua, so a new action is one row there.
local actions = require("analytics_engine.workflow.actions")
local api = require("analytics_engine.api")
local duration = require("analytics_engine.duration")

local _M = {}

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local concat, sort = table.concat, table.sort
local floor, huge = math.floor, math.huge

_M.NAME_PATTERN = "^[%w][%w _.-]*$"
_M.PARAM_PATTERN = "^[%a_][%w_]*$"
-- Names the runner puts in a step's template scope besides the params; a
-- param may not shadow them.
_M.RESERVED = { params = true, outputs = true, item = true, index = true, run_id = true }

--- A value as messages show it: strings quoted, tables and functions by kind.
function _M.show(v)
  local t = type(v)
  if t == "string" then return ("%q"):format(v) end
  if t == "nil" then return "nothing" end
  if t == "table" then return "a table" end
  if t == "function" then return "a function" end
  if t == "number" or t == "boolean" then return tostring(v) end
  return "a " .. t
end
local show = _M.show

-- An integer-valued number (a Lua integer or an integral float: JSON and the
-- DSL may give either).
local function is_int(v)
  return type(v) == "number" and v == floor(v) and v > -huge and v < huge
end

local function is_array(v)
  if type(v) ~= "table" then return false end
  local n = #v
  for k in pairs(v) do
    if not is_int(k) or k < 1 or k > n then return false end
  end
  return true
end
_M.is_array = is_array

local function as_integer(v)
  if is_int(v) then return floor(v) end
  return nil
end

--- Seconds from a number or a duration string ("90", "90s", "30m", "1h30m",
-- "1d"): the project's one grammar, analytics_engine.duration.
_M.parse_duration = duration.parse

-- A check for an array whose elements' types are among `kinds` (a set of
-- type names); with `lone_string`, a string alone passes too, kept as written.
local STRING = { string = true }
local function array_of(kinds, lone_string)
  return function(v)
    if lone_string and type(v) == "string" then return true, v end
    if not is_array(v) then return false end
    for _, x in ipairs(v) do
      if not kinds[type(x)] then return false end
    end
    return true, v
  end
end

local strings = array_of(STRING) -- made once: `names` checks with it too

--- Types: `desc` for messages, `check(v)` → ok, normalised value.
_M.types = {
  string = { desc = "a string", check = function(v) return type(v) == "string", v end },
  boolean = { desc = "a boolean", check = function(v) return type(v) == "boolean", v end },
  table = { desc = "a table", check = function(v) return type(v) == "table", v end },
  func = { desc = "a function", check = function(v) return type(v) == "function", v end },
  count = { desc = "a non-negative integer", check = function(v)
    local i = as_integer(v)
    return i ~= nil and i >= 0, i
  end },
  positive = { desc = "a positive integer", check = function(v)
    local i = as_integer(v)
    return i ~= nil and i > 0, i
  end },
  delay = { desc = 'non-negative seconds or a duration like "30s"', check = function(v)
    local d = _M.parse_duration(v)
    return d ~= nil and d >= 0, d
  end },
  duration = { desc = 'seconds or a duration like "30m" or "1h30m"', check = function(v)
    local d = _M.parse_duration(v)
    return d ~= nil and d > 0, d
  end },
  -- a step name or a list of them (after = "a" becomes { "a" })
  names = { desc = "a step name or an array of step names", check = function(v)
    if type(v) == "string" then return true, { v } end
    if not strings(v) then return false end
    local out = {}
    for i, x in ipairs(v) do out[i] = x end
    return true, out
  end },
  -- what `ids` actions take: a string or an array of strings, kept as written
  ids = { desc = "a string or an array of strings", check = array_of(STRING, true) },
  strings = { desc = "an array of strings", check = strings },
  arguments = { desc = "an array of strings or numbers", check = array_of({ string = true, number = true }) },
  tables = { desc = "an array of tables", check = array_of({ table = true }) },
  -- none: `{}` or `true`
  none = { desc = "{} or true (it takes no arguments)", check = function(v)
    return v == true or (type(v) == "table" and next(v) == nil), v
  end },
  for_each = { desc = 'an array of values or a "${param}" string',
               check = array_of({ string = true, number = true, table = true, boolean = true }, true) },
  operation = { desc = "the name of an operation in api.lua", check = function(v)
    return type(v) == "string" and api.by_name[v] ~= nil, v
  end },
  params = { desc = "a table of name = string, number or boolean", check = function(v)
    return type(v) == "table", v
  end },
}

-- The submit body (application_details, plus the two keys sent beside it).
_M.submit = {
  application = { type = "string", required = true },
  arguments = { type = "arguments" },
  class = { type = "string" },
  conf = { type = "table" },
  env = { type = "table" },
  name = { type = "string" },
  jars = { type = "string" },
  packages = { type = "string" },
  repositories = { type = "string" },
  files = { type = "string" },
  archives = { type = "string" },
  runtime = { type = "table" },
  volumes = { type = "tables" },
  queuing_enabled = { type = "boolean" },
}

-- The `kernel` action (workflow/kernel_action.lua): the create_kernel body
-- (name, engine) plus the cells to execute.
_M.kernel = {
  name = { type = "string" },
  engine = { type = "table" },
  cells = { type = "strings", required = true },
}

-- The `call` action: any operation.
_M.call = {
  operation = { type = "operation", required = true },
  ids = { type = "strings" },
  body = { type = "table" },
}

-- Argument fields are templated by the runner: there a whole "${name}" may
-- stand for a value of any type; workflow/types.lua checks what it gives
-- against the API's types, at validate time (plan.lua) as at run time.
for _, record in ipairs { _M.submit, _M.kernel, _M.call } do
  for _, field in pairs(record) do field.templated = true end
end

--- What each actions.lua arg kind accepts.
_M.arg_kinds = {
  body = { type = "table" },
  none = { type = "none" },
  id = { type = "string" },
  ids = { type = "ids" },
  call = { type = "table", record = _M.call },
  func = { type = "func" },
}

-- Bodies checked field by field (the others are sent as written).
_M.bodies = { submit = _M.submit, kernel = _M.kernel }

--- Step options besides the action key.
_M.step = {
  after = { type = "names", default = {} },
  retries = { type = "count", default = 0 },
  retry_delay = { type = "delay", default = 5 },
  timeout = { type = "duration" },
  on_timeout = { one_of = { "stop", "leave" }, default = "stop" },
  continue_on_failure = { type = "boolean", default = false },
  for_each = { type = "for_each" },
  max_parallel = { type = "positive", needs = "for_each" },
  wait = { type = "boolean", default = true, action = "submit" },
  -- false: send without waiting for room in the quota (workflow/admission.lua)
  admission = { type = "boolean", action = "submit" },
  description = { type = "string" },
}

--- Workflow-level options.
_M.workflow = {
  params = { type = "params", default = {} },
  max_parallel = { type = "positive" },
  on_cancel = { one_of = { "stop", "leave" }, default = "stop" },
  description = { type = "string" },
}

-- Edit distance with adjacent transpositions (optimal string alignment).
local function distance(a, b)
  local la, lb = #a, #b
  local d = {}
  for i = 0, la do d[i] = { [0] = i } end
  for j = 0, lb do d[0][j] = j end
  for i = 1, la do
    for j = 1, lb do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[la][lb]
end
_M.distance = distance

--- The closest of `candidates` to `word`, when close enough to be a typo.
function _M.suggest(word, candidates)
  if type(word) ~= "string" then return nil end
  local best, best_d
  local sorted = {}
  for _, c in ipairs(candidates) do sorted[#sorted + 1] = c end
  sort(sorted)
  for _, c in ipairs(sorted) do
    local d = distance(word:lower(), c:lower())
    if not best_d or d < best_d then best, best_d = c, d end
  end
  if best_d and best_d <= math.max(1, math.min(2, #word // 3)) and best_d < #word then return best end
  return nil
end

local function did_you_mean(word, candidates)
  local s = _M.suggest(word, candidates)
  return s and (" (did you mean '%s'?)"):format(s) or ""
end
_M.did_you_mean = did_you_mean

local function prefix(path)
  return path and path ~= "" and (path .. ": ") or ""
end

local function join(path, key)
  if not path or path == "" then return tostring(key) end
  return path .. "." .. tostring(key)
end

local function keys_of(record)
  local t = {}
  for k in pairs(record) do t[#t + 1] = k end
  sort(t)
  return t
end

--- Check the keys of `value` against `record` (plus `extra` allowed keys):
-- no positional items, no unknown keys. Returns true or nil, message.
function _M.check_keys(value, record, path, extra)
  local known = keys_of(record)
  for _, k in ipairs(extra or {}) do known[#known + 1] = k end
  local allowed = {}
  for _, k in ipairs(known) do allowed[k] = true end
  local bad = {}
  for k in pairs(value) do
    if not allowed[k] then bad[#bad + 1] = k end
  end
  if #bad == 0 then return true end
  sort(bad, function(a, b)
    if type(a) ~= type(b) then return type(a) == "number" end
    return a < b
  end)
  local k = bad[1]
  if type(k) ~= "string" then
    return nil, ("%sunexpected item %s = %s (write key = value)"):format(prefix(path), tostring(k),
      show(value[k]))
  end
  return nil, ("%sunknown key '%s'%s"):format(prefix(path), k, did_you_mean(k, known))
end

--- Check one value against one field description. Returns ok, normalised or
-- nil, message.
function _M.check_field(v, field, path)
  if v == nil then
    if field.required then
      local ty = field.type and _M.types[field.type]
      return nil, ("%s: missing (expected %s)"):format(path, ty and ty.desc or "a value")
    end
    return true, field.default
  end
  if field.one_of then
    for _, allowed in ipairs(field.one_of) do
      if v == allowed then return true, v end
    end
    local shown = {}
    for i, a in ipairs(field.one_of) do shown[i] = show(a) end
    return nil, ("%s: expected one of %s, got %s"):format(path, concat(shown, ", "), show(v))
  end
  if field.templated and type(v) == "string" and v:find("^%${[^}]+}$") then return true, v end
  local ty = assert(_M.types[field.type], field.type)
  local ok, norm = ty.check(v)
  if not ok then
    return nil, ("%s: expected %s, got %s"):format(path, ty.desc, show(v))
  end
  if field.record then
    local _, err = _M.check(v, field.record, path)
    if err then return nil, err end
  end
  return true, norm
end

--- Check a table against a record schema. Returns a normalised copy (known
-- fields with defaults filled in) or nil, message.
function _M.check(value, record, path, extra)
  if type(value) ~= "table" then
    return nil, ("%sexpected a table, got %s"):format(prefix(path), show(value))
  end
  local ok, err = _M.check_keys(value, record, path, extra)
  if not ok then return nil, err end
  local out = {}
  for _, k in ipairs(keys_of(record)) do
    local good, norm = _M.check_field(value[k], record[k], join(path, k))
    if not good then return nil, norm end
    out[k] = norm
  end
  return out
end

-- Built-in actions first, then the generic ones, as messages list them.
local GENERIC = { call = 2, run = 3 }
local function action_less(a, b)
  local ga, gb = GENERIC[a] or 1, GENERIC[b] or 1
  if ga ~= gb then return ga < gb end
  return a < b
end

local function and_list(t)
  if #t == 1 then return t[1] end
  return concat(t, ", ", 1, #t - 1) .. " and " .. t[#t]
end

local NUMBERS = { "one", "two", "three", "four", "five" }

--- Validate the body of `step "name" { ... }` and normalise it into the
-- plan's step shape (without name/where). Returns step or nil, message.
function _M.step_body(body)
  if type(body) ~= "table" then
    return nil, ("expected a table { ... }, got %s"):format(show(body))
  end
  local ok, err = _M.check_keys(body, _M.step, nil, actions.names())
  if not ok then return nil, err end

  local found = {}
  for k in pairs(body) do
    if actions.list[k] then found[#found + 1] = k end
  end
  sort(found, action_less)
  if #found == 0 then
    local names = actions.names()
    sort(names, action_less)
    return nil, "needs an action: one of " .. concat(names, ", ")
  elseif #found > 1 then
    return nil, ("has %s actions: %s"):format(NUMBERS[#found] or tostring(#found), and_list(found))
  end
  local action = found[1]
  local spec = actions.list[action]
  local args = body[action]
  local good, msg = _M.check_field(args, _M.arg_kinds[spec.arg], action)
  if not good then return nil, msg end
  local record = _M.bodies[action]
  if record then
    local _, e = _M.check(args, record, action)
    if e then return nil, e end
  end
  if spec.arg == "call" then
    local _, e = _M.check_call(args)
    if e then return nil, e end
  end

  local step, e = _M.check(body, _M.step, nil, actions.names())
  if not step then return nil, e end
  for _, k in ipairs(keys_of(_M.step)) do
    local f = _M.step[k]
    if body[k] ~= nil and f.needs and body[f.needs] == nil then
      return nil, ("%s: only meaningful with %s"):format(k, f.needs)
    end
    if body[k] ~= nil and f.action and f.action ~= action then
      return nil, ("%s: only for %s steps"):format(k, f.action)
    end
  end
  step.action, step.args = action, args
  return step
end

--- The `call` action's ids must fit the operation's path, and a body only
-- goes to an operation that takes one.
function _M.check_call(args)
  local op = api.by_name[args.operation]
  local ids = args.ids or {}
  if #ids ~= #op.ids then
    local want = #op.ids == 0 and "no ids" or
      ("%d id%s (%s)"):format(#op.ids, #op.ids == 1 and "" or "s", concat(op.ids, ", "))
    return nil, ("call.ids: %s takes %s, got %d"):format(op.name, want, #ids)
  end
  if args.body ~= nil and not op.body then
    return nil, ("call.body: %s takes no body"):format(op.name)
  end
  return true
end

--- Validate the params table: names usable in `${name}`, scalar values.
function _M.params(params)
  local names = {}
  for k in pairs(params) do names[#names + 1] = k end
  sort(names, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(names) do
    local v = params[k]
    if type(k) ~= "string" then
      return nil, ("params: unexpected item %s = %s (write name = default)"):format(tostring(k), show(v))
    end
    if not k:find(_M.PARAM_PATTERN) then
      return nil, ("params.%s: a parameter name must be letters, digits and _, not starting with a digit"):format(k)
    end
    if _M.RESERVED[k] then
      return nil, ("params.%s: '%s' is reserved (the runner provides it)"):format(k, k)
    end
    local t = type(v)
    if t ~= "string" and t ~= "number" and t ~= "boolean" then
      return nil, ("params.%s: expected a string, number or boolean, got %s"):format(k, show(v))
    end
  end
  return true
end

--- Validate a name given to workflow/step/finally.
function _M.name(name)
  if type(name) ~= "string" then
    return nil, ("the name must be a string, got %s"):format(show(name))
  end
  if not name:find(_M.NAME_PATTERN) then
    return nil, "the name must start with a letter or digit and hold only letters, digits, spaces, _ . -"
  end
  return true
end

--- Validate the body of `workflow "name" { ... }`: options by key, steps
-- as its array items (checked by `is_step`). Returns options or nil, message.
function _M.workflow_body(body, is_step)
  if type(body) ~= "table" then
    return nil, ("expected a table { ... }, got %s"):format(show(body))
  end
  local options = {}
  for k, v in pairs(body) do
    if not is_int(k) then options[k] = v end
  end
  local n = #body
  for k in pairs(body) do
    if is_int(k) and (k < 1 or k > n) then
      return nil, ("unexpected item %d (steps must be a plain list)"):format(k)
    end
  end
  for i = 1, n do
    local ok, why = is_step(body[i])
    if not ok then
      return nil, why or ("item %d is not a step (write step \"name\" { ... }), got %s"):format(i, show(body[i]))
    end
  end
  local out, err = _M.check(options, _M.workflow)
  if not out then return nil, err end
  local ok, e = _M.params(out.params)
  if not ok then return nil, e end
  return out
end

return _M
