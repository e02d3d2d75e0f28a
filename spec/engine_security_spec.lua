-- The engine survives its own bugs and hostile clients: a handler that fails
-- answers 500 in the service's error shape (logged with its traceback) and the
-- next request is answered; WebSocket clients that close with an empty
-- payload, with codes that must not be sent, or drop the TCP connection after
-- an execute_request do not end the engine. Real engine, real Jupyter Server.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local helper = require("helpers.engine")

local hostile = helper.hostile_ws

local function read(path)
  return util.read_file(path) or ""
end

local function alive(e)
  local status, b = helper.request(e, "GET", helper.v4(e, "/default_runtime"))
  assert.equal(200, status, "the engine no longer answers")
  assert.equal("string", type(b.spark_version))
  assert.is_true(core.kill(e.pid, 0))
end

local function active_cluster(e) return helper.active_cluster(e, "c") end

describe("close codes and reasons the engine sends (guard)", function()
  local guard = require("analytics_engine.engine.guard")
  it("never sends 1005, 1006, 1015 or a code outside what RFC 6455 allows", function()
    local want = { [0] = 1000, [1000] = 1000, [1001] = 1001, [1004] = 1011, [1005] = 1000, [1006] = 1011,
                   [1011] = 1011, [1015] = 1011, [1016] = 1011, [2999] = 1011, [3000] = 3000, [4999] = 4999,
                   [5000] = 1011, [999] = 1011, [-1] = 1011 }
    for code, sent in pairs(want) do assert.equal(sent, guard.close_code(code), tostring(code)) end
    assert.equal(1000, guard.close_code(nil))
    assert.equal(1011, guard.close_code(1000.5))
  end)
  it("keeps a reason to one line of at most 123 bytes, not cutting a character", function()
    assert.equal("a b", guard.close_reason("a\nb"))
    assert.equal(123, #guard.close_reason(("x"):rep(300)))
    local r = guard.close_reason(("x"):rep(122) .. "é")
    assert.equal(("x"):rep(122), r)
    assert.equal("", guard.close_reason(nil))
  end)
end)

describe("a handler that fails", function()
  local e
  lazy_setup(function()
    e = helper.start({ "--no-jupyter" }, { bin = { "env", "AE_ENGINE_FAIL_POINTS=engine_stats,ws_message",
                                                    helper.bin() } })
  end)
  lazy_teardown(function() helper.stop(e) end)

  it("answers 500 in the service's error shape, logs one line and its traceback, and the engine goes on", function()
    for _ = 1, 3 do
      local status, b, h = helper.request(e, "GET", "/engine/v1/stats")
      assert.equal(500, status)
      assert.equal(500, b.status_code)
      assert.equal("internal_error", b.errors[1].code)
      assert.matches("^%x+$", b.trace)
      assert.equal(b.trace, h["x-global-transaction-id"])
      alive(e)
      local log = read(e.log)
      assert.truthy(log:find("engine: internal error in GET /engine/v1/stats (trace " .. b.trace .. "): ", 1, true),
        log)
      assert.truthy(log:find("deliberate failure at engine_stats", 1, true))
      assert.truthy(log:find("stack traceback:", 1, true))
    end
  end)

  it("a WebSocket callback that fails closes that socket with 1011; the engine goes on", function()
    local id = active_cluster(e)
    local out = hostile(e, helper.v4(e, "/spark_clusters/" .. id .. "/connect"), nil, "read:1", "text:hello",
      "read:5")
    assert.matches("STATUS 101", out)
    assert.matches("CLOSE 1011", out)
    alive(e)
    assert.truthy(read(e.log):find("internal error in a WebSocket callback", 1, true))
  end)
end)

describe("a timer and a loop step that fail", function()
  it("a delayed answer whose timer fails is a 500; the next request is answered", function()
    local e = helper.start({ "--no-jupyter", "--faults", "1", "--fault-kinds", "delay", "--fault-delay", "0.1",
                             "--fault-ops", "get_instance" },
      { bin = { "env", "AE_ENGINE_FAIL_POINTS=timer", helper.bin() } })
    finally(function() helper.stop(e) end)
    local status, b = helper.request(e, "GET", helper.v4(e, ""))
    assert.equal(500, status)
    assert.equal("internal_error", b.errors[1].code)
    alive(e)
    assert.truthy(read(e.log):find("deliberate failure at timer", 1, true))
  end)

  it("an applications' tick that fails on every turn is logged; requests are still answered", function()
    local e = helper.start({ "--no-jupyter" }, { bin = { "env", "AE_ENGINE_FAIL_POINTS=tick", helper.bin() } })
    finally(function() helper.stop(e) end)
    for _ = 1, 5 do alive(e) end
    assert.truthy(read(e.log):find("internal error in the applications' tick", 1, true))
  end)
end)

describe("hostile clients of the cluster connect WebSocket", function()
  local e, path
  lazy_setup(function()
    e = helper.start({ "--no-jupyter" })
    path = helper.v4(e, "/spark_clusters/" .. active_cluster(e) .. "/connect")
  end)
  lazy_teardown(function() helper.stop(e) end)

  it("an empty close payload is answered with a close (no code, never 1005)", function()
    local out = hostile(e, path, nil, "read:1", "close-empty", "read:5")
    assert.matches("CLOSE 0\n", out)
    alive(e)
  end)

  for _, code in ipairs({ 1005, 1006, 1015, 999, 2999, 5000 }) do
    it("a close with code " .. code .. " does not end the engine", function()
      hostile(e, path, nil, "read:1", "close:" .. code, "read:3")
      alive(e)
    end)
  end

  it("asked to close with a code that must not be sent, sends 1000 or 1011 instead", function()
    for code, want in pairs({ [1005] = 1000, [1006] = 1011, [1015] = 1011, [7] = 1011, [1000] = 1000,
                              [4001] = 4001 }) do
      local out = hostile(e, path, nil, "read:1", "text:!close " .. code .. " bye", "read:5")
      assert.matches("CLOSE " .. want .. "\n", out)
    end
    alive(e)
  end)

  it("a TCP drop mid-message and right after a message do not end the engine", function()
    hostile(e, path, nil, "read:1", "text:" .. ("x"):rep(100), "drop")
    hostile(e, path, nil, "drop")
    alive(e)
    assert.is_nil(read(e.log):find("internal error", 1, true))
  end)
end)

describe("hostile clients of a kernel's channels WebSocket (real Jupyter Server)", function()
  local e, kid
  lazy_setup(function()
    e = helper.start()
    local status, b = helper.request(e, "POST", helper.v4(e, "/jkg/api/kernels"), { name = "python3" })
    assert.equal(201, status, util.json_encode(b))
    kid = b.id
  end)
  lazy_teardown(function()
    if kid then helper.request(e, "DELETE", helper.v4(e, "/jkg/api/kernels/" .. kid)) end
    helper.stop(e)
  end)

  local function channels() return helper.v4(e, "/jkg/api/kernels/" .. kid .. "/channels") end

  it("an empty close right after execute_request", function()
    local out = hostile(e, channels(), nil, "execute", "close-empty", "read:5")
    assert.matches("STATUS 101", out)
    assert.is_nil(out:find("CLOSE 1005", 1, true))
    alive(e)
  end)

  it("a TCP drop right after execute_request", function()
    local out = hostile(e, channels(), nil, "execute", "drop")
    assert.matches("STATUS 101", out)
    core.sleep(1)
    alive(e)
  end)

  it("close codes that must not be sent (1005, 1006, 1015)", function()
    for _, code in ipairs({ 1005, 1006, 1015 }) do
      local out = hostile(e, channels(), nil, "execute", "close:" .. code, "read:5")
      assert.matches("STATUS 101", out)
      assert.is_nil(out:find("CLOSE " .. code, 1, true))
      alive(e)
    end
  end)

  it("the kernel still executes through a well-behaved client afterwards", function()
    local out = hostile(e, channels(), nil, "execute", "read:4")
    assert.matches("FRAME 1 ", out)
    alive(e)
    assert.is_nil(read(e.log):find("internal error", 1, true))
  end)
end)

describe("files are private whatever the umask or the directory's previous mode", function()
  local e, dir, root
  local function mode(p) return core.file_mode(p) end
  lazy_setup(function()
    dir = helper.temp_dir("ae-modes-spec-")
    root = dir .. "-apps"
    assert(os.execute(("mkdir -p '%s' && chmod 0755 '%s' && mkdir -m 0755 '%s/apps'"):format(root, dir, dir)))
    -- a data directory that exists 0755, and a umask that makes everything world-writable
    helper.write(root .. "/ok.sh", "echo hi\n")
    e = helper.start({ "--app-root", root, "--no-jupyter" },
      { data_dir = dir, bin = { "sh", "-c", 'umask 000; exec "$0" "$@"', helper.bin() } })
  end)
  lazy_teardown(function()
    helper.stop(e)
    os.execute("rm -rf '" .. dir .. "' '" .. root .. "'")
  end)

  it("the data directory is 0700 and state.db, its WAL, the log and the credentials 0600", function()
    local id = helper.submit(e, { application = "ok.sh", env = { API_TOKEN = "s3cr3t-in-env" },
                                  conf = { ["spark.hadoop.fs.s3a.secret.key"] = "s3cr3t-in-conf" } })
    helper.wait_app(e, id)
    assert.equal(tonumber("700", 8), mode(dir))
    assert.equal(tonumber("700", 8), mode(dir .. "/apps"))
    assert.equal(tonumber("700", 8), mode(dir .. "/apps/" .. id))
    for _, f in ipairs({ "state.db", "state.db-wal", "state.db-shm", "engine.log", "credentials.json", "secret",
                         "users.json", "engine.json", "apps/" .. id .. "/stdout" }) do
      local m = mode(dir .. "/" .. f)
      if m then assert.equal(tonumber("600", 8), m, f) end
    end
    assert.truthy(mode(dir .. "/state.db"))
  end)

  it("an existing 0644 state.db and 0755 application directories are made private at the next start", function()
    helper.stop(e, true)
    assert(os.execute(("chmod 0644 '%s/state.db' %s/apps/*/stdout; chmod 0755 '%s' %s/apps/*")
      :format(dir, dir, dir, dir)))
    e = helper.start({ "--app-root", root, "--no-jupyter" }, { data_dir = dir })
    assert.equal(tonumber("600", 8), mode(dir .. "/state.db"))
    assert.equal(tonumber("700", 8), mode(dir))
    local p = assert(io.popen("ls " .. dir .. "/apps"))
    for id in p:lines() do
      assert.equal(tonumber("700", 8), mode(dir .. "/apps/" .. id))
      assert.equal(tonumber("600", 8), mode(dir .. "/apps/" .. id .. "/stdout"))
    end
    p:close()
  end)
end)

describe("the page's login", function()
  local e
  local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded", Authorization = false, Accept = "text/html" }
  lazy_setup(function() e = helper.start({ "--no-jupyter" }) end)
  lazy_teardown(function() helper.stop(e) end)

  local function login(extra)
    local h = {}
    for k, v in pairs(FORM) do h[k] = v end
    for k, v in pairs(extra or {}) do h[k] = v end
    local status, _, headers = helper.request(e, "POST", "/login",
      "username=admin&api_key=" .. e.api_key .. "&next=%2F", h)
    return status, headers
  end

  it("refuses a cross-origin POST /login (login CSRF), by Origin or by Referer", function()
    for _, h in ipairs({ { Origin = "https://evil.example" }, { Origin = "null" },
                         { Referer = "https://evil.example/page" }, { Origin = e.url .. ".evil.example" } }) do
      local status, headers = login(h)
      assert.equal(403, status)
      assert.is_nil(headers["set-cookie"])
    end
  end)

  it("accepts the engine's own origin, and a client that sends none (curl)", function()
    for _, h in ipairs({ { Origin = e.url }, { Referer = e.url .. "/login?next=%2F" }, {} }) do
      local status, headers = login(h)
      assert.equal(303, status)
      assert.truthy(headers["set-cookie"]:find("HttpOnly", 1, true))
      -- plain HTTP: no Secure flag (the browser would drop the cookie)
      assert.is_nil(headers["set-cookie"]:find("Secure", 1, true))
    end
  end)

  it("marks the session cookie Secure under TLS", function()
    local dir = helper.temp_dir("ae-tls-login-")
    local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
    assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
      .. "-addext subjectAltName=IP:127.0.0.1 -keyout '%s' -out '%s' >/dev/null 2>&1"):format(key, cert)))
    local t = helper.start({ "--tls-cert", cert, "--tls-key", key, "--no-jupyter" })
    finally(function()
      helper.stop(t)
      os.execute("rm -rf '" .. dir .. "'")
    end)
    local s = core.http_session()
    local res = assert(s:request{ method = "POST", url = t.url .. "/login", cafile = cert, timeout = 10,
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded", Origin = t.url },
      body = "username=admin&api_key=" .. t.api_key })
    s:close()
    assert.equal(303, res.status)
    assert.truthy(res.headers["set-cookie"]:find("; Secure", 1, true), res.headers["set-cookie"])
  end)
end)
