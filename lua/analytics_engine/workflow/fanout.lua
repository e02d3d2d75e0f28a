--- A step's items (a for_each list, or the one item of a plain step) run by
-- a few worker tasks, and the items whose applications run after their task
-- let go of them.
--
-- A worker takes the next item and runs it (runner.run_item). When a
-- submission is accepted and the attempt may be awaited without a task of
-- its own (no timeout, not a finally step), the runner lets the application
-- go (`detach`): the attempt returns PENDING, the worker takes the next item,
-- and the poller follows the application with the item's small record
-- { fan, index, att } until it ends; `finish_item` then ends the attempt and
-- the item (a retry may follow) in a short task. A 10,000-item fan-out thus
-- holds a few hundred coroutines while it submits and none while it waits
-- (a suspended coroutine with its stack costs ~4 KB).
local submit = require("analytics_engine.workflow.submit")
local util = require("analytics_engine.util")

local _M = {}

-- What an attempt returns when its item task let the application go.
local PENDING = setmetatable({}, { __name = "pending", __tostring = function() return "pending" end })
_M.PENDING = PENDING

-- Worker tasks per step: four times the loop's transfers in flight. Each
-- waits for admission, a group commit and then a transfer slot. While a
-- commit could take ~0.6 s (the whole state file) and admission's read
-- waited behind queued POSTs, 1,024 were needed to keep the transfers busy;
-- with journal commits (their sync on its own thread) and reads ahead of
-- writes, 256 keep the engine as busy (0.87-0.89x the engine alone at
-- 10,000) and the finish run's peak RSS is ~6 MB lower.
_M.WORKERS = 256

--- Let the running attempt's application go (ctx.detach): the poller
-- follows `id` with the item's record; PENDING, or nil when this attempt
-- cannot (a timeout or finally step, an await action: it waits in its task).
-- `slot`: a --max-parallel slot the application holds until it ends.
function _M.detach(runner, id, slot)
  local me = runner.sched:current()
  local pend = me and runner.detachable[me]
  if not pend then return nil end
  runner.detachable[me] = nil
  pend.slot = slot
  runner.poller:follow(id, pend)
  return PENDING
end

-- An item ended: its result, its step slot (max_parallel) back.
local function item_done(fan, i, a, b, holds_slot)
  if a then
    fan.results[i] = b
  else
    fan.results[i] = fan.list and { error = b } or nil
    fan.errors[i] = b
  end
  if holds_slot and fan.sem then fan.sem.release() end
  fan.left = fan.left - 1
  if fan.left == 0 then fan.done.signal() end
end

local function run_item(runner, fan, i, ended)
  local okx, a, b = xpcall(runner.run_item, debug.traceback, runner, fan, i, ended)
  if not okx then return false, a end
  return a, b
end

-- One worker: items in order until none is left.
local function worker(runner, fan)
  while fan.next <= fan.n do
    local i = fan.next
    fan.next = i + 1
    if fan.sem and not fan.sem.acquire() then
      item_done(fan, i, false, "cancelled")
    else
      local a, b = run_item(runner, fan, i)
      if a ~= PENDING then item_done(fan, i, a, b, true) end
    end
  end
end

--- The poller saw a followed item's application end (`app`: its summary),
-- or the run was cancelled (`app` nil) or the poller gave up (`failure`):
-- end the attempt, then the item.
function _M.finish_item(runner, pend, app, failure)
  local att = pend.att
  local ok, out, final = submit.finish(runner.ctx, att, app, failure)
  if pend.slot then pend.slot.release() end
  local a, b = run_item(runner, pend.fan, pend.index, { att = att, ok = ok, out = out, final = final })
  if a ~= PENDING then item_done(pend.fan, pend.index, a, b, true) end
end

-- Tasks that finish ended items at once. One round of the poller may see
-- thousands of applications end; a task apiece, all made before the first
-- ran, held ~15 MB more at 10,000 items. The rest wait in a queue as three
-- values each. (An item that waits for its retry delay keeps its task.)
_M.FINISHERS = 256

local function finisher(runner, q)
  while q.head <= q.tail do
    local e = q[q.head]
    q[q.head] = nil
    q.head = q.head + 1
    local ok, err = xpcall(_M.finish_item, debug.traceback, runner, e[1], e[2], e[3])
    if not ok then runner:emit { event = "error", message = "finishing an item raised an error: " .. tostring(err) } end
  end
  q.tasks = q.tasks - 1
end

--- The poller saw a followed item's application end (as finish_item's
-- arguments): finished in one of at most FINISHERS tasks.
function _M.ended(runner, pend, app, failure)
  local q = runner.ended_items
  if not q then
    q = { head = 1, tail = 0, tasks = 0 }
    runner.ended_items = q
  end
  q.tail = q.tail + 1
  q[q.tail] = { pend, app, failure }
  if q.tasks < _M.FINISHERS then
    q.tasks = q.tasks + 1
    runner.sched:spawn("item end", finisher, runner, q)
  end
end

--- Run a step's items (`list`, or nil: one item) to their end. Returns ok,
-- outputs (an array for a list), error (the first failed item's).
function _M.run(runner, step, rec, list)
  local sched = runner.sched
  local n = list and #list or 1
  local fan = { step = step, rec = rec, list = list, n = n, left = n, next = 1, results = {}, errors = {},
                sem = list and step.max_parallel and sched:semaphore(step.max_parallel) or nil,
                done = sched:condition() }
  for w = 1, math.min(n, _M.WORKERS) do
    sched:spawn(step.name .. " worker " .. w, worker, runner, fan)
  end
  while fan.left > 0 do fan.done.wait() end
  if not list then
    if fan.errors[1] ~= nil then return false, nil, fan.errors[1] end
    return true, fan.results[1]
  end
  local ok, err = true, nil
  for i = 1, n do
    if fan.errors[i] ~= nil then
      ok, err = false, err or ("item " .. i .. ": " .. tostring(fan.errors[i]))
    end
  end
  return ok, util.array(fan.results), err
end

return _M
