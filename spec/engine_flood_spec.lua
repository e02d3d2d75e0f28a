-- Connection floods against a real engine (loopback, bounded in time, stops
-- by itself): a legitimate client is answered while 10,000 idle and 1,000
-- slow-loris connections are held (bench/flood.py holds them and reopens any
-- the engine closes). The latency figures go to bench/README.md (make
-- bench-flood); this spec asserts only that every legitimate request was
-- answered and that the engine's guard did the closing.
local core = require("analytics_engine.core")
local cjson = require("cjson")
local helper = require("helpers.engine")

local function flood(e, idle, loris, seconds)
  local port = tonumber(e.url:match(":(%d+)$"))
  local p = assert(io.popen(("timeout %d python3 bench/flood.py --port %d --idle %d --loris %d --seconds %d "
    .. "--path %s --auth '%s'"):format(seconds + 30, port, idle, loris, seconds,
    helper.v4(e, "/default_runtime"), helper.zen(e))))
  local out = p:read("a")
  p:close()
  local ok, res = pcall(cjson.decode, out)
  assert(ok and type(res) == "table", "flood.py printed: " .. out)
  return res
end

describe("the engine under connection floods", function()
  -- The flood needs 11,000 descriptors on each side; both raise their soft limit to the hard one.
  local _, hard = core.raise_fd_limit()

  it("answers a legitimate client while 10,000 idle and 1,000 slow-loris connections are held", function()
    assert(hard >= 12000, "the open-file hard limit (" .. tostring(hard) .. ") is below the 12000 this flood needs")
    local e = helper.start({ "--no-jupyter", "--quiet", "--request-timeout", "3" })
    local ok, res = pcall(flood, e, 10000, 1000, 12)
    local status = helper.request(e, "GET", helper.v4(e, "/default_runtime"))
    helper.stop(e)
    assert(ok, res)
    assert.equal(0, res.connect_failures)
    assert.is_true(res.legit.requests >= 20, cjson.encode(res))
    assert.equal(res.legit.requests, res.legit.answered, cjson.encode(res))
    -- The slow-loris connections trickle a byte every 0.5 s: only the request
    -- deadline (3 s, not extended by trickling) closes them.
    assert.is_true(res.closed_by_server.loris >= 1000, cjson.encode(res))
    assert.equal(200, status)
  end)

  it("makes room by closing the oldest idle connections when a flood exceeds the connection limit", function()
    local e = helper.start({ "--no-jupyter", "--quiet", "--request-timeout", "0", "--max-connections", "1000" })
    local ok, res = pcall(flood, e, 1500, 0, 6)
    helper.stop(e)
    assert(ok, res)
    assert.is_true(res.legit.requests >= 3, cjson.encode(res))
    assert.equal(res.legit.requests, res.legit.answered, cjson.encode(res))
    assert.is_true(res.closed_by_server.idle > 0, cjson.encode(res))
  end)
end)
