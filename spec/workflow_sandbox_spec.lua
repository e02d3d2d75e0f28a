-- Workflow files are loaded in a sandbox: an allow-list environment, bounded
-- in time and instructions, with documented helpers for what a file needs.
local core = require("analytics_engine.core")
local dsl = require("analytics_engine.workflow.dsl")
local sandbox = require("analytics_engine.workflow.sandbox")
local aeflow = require("helpers.aeflow")

local OK = '\nreturn workflow "w" { step "a" { delete_limits = true } }\n'

local function load(src, name)
  return dsl.load_string(src, name or "x.lua")
end

-- load(src, file) with the sandbox's limit `name` lowered to `value`; the
-- limit is put back afterwards.
local function load_with(name, value, src, file)
  local old = sandbox[name]
  sandbox[name] = value
  local ok, plan, err = pcall(load, src, file)
  sandbox[name] = old
  if not ok then error(plan, 0) end
  return plan, err
end

describe("the workflow sandbox", function()
  local ESCAPES = {
    { "os.exit", "os.exit(0)" },
    { "os.execute", "os.execute('touch /tmp/aeflow-escaped')" },
    { "os.remove", "os.remove('/tmp/x')" },
    { "os.rename", "os.rename('/tmp/x', '/tmp/y')" },
    { "os.getenv (use env)", "os.getenv('HOME')" },
    { "io.popen", "io.popen('id')" },
    { "io.open", "io.open('/etc/passwd')" },
    { "require", "require('os')" },
    { "dofile", "dofile('/etc/passwd')" },
    { "loadfile", "loadfile('/etc/passwd')" },
    { "debug", "debug.sethook()" },
    { "package", "package.loaded.os.exit(0)" },
    { "collectgarbage", "collectgarbage('stop')" },
    { "coroutine", "coroutine.wrap(function() end)()" },
    { "_G of the host", "_G.io.open('/etc/passwd')" },
    { "the string library's dump", "string.dump(print)" },
    { "the host's string metatable", "getmetatable('').__index.format = function() end" },
    { "the DSL's metatables", "getmetatable(step 'a' {}).__index = function() end" },
  }
  for _, c in ipairs(ESCAPES) do
    it("refuses " .. c[1] .. " while loading, with file:line", function()
      local plan, err = load(c[2] .. OK)
      assert.is_nil(plan)
      assert.matches("^x.lua:1: ", err)
    end)
  end

  it("caps string.rep, also through a string's methods, and gives no dump", function()
    local _, err = load("local s = string.rep('x', 2^40)" .. OK)
    assert.matches("x.lua:1: string.rep: the result would be", err)
    _, err = load("local s = ('x'):rep(2^40)" .. OK)
    assert.matches("x.lua:1: string.rep: the result would be", err)
    _, err = load("local s = ('x').dump(function() end)" .. OK)
    assert.matches("x.lua:1: attempt to call a nil value", err)
    assert.equals("function", type(("x").dump)) -- the host's methods are back
  end)

  it("strips the file's metatables from every table of a step, not only its arguments", function()
    local p = assert(load([[
local after = setmetatable({ "a" }, { __index = function(_, k) if k == 99 then error("planted") end end })
return workflow "w" { step "a" { delete_limits = true }, step "b" { after = after, delete_limits = true } }]]))
    assert.is_nil(getmetatable(p.by_name.b.after))
    assert.is_nil(p.by_name.b.after[99])
  end)

  it("does not let a bytecode chunk in through load", function()
    local _, err = load("assert(load('\\27Lua'))" .. OK)
    assert.matches("attempt to load a binary chunk", err)
  end)

  it("runs a chunk given to load in the sandbox too", function()
    local _, err = load("load('os.exit(1)')()" .. OK)
    assert.matches("attempt to call a nil value %(field 'exit'%)", err)
  end)

  it("refuses a finalizer, which would run after loading, outside the sandbox", function()
    local _, err = load("setmetatable({}, { __gc = function() end })" .. OK)
    assert.matches("x.lua:1: __gc metamethods are not allowed", err)
  end)

  it("stops an endless loop after the time bound, naming the file and the line", function()
    local t0 = core.monotime()
    local plan, err = load_with("MAX_SECONDS", 0.2, "local n = 0\nwhile true do n = n + 1 end" .. OK, "nightly.lua")
    assert.is_nil(plan)
    assert.equals("nightly.lua: took more than 0.2 s to load (an endless loop? at line 2)", err)
    assert.is_true(core.monotime() - t0 < 10)
  end)

  it("cannot be swallowed by pcall, xpcall or an error handler that loops", function()
    local _, err1 = load_with("MAX_SECONDS", 0.2, "while true do pcall(function() while true do end end) end" .. OK)
    local _, err2 = load_with("MAX_SECONDS", 0.2,
      "while true do xpcall(function() while true do end end, function() while true do end end) end" .. OK)
    local _, err3 = load_with("MAX_SECONDS", 0.2, "local ok = pcall(function() while true do end end)" .. OK)
    assert.matches("took more than 0.2 s to load", err1)
    assert.matches("took more than 0.2 s to load", err2)
    assert.matches("took more than 0.2 s to load", err3)
  end)

  it("bounds instructions as well as time", function()
    local _, err = load_with("MAX_INSTRUCTIONS", 1e6, "for i = 1, 1e9 do end" .. OK)
    assert.matches("x.lua: ran more than 1000000 instructions while loading %(an endless loop%? at line 1%)", err)
  end)

  it("bounds the memory a file can take while loading", function()
    local _, err = load_with("MAX_MEMORY_MB", 16, "local t = {}\nfor i = 1, 1e8 do t[i] = i end" .. OK)
    -- the allocator's cap (no line known) or the hook's look (with the line)
    assert.matches("^x.lua: used more than 16 MB while loading", err)
    collectgarbage()
  end)

  it("bounds a loop hidden in a metamethod the schema check triggers", function()
    local _, err = load_with("MAX_SECONDS", 0.2, [[return workflow "w" {
      step "a" (setmetatable({}, { __index = function() while true do end end,
                                   __pairs = function() while true do end end })) }]])
    assert.matches("took more than 0.2 s to load", err)
  end)

  it("hands out plain data: no metatable of the file's survives on an argument table", function()
    local p = assert(load([[
local conf = setmetatable({ a = "1" }, { __index = function() return "planted" end })
return workflow "w" { step "a" { update_configs = conf } }]]))
    assert.is_nil(getmetatable(p.by_name.a.args))
    assert.is_nil(p.by_name.a.args.zzz)
  end)

  it("turns an error object into its message inside the bounds", function()
    local _, err = load_with("MAX_SECONDS", 0.2,
      "error(setmetatable({}, { __tostring = function() while true do end end }))" .. OK)
    assert.matches("took more than 0.2 s to load", err)
  end)

  it("leaves the host's hook and globals as they were", function()
    local function h() end
    debug.sethook(h, "", 1e9)
    assert(load(OK))
    assert.equals(h, (debug.gethook()))
    debug.sethook()
    assert.equals("function", type(os.exit))
  end)
end)

