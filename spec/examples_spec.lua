-- Every example in workflows/ runs against a real local engine, from a
-- directory other than the repository (paths resolve from the file).
local engine = require("helpers.engine")
local aeflow = require("helpers.aeflow")
local core = require("analytics_engine.core")
local launcher = require("analytics_engine.engine.launcher")

local ROOT = core.realpath(".")

describe("examples in workflows/", function()
  local e, dir
  before_each(function()
    e = engine.start()
    dir = assert(launcher.temp_dir("aeflow-ex-"))
  end)
  after_each(function()
    engine.stop(e)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function run(file, ...)
    local args = { "run", ROOT .. "/workflows/" .. file, "--poll-interval", "0.2", ... }
    return aeflow.run(args, { dir = dir, engine = e, timeout = 180 })
  end

  local function states()
    local n = {}
    for _, a in ipairs(aeflow.applications(e)) do n[a.state] = (n[a.state] or 0) + 1 end
    return n
  end

  it("seed_samples.lua runs the seed's three sample payloads", function()
    local code, out = run("seed_samples.lua")
    assert.equals(0, code, out)
    assert.same({ FINISHED = 3 }, states())
    for _, a in ipairs(aeflow.applications(e)) do
      local status, _, _, log = engine.request(e, "GET", "/engine/v1/applications/" .. a.application_id .. "/logs")
      assert.equals(200, status)
      assert.is_true(#log > 0, "no output from " .. a.spark_application_name)
    end
  end)

  it("fanout.lua runs 50 applications, 10 at a time", function()
    local code, out = run("fanout.lua", "--param", "seconds=0.2")
    assert.equals(0, code, out)
    assert.same({ FINISHED = 50 }, states())
  end)

  it("failing.lua fails its second step and still runs finally", function()
    local code, out = run("failing.lua", "--state", "s.json")
    assert.equals(1, code)
    assert.matches("second%s+failed", out)
    assert.matches("third%s+skipped", out)
    assert.matches("cleanup %(finally%)%s+succeeded", out)
    assert.same({ FINISHED = 2, FAILED = 1 }, states())
  end)

  it("nightly.lua runs DESIGN.md's pipeline", function()
    local code, out = run("nightly.lua", "--param", "date=2026-11-24")
    assert.equals(0, code, out)
    assert.is_nil(states().FAILED)
  end)

  it("quickstart.lua runs as a plain script with aeflow exec", function()
    local code, out = aeflow.run({ "exec", ROOT .. "/workflows/quickstart.lua" }, { dir = dir, engine = e })
    assert.equals(0, code, out)
    assert.matches("FINISHED %(return code 0%)", out)
  end)

  it("every example validates", function()
    for _, f in ipairs { "seed_samples.lua", "fanout.lua", "failing.lua", "nightly.lua" } do
      local code, out = aeflow.run({ "validate", ROOT .. "/workflows/" .. f }, { dir = dir })
      assert.equals(0, code, f)
      assert.matches("is valid", out)
    end
  end)
end)
