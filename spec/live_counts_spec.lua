-- The live view keeps each step's counts between frames (the clock redraws
-- 4 times a second; counting walks every application) and counts again
-- after any event about applications.
local live = require("analytics_engine.workflow.live")

local function sink()
  local parts = {}
  return { write = function(_, s) parts[#parts + 1] = s end, flush = function() end,
           last = function() return parts[#parts] or "" end }
end

describe("live view counts", function()
  it("are counted again after every application event, and stay right across ticks", function()
    local t = 100
    local out = sink()
    local emit, tick = live.new(out, { now = function() return t end, width = 200,
                                       plan = { order = { "fan" }, finally_order = {} } })
    emit { event = "run_start", run_id = "r1", workflow = "w" }
    emit { event = "step_start", step = "fan", items = 3 }
    for i = 1, 3 do
      emit { event = "application_submitted", step = "fan", application_id = "app-" .. i, state = "SUBMITTED" }
    end
    t = t + 1
    tick()
    assert.matches("0/3 finished · 3 queued", out.last(), 1, true)
    emit { event = "application", application_id = "app-1", state = "RUNNING" }
    emit { event = "application", application_id = "app-2", state = "FINISHED" }
    t = t + 1
    tick()
    assert.matches("1/3 finished · 1 running · 1 queued", out.last(), 1, true)
    t = t + 1
    tick()
    assert.matches("1/3 finished · 1 running · 1 queued", out.last(), 1, true)
    emit { event = "application", application_id = "app-3", state = "FAILED" }
    t = t + 1
    tick()
    assert.matches("1/3 finished · 1 failed · 1 running", out.last(), 1, true)
  end)
end)