describe("workflow file helpers", function()
  local dir
  setup(function()
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-sbx-"))
    aeflow.write(dir, "items.json", '["eu", "us", 3]')
    aeflow.write(dir, "items.txt", "  a \n\n b\r\nc")
    aeflow.write(dir, "items.csv", 'region,note\neu,"quoted, with ""comma"""\r\nus,plain\n')
  end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  local function file(src)
    local path = aeflow.write(dir, "wf.lua", src)
    return dsl.load_file(path)
  end

  it("read_json, read_lines and read_csv read files beside the workflow", function()
    local p = assert(file([[
local j, l, c = read_json "items.json", read_lines "items.txt", read_csv "items.csv"
return workflow "w" { description = table.concat({ j[1], j[3], l[1], l[2], l[3], c[1].region, c[1].note, c[2].note },
  "|"), step "a" { delete_limits = true } }]]))
    assert.equals('eu|3|a|b|c|eu|quoted, with "comma"|plain', p.description)
  end)

  it("refuse paths outside the workflow's directory, with file:line", function()
    local _, err = file('local x = read_json "/etc/passwd"' .. OK)
    assert.matches("wf.lua:1: read_json: '/etc/passwd' is outside the workflow's directory", err)
    _, err = file('local x = read_lines "../etc/passwd"' .. OK)
    assert.matches("wf.lua:1: read_lines: '../etc/passwd' is outside", err)
  end)

  it("say which file is missing or not JSON", function()
    local _, err = file('local x = read_json "nope.json"' .. OK)
    assert.matches("wf.lua:1: read_json: cannot read nope.json", err)
    _, err = file('local x = read_json "items.txt"' .. OK)
    assert.matches("wf.lua:1: read_json: items.txt is not JSON", err)
  end)

  it("env reads an environment variable, with a default", function()
    local p = assert(file('return workflow "w" { description = env("HOME") .. "|" .. env("AEFLOW_NOT_SET_X", "d"),'
      .. ' step "a" { delete_limits = true } }'))
    assert.equals(os.getenv("HOME") .. "|d", p.description)
  end)
end)

describe("aeflow validate on hostile files", function()
  local dir
  setup(function() dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-sbv-")) end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("a file calling os.exit(0): exit 2 with file:line, not a silent pass", function()
    aeflow.write(dir, "exit.lua", "os.exit(0)" .. OK)
    local code, out, err = aeflow.run({ "validate", "exit.lua" }, { dir = dir })
    assert.equals(2, code, out)
    assert.matches("^aeflow: exit.lua:1: ", err)
  end)

  it("a file with io.popen: nothing runs", function()
    aeflow.write(dir, "popen.lua", "io.popen('touch " .. dir .. "/ran')" .. OK)
    local code, _, err = aeflow.run({ "plan", "popen.lua" }, { dir = dir })
    assert.equals(2, code)
    assert.matches("popen.lua:1:", err)
    assert.is_nil(io.open(dir .. "/ran"))
  end)

  it("an endless loop: exit 2 after about 2 s, saying so", function()
    aeflow.write(dir, "nightly.lua", "while true do end" .. OK)
    local t0 = core.monotime()
    local code, _, err = aeflow.run({ "validate", "nightly.lua" }, { dir = dir, timeout = 60 })
    assert.equals(2, code)
    assert.equals("aeflow: nightly.lua: took more than 2 s to load (an endless loop? at line 1)\n", err)
    assert.is_true(core.monotime() - t0 < 30)
  end)
end)
