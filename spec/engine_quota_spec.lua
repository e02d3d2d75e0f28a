-- Quota and scheduling on the local engine, like the service: an application
-- that does not fit the instance's limits waits QUEUED with state_details
-- instance_quota_exhausted and starts, first come first served, when
-- capacity frees; current_resource_consumption reports running and pending.
local helper = require("helpers.engine")

describe("local engine quota and scheduling", function()
  local e, root
  local function req(method, suffix, body, headers)
    return helper.request(e, method, helper.v4(e, suffix), body, headers)
  end
  local function state(id)
    local _, b = req("GET", "/spark_applications/" .. id)
    return b
  end
  local function wait_state(id, want)
    return helper.eventually(function()
      local b = state(id)
      return b and b.state == want and b
    end, 20)
  end
  -- An application that runs until its gate file exists.
  local function gated(name)
    return helper.submit(e, { application = "gate.sh", env = { GATE = root .. "/" .. name } })
  end
  local function open_gate(name) helper.write(root .. "/" .. name, "") end

  lazy_setup(function()
    root = helper.app_root {
      ["gate.sh"] = 'while [ ! -f "$GATE" ]; do sleep 0.05; done\necho released\n',
      ["sleepy.sh"] = "echo $$\nsleep 30\n",
    }
    e = helper.start({ "--app-root", root, "--quota-cores", "8", "--quota-memory", "32Gi" })
    -- Each application asks for the defaults: driver 1 core 1G, one executor 1 core 1G.
    local status = req("PUT", "/resource_consumption_limits", { max_cores = "2", max_memory = "8Gi" })
    assert.equal(200, status)
  end)
  lazy_teardown(function()
    helper.stop(e)
    os.execute("rm -rf '" .. root .. "'")
  end)

  describe("three applications that fit one at a time", function()
    local a, b, c
    lazy_setup(function()
      a = gated("a")
      assert(wait_state(a, "RUNNING"))
      b = gated("b")
      c = gated("c")
      assert(wait_state(c, "QUEUED"))
    end)

    it("runs the first", function() assert.equal("RUNNING", state(a).state) end)

    it("queues the others with instance_quota_exhausted", function()
      for _, id in ipairs({ b, c }) do
        local s = state(id)
        assert.equal("QUEUED", s.state)
        assert.equal("instance_quota_exhausted", s.state_details[1].code)
      end
    end)

    it("reports running and pending use", function()
      local status, body = req("GET", "/current_resource_consumption")
      assert.equal(200, status)
      assert.same({ cores = "2000m", memory = "2048Mi" }, body.running)
      assert.same({ cores = "4000m", memory = "4096Mi" }, body.pending)
    end)

    it("shows the room left in the instance's avail quota", function()
      local _, inst = req("GET", "")
      assert.equal(8, inst.resource_quota.cpu_quota)
      assert.equal(32, inst.resource_quota.memory_quota_gibibytes)
      assert.equal(0, inst.resource_quota.avail_cpu_quota)
    end)

    it("keeps a later one waiting when only it is released (first come first served)", function()
      open_gate("c")
      require("analytics_engine.core").sleep(0.5)
      assert.equal("QUEUED", state(c).state)
      assert.equal("QUEUED", state(b).state)
    end)

    it("starts the next in submission order when capacity frees", function()
      open_gate("a")
      assert(wait_state(a, "FINISHED"))
      assert(wait_state(b, "RUNNING"))
      assert.equal("QUEUED", state(c).state)
      open_gate("b")
      assert(wait_state(c, "FINISHED")) -- c's gate was already open
      local sb, sc = state(b), state(c)
      assert.truthy(sb.start_time <= sc.start_time)
    end)
  end)

  it("records the instance defaults at submission", function()
    req("PUT", "/default_configs", { ["spark.executor.memory"] = "2G" })
    local id = helper.submit(e, { application = "gate.sh", env = { GATE = root .. "/open" } })
    open_gate("open")
    local b = helper.wait_app(e, id)
    assert.same({ ["spark.executor.memory"] = "2G" }, b.application_details.instance_defaults_at_submission.conf)
    req("PUT", "/default_configs", {})
  end)

  it("counts executor instances, cores and memory from the conf", function()
    req("PUT", "/resource_consumption_limits", { max_cores = "4", max_memory = "8Gi" })
    local id = helper.submit(e, { application = "sleepy.sh", conf = {
      ["spark.executor.instances"] = "3", ["spark.executor.cores"] = "0.5", ["spark.executor.memory"] = "512m" } })
    assert(wait_state(id, "RUNNING"))
    local _, body = req("GET", "/current_resource_consumption")
    req("DELETE", "/spark_applications/" .. id)
    req("PUT", "/resource_consumption_limits", { max_cores = "2", max_memory = "8Gi" })
    assert.same({ cores = "2500m", memory = "2560Mi" }, body.running)
  end)

  it("answers 503 to a submission with queuing_enabled false when there is no room", function()
    local a = gated("q1")
    assert(wait_state(a, "RUNNING"))
    local status, body = req("POST", "/spark_applications",
      { application_details = { application = "sleepy.sh" }, queuing_enabled = false })
    assert.equal(503, status)
    assert.equal("instance_quota_exhausted", body.errors[1].code)
    open_gate("q1")
    assert(wait_state(a, "FINISHED"))
  end)

  it("answers 400 to an application larger than the instance's quota", function()
    local status, body = req("POST", "/spark_applications",
      { application_details = { application = "sleepy.sh", conf = { ["spark.executor.instances"] = "20" } } })
    assert.equal(400, status)
    assert.equal("exceeds_instance_quota", body.errors[1].code)
  end)

  it("stops a queued application on DELETE and starts the one behind it", function()
    local a = gated("d1")
    assert(wait_state(a, "RUNNING"))
    local b = gated("d2")
    local c = gated("d3")
    assert(wait_state(c, "QUEUED"))
    assert.equal(204, (req("DELETE", "/spark_applications/" .. b)))
    assert.equal("STOPPED", state(b).state)
    open_gate("d1")
    assert(wait_state(c, "RUNNING"))
    open_gate("d3")
    assert(wait_state(c, "FINISHED"))
  end)

  it("starts queued applications when the limits are raised", function()
    local a = gated("r1")
    assert(wait_state(a, "RUNNING"))
    local b = gated("r2")
    assert(wait_state(b, "QUEUED"))
    req("PUT", "/resource_consumption_limits", { max_cores = "4", max_memory = "8Gi" })
    assert(wait_state(b, "RUNNING"))
    open_gate("r1")
    open_gate("r2")
    assert(wait_state(b, "FINISHED"))
    req("PUT", "/resource_consumption_limits", { max_cores = "2", max_memory = "8Gi" })
  end)
end)

