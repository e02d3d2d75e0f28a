-- States as the engine reports them: an application submitted while the
-- poller's interval has grown is still seen RUNNING (polled about one
-- interval after it was submitted, not after the grown sleep), and a
-- `wait = false` application's state is followed and reported.
local util = require("analytics_engine.util")
local aeflow = require("helpers.aeflow")
local launcher = require("analytics_engine.engine.launcher")

describe("application states in a run", function()
  local dir
  lazy_setup(function()
    dir = assert(launcher.temp_dir("aeflow-states-"))
    aeflow.write(dir, "sleep.sh", 'sleep "$1"\n')
    aeflow.write(dir, "wf.lua", [[
return workflow "states" {
  step "first" { submit = { application = "sleep.sh", arguments = { "12" } } },
  -- 4 s of other requests: nothing the poller sees changes, its interval grows.
  step "gap" { run = function(ctx)
    local t = os.time()
    while os.time() - t < 4 do ctx.client:get_instance() end
  end },
  step "bg" { after = "gap", wait = false, submit = { application = "sleep.sh", arguments = { "1" } } },
  step "second" { after = "gap", submit = { application = "sleep.sh", arguments = { "3" } } },
}
]])
  end)
  lazy_teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("sees what the engine says, also of wait = false steps", function()
    -- The interval grows towards 8 s while `first` runs unchanged; `second` lasts 3 s.
    local code, out, err = aeflow.run({ "run", "wf.lua", "--json", "--poll-interval", "0.5",
                                        "--max-poll-interval", "8" }, { dir = dir, env = aeflow.env(nil),
                                        timeout = 120 })
    assert.equals(0, code, err)
    local app_step, states = {}, {}
    for line in out:gmatch("[^\n]+") do
      local ev = util.json_decode(line)
      if ev.event == "application_submitted" then app_step[ev.application_id] = ev.step end
      if ev.event == "application" then
        local s = app_step[ev.application_id]
        states[s] = states[s] or {}
        table.insert(states[s], ev.state)
      end
    end
    assert.same({ "RUNNING", "FINISHED" }, states.second)
    assert.same({ "RUNNING", "FINISHED" }, states.first)
    assert.equals("FINISHED", states.bg and states.bg[#states.bg], "bg's state was not followed")
    local _, listed = aeflow.run({ "runs", "--json" }, { dir = dir, env = aeflow.env(nil) })
    local doc = util.read_json_file(dir .. "/" .. util.json_decode(listed)[1].dir .. "/state.json")
    local att = doc.steps.bg.items["1"].attempts[1]
    assert.equals("FINISHED", att.states[#att.states].state)
  end)
end)
