-- Creates that reach the local engine together (one poll's batch) with
-- queuing_enabled = false: accepted while the instance has room for all of
-- them, refused (503) only for those that would really wait. The first of a
-- batch is queued until the next tick starts it; it must not make the
-- others look as if they waited behind it.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local loop = require("analytics_engine.loop")
local helper = require("helpers.engine")

describe("local engine, overlapping creates with queuing_enabled false", function()
  local e, root

  lazy_setup(function()
    root = helper.app_root { ["sleepy.sh"] = "sleep 30\n" }
    -- Each application asks for the defaults: 2 cores and 2 GiB.
    e = helper.start({ "--app-root", root, "--quota-cores", "12", "--quota-memory", "64Gi" })
    assert.equal(200, (helper.request(e, "PUT", helper.v4(e, "/resource_consumption_limits"),
      { max_cores = "12", max_memory = "64Gi" })))
  end)
  lazy_teardown(function()
    helper.stop(e)
    os.execute("rm -rf '" .. root .. "'")
  end)

  -- n creates in flight at once; their statuses
  local function burst(n)
    local sched = loop.new { max_transfers = n }
    local session = core.http_session()
    local req = { method = "POST", url = e.url .. helper.v4(e, "/spark_applications"), timeout = 30,
                  headers = { Authorization = helper.zen(e), ["Content-Type"] = "application/json" },
                  body = util.json_encode { application_details = { application = "sleepy.sh" },
                                            queuing_enabled = false } }
    local statuses = {}
    for i = 1, n do
      sched:spawn("create " .. i, function()
        local res = sched:http(session, req)
        statuses[#statuses + 1] = res and res.status or 0
      end)
    end
    assert(sched:loop())
    table.sort(statuses)
    return statuses
  end

  it("accepts all of a batch that fits, and refuses what is beyond the room", function()
    -- room for 6 (12 cores): 4 at once all fit
    assert.same({ 202, 202, 202, 202 }, burst(4))
    -- 4 more at once: room for 2 of them
    assert.same({ 202, 202, 503, 503 }, burst(4))
  end)
end)
