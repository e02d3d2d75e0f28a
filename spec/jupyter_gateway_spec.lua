-- A real Jupyter Server using the local engine as its kernel gateway
-- (--GatewayClient.url=<engine>/v4/analytics_engines/<id>/jkg, the engine's
-- API key as its ZenApiKey auth token), driven through its own REST API and
-- channels WebSocket: kernelspecs, start, execute, interrupt, delete. The
-- engine must be alive and answering afterwards (an ordinary delete after a
-- session used to end it). Nothing is mocked.
local ae = require("analytics_engine")
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local helper = require("helpers.engine")

local EXEC = { timeout = 120 }

-- Jupyter Server 1.x's gateway handler opens its upstream WebSocket in a
-- callback it schedules after the 101; a message that arrives before that
-- callback ran is attached to a future that never resolves and is lost (its
-- GatewayWebSocketClient.on_message; fixed in Jupyter Server 2). A browser
-- client retries its kernel_info_request; this spec waits that long instead.
local UPSTREAM_GRACE = 1

local function connect(c, id)
  local s = assert(c:connect_kernel(id))
  core.sleep(UPSTREAM_GRACE)
  return s
end

local function temp_dir() return helper.temp_dir("ae-gateway-spec-") end

-- Start `python3 -m jupyter_server` with its GatewayClient at the engine.
local function start_gateway_client(e, dir)
  for _, d in ipairs({ "runtime", "data", "config", "work" }) do assert(core.mkdir_p(dir .. "/" .. d, 448)) end
  local token = util.hex(core.random_bytes(16))
  local b1, b2 = core.random_bytes(2):byte(1, 2)
  local port = 20000 + (b1 * 256 + b2) % 30000
  local env = {}
  for _, k in ipairs({ "PATH", "HOME", "LANG" }) do
    if os.getenv(k) then env[#env + 1] = k .. "=" .. os.getenv(k) end
  end
  -- secrets in the environment, not in argv
  for k, v in pairs({ JUPYTER_TOKEN = token, JUPYTER_RUNTIME_DIR = dir .. "/runtime",
                      JUPYTER_DATA_DIR = dir .. "/data", JUPYTER_CONFIG_DIR = dir .. "/config",
                      JUPYTER_GATEWAY_AUTH_TOKEN = util.b64encode(e.username .. ":" .. e.api_key) }) do
    env[#env + 1] = k .. "=" .. v
  end
  local log = dir .. "/server.log"
  local pid = assert(core.spawn{ argv = { "/usr/bin/python3", "-m", "jupyter_server",
    "--ServerApp.ip=127.0.0.1", "--ServerApp.port=" .. port, "--ServerApp.port_retries=50",
    "--ServerApp.open_browser=False", "--ServerApp.allow_root=True", "--ServerApp.root_dir=" .. dir .. "/work",
    "--GatewayClient.url=" .. e.url .. helper.v4(e, "/jkg"), "--GatewayClient.auth_scheme=ZenApiKey",
    "--GatewayClient.request_timeout=120" },
    env = env, cwd = dir .. "/work", stdout = log, stderr = log, die_with_parent = "TERM" })
  local deadline = core.monotime() + 90
  while true do
    local info = util.read_json_file(("%s/runtime/jpserver-%d.json"):format(dir, pid))
    if type(info) == "table" and tonumber(info.port) then
      return { pid = pid, url = ("http://127.0.0.1:%d"):format(info.port), token = token, log = log }
    end
    local st = core.wait(pid)
    assert(st == nil, "the gateway client's Jupyter Server exited: " .. (util.read_file(log) or ""))
    assert(core.monotime() < deadline, "the gateway client's Jupyter Server did not start")
    core.sleep(0.1)
  end
end

local function stop(j)
  if not j then return end
  core.kill(j.pid, "TERM")
  local deadline = core.monotime() + 10
  while core.wait(j.pid) == nil do
    if core.monotime() > deadline then
      core.kill(j.pid, "KILL")
      core.wait(j.pid)
      break
    end
    core.sleep(0.05)
  end
end

describe("a real Jupyter Server with the engine as its gateway", function()
  local e, dir, gw, c
  lazy_setup(function()
    dir = temp_dir()
    e = helper.start()
    gw = start_gateway_client(e, dir)
    c = assert(ae.jupyter_client { url = gw.url, token = gw.token, retries = false })
  end)
  lazy_teardown(function()
    stop(gw)
    helper.stop(e)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function engine_alive()
    local status = helper.request(e, "GET", helper.v4(e, "/default_runtime"))
    assert.equal(200, status, "the engine no longer answers")
    assert.is_true(core.kill(e.pid, 0))
    assert.is_nil((util.read_file(e.log) or ""):find("internal error", 1, true))
  end

  it("lists the engine's kernelspecs, starts a kernel, executes, interrupts and deletes it", function()
    local specs = assert(c:list_kernelspecs())
    assert.is_table(specs.kernelspecs)
    assert.is_table(specs.kernelspecs.python3, util.json_encode(specs))

    local k = assert(c:create_kernel { name = "python3" })
    assert.matches("^%x+%-", k.id)
    -- the engine knows the kernel Jupyter started through it
    local _, mine = helper.request(e, "GET", helper.v4(e, "/jkg/api/kernels/" .. k.id))
    assert.equal(k.id, mine.id)

    local s = connect(c, k.id)
    local r = assert(s:execute("6 * 7", EXEC))
    assert.equal("42", r.result)
    r = assert(s:execute("print('through the gateway')", EXEC))
    assert.truthy(r.stdout:find("through the gateway", 1, true))

    assert(c:interrupt_kernel(k.id))
    r = assert(s:execute("1 + 1", EXEC))
    assert.equal("2", r.result)
    s:close()

    assert(c:delete_kernel(k.id))
    local status = helper.request(e, "GET", helper.v4(e, "/jkg/api/kernels/" .. k.id))
    assert.equal(404, status)
    core.sleep(0.5)
    engine_alive()
  end)

  it("a second session after the delete works too, and the engine still answers", function()
    local k = assert(c:create_kernel { name = "python3" })
    local s = connect(c, k.id)
    assert.equal("3", assert(s:execute("1 + 2", EXEC)).result)
    s:close()
    assert(c:delete_kernel(k.id))
    core.sleep(0.5)
    engine_alive()
  end)
end)
