local scheduler = require("analytics_engine.loop")
local core = require("analytics_engine.core")

describe("loop", function()
  it("runs tasks to completion and returns their results through join", function()
    local s = scheduler.new()
    local t = s:spawn("a", function(x) return x * 2 end, 21)
    local got
    s:spawn("b", function() got = { s:join(t) } end)
    assert.is_true(s:loop())
    assert.same({ true, 42 }, got)
  end)

  it("sleeps concurrently rather than one after another", function()
    local s = scheduler.new()
    for i = 1, 20 do s:spawn("t" .. i, function() s:sleep(0.2) end) end
    local t0 = core.monotime()
    s:loop()
    assert.is_true(core.monotime() - t0 < 1.5)
  end)

  it("orders wake-ups by their timers", function()
    local s = scheduler.new()
    local order = {}
    for _, d in ipairs { 0.15, 0.05, 0.1 } do
      s:spawn("t", function() s:sleep(d); order[#order + 1] = d end)
    end
    s:loop()
    assert.same({ 0.05, 0.1, 0.15 }, order)
  end)

  it("keeps at most n tasks inside a semaphore", function()
    local s = scheduler.new()
    local sem = s:semaphore(3)
    local inside, peak = 0, 0
    for i = 1, 10 do
      s:spawn("t" .. i, function()
        sem.acquire()
        inside = inside + 1
        peak = math.max(peak, inside)
        s:sleep(0.01)
        inside = inside - 1
        sem.release()
      end)
    end
    s:loop()
    assert.equals(3, peak)
  end)

  it("wakes every waiter of a condition", function()
    local s = scheduler.new()
    local cond = s:condition()
    local woken = 0
    for i = 1, 4 do s:spawn("w" .. i, function() cond.wait(); woken = woken + 1 end) end
    s:spawn("signal", function() s:sleep(0.01); cond.signal() end)
    s:loop()
    assert.equals(4, woken)
  end)

  it("cancels a sleeping task, which sees CANCELLED", function()
    local s = scheduler.new()
    local seen
    local t = s:spawn("sleeper", function() seen = select(2, s:sleep(30)) end)
    s:spawn("canceller", function() s:sleep(0.01); s:cancel(t) end)
    local t0 = core.monotime()
    s:loop()
    assert.equals(scheduler.CANCELLED, seen)
    assert.is_true(core.monotime() - t0 < 5)
  end)

  it("reports a task's error with a traceback", function()
    local s = scheduler.new()
    local t = s:spawn("bad", function() error("boom") end)
    s:loop()
    assert.is_false(t.result[1])
    assert.matches("boom", t.error)
    assert.matches("traceback", t.error)
  end)

  it("reports a deadlock instead of hanging", function()
    local s = scheduler.new()
    local cond = s:condition()
    s:spawn("stuck", function() cond.wait() end)
    local ok, err = s:loop()
    assert.is_false(ok)
    assert.matches("deadlock", err)
  end)

  it("runs HTTP transfers from many tasks concurrently on one session", function()
    local srv = assert(core.http_server { host = "127.0.0.1", port = 0 })
    local session = core.http_session {}
    local s = scheduler.new { on_tick = function()
      for _, req in ipairs(srv:poll(0)) do srv:respond(req.id, 200, nil, req.path) end
    end, max_wait = 0.01 }
    local got = {}
    for i = 1, 10 do
      s:spawn("h" .. i, function()
        local res = assert(s:http(session, { url = ("http://127.0.0.1:%d/p%d"):format(srv:port(), i) }))
        got[i] = res.body
      end)
    end
    assert.is_true(s:loop())
    for i = 1, 10 do assert.equals("/p" .. i, got[i]) end
    session:close()
    srv:close()
  end)

  it("lets a read waiting for a transfer slot go ahead of the queued writes", function()
    local srv = assert(core.http_server { host = "127.0.0.1", port = 0 })
    local session = core.http_session {}
    local seen = {}
    local s = scheduler.new { on_tick = function()
      for _, req in ipairs(srv:poll(0)) do
        seen[#seen + 1] = req.method .. " " .. req.path
        srv:respond(req.id, 200, nil, "")
      end
    end, max_wait = 0.01, max_transfers = 1 }
    local function send(method, path)
      s:spawn(path, function()
        assert(s:http(session, { method = method, url = ("http://127.0.0.1:%d%s"):format(srv:port(), path),
                                 body = method == "POST" and "{}" or nil }))
      end)
    end
    send("POST", "/w1")
    send("POST", "/w2")
    send("POST", "/w3")
    send("GET", "/r1")
    send("POST", "/w4")
    send("GET", "/r2")
    assert.is_true(s:loop())
    assert.same({ "POST /w1", "GET /r1", "GET /r2", "POST /w2", "POST /w3", "POST /w4" }, seen)
    session:close()
    srv:close()
  end)
end)
