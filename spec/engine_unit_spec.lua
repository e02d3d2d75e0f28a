-- Unit specs for the engine's pure parts: routing by api.lua's rows, fault
-- decisions, option parsing, validation, resource arithmetic, run plans.
local api = require("analytics_engine.api")
local util = require("analytics_engine.util")
local router = require("analytics_engine.engine.router")
local faults = require("analytics_engine.engine.faults")
local apps = require("analytics_engine.engine.apps")
local runner = require("analytics_engine.engine.runner")
local main = require("analytics_engine.cli.serve") -- the CLI parses the engine's options

local IID = "e64c907a-e82f-46fd-addc-ccfafbd28b09"
local AID = "ff48cc19-0e7e-4627-aac6-0b4ad080397b"

describe("engine.router", function()
  local r = router.new()

  it("routes every api.lua row to itself", function()
    for _, op in ipairs(api.operations) do
      local values = { instance_id = IID }
      for _, id in ipairs(op.ids) do values[id] = AID end
      local got, params = r:match(op.method, api.expand(op, values))
      assert.equal(op, got, op.name)
      assert.equal(IID, params.instance_id)
      for _, id in ipairs(op.ids) do assert.equal(AID, params[id]) end
    end
  end)

  it("routes the token exchange", function()
    assert.equal(api.authorize, (r:match("POST", "/icp4d-api/v1/authorize")))
  end)

  it("answers 405 with the allowed methods for a known path", function()
    local op, status, allowed = r:match("POST", "/v4/analytics_engines/" .. IID .. "/default_configs")
    assert.is_nil(op)
    assert.equal(405, status)
    assert.equal("GET, HEAD, PATCH, PUT", allowed)
  end)

  it("routes HEAD as GET, but not to a WebSocket door", function()
    assert.equal(api.by_name.get_instance_default_configs,
      (r:match("HEAD", "/v4/analytics_engines/" .. IID .. "/default_configs")))
    local op, status = r:match("HEAD", "/v4/analytics_engines/" .. IID .. "/spark_clusters/" .. IID .. "/connect")
    assert.is_nil(op)
    assert.equal(405, status)
  end)

  it("answers 404 for an unknown path", function()
    local op, status = r:match("GET", "/v4/analytics_engines/" .. IID .. "/nope")
    assert.is_nil(op)
    assert.equal(404, status)
  end)

  it("ignores one trailing slash", function()
    assert.equal("get_instance", (r:match("GET", "/v4/analytics_engines/" .. IID .. "/")).name)
  end)

  it("remembers routed paths, answers other methods on them as before, and stays bounded", function()
    local rr = router.new()
    local path = "/v4/analytics_engines/" .. IID .. "/spark_applications/" .. AID .. "/status"
    local op1, p1 = rr:match("GET", path)
    local op2, p2 = rr:match("GET", path)
    assert.equal("get_application_state", op1.name)
    assert.equal(op1, op2)
    assert.equal(p1, p2) -- the cached match: the same params table
    assert.same({ instance_id = IID, application_id = AID }, p2)
    assert.equal(1, rr.cached)
    -- the cache is keyed by path; another method on it is matched afresh
    assert.equal(op1, (rr:match("HEAD", path)))
    local op, status, allowed = rr:match("DELETE", path)
    assert.is_nil(op)
    assert.equal(405, status)
    assert.equal("GET, HEAD", allowed)
    local nop, nstatus = rr:match("GET", path .. "/x")
    assert.is_nil(nop)
    assert.equal(404, nstatus)
    assert.equal(1, rr.cached) -- 404s and 405s are not kept
    local size = router.CACHE_SIZE
    router.CACHE_SIZE = 8
    finally(function() router.CACHE_SIZE = size end)
    for i = 1, 20 do
      local id = ("%08d-0000-4000-8000-000000000000"):format(i)
      local got, params = rr:match("GET", "/v4/analytics_engines/" .. IID .. "/spark_applications/" .. id)
      assert.equal("get_application", got.name)
      assert.equal(id, params.application_id)
      assert.is_true(rr.cached <= 8)
    end
  end)
end)

describe("engine.faults", function()
  it("is deterministic for a seed", function()
    local a = faults.new{ rate = 0.5, seed = 7 }
    local b = faults.new{ rate = 0.5, seed = 7 }
    for _ = 1, 50 do assert.equal(a:decide(), b:decide()) end
  end)

  it("injects about RATE of the time", function()
    local f = faults.new{ rate = 0.3, kinds = { "500" }, seed = 1 }
    local n = 0
    for _ = 1, 2000 do if f:decide() then n = n + 1 end end
    assert.is_true(n > 450 and n < 750, tostring(n))
  end)

  it("never injects at rate 0 and always at rate 1", function()
    local z, one = faults.new{ rate = 0 }, faults.new{ rate = 1, kinds = { "503" } }
    for _ = 1, 20 do
      assert.is_nil(z:decide())
      assert.equal("503", one:decide())
    end
  end)

  it("parses kinds and rejects unknown ones", function()
    assert.same({ "429", "reset" }, faults.parse_kinds("429,reset"))
    local k, err = faults.parse_kinds("429,boom")
    assert.is_nil(k)
    assert.truthy(err:find("boom", 1, true))
  end)
end)

