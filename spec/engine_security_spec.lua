-- The engine survives its own bugs and hostile clients: a handler that fails
-- answers 500 in the service's error shape (logged with its traceback) and the
-- next request is answered; WebSocket clients that close with an empty
-- payload, with codes that must not be sent, or drop the TCP connection after
-- an execute_request do not end the engine. Real engine, real Jupyter Server.
local core = require "analytics_engine.core"
local util = require "analytics_engine.util"
local helper = require "helpers.engine"

local HOSTILE = "spec/helpers/hostile_ws_client.py"

local function hostile(e, path, auth, ...)
  local args = { "python3", HOSTILE, e.url:gsub("^http", "ws") .. path, auth or helper.zen(e) }
  for _, a in ipairs({ ... }) do args[#args + 1] = a end
  for i, a in ipairs(args) do args[i] = "'" .. a:gsub("'", "'\\''") .. "'" end
  local p = assert(io.popen(table.concat(args, " ") .. " 2>&1"))
  local out = p:read("a")
  p:close()
  return out
end

local function read(path)
  return util.read_file(path) or ""
end

local function alive(e)
  local status, b = helper.request(e, "GET", helper.v4(e, "/default_runtime"))
  assert.equal(200, status, "the engine no longer answers")
  assert.equal("string", type(b.spark_version))
  assert.is_true(core.kill(e.pid, 0))
end

local function active_cluster(e)
  local status, b = helper.request(e, "POST", helper.v4(e, "/spark_clusters"), { cluster_details = { name = "c" } })
  assert.equal(202, status)
  local deadline = core.monotime() + 20
  while true do
    local _, c = helper.request(e, "GET", helper.v4(e, "/spark_clusters/" .. b.id))
    if c and c.state == "ACTIVE" then return b.id end
    assert(core.monotime() < deadline, "the cluster did not become ACTIVE")
    core.sleep(0.05)
  end
end

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
