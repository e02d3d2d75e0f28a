-- aeflow's one-off verbs against a real local engine.
local util = require("analytics_engine.util")
local engine = require("helpers.engine")
local aeflow = require("helpers.aeflow")

describe("aeflow call", function()
  local e
  lazy_setup(function() e = engine.start() end)
  lazy_teardown(function() engine.stop(e) end)

  local function call(...)
    return aeflow.run({ "call", ... }, { engine = e })
  end

  it("calls an operation without arguments and prints its JSON", function()
    local code, out = call("get_instance_default_runtime")
    assert.equals(0, code)
    assert.equals("3.4", util.json_decode(out).spark_version)
  end)

  it("sends a JSON body", function()
    local code, out = call("replace_instance_default_runtime", '{"spark_version":"3.5"}')
    assert.equals(0, code)
    assert.equals("3.5", util.json_decode(out).spark_version)
  end)

  it("passes ids before the body", function()
    local code, out = call("get_application", "e64c907a-e82f-46fd-addc-ccfafbd28b09")
    assert.equals(1, code)
    assert.equals("", out)
  end)

  -- Usage errors: exit 2 and a message naming what was wrong.
  for _, case in ipairs {
    { "a malformed id, before anything is sent", { "get_application", "not-a-uuid" },
      "application_id 'not%-a%-uuid' is not a valid id" },
    { "an unknown operation", { "get_everything" }, "unknown operation 'get_everything'" },
    { "a body that is not JSON", { "replace_instance_default_runtime", "{spark" }, "not valid JSON" },
  } do
    it("exits 2 for " .. case[1], function()
      local code, _, err = call(table.unpack(case[2]))
      assert.equals(2, code)
      assert.matches(case[3], err)
    end)
  end
end)

describe("aeflow --version and operations", function()
  it("prints the version", function()
    local code, out = aeflow.run { "--version" }
    assert.equals(0, code)
    assert.matches("^aeflow %d+%.%d+%.%d+", out)
  end)

  it("lists every operation with its method and path", function()
    local code, out = aeflow.run { "operations" }
    assert.equals(0, code)
    local n = 0
    for _ in out:gmatch("\n") do n = n + 1 end
    assert.equals(#require("analytics_engine.api").operations, n)
    assert.matches("create_application%s+POST%s+/v4/analytics_engines/{instance_id}/spark_applications", out)
  end)
end)
