--- Loading a workflow file.
--
-- The file runs in a sandbox (sandbox.lua): an allow-list environment holding
-- `workflow`, `step`, `finally`, `ae.null`, the side-effect-free parts of the
-- standard library and a few documented helpers (`env`, `read_json`,
-- `read_lines`, `read_csv`), bounded in time and instructions; nothing is
-- contacted and nothing outside is touched. The three DSL functions only
-- build tables, each stamped with the caller's `file:line`, and the file
-- returns `workflow "name" { ... }`. That is validated (schema.lua), turned
-- into a plan (plan.lua) and returned as plain data:
--
--   local plan, err = dsl.load_file("workflows/nightly.lua", { date = "2026-11-24" })
local util = require("analytics_engine.util")
local schema = require("analytics_engine.workflow.schema")
local planner = require("analytics_engine.workflow.plan")
local sandbox = require("analytics_engine.workflow.sandbox")

local _M = {}

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local fmt, concat, sort = string.format, table.concat, table.sort
local getinfo = debug.getinfo

-- Objects the DSL functions return are recognised by these metatables.
local STEP_MT = { __name = "analytics_engine.workflow.step" }
local WORKFLOW_MT = { __name = "analytics_engine.workflow.workflow" }
-- `step "x"` without its body is a function; remember what it was.
local PENDING = setmetatable({}, { __mode = "k" })

local function caller_where(level)
  local info = getinfo(level + 1, "Sl")
  if not info then return "?" end
  local src = info.source or "?"
  local c = src:sub(1, 1)
  if c == "@" or c == "=" then src = src:sub(2) end
  return src .. ":" .. tostring(info.currentline)
end

local function maker(kind, mt, is_finally)
  return function(name)
    local where = caller_where(2)
    local function body(b)
      return setmetatable({ kind = kind, name = name, where = where, is_finally = is_finally, body = b }, mt)
    end
    PENDING[body] = { kind = kind, name = name, where = where }
    return body
  end
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local ae_module
local function ae_table()
  if ae_module == nil then
    local ok, m = pcall(require, "analytics_engine")
    ae_module = ok and m or false
  end
  return ae_module or nil
end

