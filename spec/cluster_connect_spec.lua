-- c:connect_cluster through the client against a real local engine: the
-- engine's own line protocol on the cluster `connect` WebSocket (docs/websocket.md).
local helper = require("helpers.engine")
local ae = require("analytics_engine")
local loop = require("analytics_engine.loop")

describe("cluster connect", function()
  local e, c, cid

  lazy_setup(function()
    e = helper.start()
    c = helper.client(e)
    local r = assert(c:create_cluster { name = "ws" })
    cid = r.id or r.cluster_id
    helper.eventually(function()
      local g = assert(c:get_cluster(cid))
      return g.state == "ACTIVE"
    end, 10)
  end)

  lazy_teardown(function() helper.stop(e) end)

  -- A session past the engine's greeting.
  local function greeted()
    local ws = assert(c:connect_cluster(cid))
    ws:receive(10)
    return ws
  end

  it("greets with the cluster id and echoes text", function()
    local ws = assert(c:connect_cluster(cid))
    local hello = assert(ws:receive(10))
    assert.matches(cid, hello, 1, true)
    assert(ws:send("hello cluster"))
    assert.same({ "hello cluster", "text" }, { ws:receive(10) })
    ws:close()
  end)

  it("echoes binary messages as binary", function()
    local ws = greeted()
    assert(ws:send("\0\1\2\255", { binary = true }))
    assert.same({ "\0\1\2\255", "binary" }, { ws:receive(10) })
    ws:close()
  end)

  it("reports the engine's close code and reason", function()
    local ws = greeted()
    assert(ws:send("!close 4005 finished"))
    local data, err = ws:receive(10)
    assert.is_nil(data)
    assert.same({ "closed", 4005, "finished" }, { err.kind, err.code, err.reason })
    ws:close()
  end)

  it("answers the engine's ping (the engine reports the pong it got)", function()
    local ws = greeted()
    assert(ws:send("!ping p-42"))
    assert.equals("pong p-42", (ws:receive(10)))
    ws:close()
  end)

  it("reassembles a message the engine sends in fragments", function()
    local ws = greeted()
    assert(ws:send("!fragment 2 fragmented reply"))
    assert.equals("fragmented reply", (ws:receive(10)))
    ws:close()
  end)

  it("is closed with 1009 by the engine for a message over its limit", function()
    local ws = greeted()
    assert(ws:send(string.rep("z", 1024 * 1024 + 1)))
    local data, err = ws:receive(10)
    assert.is_nil(data)
    assert.same({ "closed", 1009 }, { err.kind, err.code })
    ws:close()
  end)

  it("answers 404 for a cluster that does not exist", function()
    local ws, err = c:connect_cluster("00000000-0000-4000-8000-000000000000")
    assert.is_nil(ws)
    assert.equals(404, err.status)
  end)

  it("answers 401 without valid credentials", function()
    local bad = assert(ae.client { url = e.url, instance_id = e.instance_id,
                                   auth = { username = e.username, api_key = "wrong" }, retries = false })
    local ws, err = bad:connect_cluster(cid)
    assert.is_nil(ws)
    assert.equals(401, err.status)
  end)

  it("runs two sockets from one loop without blocking either", function()
    local sched = loop.new()
    local sc = helper.client(e, { loop = sched })
    local got, tasks = {}, {}
    for i = 1, 2 do
      tasks[i] = sched:spawn("ws" .. i, function()
        local ws = assert(sc:connect_cluster(cid))
        ws:receive(10)
        for k = 1, 3 do
          assert(ws:send(("t%d-%d"):format(i, k)))
          local data = assert(ws:receive(10)) -- yields: append only after it returns
          got[#got + 1] = data
        end
        ws:close()
      end)
    end
    assert(sched:loop())
    for _, t in ipairs(tasks) do assert.is_nil(t.error) end
    table.sort(got)
    assert.same({ "t1-1", "t1-2", "t1-3", "t2-1", "t2-2", "t2-3" }, got)
  end)

  it("waits on a socket and HTTP transfers in the same loop wait", function()
    local sched = loop.new()
    local sc = helper.client(e, { loop = sched })
    local calls, answer = 0, nil
    local t1 = sched:spawn("ws", function()
      local ws = assert(sc:connect_cluster(cid))
      ws:receive(10)
      sched:sleep(0.3) -- the HTTP task runs meanwhile
      assert(ws:send("late"))
      answer = assert(ws:receive(10))
      ws:close()
    end)
    local t2 = sched:spawn("http", function()
      for _ = 1, 5 do
        assert(sc:get_cluster(cid))
        calls = calls + 1
      end
    end)
    assert(sched:loop())
    assert.is_nil(t1.error)
    assert.is_nil(t2.error)
    assert.equals(5, calls)
    assert.equals("late", answer)
  end)
end)
