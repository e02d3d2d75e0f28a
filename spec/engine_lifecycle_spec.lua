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
end)
