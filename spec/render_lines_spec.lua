-- The lines view (logs, CI): a "still running" line after a quiet spell, so
-- a long wait does not look frozen; nothing extra while events flow.
local render = require("analytics_engine.workflow.render")

local function sink()
  local buf = {}
  return { write = function(self, ...) for _, s in ipairs { ... } do buf[#buf + 1] = s end return self end,
           flush = function() end, text = function() return table.concat(buf) end }
end

describe("render.lines", function()
  it("says what is still running after HEARTBEAT quiet seconds", function()
    local out, t = sink(), 0
    local emit, tick = render.lines(out, { now = function() return t end })
    emit { event = "step_start", step = "long", action = "submit", time = 0 }
    emit { event = "step_start", step = "fan", action = "submit", items = 4, time = 0 }
    emit { event = "application_submitted", step = "long", application_id = "a", attempt = 1, time = 0 }
    emit { event = "application", step = "long", application_id = "a", state = "RUNNING", time = 0 }
    for i, id in ipairs { "b", "c" } do
      emit { event = "application_submitted", step = "fan", application_id = id, attempt = 1, time = 0, item = i }
    end
    emit { event = "application", step = "fan", application_id = "b", state = "FINISHED", time = 0 }
    local before = out.text()
    t = render.HEARTBEAT - 1
    tick()
    assert.equals(before, out.text())
    t = render.HEARTBEAT + 12
    tick()
    local added = out.text():sub(#before + 1)
    assert.matches("^%d%d:%d%d:%d%d still running: long 42s %(running%); fan 42s %(1/4 finished · 3 queued%)\n$",
      added)
    tick()
    assert.equals(#before + #added, #out.text())
  end)
end)
