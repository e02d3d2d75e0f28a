-- One validation layer for every request body (schemas.lua applied by
-- engine/validate.lua), against a real engine: each refusal is a 400 in the
-- service's error shape naming the field, and nothing refused is stored.
local cjson = require("cjson")
local util = require("analytics_engine.util")
local resources = require("analytics_engine.resources")
local validate = require("analytics_engine.engine.validate")
local helper = require("helpers.engine")

describe("request body validation (real engine)", function()
  local e
  lazy_setup(function() e = helper.start({ "--no-jupyter", "--quiet" }) end)
  lazy_teardown(function() helper.stop(e) end)

  local function submit(details, extra)
    local body = { application_details = details }
    for k, v in pairs(extra or {}) do body[k] = v end
    return helper.request(e, "POST", helper.v4(e, "/spark_applications"), body)
  end

  local function conf(k, v) return { application = "a.sh", conf = { [k] = v } } end

  local refused = {
    { "a negative executor count", conf("spark.executor.instances", "-100"),
      "application_details.conf.spark.executor.instances must be an integer between 0 and 1000" },
    { "an absurd executor count", conf("spark.executor.instances", "100000"),
      "application_details.conf.spark.executor.instances must be an integer between 0 and 1000" },
    { "a fractional executor count", conf("spark.executor.instances", "2.5"),
      "application_details.conf.spark.executor.instances must be an integer between 0 and 1000" },
    { "1e308 driver cores", conf("spark.driver.cores", "1e308"),
      "application_details.conf.spark.driver.cores must be a number of cores" },
    { "negative executor cores", conf("spark.executor.cores", "-2"),
      "application_details.conf.spark.executor.cores must be a number of cores" },
    { "an absurd executor memory", conf("spark.executor.memory", "99999999t"),
      "application_details.conf.spark.executor.memory must be a memory size" },
    { "NUL inside an argument", { application = "a.sh", arguments = { "a\0b" } },
      "application_details.arguments[1] must not contain NUL characters" },
    { "NUL inside a conf key", { application = "a.sh", conf = { ["k\0x"] = "v" } },
      "must not contain NUL characters" },
    { "invalid UTF-8 in the name", { application = "a.sh", name = "caf\xe9" },
      "application_details.name is not valid UTF-8" },
    { "too many arguments", { application = "a.sh", arguments = (function()
        local t = {}
        for i = 1, 5001 do t[i] = "x" end
        return t
      end)() }, "application_details.arguments has more than 5000 items" },
    { "an empty application", { application = "" }, "application_details.application must be a non-empty string" },
  }
  for _, c in ipairs(refused) do
    it("refuses " .. c[1] .. " with a 400 naming the field", function()
      local status, b = submit(c[2])
      assert.equal(400, status)
      assert.equal(400, b.status_code)
      assert.equal("bad_request", b.errors[1].code)
      assert.truthy(b.errors[1].message:find(c[3], 1, true), b.errors[1].message)
    end)
  end

  it("refuses a body nested deeper than the limit", function()
    local deep = {}
    local t = deep
    for _ = 1, 40 do t.x = {} t = t.x end
    local status, b = submit({ application = "a.sh" }, { volumes = { deep } })
    assert.equal(400, status)
    assert.matches("nests deeper than 32 levels", b.errors[1].message)
  end)

  it("refuses raw invalid UTF-8 bytes in the JSON text", function()
    local status, b = helper.request(e, "POST", helper.v4(e, "/spark_applications"),
      '{"application_details": {"application": "a.sh", "arguments": ["\xff\xfe"]}}')
    assert.equal(400, status)
    assert.equal("application_details.arguments[1] is not valid UTF-8", b.errors[1].message)
  end)

  it("refuses a bad resource value in default_configs too", function()
    local status, b = helper.request(e, "PUT", helper.v4(e, "/default_configs"),
      { ["spark.executor.instances"] = "-1" })
    assert.equal(400, status)
    assert.equal("default_configs.spark.executor.instances must be an integer between 0 and 1000",
      b.errors[1].message)
    status, b = helper.request(e, "PATCH", helper.v4(e, "/default_configs"),
      { ["spark.driver.memory"] = "-4g" }, { ["Content-Type"] = "application/merge-patch+json" })
    assert.equal(400, status)
    assert.matches("^default_configs%.spark%.driver%.memory must be a memory size", b.errors[1].message)
  end)

  it("refuses 1e308 cores for the history server (was a 500) as a number or a string", function()
    for _, cores in ipairs({ 1e308, "1e308", -1 }) do
      local status, b = helper.request(e, "POST", helper.v4(e, "/spark_history_server"), { cores = cores })
      assert.equal(400, status)
      assert.matches("^cores must be a number of cores between 0.001 and 1000", b.errors[1].message)
    end
  end)

  it("stored nothing it refused; the list stays strict JSON and consumption is untouched", function()
    local status, b, _, raw = helper.request(e, "GET", helper.v4(e, "/spark_applications"))
    assert.equal(200, status)
    assert.equal(0, #b.applications)
    assert.truthy(utf8.len(raw))
    assert.is_nil(raw:find("\\u0000", 1, true))
    status, b = helper.request(e, "GET", helper.v4(e, "/current_resource_consumption"))
    assert.equal(200, status)
    assert.equal("0m", b.running.cores)
    assert.equal("0m", b.pending.cores)
  end)

  it("accepts the edges of the ranges and names executor count 0", function()
    local status = submit({ application = "a.sh", conf = { ["spark.executor.instances"] = "0",
      ["spark.driver.cores"] = "500m", ["spark.executor.memory"] = "512m" } })
    assert.equal(202, status)
  end)
end)

describe("validate.body and resources (units)", function()
  it("treats null as absent and checks operations without a schema by the generic limits", function()
    assert.is_true(validate.body("create_application",
      { application_details = { application = "a", class = util.null } }))
    assert.is_nil((validate.body("some_future_op", { x = "a\0b" })))
    assert.is_true(validate.body("some_future_op", { x = "ok" }))
  end)

  it("computes demand from conf over defaults and refuses instead of clamping", function()
    local d = assert(resources.demand({ ["spark.executor.instances"] = "3" }, { ["spark.executor.cores"] = "2" }))
    assert.same({ cores_m = 1000 + 2000 * 3, memory_mib = 1024 + 1024 * 3 }, d)
    local none, err = resources.demand({ ["spark.executor.instances"] = "-100" })
    assert.is_nil(none)
    assert.equal("spark.executor.instances: must be an integer between 0 and 1000", err)
    assert.is_true(resources.fits({ cores_m = 8000 }, { cores_m = 1000 }, d))
    local ok, why = resources.fits({ cores_m = 7000 }, { cores_m = 1000 }, d)
    assert.is_false(ok)
    assert.matches("needs 7000m cores", why)
  end)
end)

describe("util.json_encode empty arrays", function()
  it("encodes empty arrays without a placeholder user data could collide with", function()
    local s = assert(util.json_encode({ a = util.array(), b = { "\0ae:empty_array\0", util.array() } }))
    local back = cjson.decode(s)
    assert.equal("\0ae:empty_array\0", back.b[1])
    assert.same({}, back.a)
    assert.truthy(s:find('"a":[]', 1, true))
    assert.equal('["\\u0000ae:empty_array\\u0000"]', util.json_encode({ "\0ae:empty_array\0" }))
  end)
end)