describe("aeflow serve's option parsing", function()
  it("parses options in both spellings", function()
    local o = main.parse({ "--port", "8080", "--data=/tmp/x", "--faults", "0.5", "--quiet" })
    assert.equal(8080, o.port)
    assert.equal("/tmp/x", o.data)
    assert.equal(0.5, o.faults)
    assert.is_true(o.quiet)
  end)

  it("rejects an unknown option", function()
    local o, err = main.parse({ "--bogus" })
    assert.is_nil(o)
    assert.truthy(err:find("--bogus", 1, true))
  end)

  it("rejects a bad number", function()
    assert.is_nil((main.parse({ "--port", "x" })))
    assert.is_nil((main.parse({ "--faults", "2" })))
  end)

  it("aeflow serve exits 2 with a one-line message on a usage error", function()
    local bin = require("helpers.engine").bin()
    local p = assert(io.popen(bin .. " serve --nope 2>&1; echo \"rc=$?\""))
    local out = p:read("a")
    p:close()
    assert.truthy(out:find("rc=2", 1, true))
    assert.truthy(out:find("^[^\n]*%-%-nope[^\n]*\nrc=2"))
  end)
end)

describe("engine.apps", function()
  local versions = { set = { ["3.4"] = true }, text = "3.4" }

  it("validates and copies a submission", function()
    local d, extras = apps.validate({ application_details = { application = "a.py", arguments = { "x" },
      conf = { k = "v" } }, queuing_enabled = true }, versions)
    assert.equal("a.py", d.application)
    assert.same({ "x" }, d.arguments)
    assert.same({ k = "v" }, d.conf)
    assert.is_true(extras.queuing_enabled)
  end)

  it("treats null as absent", function()
    local d = apps.validate({ application_details = { application = "a.py", class = util.null } }, versions)
    assert.is_nil(d.class)
  end)

  it("names the field it rejects", function()
    local d, err = apps.validate({ application_details = { application = "a.py", env = { A = true } } }, versions)
    assert.is_nil(d)
    assert.equal("application_details.env.A must be a string", err)
  end)

  it("converts Spark memory sizes to MiB", function()
    assert.equal(1024, apps.memory_mib("1G"))
    assert.equal(512, apps.memory_mib("512m"))
    assert.equal(20480, apps.memory_mib("20Gi"))
    assert.equal(2048, apps.memory_mib("2048"))
    assert.is_nil(apps.memory_mib("lots"))
  end)

  it("converts cores to millicores", function()
    assert.equal(1000, apps.millicores("1"))
    assert.equal(500, apps.millicores("500m"))
    assert.equal(2500, apps.millicores("2.5"))
  end)

  it("computes an application's demand from its conf over the instance defaults", function()
    local c, m = apps.demand({ details = { conf = { ["spark.executor.instances"] = "2" } },
                               instance_defaults = { ["spark.driver.memory"] = "4G" } })
    assert.equal(3000, c)
    assert.equal(4096 + 2048, m)
  end)
end)

describe("engine.runner", function()
  local ex = runner.examples_dir()

  it("finds the stand-ins in the source tree", function()
    assert.is_string(ex)
    assert.is_true(runner.exists(ex .. "/sparkpi.lua"))
  end)

  it("maps the SparkPi sample jar to its stand-in", function()
    local plan = runner.plan({ application = "/opt/ibm/spark/examples/jars/spark-examples_2.12-3.4.1.jar",
                               class = "org.apache.spark.examples.SparkPi", arguments = { "4" } },
                             { examples_dir = ex, app_root = "/tmp", name = "x" })
    assert.equal(ex .. "/sparkpi.lua", plan.argv[2])
    assert.equal("4", plan.argv[3])
    assert.truthy(plan.note:find("stand-in", 1, true))
  end)

  it("maps people.txt for the wordcount sample", function()
    local plan = runner.plan({ application = "/opt/ibm/spark/examples/src/main/python/wordcount.py",
                               arguments = { "/opt/ibm/spark/examples/src/main/resources/people.txt" } },
                             { examples_dir = ex, app_root = "/tmp", name = "x" })
    assert.equal(ex .. "/people.txt", plan.argv[3])
  end)

  it("refuses another class from the sample jar", function()
    local plan, code = runner.plan({ application = "/opt/ibm/spark/examples/jars/spark-examples.jar",
                                     class = "org.apache.spark.examples.SparkLR" },
                                   { examples_dir = ex, app_root = "/tmp", name = "x" })
    assert.is_nil(plan)
    assert.equal("application_not_found", code)
  end)

  it("reports a missing file", function()
    local plan, code = runner.plan({ application = "nope.sh" }, { app_root = "/tmp", name = "x" })
    assert.is_nil(plan)
    assert.equal("application_not_found", code)
  end)

  it("builds the environment with the application's variables last", function()
    local env = runner.env({ A = "1" }, { AE_APPLICATION_ID = "id" })
    local seen = {}
    for _, kv in ipairs(env) do seen[kv] = true end
    assert.is_true(seen["A=1"])
    assert.is_true(seen["AE_APPLICATION_ID=id"])
  end)
end)

describe("engine.apps", function()
  it("judges terminal states by api.lua's one set", function()
    assert.equals(api.TERMINAL_STATES, apps.TERMINAL)
  end)
end)
