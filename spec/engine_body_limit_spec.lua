-- A body declared larger than --max-body is refused on its Content-Length,
-- before any of it is read: 413 at once and the connection closed. Before,
-- the engine read the whole body first, and a client that stopped mid-body
-- waited --request-timeout (30 s) for no answer. A real engine on loopback;
-- raw sockets from spec/helpers/raw_client.py.
local core = require("analytics_engine.core")
local cjson = require("cjson")
local helper = require("helpers.engine")
local rawc = require("helpers.raw")

-- Send each connection's bytes, read until the engine closes or `timeout`.
local exchange = rawc.exchange

describe("a body over --max-body", function()
  local e, head

  lazy_setup(function()
    e = helper.start({ "--max-body", "100000" })
    head = "POST " .. helper.v4(e, "/spark_applications") .. " HTTP/1.1\r\nHost: x\r\nAuthorization: "
      .. helper.zen(e) .. "\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n"
  end)
  lazy_teardown(function() helper.stop(e) end)

  it("is refused with 413 and a close when the client stops mid-body (no wait for the request deadline)", function()
    local t0 = core.monotime()
    local res = exchange(rawc.port_of(e), {
      { send = head .. "\r\n" .. ("x"):rep(100) },
    }, 20)
    local data = res[1].data
    assert.matches("^HTTP/1%.1 413", data)
    assert.matches("request_too_large", data)
    assert.matches("larger than 100000 bytes", data)
    assert.is_true(res[1].eof, "the connection stayed open")
    -- 30 s (the request deadline) was the answer's time before; 10 s is a generous bound
    assert.is_true(core.monotime() - t0 < 10, "answered only after " .. (core.monotime() - t0) .. " s")
  end)

  it("is refused without 100 Continue when the client asks first", function()
    local res = exchange(rawc.port_of(e), {
      { send = head .. "Expect: 100-continue\r\n\r\n" },
    }, 20)
    assert.matches("^HTTP/1%.1 413", res[1].data)
    assert.not_matches("100 Continue", res[1].data)
  end)

  it("within the limit is still read and answered, and the connection kept", function()
    local body = cjson.encode { application_details = { application = "/nonexistent/app.py" } }
    local small = head:gsub("Content%-Length: %d+", "Content-Length: " .. #body)
    local res = exchange(rawc.port_of(e), {
      { send = small .. "\r\n" .. body },
    }, 3)
    assert.not_matches("^HTTP/1%.1 413", res[1].data)
    assert.matches("^HTTP/1%.1 %d%d%d", res[1].data)
  end)
end)
