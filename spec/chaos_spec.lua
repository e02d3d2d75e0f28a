-- Chaos: 200 applications through the real aeflow while the local engine
-- injects 20% faults of every kind (429 with Retry-After, 500, 503, resets
-- before and after acting, 2-second stalls) and the runner is killed with
-- SIGKILL three times and resumed. The promise under test: the run completes
-- and every item's application was created exactly once.
local core = require("analytics_engine.core")
local state = require("analytics_engine.workflow.state")
local engine = require("helpers.engine")
local aeflow = require("helpers.aeflow")

local ITEMS = 200

-- Applications the state file knows were accepted (the runner saves the id
-- after each 202, in its journal: state.read replays it).
local function submitted(path)
  local doc = state.read(path)
  local n = 0
  if type(doc) ~= "table" then return 0 end
  for _, rec in pairs(doc.steps or {}) do
    for _, it in pairs(rec.items or {}) do
      for _, att in ipairs(it.attempts or {}) do
        if att.application_id then n = n + 1 end
      end
    end
  end
  return n
end

describe("chaos: 200 applications, 20% faults, three SIGKILLs", function()
  local e, dir, apps, final_code, final_out, kills

  setup(function()
    e = engine.start { "--faults", "0.2", "--fault-kinds", "429,500,503,reset,reset-after,delay",
                       "--fault-seed", "20261124" }
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-chaos-"))
    aeflow.write(dir, "ok.sh", "exit 0\n")
    aeflow.write(dir, "wf.lua", ([[
local items = {}
for i = 1, %d do items[i] = i end
return workflow "chaos" {
  step "many" { for_each = items, max_parallel = 40, submit = { application = "ok.sh" },
                retries = 8, retry_delay = 0.05 },
}]]):format(ITEMS))
    -- The engine stalls some POSTs for 2 s: a lost answer is looked for 10 s from its intent. The grace
    -- must cover the stall plus a resumed runner's start on a loaded machine (under ASan with the other
    -- core busy, 4 s once let a resume re-send a POST the engine still held: a true duplicate by the
    -- grace's own rule, not a runner fault).
    local args = { "run", "wf.lua", "--state", "s.json", "--poll-interval", "0.2", "--submit-grace", "10",
                   "--quiet" }
    local resume = { "run", "wf.lua", "--state", "s.json", "--resume", "--poll-interval", "0.2",
                     "--submit-grace", "10", "--quiet" }
    kills = 0
    -- Kill when the state file shows 40, 90 and 140 accepted applications:
    -- each time with submissions, polls and retries in flight.
    for i, threshold in ipairs { 40, 90, 140 } do
      local h = aeflow.spawn(i == 1 and args or resume, { dir = dir, engine = e })
      local reached = engine.eventually(function()
        local how = core.wait(h.pid)
        if how then error("aeflow ended before it was killed: " .. aeflow.read(h.err)) end
        return submitted(dir .. "/s.json") >= threshold
      end, 120)
      assert(reached, "the run did not reach " .. threshold .. " submissions; stderr: " .. aeflow.read(h.err))
      core.kill(h.pid, "KILL")
      local code = aeflow.wait(h, 30)
      assert(code == 128 + 9, "aeflow was not killed by SIGKILL: " .. tostring(code))
      kills = kills + 1
    end
    local out, err
    final_code, out, err = aeflow.run(resume, { dir = dir, engine = e, timeout = 240 })
    final_out = out .. err
    apps = aeflow.applications(e)
  end)

  teardown(function()
    engine.stop(e)
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  it("killed the runner three times with applications in flight", function()
    assert.equals(3, kills)
  end)

  it("completes on the last resume", function()
    assert.equals(0, final_code, final_out)
  end)

  it("has every item's application created exactly once", function()
    local per_item, unknown = {}, {}
    for _, a in ipairs(apps) do
      local item = tostring(a.spark_application_name):match("#aeflow%-.+%-many%-(%d+)%-%d+$")
      if item then per_item[item] = (per_item[item] or 0) + 1 else unknown[#unknown + 1] = a.spark_application_name end
    end
    assert.same({}, unknown)
    local twice = {}
    for i = 1, ITEMS do
      local n = per_item[tostring(i)] or 0
      if n ~= 1 then twice[#twice + 1] = ("item %d: %d applications"):format(i, n) end
    end
    assert.same({}, twice)
    assert.equals(ITEMS, #apps)
    local _, stats = engine.request(e, "GET", "/engine/v1/stats")
    assert.equals(ITEMS, stats.applications_created)
  end)

  it("leaves every application FINISHED", function()
    local states = {}
    for _, a in ipairs(apps) do states[a.state] = (states[a.state] or 0) + 1 end
    assert.same({ FINISHED = ITEMS }, states)
  end)

  it("actually injected faults of every kind", function()
    local _, stats = engine.request(e, "GET", "/engine/v1/stats")
    local faults = stats and stats.faults
    assert.is_table(faults, "no fault counters in /engine/v1/stats")
    for _, kind in ipairs { "429", "500", "503", "reset", "reset-after", "delay" } do
      assert.is_true((tonumber(faults[kind]) or 0) > 0, "no '" .. kind .. "' fault was injected")
    end
  end)
end)
