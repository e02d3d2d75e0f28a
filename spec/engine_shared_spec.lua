-- One local engine shared by commands run at the same time from one directory:
-- the command that started it must not stop it under another that uses it, and
-- the last one out stops it (also when its starter was killed with -9).
local core = require("analytics_engine.core")
local aeflow = require("helpers.aeflow")
local launcher = require("analytics_engine.engine.launcher")

local function wf(name, seconds)
  return ([[
return workflow "%s" {
  step "s" { submit = { application = "sleep.sh", arguments = { "%s" } } },
}
]]):format(name, seconds)
end

-- Wait (bounded) until a local engine serves dir's .aeflow/engine.
local function engine_up(dir)
  local deadline = core.monotime() + 30
  while core.monotime() < deadline do
    local e = launcher.find_running(dir .. "/.aeflow/engine")
    if e then return e end
    core.sleep(0.05)
  end
  error("no engine came up")
end

describe("a local engine shared by two commands", function()
  local dir, spawned
  before_each(function()
    dir = assert(launcher.temp_dir("aeflow-shared-"))
    aeflow.write(dir, "sleep.sh", '#!/bin/sh\nsleep "$1"\n')
    core.chmod(dir .. "/sleep.sh", 493)
    aeflow.write(dir, "short.lua", wf("short", "1"))
    aeflow.write(dir, "long.lua", wf("long", "4"))
    spawned = {}
  end)
  after_each(function()
    for _, h in ipairs(spawned) do
      if core.kill(h.pid, 0) then core.kill(h.pid, "KILL") end
      core.wait(h.pid)
    end
    local e = launcher.find_running(dir .. "/.aeflow/engine")
    if e then e:stop() end
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("is not stopped by the command that started it while another still uses it", function()
    local a = aeflow.spawn({ "run", "short.lua", "--poll-interval", "0.1" }, { dir = dir, env = aeflow.env() })
    local e = engine_up(dir)
    local b = aeflow.spawn({ "run", "long.lua", "--poll-interval", "0.1" },
      { dir = dir, env = aeflow.env() })
    spawned = { a, b }
    local code_a, _, err_a = aeflow.wait(a, 60)
    assert.equals(0, code_a, err_a)
    -- a is done; b's application is still running on the engine a started.
    assert.is_table(launcher.find_running(dir .. "/.aeflow/engine"), "a stopped the engine b uses")
    local code_b, _, err_b = aeflow.wait(b, 60)
    assert.equals(0, code_b, err_b)
    assert.matches("using the local engine at " .. e.url, err_b, 1, true)
    -- The last one out stopped it.
    assert.is_nil(launcher.find_running(dir .. "/.aeflow/engine"))
  end)

  it("is stopped by the next command when the one that started it was killed", function()
    local a = aeflow.spawn({ "run", "long.lua", "--poll-interval", "0.1" }, { dir = dir, env = aeflow.env() })
    spawned = { a }
    local e = engine_up(dir)
    -- Killed once it has marked the engine as started for it.
    local deadline = core.monotime() + 30
    while tonumber(aeflow.read(dir .. "/.aeflow/engine/engine.temporary")) ~= e.pid and core.monotime() < deadline do
      core.sleep(0.05)
    end
    core.kill(a.pid, "KILL")
    core.wait(a.pid)
    assert.is_table(launcher.find_running(dir .. "/.aeflow/engine"))
    local code, _, err = aeflow.run({ "call", "get_instance_default_runtime" }, { dir = dir, env = aeflow.env() })
    assert.equals(0, code, err)
    assert.is_nil(launcher.find_running(dir .. "/.aeflow/engine"))
  end)

  it("leaves an engine started with serve --background running", function()
    local code, _, err = aeflow.run({ "serve", "--background" }, { dir = dir, env = aeflow.env() })
    assert.equals(0, code, err)
    code = aeflow.run({ "call", "get_instance_default_runtime" }, { dir = dir, env = aeflow.env() })
    assert.equals(0, code)
    assert.is_table(launcher.find_running(dir .. "/.aeflow/engine"))
  end)
end)