-- A raw copy without metatables (functions, the run steps, stay as they are).
local function plain(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local c = {}
  seen[v] = c
  local k, x = next(v)
  while k ~= nil do
    rawset(c, plain(k, seen), plain(x, seen))
    k, x = next(v, k)
  end
  return c
end

--- A fresh sandbox for one workflow file (named `file` in messages); its
-- `env` holds the DSL functions.
function _M.sandbox(file)
  local box = sandbox.new(file or "workflow", ae_table())
  box.env.workflow = maker("workflow", WORKFLOW_MT, false)
  box.env.step = maker("step", STEP_MT, false)
  box.env.finally = maker("finally", STEP_MT, true)
  return box
end

--- A fresh environment for one workflow file (the sandbox's).
function _M.env(file)
  return _M.sandbox(file).env
end

local function display(v)
  if v == nil then return "nil" end
  local p = type(v) == "function" and PENDING[v]
  if p then return fmt('%s "%s" without its { ... }', p.kind, tostring(p.name)) end
  if type(v) == "table" and getmetatable(v) == STEP_MT then return "a step" end
  return "a " .. type(v)
end

-- A step item of the workflow body: ok, or false and a located message.
local function is_step(v)
  if type(v) == "table" and getmetatable(v) == STEP_MT then return true end
  local p = type(v) == "function" and PENDING[v]
  if p and p.kind ~= "workflow" then
    return false, fmt('%s: %s "%s": has no body (write %s "%s" { ... })', p.where, p.kind, tostring(p.name),
      p.kind, tostring(p.name))
  end
  return false
end

-- Merge `--param k=v` overrides into the defaults, keeping the default's type.
local function merge_params(defaults, overrides)
  local params = copy(defaults)
  if overrides == nil then return params end
  local keys = {}
  for k in pairs(overrides) do keys[#keys + 1] = tostring(k) end
  sort(keys)
  for _, k in ipairs(keys) do
    local v = overrides[k]
    local d = defaults[k]
    if d == nil then
      local declared = {}
      for name in pairs(defaults) do declared[#declared + 1] = name end
      sort(declared)
      return nil, fmt("unknown parameter '%s' (%s)%s", k,
        #declared > 0 and ("the workflow declares: " .. concat(declared, ", ")) or "the workflow declares none",
        schema.did_you_mean(k, declared))
    end
    if type(d) == "number" and type(v) == "string" then
      local n = tonumber(v)
      if not n then return nil, fmt("parameter '%s': expected a number, got %q", k, v) end
      v = n
    elseif type(d) == "boolean" and type(v) == "string" then
      local b = ({ ["true"] = true, yes = true, ["1"] = true, ["false"] = false, no = false, ["0"] = false })[v]
      if b == nil then return nil, fmt("parameter '%s': expected true or false, got %q", k, v) end
      v = b
    end
    local t = type(v)
    if t ~= "string" and t ~= "number" and t ~= "boolean" then
      return nil, fmt("parameter '%s': expected a string, number or boolean, got %s", k, schema.show(v))
    end
    params[k] = v
  end
  return params
end

--- Turn what the file returned into a plan. `file` names it for messages.
function _M.build(wf, file, overrides)
  if type(wf) ~= "table" or getmetatable(wf) ~= WORKFLOW_MT then
    return nil, fmt('%s: the file must return workflow "name" { ... } (it returned %s)', file, display(wf))
  end
  local function wf_err(msg)
    return fmt('%s: workflow "%s": %s', wf.where, tostring(wf.name), msg)
  end
  local ok, err = schema.name(wf.name)
  if not ok then return nil, wf_err(err) end
  if type(wf.body) == "table" then
    for _, item in ipairs(wf.body) do
      local good, located = is_step(item)
      if not good and located then return nil, located end
    end
  end
  local opts
  opts, err = schema.workflow_body(wf.body, is_step)
  if not opts then return nil, wf_err(err) end

  local p = {
    name = wf.name, where = wf.where, file = file, dir = util.dirname(file),
    max_parallel = opts.max_parallel, on_cancel = opts.on_cancel, description = opts.description,
    steps = {}, finally = {}, by_name = {},
  }
  for _, item in ipairs(wf.body) do
    local stub = { name = tostring(item.name), where = item.where, is_finally = item.is_finally }
    ok, err = schema.name(item.name)
    if not ok then return nil, planner.located(stub, err) end
    local step, e = schema.step_body(item.body)
    if not step then return nil, planner.located(stub, e) end
    local first = p.by_name[item.name]
    if first then
      return nil, planner.located(stub, fmt("duplicate name (first declared at %s)", first.where))
    end
    step.name, step.where, step.is_finally = item.name, item.where, item.is_finally
    p.by_name[step.name] = step
    local list = item.is_finally and p.finally or p.steps
    list[#list + 1] = step
  end

  local params, perr = merge_params(opts.params, overrides)
  if not params then return nil, perr end
  p.params = params
  return planner.build(p)
end

--- Load a workflow from source text. `chunkname` is the file name used in
-- messages ("workflow" when omitted).
function _M.load_string(src, chunkname, overrides)
  chunkname = chunkname or "workflow"
  local file = chunkname:gsub("^[@=]", "")
  local box = _M.sandbox(file)
  local fn, err = load(src, "@" .. file, "t", box.env)
  if not fn then return nil, err end
  -- Checking and planning stay inside the bounds too: they read the file's
  -- tables, whose metamethods are the file's code.
  local ok, plan, perr = box:run(function()
    local p, e = _M.build(fn(), file, overrides)
    if p then
      -- What leaves the sandbox is plain data: a metatable of the file's on
      -- any table of a step (args, after, for_each...) would run its code when
      -- `plan` or the runner reads it, outside the sandbox.
      for _, group in ipairs { p.steps, p.finally } do
        for _, step in ipairs(group) do
          local k, v = next(step)
          while k ~= nil do
            rawset(step, k, plain(v))
            k, v = next(step, k)
          end
        end
      end
      p.params = plain(p.params)
    end
    return p, e
  end)
  if not ok then return nil, plan end
  return plan, perr
end

--- Load a workflow file. Returns the plan, or nil and a one-line message.
function _M.load_file(path, overrides)
  -- a FIFO would block open() forever and /dev/zero never ends: only a
  -- regular file, and no larger than the helpers may read
  local what = util.not_regular(path)
  if what then return nil, fmt("%s: not a workflow file (%s, not a regular file)", path, what) end
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local src = f:read(sandbox.MAX_FILE_BYTES + 1)
  f:close()
  if src == nil then return nil, path .. ": could not read the file" end
  if #src > sandbox.MAX_FILE_BYTES then
    return nil, fmt("%s: larger than %d MB (not a workflow file?)", path, sandbox.MAX_FILE_BYTES // 1048576)
  end
  -- a #! line is allowed, as lua.c allows it
  if src:sub(1, 2) == "#!" then src = "--" .. src end
  return _M.load_string(src, path, overrides)
end

return _M