describe("local engine application timeout", function()
  local e, root
  lazy_setup(function()
    root = helper.app_root {
      ["sleepy.sh"] = "echo $$\nsleep 30\n",
      ["quick.sh"] = "echo quick\n",
    }
    e = helper.start({ "--app-root", root, "--app-timeout", "1" })
  end)
  lazy_teardown(function()
    helper.stop(e)
    os.execute("rm -rf '" .. root .. "'")
  end)

  it("ends an application that outlives --app-timeout AUTO_TERMINATED and kills its group", function()
    local id = helper.submit(e, { application = "sleepy.sh" })
    local pid = helper.eventually(function() return tonumber((helper.logs(e, id) or ""):match("^(%d+)")) end)
    local b = helper.eventually(function()
      local _, s = helper.request(e, "GET", helper.v4(e, "/spark_applications/" .. id))
      return s and s.state == "AUTO_TERMINATED" and s
    end, 20)
    assert.truthy(b)
    assert.equal("application_timeout", b.state_details[#b.state_details].code)
    assert.truthy(helper.eventually(function() return not helper.group_alive(pid) end, 10))
  end)

  it("lets the conf's ae.local-engine.timeout override it", function()
    local id = helper.submit(e, { application = "sleepy.sh", conf = { ["ae.local-engine.timeout"] = "60s" } })
    require("analytics_engine.core").sleep(2)
    local _, s = helper.request(e, "GET", helper.v4(e, "/spark_applications/" .. id))
    assert.equal("RUNNING", s.state)
    helper.request(e, "DELETE", helper.v4(e, "/spark_applications/" .. id))
  end)

  it("leaves quick applications alone", function()
    local id = helper.submit(e, { application = "quick.sh" })
    assert.equal("FINISHED", helper.wait_app(e, id).state)
  end)
end)
