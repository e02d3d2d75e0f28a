-- End to end: fault injection (--faults RATE --fault-kinds K) and the
-- engine's stats, which let specs count attempts.
local core = require("analytics_engine.core")
local helper = require("helpers.engine")

local function stats(e)
  local status, b = helper.request(e, "GET", "/engine/v1/stats")
  assert.equal(200, status)
  return b
end

describe("fault injection", function()
  describe("--faults 1 --fault-kinds 503", function()
    local e
    lazy_setup(function() e = helper.start({ "--faults", "1", "--fault-kinds", "503" }) end)
    lazy_teardown(function()
      helper.stop(e)
      helper.cleanup(e)
    end)

    it("answers every /v4 call 503 in the service's error shape", function()
      for _ = 1, 3 do
        local status, b, h = helper.request(e, "GET", helper.v4(e, ""))
        assert.equal(503, status)
        assert.equal(503, b.status_code)
        assert.equal(b.trace, h["x-global-transaction-id"])
      end
    end)

    it("does not fault /engine endpoints, and stats count requests and faults", function()
      local before = stats(e)
      for _ = 1, 4 do helper.request(e, "GET", helper.v4(e, "/default_runtime")) end
      local after = stats(e)
      assert.equal((before.requests.get_instance_default_runtime or 0) + 4,
        after.requests.get_instance_default_runtime)
      assert.equal((before.faults["503"] or 0) + 4, after.faults["503"])
    end)

    it("does not fault the token exchange", function()
      local status = helper.request(e, "POST", "/icp4d-api/v1/authorize",
        { username = "admin", api_key = e.api_key }, { Authorization = false })
      assert.equal(200, status)
    end)

    it("a faulted submit creates nothing", function()
      helper.request(e, "POST", helper.v4(e, "/spark_applications"), { application_details = { application = "x.sh" } })
      assert.equal(0, stats(e).applications_created)
    end)
  end)

  describe("--faults 1 --fault-kinds 429", function()
    local e
    lazy_setup(function() e = helper.start({ "--faults", "1", "--fault-kinds", "429" }) end)
    lazy_teardown(function()
      helper.stop(e)
      helper.cleanup(e)
    end)

    it("answers 429 with Retry-After: 1", function()
      local status, _, h = helper.request(e, "GET", helper.v4(e, ""))
      assert.equal(429, status)
      assert.equal("1", h["retry-after"])
    end)
  end)

  describe("--faults 1 --fault-kinds reset", function()
    local e
    lazy_setup(function() e = helper.start({ "--faults", "1", "--fault-kinds", "reset" }) end)
    lazy_teardown(function()
      helper.stop(e)
      helper.cleanup(e)
    end)

    it("drops the connection without an answer", function()
      local status, err = helper.request(e, "GET", helper.v4(e, ""))
      assert.is_nil(status)
      assert.is_table(err)
      assert.equal(1, stats(e).faults.reset)
    end)
  end)

  describe("--faults 1 --fault-kinds reset-after", function()
    local e
    lazy_setup(function() e = helper.start({ "--faults", "1", "--fault-kinds", "reset-after" }) end)
    lazy_teardown(function()
      helper.stop(e)
      helper.cleanup(e)
    end)

    it("runs the handler (the application IS created), then drops the connection", function()
      local status = helper.request(e, "POST", helper.v4(e, "/spark_applications"),
        { application_details = { application = "x.sh" } })
      assert.is_nil(status)
      local s = stats(e)
      assert.equal(1, s.applications_created)
      assert.equal(1, s.faults["reset-after"])
    end)
  end)

  describe("--faults 1 --fault-kinds delay", function()
    local e
    lazy_setup(function() e = helper.start({ "--faults", "1", "--fault-kinds", "delay" }) end)
    lazy_teardown(function()
      helper.stop(e)
      helper.cleanup(e)
    end)

    it("answers normally after a 2 s stall", function()
      local t0 = core.monotime()
      local status, b = helper.request(e, "GET", helper.v4(e, "/default_runtime"))
      assert.equal(200, status)
      assert.equal("3.4", b.spark_version)
      assert.is_true(core.monotime() - t0 >= 1.9)
    end)

    it("does not stall other requests meanwhile", function()
      local t0 = core.monotime()
      local s = stats(e)
      assert.is_true(core.monotime() - t0 < 1)
      assert.is_table(s.requests)
    end)
  end)
  describe("--fault-ops", function()
    it("injects faults only into the named operations", function()
      local e = helper.start({ "--faults", "1", "--fault-kinds", "503", "--fault-ops", "create_application" })
      finally(function() helper.stop(e); helper.cleanup(e) end)
      assert.equal(200, (helper.request(e, "GET", helper.v4(e, "/default_runtime"))))
      local status = helper.request(e, "POST", helper.v4(e, "/spark_applications"),
        { application_details = { application = "/bin/true" } })
      assert.equal(503, status)
    end)

    it("refuses an unknown operation name", function()
      local code, _, err = require("helpers.aeflow").run({ "serve", "--fault-ops", "create_app" })
      assert.equal(2, code)
      assert.matches("unknown operation 'create_app'", err)
    end)
  end)
end)
