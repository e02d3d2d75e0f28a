-- workflow/logtail: the end of a failed application's stderr, or a pointer
-- (reading it from a real local engine: spec/cli_conventions_spec.lua).
local logtail = require("analytics_engine.workflow.logtail")

describe("logtail", function()
  it("keeps the last lines, without the trailing blank ones", function()
    local lines = {}
    for i = 1, 30 do lines[i] = "line " .. i end
    local got = logtail.last_lines(table.concat(lines, "\n") .. "\n\n\n", 3)
    assert.same({ "line 28", "line 29", "line 30" }, got)
    assert.same({}, logtail.last_lines("", 3))
  end)

  it("masks credentials before they are stored", function()
    local got = logtail.last_lines("Authorization: Bearer abcdefghijklmnop.qrstuvwxyz\n", 5)
    assert.is_nil(got[1]:find("abcdefghijklmnop", 1, true))
  end)

  it("points to the instance's logs where the service has no log endpoint", function()
    local tail = logtail.fetch(nil, "id", false)
    assert.matches("no log endpoint", tail.pointer, 1, true)
  end)
end)
