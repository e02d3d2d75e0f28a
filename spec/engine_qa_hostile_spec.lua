-- QA of the engine from the outside, as an attacker would: values the engine
-- used to accept and then silently ignore, and bytes a client (or an
-- application) controls that used to reach a JSON answer or the operator's
-- terminal unescaped. Against a real engine on loopback; raw bytes through
-- spec/helpers/raw_client.py (libcurl would percent-encode them).
local cjson = require("cjson")
local util = require("analytics_engine.util")
local helper = require("helpers.engine")
local rawc = require("helpers.raw")


-- Send raw bytes on one connection (half-closed after them unless shut is
-- false) -> what came back (the whole answer); with `timeout`, the client's
-- whole result { data, eof } instead.
local function raw_exchange(e, bytes, timeout, shut)
  local res = rawc.exchange(rawc.port_of(e), { { send = bytes, shut = shut ~= false } }, timeout or 5)
  if timeout then return { data = res[1].data, eof = res[1].eof } end
  return res[1].data
end

local function body_of(answer) return answer:match("\r\n\r\n(.*)$") end

describe("engine under hostile values and bytes (QA)", function()
  local e, root
  local function req(method, suffix, body, headers)
    return helper.request(e, method, helper.v4(e, suffix), body, headers)
  end

  lazy_setup(function()
    root = os.tmpname()
    os.remove(root)
    assert(os.execute("mkdir -p " .. root))
    -- bytes that are not UTF-8, a terminal title sequence, and a character
    -- whose second byte comes only once the spec lets it
    helper.write(root .. "/binary.sh", "printf 'ok \\377\\376 \\033]0;x\\007 \\303\\251 done\\n'\n")
    helper.write(root .. "/split.sh", ("printf 'caf\\303'\nwhile [ ! -e %s/go ]; do sleep 0.05; done\n"
      .. "printf '\\251!'\n"):format(root))
    e = helper.start({ "--app-root", root, "--no-jupyter" })
  end)
  lazy_teardown(function()
    helper.stop(e)
    os.execute("rm -rf '" .. root .. "'")
  end)

  describe("resource_consumption_limits", function()
    -- Each was answered 200 and echoed back, while the quota check could not
    -- parse it and used the instance's quota instead: a limit of "0" let
    -- every application run.
    for _, v in ipairs({ { "0", "64Gi" }, { "0m", "64Gi" }, { "0.0001", "64Gi" }, { "16", "5Ei" },
                         { "16", "0Gi" }, { "1234567890123456", "64Gi" } }) do
      it(("refuses max_cores %q, max_memory %q that the quota cannot apply"):format(v[1], v[2]), function()
        local status, b = req("PUT", "/resource_consumption_limits", { max_cores = v[1], max_memory = v[2] })
        assert.equal(400, status)
        assert.equal("bad_request", b.errors[1].code)
        assert.matches(v[1] == "16" and "^max_memory " or "^max_cores ", b.errors[1].message)
        local _, now = req("GET", "/resource_consumption_limits")
        assert.not_equal(v[1] == "16" and v[2] or v[1], v[1] == "16" and now.max_memory or now.max_cores)
      end)
    end

    it("still takes limits it can apply, fractions and large ones included", function()
      for _, v in ipairs({ { "0.5", "512Mi" }, { "500m", "1.5Gi" }, { "2000", "1024Ti" }, { "16", "64Gi" } }) do
        local status, b = req("PUT", "/resource_consumption_limits", { max_cores = v[1], max_memory = v[2] })
        assert.equal(200, status, v[1] .. " " .. v[2])
        assert.same({ max_cores = v[1], max_memory = v[2] }, b)
      end
    end)
  end)

  describe("an application larger than the whole resource_consumption_limits", function()
    -- It waits QUEUED (as the service does: instance_quota_exhausted), but it
    -- cannot start before the limits are raised: it used to hold up every
    -- application behind it, on an idle instance, until someone deleted it.
    local big
    after_each(function()
      if big then req("DELETE", "/spark_applications/" .. big) end
      req("PUT", "/resource_consumption_limits", { max_cores = "16", max_memory = "64Gi" })
    end)

    it("keeps its place without blocking the ones that fit, and starts once the limits are raised", function()
      assert.equal(200, (req("PUT", "/resource_consumption_limits", { max_cores = "3", max_memory = "64Gi" })))
      -- driver 1 + 3 executors x 1 core = 4 cores, more than 3
      big = helper.submit(e, { application = "split.sh", conf = { ["spark.executor.instances"] = "3" } })
      local small = helper.submit(e, { application = "binary.sh" })
      local done = helper.wait_app(e, small)
      assert.equal("FINISHED", done.state)
      local _, b = req("GET", "/spark_applications/" .. big)
      assert.equal("QUEUED", b.state)
      assert.equal("instance_quota_exhausted", b.state_details[1].code)
      assert.matches("4000m cores", b.state_details[1].message)
      -- a submission that may not queue is not refused because of it either
      local status = req("POST", "/spark_applications",
        { application_details = { application = "binary.sh" }, queuing_enabled = false })
      assert.equal(202, status)
      assert.equal(200, (req("PUT", "/resource_consumption_limits", { max_cores = "8", max_memory = "64Gi" })))
      assert.truthy(helper.eventually(function()
        local _, now = req("GET", "/spark_applications/" .. big)
        return now.state == "RUNNING"
      end), "the large application did not start once it fitted")
    end)
  end)

  it("holds default_configs merged by PATCH to PUT's 1,000 keys (patches grew it without end)", function()
    local function keys(prefix, n)
      local t = {}
      for i = 1, n do t[prefix .. i] = "v" end
      return t
    end
    local patch = { ["Content-Type"] = "application/merge-patch+json" }
    assert.equal(200, (req("PATCH", "/default_configs", keys("a", 600), patch)))
    local status, b = req("PATCH", "/default_configs", keys("b", 600), patch)
    assert.equal(400, status)
    assert.equal("default_configs would have 1200 keys, more than 1000", b.errors[1].message)
    local _, now = req("GET", "/default_configs")
    assert.is_nil(now.b1)
    -- replacing and deleting keys in the same patch count as they end up
    local mixed = keys("b", 500)
    for i = 1, 100 do mixed["a" .. i] = cjson.null end
    assert.equal(200, (req("PATCH", "/default_configs", mixed, patch)))
    _, now = req("GET", "/default_configs")
    local n = 0
    for _ in pairs(now) do n = n + 1 end
    assert.equal(1000, n)
    assert.equal(200, (req("PUT", "/default_configs", {})))
    -- and to 1 MiB of keys and values: two patches of 16 values of 64,000 bytes each
    local big = ("x"):rep(64000)
    for p = 1, 2 do
      local t = {}
      for i = 1, 16 do t[("p%d_%d"):format(p, i)] = big end
      status, b = req("PATCH", "/default_configs", t, patch)
      assert.equal(p == 1 and 200 or 400, status)
    end
    assert.matches("^default_configs would hold %d+ bytes, more than 1048576$", b.errors[1].message)
    assert.equal(200, (req("PUT", "/default_configs", {})))
  end)

  it("ends a cluster's open connect sessions when the cluster is deleted (they went on echoing)", function()
    local c = helper.client(e)
    local cid = assert(c:create_cluster { name = "qa" }).id
    assert.truthy(helper.eventually(function() return assert(c:get_cluster(cid)).state == "ACTIVE" end))
    local ws = assert(c:connect_cluster(cid))
    assert.matches(cid, (assert(ws:receive(10))), 1, true)
    assert(c:delete_cluster(cid))
    local data, err = ws:receive(10)
    assert.is_nil(data, data)
    assert.same({ "closed", 1001, "the cluster was stopped" }, { err.kind, err.code, err.reason })
    ws:close()
  end)

  it("closes a connect session that broke the protocol soon after its close frame (it waited for the peer forever)",
    function()
      local c = helper.client(e)
      local cid = assert(c:create_cluster { name = "qa-protocol" }).id
      assert.truthy(helper.eventually(function() return assert(c:get_cluster(cid)).state == "ACTIVE" end))
      -- an unmasked frame from a client is a protocol error (RFC 6455 5.1): 1002; then the peer goes silent
      local answer = raw_exchange(e, "GET " .. helper.v4(e, "/spark_clusters/" .. cid .. "/connect") .. " HTTP/1.1\r\n"
        .. "Host: x\r\nAuthorization: " .. helper.zen(e) .. "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        .. "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\129\2hi", 15, false)
      assert.matches("^HTTP/1.1 101", answer.data)
      assert.truthy(answer.data:find("\136\2\3\234", 1, true), "no close frame with 1002")
      assert.is_true(answer.eof, "the engine kept the connection open")
    end)

  it("answers HEAD wherever it answers GET (RFC 9110 9.3.2: it was a 405)", function()
    local answer = raw_exchange(e, "HEAD " .. helper.v4(e, "/default_runtime") .. " HTTP/1.1\r\nHost: x\r\n"
      .. "Authorization: " .. helper.zen(e) .. "\r\nConnection: close\r\n\r\n")
    assert.matches("^HTTP/1.1 200", answer)
    local _, _, _, raw = req("GET", "/default_runtime")
    assert.matches("\r\nContent%-Length: " .. #raw .. "\r\n", answer)
    assert.equal("", body_of(answer)) -- the headers only
    -- still what GET may do: authenticated, and a 405 lists HEAD with GET
    assert.matches("^HTTP/1.1 401", raw_exchange(e, "HEAD " .. helper.v4(e, "/default_runtime")
      .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    local status, _, headers = req("POST", "/default_runtime", {})
    assert.equal(405, status)
    assert.equal("GET, HEAD, PUT", headers.allow)
  end)

  it("takes the history server's sizes as numbers wherever the schema does (1.5 cores, 4096 MiB were 400s)", function()
    for _, c in ipairs({ { 1.5, 4096, "1.5", "4096" }, { 2, "4G", "2", "4G" }, { "500m", 512.5, "500m", "512.5" } }) do
      local status, b = req("POST", "/spark_history_server", { cores = c[1], memory = c[2] })
      assert.equal(200, status, tostring(c[1]))
      assert.same({ c[3], c[4] }, { b.cores, b.memory })
      assert.equal(204, (req("DELETE", "/spark_history_server")))
    end
  end)

  describe("the engine's own conf keys", function()
    local function submit(conf)
      return req("POST", "/spark_applications", { application_details = { application = "binary.sh", conf = conf } })
    end

    it("refuses an application time limit that is not a positive duration (was silently no limit)", function()
      for _, v in ipairs({ "abc", "-1", "0", "1e308", "inf" }) do
        local status, b = submit({ ["ae.local-engine.timeout"] = v })
        assert.equal(400, status, v)
        assert.matches("^application_details%.conf%.ae%.local%-engine%.timeout must be a duration",
          b.errors[1].message)
      end
      assert.equal(202, (submit({ ["ae.local-engine.timeout"] = "90s" })))
    end)

    it("refuses bad history-server sizes and time limits in default_configs, naming the key", function()
      local cases = {
        { "ae.spark.history-server.cores", "abc", "must be a number of cores" },
        { "ae.spark.history-server.memory", "-4G", "must be a memory size" },
        { "ae.local-engine.timeout", "soon", "must be a duration" },
      }
      for _, c in ipairs(cases) do
        for _, method in ipairs({ "PUT", "PATCH" }) do
          local status, b = req(method, "/default_configs", { [c[1]] = c[2] },
            method == "PATCH" and { ["Content-Type"] = "application/merge-patch+json" } or nil)
          assert.equal(400, status, method .. " " .. c[1])
          assert.equal("default_configs." .. c[1] .. " " .. c[3], b.errors[1].message:sub(1, #c[1] + 17 + #c[3]))
        end
      end
      local _, configs = req("GET", "/default_configs")
      for _, c in ipairs(cases) do assert.is_nil(configs[c[1]]) end
      -- so starting the history server cannot fail on a value nobody sent in its body
      local status = req("POST", "/spark_history_server", {})
      assert.equal(200, status)
      assert.equal(204, (req("DELETE", "/spark_history_server")))
    end)
  end)

  describe("bytes a client controls", function()
    it("answers a request target with invalid UTF-8 and escapes in strict JSON, and logs it escaped", function()
      -- an engine that logs its requests (the launcher always adds --quiet: drop it)
      local drop_quiet = 'for a; do shift; [ "$a" = --quiet ] || set -- "$@" "$a"; done; exec "$0" "$@"'
      local loud = helper.start({ "--no-jupyter" }, { bin = { "sh", "-c", drop_quiet, helper.bin() } })
      local ok, err = pcall(function()
        local answer = raw_exchange(loud, "GET /v4/\xff\xfe\27]0;owned\7 HTTP/1.1\r\nHost: x\r\n"
          .. "Connection: close\r\n\r\n")
        assert.matches("^HTTP/1.1 404", answer)
        local body = body_of(answer)
        assert.truthy(utf8.len(body), body)
        local doc = cjson.decode(body)
        assert.matches("no such endpoint: GET /v4/\\xff\\xfe", doc.errors[1].message, 1, true)
        -- the log line is for a terminal: no raw escape, bell or invalid byte
        local log = helper.eventually(function()
          local s = util.read_file(loud.data_dir .. "/engine.log") or ""
          return s:find("/v4/\\xff", 1, true) and s
        end)
        assert.truthy(log, "the request was not logged")
        assert.is_nil(log:find("\27", 1, true))
        assert.is_nil(log:find("\7", 1, true))
        assert.truthy(utf8.len(log))
      end)
      helper.stop(loud)
      assert(ok, err)
    end)

    it("names a bad id with invalid UTF-8 in strict JSON", function()
      local answer = raw_exchange(e, "GET " .. helper.v4(e, "/spark_applications/\xc3\x28") .. " HTTP/1.1\r\n"
        .. "Host: x\r\nAuthorization: " .. helper.zen(e) .. "\r\nConnection: close\r\n\r\n")
      assert.matches("^HTTP/1.1 400", answer)
      local body = body_of(answer)
      assert.truthy(utf8.len(body), body)
      assert.equal("application_id '\\xc3(' is not a valid id", cjson.decode(body).errors[1].message)
    end)
  end)

  describe("logs?format=json of output that is not UTF-8", function()
    local function logs(id, offset)
      local status, b, _, raw = helper.request(e, "GET", ("/engine/v1/applications/%s/logs?format=json&offset=%d")
        :format(id, offset or 0))
      assert.equal(200, status)
      assert.truthy(utf8.len(raw), raw)
      return b
    end

    it("is strict JSON: invalid bytes become U+FFFD, valid text and escapes stay as written", function()
      local id = helper.submit(e, { application = "binary.sh" })
      helper.wait_app(e, id)
      local b = logs(id)
      assert.equal("ok \u{FFFD}\u{FFFD} \27]0;x\7 \u{E9} done\n", b.text)
      assert.equal(#"ok \xff\xfe \27]0;x\7 \xc3\xa9 done\n", b.next_offset)
      -- an offset inside a character: the stray continuation byte is U+FFFD
      assert.equal("\u{FFFD} done\n", logs(id, b.next_offset - 7).text)
    end)

    it("refuses an offset that is no file offset, and has nothing past the end (was a 500, or the start)", function()
      local id = helper.submit(e, { application = "binary.sh" })
      helper.wait_app(e, id)
      local status, b = helper.request(e, "GET",
        "/engine/v1/applications/" .. id .. "/logs?offset=99999999999999999999")
      assert.equal(400, status)
      assert.equal("offset must be a non-negative integer", b.errors[1].message)
      for _, offset in ipairs({ 1000, 4611686018427387904, math.maxinteger }) do
        assert.equal("", logs(id, offset).text, offset)
        local raw
        status, _, _, raw = helper.request(e, "GET", ("/engine/v1/applications/%s/logs?offset=%d"):format(id, offset))
        assert.equal(200, status)
        assert.equal("", raw)
      end
    end)

    it("does not split a character a running application has half written", function()
      local id = helper.submit(e, { application = "split.sh" })
      local first = helper.eventually(function()
        local b = logs(id)
        return b.text ~= "" and b
      end)
      assert.equal("caf", first.text)
      assert.equal(3, first.next_offset)
      helper.write(root .. "/go", "")
      helper.wait_app(e, id)
      local rest = logs(id, first.next_offset)
      assert.equal("\u{E9}!", rest.text)
      assert.equal(6, rest.next_offset)
    end)
  end)
end)
