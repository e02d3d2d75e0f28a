-- engine/lifecycle.lua, the one owner of the engine's live applications, its
-- queue, their processes and the reaping set; with real processes.
local core = require("analytics_engine.core")
local lifecycle = require("analytics_engine.engine.lifecycle")

describe("the engine's lifecycle", function()
  it("keeps the queue in submission order and forgets what is retired", function()
    local lc = lifecycle.new()
    local a, b, c = { id = "a" }, { id = "b" }, { id = "c" }
    lc:admit(a) lc:admit(b) lc:admit(c)
    assert.same({ a, b, c }, lc:queued())
    lc:unqueue(b)
    lc:set_proc("b", { pid = 1 })
    assert.same({ a, c }, lc:queued())
    local live = {}
    for id in lc:live() do live[#live + 1] = id end
    table.sort(live)
    assert.same({ "a", "b", "c" }, live)
    assert.is_true(lc:busy())
    lc:retire(a) lc:retire(b) lc:retire(c)
    assert.same({}, lc:queued())
    assert.is_nil(lc:proc("b"))
    assert.is_false(lc:busy())
  end)

  it("reaps a stopped process group and KILLs one that outlives its grace", function()
    local lc = lifecycle.new()
    local polite = assert(core.spawn { argv = { "sleep", "30" } })
    -- Ignores TERM: only the KILL after the grace ends it.
    local stubborn = assert(core.spawn { argv = { "sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30" } })
    lc:terminate(polite, 60)
    lc:terminate(stubborn, 0.2)
    assert.is_true(lc:busy())
    local deadline = core.monotime() + 20 -- generous: only a hang fails
    while lc:busy() and core.monotime() < deadline do
      lc:reap(core.time())
      core.sleep(0.05)
    end
    assert.is_false(lc:busy())
  end)

  it("drains at shutdown: what does not exit in time is killed", function()
    local lc = lifecycle.new()
    local pid = assert(core.spawn { argv = { "sh", "-c", "trap '' TERM; sleep 30" } })
    lc:await_exit(pid, 3600)
    lc:drain(0.1)
    assert.is_false(lc:busy())
  end)

  it("keeps the live applications' use summed as they change and retire", function()
    local lc = lifecycle.new()
    local a, b, gone = { id = "a" }, { id = "b" }, { id = "gone" }
    lc:admit(a) lc:admit(b)
    lc:count(a, "pending", 1000, 1024)
    lc:count(b, "pending", 500, 512)
    assert.same({ 0, 0, 1500, 1536 }, { lc:use() })
    lc:count(a, "running", 1000, 1024)
    assert.same({ 1000, 1024, 500, 512 }, { lc:use() })
    lc:count(gone, "running", 7, 7) -- not live: not counted
    assert.same({ 1000, 1024, 500, 512 }, { lc:use() })
    lc:retire(a)
    assert.same({ 0, 0, 500, 512 }, { lc:use() })
    lc:count(b, nil) -- terminal, not yet retired
    assert.same({ 0, 0, 0, 0 }, { lc:use() })
    lc:retire(b)
    assert.same({ 0, 0, 0, 0 }, { lc:use() })
  end)

  it("asks for a look at the processes when a child ended, a deadline is due, or a while went by", function()
    assert.is_true(core.signal_watch { "CHLD" })
    local lc = lifecycle.new()
    local now = core.time()
    assert.is_true(lc:look(now)) -- never looked
    lc:looked(math.huge)
    core.child_exited() -- (what ended before)
    assert.is_false(lc:look(now))
    local pid = assert(core.spawn { argv = { "true" } })
    local deadline = core.monotime() + 10 -- generous: only a hang fails
    local asked = false
    while not asked and core.monotime() < deadline do
      asked = lc:look(core.time())
      if not asked then core.sleep(0.01) end
    end
    assert.is_true(asked)
    while core.wait(pid) == nil do core.sleep(0.01) end
    lc:looked(math.huge)
    assert.is_false(lc:look(now))
    lc:due(now + 30)
    assert.is_false(lc:look(now))
    assert.is_true(lc:look(now + 30))
    lc:looked(math.huge)
    local every = lifecycle.LOOK_EVERY
    lifecycle.LOOK_EVERY = 0.05
    core.sleep(0.1)
    local late = lc:look(now)
    lifecycle.LOOK_EVERY = every
    assert.is_true(late)
  end)
end)
