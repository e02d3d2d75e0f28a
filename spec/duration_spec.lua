-- The one duration grammar (analytics_engine.duration) and the places that
-- read durations through it: step options, the engine's time limits, plan text.
local duration = require("analytics_engine.duration")
local schema = require("analytics_engine.workflow.schema")
local plan = require("analytics_engine.workflow.plan")
local apps = require("analytics_engine.engine.apps")

describe("durations", function()
  it("parses numbers, units and their sums", function()
    assert.equals(90, duration.parse("90"))
    assert.equals(90, duration.parse("90s"))
    assert.equals(900, duration.parse(" 15 m "))
    assert.equals(7200, duration.parse("2h"))
    assert.equals(86400, duration.parse("1d"))
    assert.equals(5400, duration.parse("1h30m"))
    assert.equals(5400, duration.parse("1.5h"))
    assert.equals(2.5, duration.parse(2.5))
  end)

  it("answers nil for what is not a duration", function()
    for _, v in ipairs { "", "abc", "5x", "1h30", "h", "-5m", {}, true } do
      assert.is_nil(duration.parse(v), tostring(v))
    end
  end)

  it("formats as people write them, and reads back what it wrote", function()
    for s, text in pairs { [90] = "1m30s", [5400] = "1h30m", [86400] = "1d", [0] = "0s", [2.5] = "2.5s" } do
      assert.equals(text, duration.format(s))
      assert.equals(s, duration.parse(text))
    end
  end)

  it("is the grammar of step options, the engine's time limits and plan text", function()
    assert.equals(duration.parse, schema.parse_duration)
    assert.equals(duration.format, plan.format_duration)
    assert.equals(5400, apps.seconds("1h30m"))
    assert.equals(86400, apps.seconds("1d"))
    assert.is_nil(apps.seconds("0"))
    assert.is_nil(apps.seconds("0s"))
    assert.is_nil(apps.seconds("soon"))
  end)
end)
