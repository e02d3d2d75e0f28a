-- End to end: a real local engine on 127.0.0.1, every non-application
-- endpoint of the v4 API against the vendor's example shapes, routing errors
-- and authentication. Applications are in engine_apps_spec.lua.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local helper = require("helpers.engine")

local LONG_TIME, ISO_TIME, MISSING = helper.LONG_TIME, helper.ISO_TIME, helper.MISSING

local sha256_hex = helper.sha256_hex

local function assert_error(status, body, headers, want_status)
  assert.equal(want_status, status)
  assert.is_table(body)
  assert.equal(want_status, body.status_code)
  assert.is_string(body.errors[1].code)
  assert.is_string(body.errors[1].message)
  assert.truthy(body.trace:find("^%x+$"))
  assert.equal(body.trace, headers["x-global-transaction-id"])
  assert.truthy(headers["content-type"]:find("application/json", 1, true))
end

describe("local engine", function()
  local e
  local function req(method, suffix, body, headers)
    return helper.request(e, method, helper.v4(e, suffix), body, headers)
  end

  lazy_setup(function() e = helper.start() end)
  lazy_teardown(function()
    helper.stop(e)
    helper.cleanup(e)
  end)

  describe("start-up", function()
    it("writes credentials.json (0600) with the admin's key, instance id and url", function()
      local f = assert(io.open(e.data_dir .. "/credentials.json"))
      local c = util.json_decode(f:read("a"))
      f:close()
      assert.equal("admin", c.username)
      assert.is_string(c.api_key)
      assert.equal(e.instance_id, c.instance_id)
      assert.equal(e.url, c.url)
      if core.file_mode then assert.equal(384, core.file_mode(e.data_dir .. "/credentials.json")) end
    end)

    it("keeps only the key's sha256 in users.json", function()
      local f = assert(io.open(e.data_dir .. "/users.json"))
      local s = f:read("a")
      f:close()
      assert.falsy(s:find(e.api_key, 1, true))
      assert.truthy(s:find(sha256_hex(e.api_key), 1, true))
    end)

    it("writes engine.json with url, port and pid", function()
      local f = assert(io.open(e.data_dir .. "/engine.json"))
      local info = util.json_decode(f:read("a"))
      f:close()
      assert.equal(e.url, info.url)
      assert.equal(e.pid, info.pid)
      assert.is_number(info.port)
      assert.equal(e.instance_id, info.instance_id)
    end)
  end)

  describe("GET /v4/analytics_engines/{instance_id}", function()
    it("answers the seed's instance shape", function()
      local status, b, h = req("GET", "")
      assert.equal(200, status)
      assert.truthy(h["content-type"]:find("application/json", 1, true))
      assert.equal(e.instance_id, b.instance_id)
      for _, k in ipairs({ "context_type", "namespace", "dataplane_type", "endpoint_type", "home_volume" }) do
        assert.is_string(b[k], k)
      end
      assert.truthy(b.creation_time:find(LONG_TIME))
      assert.truthy(b.state_change_time:find(LONG_TIME))
      assert.equal("Created", b.state)
      for _, k in ipairs({ "cpu_quota", "memory_quota_gibibytes", "avail_cpu_quota",
                           "avail_memory_quota_gibibytes" }) do
        assert.is_number(b.resource_quota[k], k)
      end
    end)

    it("answers 404 for an unknown instance id", function()
      local status, b, h = helper.request(e, "GET", helper.v4(e, "", MISSING))
      assert_error(status, b, h, 404)
    end)

    it("answers 400 for a malformed instance id", function()
      local status, b, h = helper.request(e, "GET", helper.v4(e, "", "not-a-uuid"))
      assert_error(status, b, h, 400)
      assert.truthy(b.errors[1].message:find("not-a-uuid", 1, true))
    end)
  end)

  describe("default_runtime", function()
    it("GET answers {spark_version} with 3.4 by default", function()
      local status, b = req("GET", "/default_runtime")
      assert.equal(200, status)
      assert.same({ spark_version = "3.4" }, b)
    end)

    it("PUT replaces it", function()
      local status, b = req("PUT", "/default_runtime", { spark_version = "3.5" })
      assert.equal(200, status)
      assert.same({ spark_version = "3.5" }, b)
      local _, b2 = req("GET", "/default_runtime")
      assert.same({ spark_version = "3.5" }, b2)
      req("PUT", "/default_runtime", { spark_version = "3.4" })
    end)

    it("PUT of an unknown version is a 400 naming the allowed ones", function()
      local status, b, h = req("PUT", "/default_runtime", { spark_version = "2.4" })
      assert_error(status, b, h, 400)
      assert.truthy(b.errors[1].message:find("3.3, 3.4, 3.5", 1, true))
    end)
  end)

  describe("default_configs", function()
    it("PUT replaces them and answers the new set", function()
      local conf = { ["spark.driver.memory"] = "8G", ["spark.driver.cores"] = "2" }
      local status, b = req("PUT", "/default_configs", conf)
      assert.equal(200, status)
      assert.same(conf, b)
      local _, b2 = req("GET", "/default_configs")
      assert.same(conf, b2)
    end)

    it("PUT with a non-string value is a 400", function()
      local status, b, h = req("PUT", "/default_configs", { ["spark.driver.cores"] = 2 })
      assert_error(status, b, h, 400)
      assert.truthy(b.errors[1].message:find("spark.driver.cores", 1, true))
    end)

    it("PATCH merges (the seed's example)", function()
      req("PUT", "/default_configs", { ["spark.driver.memory"] = "8G", ["spark.driver.cores"] = "2" })
      local status, b = req("PATCH", "/default_configs",
        { ["ae.spark.history-server.cores"] = "1", ["ae.spark.history-server.memory"] = "4G" },
        { ["Content-Type"] = "application/merge-patch+json" })
      assert.equal(200, status)
      assert.same({ ["ae.spark.history-server.cores"] = "1", ["ae.spark.history-server.memory"] = "4G",
                    ["spark.driver.memory"] = "8G", ["spark.driver.cores"] = "2" }, b)
    end)

    it("PATCH with null unsets a key", function()
      req("PUT", "/default_configs", { ["spark.driver.memory"] = "8G", ["spark.driver.cores"] = "2" })
      local status, b = req("PATCH", "/default_configs", '{"spark.driver.cores": null}',
        { ["Content-Type"] = "application/merge-patch+json" })
      assert.equal(200, status)
      assert.same({ ["spark.driver.memory"] = "8G" }, b)
    end)

    it("PATCH accepts application/json too", function()
      local status = req("PATCH", "/default_configs", { ["spark.executor.cores"] = "1" })
      assert.equal(200, status)
    end)

    it("PATCH with another Content-Type is a 415", function()
      local status, b, h = req("PATCH", "/default_configs", '{"a":"b"}', { ["Content-Type"] = "text/plain" })
      assert_error(status, b, h, 415)
    end)

    it("an empty set encodes as {}", function()
      req("PUT", "/default_configs", "{}")
      local _, _, _, raw = req("GET", "/default_configs")
      assert.equal("{}", raw)
    end)
  end)

  describe("resource_consumption_limits", function()
    it("PUT answers the seed's shape", function()
      local status, b = req("PUT", "/resource_consumption_limits", { max_cores = "10", max_memory = "20Gi" })
      assert.equal(200, status)
      assert.same({ max_cores = "10", max_memory = "20Gi" }, b)
    end)

    it("GET answers what was set", function()
      req("PUT", "/resource_consumption_limits", { max_cores = "10", max_memory = "20Gi" })
      local status, b = req("GET", "/resource_consumption_limits")
      assert.equal(200, status)
      assert.same({ max_cores = "10", max_memory = "20Gi" }, b)
    end)

    it("PUT validates max_cores", function()
      local status, b, h = req("PUT", "/resource_consumption_limits", { max_cores = "ten", max_memory = "20Gi" })
      assert_error(status, b, h, 400)
      assert.truthy(b.errors[1].message:find("max_cores", 1, true))
    end)

    it("PUT validates max_memory", function()
      local status, b, h = req("PUT", "/resource_consumption_limits", { max_cores = "10", max_memory = "lots" })
      assert_error(status, b, h, 400)
      assert.truthy(b.errors[1].message:find("max_memory", 1, true))
    end)

    it("DELETE answers 204, then GET 404", function()
      local status, b, _, raw = req("DELETE", "/resource_consumption_limits")
      assert.equal(204, status)
      assert.is_nil(b)
      assert.equal("", raw or "")
      local status2, b2, h2 = req("GET", "/resource_consumption_limits")
      assert_error(status2, b2, h2, 404)
      req("PUT", "/resource_consumption_limits", { max_cores = "10", max_memory = "20Gi" })
    end)
  end)

  describe("current_resource_consumption", function()
    it("answers running and pending cores and memory", function()
      local status, b = req("GET", "/current_resource_consumption")
      assert.equal(200, status)
      for _, k in ipairs({ "running", "pending" }) do
        assert.truthy(b[k].cores:find("^%d+m$"), k)
        assert.truthy(b[k].memory:find("^%d+Mi$"), k)
      end
    end)
  end)

  describe("spark_history_server", function()
    it("GET while stopped is a 404 'History server already stopped'", function()
      local status, b, h = req("GET", "/spark_history_server")
      assert_error(status, b, h, 404)
      assert.equal("History server already stopped", b.errors[1].message)
    end)

    it("DELETE while stopped is a 409", function()
      local status, b, h = req("DELETE", "/spark_history_server")
      assert_error(status, b, h, 409)
      assert.equal("History server already stopped", b.errors[1].message)
    end)

    it("POST starts it with the seed's shape and a note that it is state-only", function()
      local status, b = req("POST", "/spark_history_server", { cores = "1", memory = "4G" })
      assert.equal(200, status)
      assert.equal("started", b.state)
      assert.equal("1", b.cores)
      assert.equal("4G", b.memory)
      assert.truthy(b.start_time:find(ISO_TIME))
      assert.is_string(b.local_engine_note)
    end)

    it("POST while started is a 409 'History server already started'", function()
      local status, b, h = req("POST", "/spark_history_server", { cores = "1", memory = "4G" })
      assert_error(status, b, h, 409)
      assert.equal("History server already started", b.errors[1].message)
    end)

    it("GET while started answers its details", function()
      local status, b = req("GET", "/spark_history_server")
      assert.equal(200, status)
      assert.equal("started", b.state)
    end)

    it("DELETE stops it with a 204", function()
      local status = req("DELETE", "/spark_history_server")
      assert.equal(204, status)
      assert.equal(404, (req("GET", "/spark_history_server")))
    end)

    it("POST with no body uses the defaults", function()
      local status, b = req("POST", "/spark_history_server", nil)
      assert.equal(200, status)
      assert.is_string(b.cores)
      req("DELETE", "/spark_history_server")
    end)
  end)

  describe("spark_clusters", function()
    local id
    it("POST answers 202 with id, cluster_id and state ACCEPTED", function()
      local status, b = req("POST", "/spark_clusters",
        { cluster_details = { name = "my-lab-1", conf = { ["spark.eventLog.enabled"] = "true" } } })
      assert.equal(202, status)
      assert.truthy(util.is_uuid(b.id))
      assert.equal(b.id, b.cluster_id)
      assert.equal("ACCEPTED", b.state)
      id = b.id
    end)

    it("the cluster becomes ACTIVE", function()
      local b = helper.eventually(function()
        local _, got = req("GET", "/spark_clusters/" .. id)
        return got and got.state == "ACTIVE" and got
      end, 5)
      assert.is_table(b)
    end)

    it("GET answers the seed's cluster shape", function()
      local status, b = req("GET", "/spark_clusters/" .. id)
      assert.equal(200, status)
      assert.equal("my-lab-1", b.cluster_details.name)
      assert.equal("3.4", b.cluster_details.runtime.spark_version)
      assert.equal("stand-alone", b.mode)
      assert.equal(id, b.cluster_id)
      assert.truthy(b.creation_time:find(LONG_TIME))
    end)

    it("list answers {clusters:[{id, name, state, start_time, default_runtime}]}", function()
      local status, b = req("GET", "/spark_clusters")
      assert.equal(200, status)
      local c = b.clusters[#b.clusters]
      assert.equal(id, c.id)
      assert.equal("my-lab-1", c.name)
      assert.truthy(c.start_time:find(ISO_TIME))
      assert.same({ spark_version = "3.4" }, c.default_runtime)
    end)

    it("DELETE answers 204 and keeps the record STOPPED with a finish_time", function()
      assert.equal(204, (req("DELETE", "/spark_clusters/" .. id)))
      local _, b = req("GET", "/spark_clusters/" .. id)
      assert.equal("STOPPED", b.state)
      assert.truthy(b.finish_time:find(LONG_TIME))
      local _, l = req("GET", "/spark_clusters")
      assert.truthy(l.clusters[#l.clusters].end_time:find(ISO_TIME))
    end)

    it("GET of an unknown id is a 404", function()
      local status, b, h = req("GET", "/spark_clusters/" .. MISSING)
      assert_error(status, b, h, 404)
    end)

    it("GET of a malformed id is a 400", function()
      local status, b, h = req("GET", "/spark_clusters/xyz")
      assert_error(status, b, h, 400)
    end)

    it("POST without cluster_details is a 400", function()
      local status, b, h = req("POST", "/spark_clusters", { name = "x" })
      assert_error(status, b, h, 400)
      assert.truthy(b.errors[1].message:find("cluster_details", 1, true))
    end)
  end)

  describe("kernels without Jupyter (--no-jupyter)", function()
    local nj
    lazy_setup(function() nj = helper.start({ "--no-jupyter" }) end)
    lazy_teardown(function() helper.stop(nj) end)
    for _, c in ipairs({ { "GET", "/jkg/api/kernelspecs" }, { "GET", "/jkg/api/kernels" },
                         { "POST", "/jkg/api/kernels" }, { "GET", "/jkg/api/kernels/" .. MISSING },
                         { "GET", "/jkg/api/kernels/" .. MISSING .. "/channels" } }) do
      it(c[1] .. " " .. c[2] .. " answers 503 naming what kernels need", function()
        local status, b, h = helper.request(nj, c[1], helper.v4(nj, c[2]),
          c[1] == "POST" and { name = "python310" } or nil)
        assert_error(status, b, h, 503)
        assert.truthy(b.errors[1].message:find("Jupyter Server", 1, true))
      end)
    end
  end)

  describe("routing and bodies", function()
    it("an unknown path is a 404", function()
      local status, b, h = req("GET", "/no_such_thing")
      assert_error(status, b, h, 404)
    end)

    it("a path outside /v4 is a 404", function()
      local status, b, h = helper.request(e, "GET", "/v3/whatever")
      assert_error(status, b, h, 404)
    end)

    it("a known path with the wrong method is a 405 with Allow", function()
      local status, b, h = req("POST", "/default_runtime", { spark_version = "3.4" })
      assert_error(status, b, h, 405)
      assert.truthy(h["allow"]:find("GET", 1, true))
      assert.truthy(h["allow"]:find("PUT", 1, true))
    end)

    it("malformed JSON is a 400 that says so", function()
      local status, b, h = req("PUT", "/default_runtime", "{nope")
      assert_error(status, b, h, 400)
      assert.truthy(b.errors[1].message:find("^request body is not valid JSON: "))
    end)

    it("a body that is not an object is a 400", function()
      local status, b, h = req("PUT", "/default_runtime", "[1,2]")
      assert_error(status, b, h, 400)
      assert.truthy(b.errors[1].message:find("object", 1, true))
    end)

    it("a missing required body is a 400", function()
      local status, b, h = req("PUT", "/default_runtime", "")
      assert_error(status, b, h, 400)
    end)

    it("a body over the limit is a 413", function()
      local status, b, h = req("PUT", "/default_configs", '{"a":"' .. ("x"):rep(1100000) .. '"}')
      assert_error(status, b, h, 413)
    end)
  end)

  describe("authentication", function()
    it("no Authorization header is a 401", function()
      local status, b, h = req("GET", "", nil, { Authorization = false })
      assert_error(status, b, h, 401)
    end)

    it("a wrong API key is a 401", function()
      local status, b, h = req("GET", "", nil, { Authorization = helper.zen(e, "admin", "wrong") })
      assert_error(status, b, h, 401)
    end)

    it("an unknown scheme is a 401", function()
      local status, b, h = req("GET", "", nil, { Authorization = "Basic YWRtaW46eA==" })
      assert_error(status, b, h, 401)
    end)

    it("the 401 never echoes the key", function()
      local _, _, _, raw = req("GET", "", nil, { Authorization = helper.zen(e, "admin", "sekrit-key") })
      assert.falsy(raw:find("sekrit", 1, true))
    end)

    it("POST /icp4d-api/v1/authorize with the api_key answers the seed's token shape", function()
      local status, b = helper.request(e, "POST", "/icp4d-api/v1/authorize",
        { username = "admin", api_key = e.api_key }, { Authorization = false })
      assert.equal(200, status)
      assert.equal("200", b._messageCode_)
      assert.equal("Success", b.message)
      assert.truthy(b.token:find("^[%w_%-]+%.[%w_%-]+%.[%w_%-]+$"))
    end)

    it("the token's claims carry username, role, iat and exp", function()
      local _, b = helper.request(e, "POST", "/icp4d-api/v1/authorize",
        { username = "admin", api_key = e.api_key }, { Authorization = false })
      local claims = util.json_decode(util.b64url_decode(b.token:match("^[^.]+%.([^.]+)%.")))
      assert.equal("admin", claims.username)
      assert.equal("admin", claims.role)
      assert.equal(3600, claims.exp - claims.iat)
    end)

    it("a bearer token is accepted", function()
      local _, b = helper.request(e, "POST", "/icp4d-api/v1/authorize",
        { username = "admin", api_key = e.api_key }, { Authorization = false })
      local status = req("GET", "", nil, { Authorization = "Bearer " .. b.token })
      assert.equal(200, status)
    end)

    it("a tampered bearer token is a 401", function()
      local _, b = helper.request(e, "POST", "/icp4d-api/v1/authorize",
        { username = "admin", api_key = e.api_key }, { Authorization = false })
      local status, body, h = req("GET", "", nil, { Authorization = "Bearer " .. b.token .. "x" })
      assert_error(status, body, h, 401)
    end)

    it("authorize with a wrong key is a 401", function()
      local status, b, h = helper.request(e, "POST", "/icp4d-api/v1/authorize",
        { username = "admin", api_key = "wrong" }, { Authorization = false })
      assert_error(status, b, h, 401)
    end)

    it("authorize without username is a 400", function()
      local status, b, h = helper.request(e, "POST", "/icp4d-api/v1/authorize", { api_key = "x" },
        { Authorization = false })
      assert_error(status, b, h, 400)
    end)

    it("the engine's stats need credentials too", function()
      local status = helper.request(e, "GET", "/engine/v1/stats", nil, { Authorization = false })
      assert.equal(401, status)
    end)
  end)
end)

describe("local engine with extra users and a 1 s token lifetime", function()
  local e, users_file
  lazy_setup(function()
    users_file = os.tmpname()
    helper.write(users_file, util.json_encode({
      { username = "viewer", role = "viewer", api_key_sha256 = sha256_hex("viewer-key") },
      { username = "alice", role = "editor", password_sha256 = sha256_hex("alice-password") },
    }))
    e = helper.start({ "--users", users_file, "--token-ttl", "1" })
  end)
  lazy_teardown(function()
    helper.stop(e)
    helper.cleanup(e)
    os.remove(users_file)
  end)

  it("a viewer may GET", function()
    local status = helper.request(e, "GET", helper.v4(e, "/default_runtime"), nil,
      { Authorization = helper.zen(e, "viewer", "viewer-key") })
    assert.equal(200, status)
  end)

  it("a viewer may not PUT (403)", function()
    local status, b, h = helper.request(e, "PUT", helper.v4(e, "/default_runtime"), { spark_version = "3.3" },
      { Authorization = helper.zen(e, "viewer", "viewer-key") })
    assert_error(status, b, h, 403)
  end)

  it("a password user exchanges username and password for a token", function()
    local status, b = helper.request(e, "POST", "/icp4d-api/v1/authorize",
      { username = "alice", password = "alice-password" }, { Authorization = false })
    assert.equal(200, status)
    local s2 = helper.request(e, "GET", helper.v4(e, ""), nil, { Authorization = "Bearer " .. b.token })
    assert.equal(200, s2)
  end)

  it("a wrong password is a 401", function()
    local status, b, h = helper.request(e, "POST", "/icp4d-api/v1/authorize",
      { username = "alice", password = "nope" }, { Authorization = false })
    assert_error(status, b, h, 401)
  end)

  it("an expired token is a 401", function()
    local _, b = helper.request(e, "POST", "/icp4d-api/v1/authorize",
      { username = "alice", password = "alice-password" }, { Authorization = false })
    core.sleep(2.1)
    local status, body, h = helper.request(e, "GET", helper.v4(e, ""), nil, { Authorization = "Bearer " .. b.token })
    assert_error(status, body, h, 401)
    assert.truthy(body.errors[1].message:find("expired", 1, true))
  end)
end)
