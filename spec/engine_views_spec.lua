-- The engine's answers for applications (engine/views.lua): the cached
-- get_application_state text follows every change of the record it shows.
local views = require("analytics_engine.engine.views")
local util = require("analytics_engine.util")

describe("engine views", function()
  local function rec()
    return { id = "0b6f1c1e-8f4e-4d5b-9a3c-2f1e0d9c8b7a", state = "RUNNING", start_ts = 1700000000.5,
             spark_application_id = "app-1", state_details = {} }
  end

  it("status_json is status() encoded, with '/' unescaped", function()
    local r = rec()
    r.state_details = { { type = "info", code = "x", message = "a/b" } }
    local json = assert(views.status_json(r))
    assert.same(views.status(r), util.json_decode(json))
    assert.truthy(json:find("a/b", 1, true))
  end)

  it("answers from the cache while the record is unchanged, and anew after any shown field changed", function()
    local r = rec()
    local first = views.status_json(r)
    assert.equal(first, views.status_json(r))
    local changes = {
      function() r.state = "FINISHED" end,
      function() r.finish_ts = 1700000009.25 end,
      function() r.return_code = "0" end,
      function() r.spark_application_id = "app-2" end,
      function() r.state_details[#r.state_details + 1] = { type = "info", code = "c", message = "m" } end,
    }
    for _, change in ipairs(changes) do
      local before = views.status_json(r)
      change()
      local after = util.json_decode(views.status_json(r))
      assert.same(views.status(r), after)
      assert.are_not.equal(before, views.status_json(r))
    end
  end)
end)
