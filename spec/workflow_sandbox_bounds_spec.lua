-- What the sandbox's count hook cannot see: one C call that allocates
-- gigabytes or never returns, a symlink beside the workflow, and the file's
-- own text printed by `aeflow plan`. Found by QA; each case failed before.
local core = require("analytics_engine.core")
local dsl = require("analytics_engine.workflow.dsl")
local sandbox = require("analytics_engine.workflow.sandbox")
local aeflow = require("helpers.aeflow")

local OK = '\nreturn workflow "w" { step "a" { delete_limits = true } }\n'

local function with_memory(mb, src)
  local old = sandbox.MAX_MEMORY_MB
  sandbox.MAX_MEMORY_MB = mb
  local plan, err = dsl.load_string(src, "x.lua")
  sandbox.MAX_MEMORY_MB = old
  collectgarbage()
  return plan, err
end

describe("the sandbox's memory bound inside one C call", function()
  it("stops a string doubled by concatenation (no hook runs between the allocations)", function()
    -- 1 MB doubled 12 times is 4 GB, asked for in 12 instructions
    local _, err = with_memory(64, "local s = ('x'):rep(2^20)\nfor i = 1, 12 do s = s .. s end" .. OK)
    assert.equals("x.lua: used more than 64 MB while loading", err)
  end)

  it("stops table.concat and string.format building one huge string", function()
    local _, err = with_memory(64, "local t = {}\nfor i = 1, 200 do t[i] = ('x'):rep(2^20) end\n"
      .. "local s = table.concat(t, '', 1, 200)" .. OK)
    assert.equals("x.lua: used more than 64 MB while loading", err)
  end)

  it("cannot be swallowed by a pcall in the file", function()
    local _, err = with_memory(32, "for i = 1, 1e6 do\n"
      .. "pcall(function() local s = ('x'):rep(2^24) .. ('y'):rep(2^24) end)"
      .. " end" .. OK)
    assert.equals("x.lua: used more than 32 MB while loading", err)
  end)

  it("is lifted once loading is over", function()
    with_memory(16, "local s = ('x'):rep(2^20)\nfor i = 1, 12 do s = s .. s end" .. OK)
    local s = ("x"):rep(64 * 2 ^ 20)
    assert.equals(64 * 2 ^ 20, #s)
    s = nil -- luacheck: ignore
    collectgarbage()
    assert(dsl.load_string(OK, "x.lua"))
  end)
end)

describe("workflow file helpers and symlinks", function()
  local dir
  setup(function()
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-sbb-"))
    aeflow.write(dir, "inside.txt", "a\nb\n")
    os.execute("ln -s /etc '" .. dir .. "/etc' && ln -s inside.txt '" .. dir .. "/alias.txt'")
  end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("refuse a symlink that leads outside the workflow's directory, naming where it leads", function()
    local path = aeflow.write(dir, "wf.lua", 'local x = read_lines "etc/passwd"' .. OK)
    local _, err = dsl.load_file(path)
    assert.equals("string", type(err))
    assert.matches("wf.lua:1: read_lines: 'etc/passwd' leads outside the workflow's directory %(a symlink to "
      .. "/etc/passwd%)", err)
  end)

  it("follow a symlink that stays inside it", function()
    local path = aeflow.write(dir, "wf2.lua", 'local x = read_lines "alias.txt"\n'
      .. 'return workflow "w" { description = table.concat(x, ","), step "a" { delete_limits = true } }')
    local p = assert(dsl.load_file(path))
    assert.equals("a,b", p.description)
  end)
end)

describe("the env helper and the caller's credentials", function()
  for _, name in ipairs { "AE_TOKEN", "AE_API_KEY", "AE_PASSWORD" } do
    it("refuses " .. name .. ", with file:line", function()
      local _, err = dsl.load_string('local k = env("' .. name .. '", "d")' .. OK, "x.lua")
      assert.equals("x.lua:1: env: " .. name .. " is the caller's credential; a workflow file cannot read it", err)
    end)
  end

  it("aeflow plan cannot be made to print the API key", function()
    local dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-sbe-"))
    aeflow.write(dir, "k.lua", 'return workflow "w" { description = env("AE_API_KEY", "none"),'
      .. ' step "a" { delete_limits = true } }')
    local code, out, err = aeflow.run({ "plan", "k.lua" }, { dir = dir,
      env = aeflow.env(nil, { "AE_API_KEY=planted-key-0123456789" }) })
    os.execute("rm -rf '" .. dir .. "'")
    assert.equals(2, code)
    assert.is_nil((out .. err):find("planted-key", 1, true))
    assert.matches("k.lua:1: env: AE_API_KEY is the caller's credential", err, 1, true)
  end)
end)

describe("aeflow on hostile files, past what the hook can stop", function()
  local dir
  setup(function() dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-sbh-")) end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("a backtracking pattern inside string.find: exit 2 with a message, not a hang", function()
    aeflow.write(dir, "pat.lua", "string.find(('a'):rep(40), ('a*'):rep(50) .. 'b')" .. OK)
    local t0 = core.monotime()
    local code, out, err = aeflow.run({ "validate", "pat.lua" }, { dir = dir, timeout = 60 })
    assert.equals(2, code, out)
    assert.equals("aeflow: pat.lua: took more than 5 s to load (stuck in one library call, such as a string pattern"
      .. " that backtracks)\n", err)
    assert.is_true(core.monotime() - t0 < 50)
  end)

  it("a FIFO, /dev/zero or a file over 16 MB: exit 2 with one line, not a hang or all the memory", function()
    os.execute("mkfifo '" .. dir .. "/fifo.lua'")
    local f = assert(io.open(dir .. "/big.lua", "wb"))
    f:write(("-- padding\n"):rep(math.ceil(17 * 2 ^ 20 / 11)))
    f:close()
    local cases = {
      { "fifo.lua", "aeflow: fifo.lua: not a workflow file (a FIFO, not a regular file)\n" },
      { "/dev/zero", "aeflow: /dev/zero: not a workflow file (a character device, not a regular file)\n" },
      { "big.lua", "aeflow: big.lua: larger than 16 MB (not a workflow file?)\n" },
    }
    for _, c in ipairs(cases) do
      local code, _, err = aeflow.run({ "validate", c[1] }, { dir = dir, timeout = 30 })
      assert.equals(2, code, err)
      assert.equals(c[2], err)
    end
    local mcode, _, merr = aeflow.run({ "validate", "nothere.lua" }, { dir = dir })
    assert.equals(2, mcode, merr)
    assert.equals("aeflow: nothere.lua: No such file or directory\n", merr)
    aeflow.write(dir, "rf.lua", 'local x = read_json "fifo.lua"' .. OK)
    local code, _, err = aeflow.run({ "validate", "rf.lua" }, { dir = dir, timeout = 30 })
    assert.equals(2, code, err)
    assert.equals("aeflow: rf.lua:1: read_json: fifo.lua is not a regular file (a fifo)\n", err)
  end)

  it("plan shows a file's escape sequences as text (description, step description, params)", function()
    aeflow.write(dir, "esc.lua", 'return workflow "w" { description = "\\27]0;owned\\7",'
      .. ' params = { p = "\\27[31mred" },'
      .. ' step "a" { description = "\\27[2J", delete_limits = true } }')
    local code, out, err = aeflow.run({ "plan", "esc.lua" }, { dir = dir })
    assert.equals(0, code, err)
    assert.is_nil(out:find("\27", 1, true))
    assert.is_nil(out:find("\7", 1, true))
    assert.matches("\\x1b]0;owned\\x07", out, 1, true)
    assert.matches('p = "\\27[31mred"', out, 1, true)
    assert.matches("\\x1b[2J", out, 1, true)
  end)
end)
