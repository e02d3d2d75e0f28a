-- The local engine's answers against every example response on the vendor's
-- page (spec/fixtures/seed/*.json, copied verbatim from the seed): each field
-- of the example is present with the same JSON type, recursively.
local util = require("analytics_engine.util")
local engine = require("helpers.engine")

local function fixture(name)
  local f = assert(io.open("spec/fixtures/seed/" .. name .. ".json"))
  local doc = assert(util.json_decode(f:read("a")))
  f:close()
  return doc
end

local function json_type(v)
  if v == util.null then return "null" end
  local t = type(v)
  if t == "table" then return (#v > 0 or next(v) == nil) and "array-or-object" or "object" end
  return t
end

-- Every field of `want` is in `got` with a compatible type; returns the
-- list of differences as "path: message".
local function compare(want, got, path, out)
  out = out or {}
  for k, wv in pairs(want) do
    local p = path .. (type(k) == "number" and ("[" .. k .. "]") or ("." .. k))
    local gv = got[k]
    if type(k) == "number" and k > 1 then -- luacheck: ignore 542
      -- arrays: the shape of the first element is enough
    elseif gv == nil then
      out[#out + 1] = p .. ": missing"
    elseif type(wv) == "table" then
      if type(gv) ~= "table" then
        out[#out + 1] = ("%s: expected %s, got %s"):format(p, json_type(wv), json_type(gv))
      elseif k ~= "conf" then -- a conf map's keys are data, not shape
        compare(wv, gv, p, out)
      end
    elseif type(wv) ~= type(gv) then
      out[#out + 1] = ("%s: expected %s, got %s"):format(p, type(wv), type(gv))
    end
  end
  return out
end

local function assert_shape(name, got)
  local diffs = compare(fixture(name), got, name)
  assert(#diffs == 0, table.concat(diffs, "; "))
end

describe("the local engine's answers have the seed's example shapes", function()
  local e, c, app_id
  lazy_setup(function()
    e = engine.start()
    c = engine.client(e)
    local f = assert(io.open(e.data_dir .. "/app.sh", "w"))
    f:write("echo done\n")
    f:close()
    app_id = assert(c:create_application { application = e.data_dir .. "/app.sh",
                                            conf = { ["spark.app.name"] = "shape" } }).application_id
    assert(c:wait_for_application(app_id, { interval = 0.05 }))
  end)
  lazy_teardown(function() engine.stop(e) end)

  it("get_instance", function() assert_shape("get_instance", assert(c:get_instance())) end)
  it("get_instance_default_runtime", function()
    assert_shape("get_instance_default_runtime", assert(c:get_instance_default_runtime()))
  end)
  it("replace_instance_default_runtime", function()
    assert_shape("replace_instance_default_runtime", assert(c:replace_instance_default_runtime(
      fixture("replace_instance_default_runtime"))))
  end)
  it("replace_instance_default_configs", function()
    assert_shape("replace_instance_default_configs", assert(c:replace_instance_default_configs(
      fixture("replace_instance_default_configs"))))
  end)
  it("get_instance_default_configs", function()
    c:replace_instance_default_configs(fixture("get_instance_default_configs"))
    assert_shape("get_instance_default_configs", assert(c:get_instance_default_configs()))
  end)
  it("update_instance_default_configs", function()
    c:replace_instance_default_configs(fixture("replace_instance_default_configs"))
    local got = assert(c:update_instance_default_configs {
      ["ae.spark.history-server.cores"] = "1", ["ae.spark.history-server.memory"] = "4G" })
    assert.same(fixture("update_instance_default_configs"), got)
  end)
  it("replace_resource_consumption_limits", function()
    assert_shape("replace_resource_consumption_limits", assert(c:replace_resource_consumption_limits(
      fixture("replace_resource_consumption_limits"))))
  end)
  it("get_resource_consumption_limits", function()
    assert_shape("get_resource_consumption_limits", assert(c:get_resource_consumption_limits()))
  end)
  it("get_current_resource_consumption", function()
    assert_shape("get_current_resource_consumption", assert(c:get_current_resource_consumption()))
  end)
  it("start_spark_history_server", function()
    assert_shape("start_spark_history_server", assert(c:start_spark_history_server { cores = "1", memory = "4G" }))
    c:stop_spark_history_server()
  end)
  it("list_applications", function() assert_shape("list_applications", assert(c:list_applications())) end)
  it("get_application", function() assert_shape("get_application", assert(c:get_application(app_id))) end)
  it("get_application_state", function()
    assert_shape("get_application_state", assert(c:get_application_state(app_id)))
  end)
  it("list_clusters and get_cluster", function()
    local id = assert(c:create_cluster { name = "IBM Lab" }).cluster_id
    assert(c:delete_cluster(id))
    assert_shape("list_clusters", assert(c:list_clusters()))
    assert_shape("get_cluster", assert(c:get_cluster(id)))
  end)
end)
