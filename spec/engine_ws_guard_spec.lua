-- WebSocket sessions under the flood guard (docs/hardening.md): a frame that
-- has started must be whole within --request-timeout (a bare header claiming
-- 2^63-1 bytes, a header cut short), while a session idle between frames
-- lives on; and sessions count in --max-connections, the ones idle the
-- longest closed with 1001 when the engine is at its limit. A real engine on
-- loopback, raw sockets from spec/helpers/hostile_ws_client.py.
local core = require("analytics_engine.core")
local helper = require("helpers.engine")

local function hostile(e, path, ...) return helper.hostile_ws(e, path, nil, ...) end

local function active_cluster(e) return helper.active_cluster(e, "g") end

local function alive(e)
  local status = helper.request(e, "GET", helper.v4(e, "/default_runtime"))
  assert.equal(200, status, "the engine no longer answers")
end

describe("a stalled WebSocket frame", function()
  local e, path

  lazy_setup(function()
    e = helper.start({ "--request-timeout", "1" })
    path = helper.v4(e, "/spark_clusters/" .. active_cluster(e) .. "/connect")
  end)
  lazy_teardown(function() helper.stop(e) end)

  -- FIN+binary, 127 = 64-bit length 2^63-1, then the mask key: no payload follows
  local HUGE = "82ff7fffffffffffffff01020304"

  it("is closed with 1008 at the request deadline when a header claims 2^63-1 bytes and nothing follows", function()
    local t0 = core.monotime()
    local out = hostile(e, path, "read:1", "raw:" .. HUGE, "read:20")
    assert.matches("STATUS 101", out)
    assert.matches("CLOSE 1008", out)
    assert.is_true(core.monotime() - t0 < 15, "closed only after " .. (core.monotime() - t0) .. " s")
    alive(e)
  end)

  it("is closed with 1008 when only the first byte of a header came", function()
    local out = hostile(e, path, "read:1", "raw:81", "read:20")
    assert.matches("CLOSE 1008", out)
    alive(e)
  end)

  it("does not end a session that is idle between frames longer than the deadline", function()
    -- a whole frame, then idle 3 s (three deadlines), then another: both echoed
    local out = hostile(e, path, "read:1", "text:one", "read:1", "sleep:3", "text:two", "read:1")
    assert.matches("STATUS 101", out)
    local frames = select(2, out:gsub("FRAME 1 3", ""))
    assert.equal(2, frames, out)
    assert.not_matches("CLOSE", out)
  end)

  it("does not end a frame whose payload comes in pieces within the deadline", function()
    -- "abc" masked with 01020304 is 60 60 60; header then payload 0.3 s later
    local out = hostile(e, path, "read:1", "raw:818301020304", "sleep:0.3", "raw:606160", "read:1")
    assert.matches("FRAME 1 3", out)
    assert.not_matches("CLOSE", out)
  end)
end)

describe("WebSocket sessions at the connection limit", function()
  local e, c, cid

  lazy_setup(function()
    e = helper.start({ "--max-connections", "16" })
    c = helper.client(e)
    cid = active_cluster(e)
  end)
  lazy_teardown(function() helper.stop(e) end)

  it("are counted: the ones idle the longest are closed with 1001 and the engine still answers", function()
    local socks = {}
    for i = 1, 20 do
      local ws = assert(c:connect_cluster(cid))
      assert(ws:receive(10), "session " .. i .. " got no greeting")
      socks[i] = ws
    end
    local data, err = socks[1]:receive(10)
    assert.is_nil(data)
    assert.equal("closed", err.kind)
    assert.equal(1001, err.code)
    assert.matches("connection limit", err.reason)
    -- the newest session still works
    assert(socks[20]:send("still here"))
    assert.same({ "still here", "text" }, { socks[20]:receive(10) })
    for _, ws in ipairs(socks) do ws:close(nil, nil, 0) end
    alive(e)
  end)
end)

describe("a WebSocket upgrade with another version", function()
  local e, path

  lazy_setup(function()
    e = helper.start()
    path = helper.v4(e, "/spark_clusters/" .. active_cluster(e) .. "/connect")
  end)
  lazy_teardown(function() helper.stop(e) end)

  local function upgrade(version)
    return helper.request(e, "GET", path, nil, { Upgrade = "websocket", Connection = "Upgrade",
      ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ==", ["Sec-WebSocket-Version"] = version })
  end

  it("is answered 426 with Sec-WebSocket-Version: 13 (RFC 6455 4.4), not 400", function()
    for _, v in ipairs({ "8", "14" }) do
      local status, body, headers = upgrade(v)
      assert.equal(426, status, v)
      assert.equal("13", headers["sec-websocket-version"])
      assert.equal("unsupported_websocket_version", body.errors[1].code)
      assert.matches("13 is required", body.errors[1].message)
    end
  end)

  it("is still 400 when it is no upgrade at all", function()
    local status, body = helper.request(e, "GET", path)
    assert.equal(400, status)
    assert.equal("not_a_websocket", body.errors[1].code)
  end)
end)
