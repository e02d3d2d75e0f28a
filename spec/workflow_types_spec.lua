-- `validate` knows the types `run` sends: for every field kind of every
-- action, a template that gives a number, a boolean, a numeric or plain
-- string, or a table is either converted by the documented rule (and the body
-- then passes the local engine's own request validation) or refused, with the
-- same message at validate time (file:line) and at run time.
local dsl = require("analytics_engine.workflow.dsl")
local actions = require("analytics_engine.workflow.actions")
local types = require("analytics_engine.workflow.types")
local template = require("analytics_engine.workflow.template")
local api = require("analytics_engine.api")
local util = require("analytics_engine.util")
local validate = require("analytics_engine.engine.validate")
local aeflow = require("helpers.aeflow")

-- Lua source for a value (tables, strings, numbers, booleans).
local function lua(v)
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  for k, x in pairs(v) do
    local key = type(k) == "number" and ("[" .. k .. "]") or ("[%q]"):format(k)
    parts[#parts + 1] = key .. " = " .. lua(x)
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

-- The smallest argument of an action (its required fields).
local BASE = {
  submit = function() return { application = "/jobs/x.py" } end,
  kernel = function() return { cells = { "1" } } end,
  call = function() return { operation = "replace_instance_default_runtime", body = {} } end,
}

-- Every leaf of a schema node: { path (keys), node }.
local function leaves(node, path, out)
  out = out or {}
  path = path or {}
  if not node or node.type == "any" then return out end
  local function at(k, sub)
    local p = { table.unpack(path) }
    p[#p + 1] = k
    leaves(sub, p, out)
  end
  if node.type == "object" then
    local keys = {}
    for k in pairs(node.fields or {}) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do at(k, node.fields[k]) end
  elseif node.type == "map" then
    at("spark.custom.key", node.values)
  elseif node.type == "array" then
    at(1, node.items)
  else
    out[#out + 1] = { path = path, node = node }
  end
  return out
end

local function set(t, path, v)
  for i = 1, #path - 1 do
    local k = path[i]
    if type(t[k]) ~= "table" then t[k] = {} end
    t = t[k]
  end
  t[path[#path]] = v
end

local function get(t, path)
  for _, k in ipairs(path) do
    if type(t) ~= "table" then return nil end
    t = t[k]
  end
  return t
end

-- What the client sends for an action's (flat) argument.
local function sent(action, args)
  local spec = actions.list[action]
  if type(args) ~= "table" then return nil, nil end -- an id: a path segment, no body
  if action == "call" then return args.operation, args.body end
  local op = api.by_name[spec.operation]
  if action == "kernel" then return op.name, { name = args.name, engine = args.engine } end
  if not op.wrap then return op.name, args end
  local body, inner = {}, {}
  local lift = {}
  for _, k in ipairs(op.lift or {}) do lift[k] = true end
  for k, v in pairs(args) do
    if lift[k] then body[k] = v else inner[k] = v end
  end
  body[op.wrap] = inner
  return op.name, body
end

local VALUES = { 3, 3.5, true, "true", "12", "text", { x = 1 } }

describe("validate and run agree on types", function()
  local cases = 0
  for _, action in ipairs(actions.names()) do
    local args0 = (BASE[action] or function() return {} end)()
    for _, leaf in ipairs(leaves(types.node(action, args0))) do
      if not (action == "call" and leaf.path[1] == "operation") then
        for _, value in ipairs(VALUES) do
          cases = cases + 1
          local label = ("%s.%s = ${item} giving %s"):format(action, table.concat(leaf.path, "."), lua(value))
          it(label, function()
            local args = (BASE[action] or function() return {} end)()
            if action == "call" and leaf.path[1] == "ids" then
              args = { operation = "get_application" } -- an operation that takes one id
            end
            if #leaf.path == 0 then args = "${item}" else set(args, leaf.path, "${item}") end
            local src = ("return workflow \"w\" {\n  step \"s\" { for_each = { %s }, %s = %s },\n}\n")
              :format(lua(value), action, lua(args))
            local plan, verr = dsl.load_string(src, "types.lua")
            -- what the runner does with the same step and item
            local step = { action = action, args = args }
            local got, rerr = template.expand_args(step, { item = value, index = 1, params = {}, outputs = {} })
            assert.equals(plan ~= nil, got ~= nil, "validate and run disagree: " .. tostring(verr or rerr))
            if not got then
              assert.truthy(verr:find("^types.lua:2: step \"s\": "), verr)
              assert.truthy(verr:find(rerr, 1, true), verr .. "\nvs\n" .. rerr)
              local kind = leaf.node.type
              -- only what no rule converts is refused
              if kind == "string" then assert.equals("table", type(value)) end
              return
            end
            local v = get(got, leaf.path)
            local kind = leaf.node.type == "ids" and "string" or leaf.node.type
            if kind == "integer" then kind = "number" end
            assert.equals(kind, type(v), label)
            if type(value) == "number" and kind == "string" then
              assert.equals(value == 3 and "3" or "3.5", v) -- whole numbers without ".0"
            end
            -- the body as sent passes the engine's own request checks
            local opname, body = sent(action, got)
            if body ~= nil and not (leaf.path[1] == "conf" or leaf.path[2] == "conf") then
              local ok, why = validate.body(opname, body)
              assert.is_true(ok, tostring(why) .. " " .. util.json_encode(body))
            end
          end)
        end
      end
    end
  end
  it("covers every action that takes an argument", function()
    assert.is_true(cases > 100, "only " .. cases .. " cases")
  end)

  it("interpolating a table into a string is an error at validate time, as at run time", function()
    local _, err = dsl.load_string([[return workflow "w" {
  step "s" { for_each = { { a = 1 } }, submit = { application = "x${item}" } } }]], "t.lua")
    assert.equals([[t.lua:2: step "s": '${item}' is a table: it can be a whole value ("${item}") but not ]]
      .. [[part of the string "x${item}" (for_each item 1: a table)]], err)
  end)

  it("outputs of other steps are checked when the run knows them", function()
    assert(dsl.load_string([[return workflow "w" {
  step "a" { run = function() return { n = 5 } end },
  step "b" { after = { "a" }, submit = { application = "x.py", arguments = { "${outputs.a.n}" } } } }]], "t.lua"))
    local got = assert(template.expand_args({ action = "submit", args = { application = "x.py",
      arguments = { "${outputs.a.n}" } } }, { outputs = { a = { n = 5 } } }))
    assert.same({ "5" }, got.arguments)
    local _, err = template.expand_args({ action = "submit", args = { application = "x.py",
      arguments = { "${outputs.a}" } } }, { outputs = { a = { n = 5 } } })
    assert.equals("submit.arguments[1]: expected a string, got a table", err)
  end)
end)

describe("numeric for_each items end to end", function()
  local e, dir
  setup(function()
    e, dir = aeflow.workspace("aeflow-types-", { ["ok.sh"] = "echo ok \"$@\"\n" })
  end)
  teardown(function() aeflow.finish(e, dir) end)

  it("validate passes and every item runs, its argument sent as text", function()
    aeflow.write(dir, "wf.lua", [[
return workflow "nums" {
  params = { n = 2 },
  step "fan" { for_each = { 1, 2, 3 }, submit = { application = "ok.sh", arguments = { "${item}", "${n}" },
               conf = { ["spark.executor.instances"] = "${n}" } } },
}]])
    local code, out, err = aeflow.run({ "validate", "wf.lua" }, { dir = dir })
    assert.equals(0, code, out .. err)
    code, out, err = aeflow.run({ "run", "wf.lua", "--poll-interval", "0.1" }, { dir = dir, engine = e })
    assert.equals(0, code, out .. err)
    local args = {}
    for _, a in ipairs(aeflow.applications(e)) do
      local d = aeflow.application(e, a.application_id or a.id)
      local ad = d.application_details or d
      args[#args + 1] = table.concat(ad.arguments or {}, " ")
    end
    table.sort(args)
    assert.same({ "1 2", "2 2", "3 2" }, args)
  end)

  it("a table item: validate and run both refuse it with the same line, nothing is sent", function()
    aeflow.write(dir, "bad.lua", [[
return workflow "tbl" {
  step "fan" { for_each = { "a", { x = 1 } }, submit = { application = "ok.sh", arguments = { "${item}" } } },
}]])
    local before = #aeflow.applications(e)
    local code, _, verr = aeflow.run({ "validate", "bad.lua" }, { dir = dir })
    assert.equals(2, code)
    local rcode, _, rerr = aeflow.run({ "run", "bad.lua" }, { dir = dir, engine = e })
    assert.equals(2, rcode)
    assert.equals(verr, rerr)
    assert.matches("^aeflow: bad.lua:2: step \"fan\": submit.arguments%[1%]: expected a string, got a table", verr)
    assert.equals(before, #aeflow.applications(e))
  end)
end)
