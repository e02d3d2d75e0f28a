-- Items whose applications ended in one poll round are finished by a bounded
-- number of tasks on the run's real loop, not a task apiece made at once.
-- finish_item itself is replaced here by a recorder: what is under test is
-- the queue in front of it (the whole path runs in workflow_run_spec).
local loop = require("analytics_engine.loop")
local fanout = require("analytics_engine.workflow.fanout")

describe("ended items", function()
  local saved_finish, saved_max
  before_each(function() saved_finish, saved_max = fanout.finish_item, fanout.FINISHERS end)
  after_each(function() fanout.finish_item, fanout.FINISHERS = saved_finish, saved_max end)

  -- A runner with the run's loop; finish_item records what it was given.
  local function burst(n, finish)
    local sched = loop.new()
    local runner = { sched = sched, events = {} }
    function runner.emit(_, ev) runner.events[#runner.events + 1] = ev end
    fanout.finish_item = finish
    sched:spawn("poller round", function()
      for i = 1, n do fanout.ended(runner, { index = i }, { state = "FINISHED" }, nil) end
    end)
    assert(sched:loop())
    return runner
  end

  it("are finished by at most FINISHERS tasks at a time, every one of them, in order", function()
    fanout.FINISHERS = 4
    local busy, most, seen = 0, 0, {}
    local runner
    runner = burst(1000, function(r, pend, app)
      busy = busy + 1
      most = math.max(most, busy)
      assert.equals("FINISHED", app.state)
      seen[#seen + 1] = pend.index
      r.sched:sleep(0.001)
      busy = busy - 1
    end)
    assert.equals(4, most)
    assert.equals(1000, #seen)
    for i = 1, 1000 do assert.equals(i, seen[i]) end
    assert.same({}, runner.events)
  end)

  it("go on after one of them raised, and say so as an error event", function()
    fanout.FINISHERS = 2
    local done = 0
    local runner = burst(10, function(_, pend)
      if pend.index == 3 then error("boom") end
      done = done + 1
    end)
    assert.equals(9, done)
    assert.equals(1, #runner.events)
    assert.equals("error", runner.events[1].event)
    assert.matches("finishing an item raised an error: .*boom", runner.events[1].message)
  end)

  it("start finishers again for a later round once the earlier ones ended", function()
    fanout.FINISHERS = 3
    local sched = loop.new()
    local runner = { sched = sched, emit = function() end }
    local done = 0
    fanout.finish_item = function() done = done + 1 end
    sched:spawn("two rounds", function()
      for i = 1, 5 do fanout.ended(runner, { index = i }) end
      sched:sleep(0.01)
      assert.equals(5, done)
      assert.equals(0, runner.ended_items.tasks)
      for i = 6, 8 do fanout.ended(runner, { index = i }) end
    end)
    assert(sched:loop())
    assert.equals(8, done)
  end)
end)
