-- The client end to end against a real local engine on loopback.
local ae = require("analytics_engine")
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local engine = require("helpers.engine")

local function client_for(e, extra)
  local opts = { retries = { max_attempts = 3, base_delay = 0.01, max_delay = 0.05 } }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return engine.client(e, opts)
end

local function stats(e)
  local status, doc = engine.request(e, "GET", "/engine/v1/stats")
  assert.equals(200, status)
  return doc
end

local function app_file(e, name, text)
  local p = e.data_dir .. "/" .. name
  local f = assert(io.open(p, "w"))
  f:write(text)
  f:close()
  return p
end

describe("client against the local engine", function()
  local e, c
  lazy_setup(function()
    e = engine.start()
    c = client_for(e)
  end)
  lazy_teardown(function() engine.stop(e) end)

  describe("instance", function()
    it("gets the instance with its quota", function()
      local inst = assert(c:get_instance())
      assert.equals(e.instance_id, inst.instance_id)
      assert.is_number(inst.resource_quota.cpu_quota)
    end)
  end)

  describe("the engine's own endpoints", function()
    it("has them as methods made from api.lua's rows", function()
      assert(c:get_instance())
      local counts = assert(c:engine_stats())
      assert.is_true(counts.requests.get_instance >= 1)
      local _, err = c:engine_application_logs("e64c907a-e82f-46fd-addc-ccfafbd28b09", { stream = "stdout" })
      assert.equals(404, err.status)
      local _, bad = c:engine_application_logs("nope")
      assert.equals("invalid_argument", bad.code)
    end)
  end)

  describe("default runtime", function()
    it("replaces and reads back the runtime", function()
      assert.same({ spark_version = "3.5" }, c:replace_instance_default_runtime { spark_version = "3.5" })
      assert.same({ spark_version = "3.5" }, c:get_instance_default_runtime())
    end)
    it("returns the server's 400 for an unsupported version", function()
      local res, err = c:replace_instance_default_runtime { spark_version = "1.0" }
      assert.is_nil(res)
      assert.equals(400, err.status)
      assert.is_false(err.retryable)
    end)
  end)

  describe("default configs", function()
    it("replaces the configs", function()
      local want = { ["spark.driver.memory"] = "8G", ["spark.driver.cores"] = "2" }
      assert.same(want, c:replace_instance_default_configs(want))
    end)
    it("merges a patch and unsets keys set to ae.null", function()
      c:replace_instance_default_configs { ["spark.driver.memory"] = "8G", ["spark.driver.cores"] = "2" }
      local got = assert(c:update_instance_default_configs {
        ["ae.spark.history-server.cores"] = "1", ["spark.driver.cores"] = ae.null })
      assert.same({ ["spark.driver.memory"] = "8G", ["ae.spark.history-server.cores"] = "1" }, got)
    end)
  end)

  describe("resource consumption limits", function()
    it("replaces, reads and deletes the limits", function()
      assert.same({ max_cores = "10", max_memory = "20Gi" },
        c:replace_resource_consumption_limits { max_cores = "10", max_memory = "20Gi" })
      assert.same({ max_cores = "10", max_memory = "20Gi" }, c:get_resource_consumption_limits())
      assert.is_true(c:delete_resource_consumption_limits())
    end)
    it("reports current consumption as running and pending", function()
      local cur = assert(c:get_current_resource_consumption())
      assert.is_string(cur.running.cores)
      assert.is_string(cur.pending.memory)
    end)
  end)

  describe("history server", function()
    it("starts, reports and stops", function()
      local hs = assert(c:start_spark_history_server { cores = "1", memory = "4G" })
      assert.equals("started", hs.state)
      assert.equals("started", assert(c:get_spark_history_server()).state)
      assert.is_true(c:stop_spark_history_server())
    end)
    it("answers 409 when stopped twice", function()
      local _, err = c:stop_spark_history_server()
      assert.equals(409, err.status)
      assert.matches("already stopped", err.message)
    end)
  end)

  describe("applications", function()
    it("submits, awaits and reads back a finished application", function()
      local p = app_file(e, "ok.sh", "echo hello from $AE_APPLICATION_ID\n")
      local sub = assert(c:create_application { application = p, arguments = { "x" },
                                                conf = { ["spark.app.name"] = "ok" } })
      local id = sub.application_id
      assert.is_true(util.is_uuid(id))
      local app = assert(c:wait_for_application(id, { interval = 0.05 }))
      assert.equals("FINISHED", app.state)
      assert.equals("0", app.return_code)
      assert.equals("FINISHED", assert(c:get_application_state(id)).state)
    end)
    it("reports a failing application's return code", function()
      local id = assert(c:create_application { application = app_file(e, "bad.sh", "exit 3\n") }).application_id
      local app = assert(c:wait_for_application(id, { interval = 0.05 }))
      assert.equals("FAILED", app.state)
      assert.equals("3", app.return_code)
    end)
    it("waits for many applications with one list request per round", function()
      local p = app_file(e, "short.sh", "sleep 0.3\n")
      local ids = {}
      for i = 1, 5 do ids[i] = assert(c:create_application { application = p }).application_id end
      local before = stats(e).requests
      local done = assert(c:wait_for_applications(ids, { interval = 0.1 }))
      local after = stats(e).requests
      for _, id in ipairs(ids) do assert.equals("FINISHED", done[id].state) end
      local lists = (after.list_applications or 0) - (before.list_applications or 0)
      local gets = (after.get_application_state or 0) - (before.get_application_state or 0)
      assert.is_true(lists >= 1)
      assert.equals(0, gets)
    end)
    it("lists applications filtered by state", function()
      local list = assert(c:list_applications { state = "FAILED" })
      assert.is_true(#list.applications >= 1)
      for _, a in ipairs(list.applications) do assert.equals("FAILED", a.state) end
    end)
    it("stops a running application on delete", function()
      local id = assert(c:create_application { application = app_file(e, "long.sh", "sleep 30\n") }).application_id
      local deadline = core.monotime() + 5
      repeat core.sleep(0.05) until c:get_application_state(id).state == "RUNNING" or core.monotime() > deadline
      assert.is_true(c:delete_application(id))
      local app = assert(c:wait_for_application(id, { interval = 0.05, timeout = 5 }))
      assert.equals("STOPPED", app.state)
    end)
    it("gives up waiting at the timeout the caller set", function()
      local id = assert(c:create_application { application = app_file(e, "long2.sh", "sleep 30\n") }).application_id
      local res, err = c:wait_for_application(id, { interval = 0.05, timeout = 0.3 })
      assert.is_nil(res)
      assert.equals("wait_timeout", err.code)
      c:delete_application(id)
    end)
    it("answers 404 for an unknown application", function()
      local _, err = c:get_application("e64c907a-e82f-46fd-addc-ccfafbd28b09")
      assert.equals(404, err.status)
    end)
  end)

  describe("kernels without a Jupyter Server", function()
    -- CI has Jupyter installed: this engine is told not to use it.
    local ne, nc
    lazy_setup(function()
      ne = engine.start{ "--no-jupyter" }
      nc = client_for(ne)
    end)
    lazy_teardown(function() engine.stop(ne) end)

    it("answer 503 with what to install", function()
      local _, err = nc:list_kernels()
      assert.equals(503, err.status)
      assert.matches("python3%-jupyter%-server", err.message)
    end)
  end)

  describe("clusters", function()
    it("creates, lists, gets and deletes a cluster", function()
      local cl = assert(c:create_cluster { name = "lab", conf = { ["spark.eventLog.enabled"] = "true" } })
      local id = cl.cluster_id or cl.id
      assert.is_true(util.is_uuid(id))
      local found = false
      for _, x in ipairs(assert(c:list_clusters()).clusters) do found = found or x.id == id end
      assert.is_true(found)
      assert.equals("lab", assert(c:get_cluster(id)).cluster_details.name)
      assert.is_true(c:delete_cluster(id))
    end)
  end)

  describe("validation before sending", function()
    it("rejects a malformed id without a request", function()
      local before = stats(e).requests.get_application or 0
      local res, err = c:get_application("not-an-id")
      assert.is_nil(res)
      assert.equals("invalid_argument", err.code)
      assert.matches("application_id 'not%-an%-id' is not a valid id", err.message)
      assert.equals(before, stats(e).requests.get_application or 0)
    end)
    it("rejects a body that is not a table", function()
      local _, err = c:replace_instance_default_runtime("3.4")
      assert.equals("invalid_argument", err.code)
      assert.matches("must be a table", err.message)
    end)
    it("refuses a malformed instance id when the client is made", function()
      local cl, err = ae.client { url = e.url, instance_id = "abc", auth = { token = "t" } }
      assert.is_nil(cl)
      assert.matches("instance_id 'abc' is not a valid id", err.message)
    end)
    it("raises for a wrong argument type to the constructor", function()
      assert.has_error(function() ae.client("http://x") end)
    end)
  end)

  describe("authentication", function()
    it("gets 401 with a wrong api key, without echoing it", function()
      local bad = client_for(e, { auth = { username = e.username, api_key = "wrong-key-Zx81" } })
      local _, err = bad:get_instance()
      assert.equals(401, err.status)
      assert.is_nil(tostring(err):find("Zx81"))
    end)
    it("exchanges the api key for a token", function()
      local t = client_for(e, { auth = { username = e.username, api_key = e.api_key, exchange = true } })
      assert.is_table(assert(t:get_instance_default_runtime()))
      assert.equals("exchange", t.auth.kind)
    end)
    it("gets 401 with a token the engine did not sign", function()
      local t = client_for(e, { auth = { token = "a.b.c" } })
      local _, err = t:get_instance()
      assert.equals(401, err.status)
    end)
  end)
end)

describe("client retries against injected faults", function()
  it("retries a 503 up to max_attempts and reports the attempts", function()
    local e = engine.start { "--faults", "1", "--fault-kinds", "503" }
    finally(function() engine.stop(e) end)
    local c = client_for(e)
    local _, err = c:get_instance_default_runtime()
    assert.equals(503, err.status)
    assert.equals(3, err.attempts)
    assert.equals(3, stats(e).requests.get_instance_default_runtime)
  end)
  it("does not retry a 500", function()
    local e = engine.start { "--faults", "1", "--fault-kinds", "500" }
    finally(function() engine.stop(e) end)
    local _, err = client_for(e):get_instance_default_configs()
    assert.equals(500, err.status)
    assert.equals(1, err.attempts)
  end)
  it("waits Retry-After before retrying a 429", function()
    local e = engine.start { "--faults", "1", "--fault-kinds", "429" }
    finally(function() engine.stop(e) end)
    local c = client_for(e, { retries = { max_attempts = 2, base_delay = 0.01 } })
    local t0 = core.monotime()
    local _, err = c:get_instance()
    assert.equals(429, err.status)
    assert.is_true(core.monotime() - t0 >= 0.9, "Retry-After: 1 was not honoured")
  end)
  it("never sends a create twice after the connection dropped once it was accepted", function()
    local e = engine.start { "--faults", "1", "--fault-kinds", "reset-after" }
    finally(function() engine.stop(e) end)
    local c = client_for(e)
    -- Warm the pool: libcurl re-sends a request on a reused connection that
    -- died before answering, which must not happen to a create.
    local warm = assert(c.transport:request { url = e.url .. "/engine/v1/stats",
                                              headers = { Authorization = engine.zen(e) } })
    assert.equals(200, warm.status)
    local _, err = c:create_application { application = "/bin/true" }
    assert.is_nil(err.status)
    assert.is_true(err.ambiguous)
    assert.equals(1, stats(e).applications_created)
  end)
  it("retries idempotent reads after a dropped connection", function()
    local e = engine.start { "--faults", "1", "--fault-kinds", "reset" }
    finally(function() engine.stop(e) end)
    local _, err = client_for(e):get_instance()
    assert.equals(3, err.attempts)
    assert.equals(3, stats(e).requests.get_instance)
  end)
  it("times out a stalled answer", function()
    local e = engine.start { "--faults", "1", "--fault-kinds", "delay" }
    finally(function() engine.stop(e) end)
    local c = client_for(e, { timeout = 0.5, retries = false })
    local _, err = c:get_instance()
    assert.equals("timeout", err.code)
  end)
end)

describe("client against a broken server", function()
  local proc, port, c, proc_pid
  lazy_setup(function()
    proc = io.popen("exec lua5.4 spec/helpers/bad_server.lua & echo PID $!", "r")
    for _ = 1, 2 do
      local line = assert(proc:read("l"), "bad_server did not start")
      proc_pid = tonumber(line:match("^PID (%d+)")) or proc_pid
      port = line:match("^PORT (%d+)") or port
    end
    c = assert(ae.client { url = "http://127.0.0.1:" .. port, instance_id = "e64c907a-e82f-46fd-addc-ccfafbd28b09",
                           auth = { token = "t" }, max_response_size = 1024 * 1024,
                           retries = { max_attempts = 2, base_delay = 0.01 } })
  end)
  lazy_teardown(function()
    if proc_pid then os.execute("kill " .. proc_pid) end
    proc:close()
  end)

  it("reports truncated JSON as a bad response", function()
    local _, err = c:get_instance_default_runtime()
    assert.equals("bad_response", err.code)
    assert.matches("not valid JSON", err.message)
  end)
  it("reports an HTML error page plainly", function()
    local _, err = c:get_instance_default_configs()
    assert.equals(502, err.status)
    assert.matches("HTML page", err.message)
  end)
  it("refuses an answer over the size limit", function()
    local _, err = c:get_instance()
    assert.equals("too_large", err.code)
  end)
  it("reports a refused connection", function()
    local closed = assert(ae.client { url = "http://127.0.0.1:1", instance_id = "e64c907a-e82f-46fd-addc-ccfafbd28b09",
                                      auth = { token = "t" }, retries = { max_attempts = 2, base_delay = 0.01 } })
    local _, err = closed:get_instance()
    assert.equals("connect", err.code)
    assert.equals(2, err.attempts)
  end)
end)

-- Under nginx the client runs on cosockets and must not load the C core
-- (libcurl and libmicrohttpd in a worker): `require("analytics_engine")`, a
-- client on another transport and its calls leave `analytics_engine.core`
-- unloaded. A fresh Lua process, so nothing loaded by other specs counts.
describe("the client without the C core", function()
  it("loads no analytics_engine.core for a client on a transport of its own", function()
    local script = [[
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local ae = require("analytics_engine")
local tr = { request = function() return { status = 200, headers = {}, body = '{"ok":true}' } end,
             now = function() return 0 end, sleep = function() end }
local c = assert(ae.client { url = "http://127.0.0.1:1", instance_id = "e64c907a-e82f-46fd-addc-ccfafbd28b09",
                             auth = { token = "t" }, transport = tr, getenv = function() return nil end })
assert(c:get_instance().ok)
assert(c:with { timeout = 5 }:get_instance().ok)
io.write(package.loaded["analytics_engine.core"] and "loaded" or "not loaded")
]]
    local p = assert(io.popen("lua5.4 -e '" .. script:gsub("'", "'\\''") .. "' 2>&1"))
    local out = p:read("a")
    p:close()
    assert.equals("not loaded", out)
  end)
end)
