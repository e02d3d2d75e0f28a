--- The run's state file writes, on the run's loop.
--
-- State writes are coalesced: rewriting the whole file (with fsync) on every
-- change made 1,000 applications cost O(n^2) bytes. A change that must be on
-- disk before the next request (a submission intent) waits for one group
-- commit shared by every task that asks while the previous commit is being
-- written; any other change is written at most FLUSH_DELAY seconds later,
-- and the run's end writes synchronously.
-- A change names the item record (or attempt) it touched, so a write
-- appends only those items to the state's journal (workflow/state.lua); a
-- change that names nothing makes the next write whole.
-- On the loop, a journal append's fdatasync runs on its own thread
-- (core.append_start) and the writing task waits for it on the loop: a sync
-- took 10-90 ms on a busy disk, and the whole loop (every transfer in
-- flight, the live view) used to stop for it. Writes on the loop take turns
-- (one append and its sync at a time); the intents that arrive during a
-- sync are the next commit's, written as soon as it ended.
-- Plain writes wait FLUSH_PACE x the cost of the last write (at least
-- FLUSH_DELAY); commits wait only where every write is whole (a state file
-- that can have no journal, such as /dev/stdout): COMMIT_PACE x its cost,
-- at most COMMIT_MAX_DELAY. So writing takes at most about a tenth of the
-- runner's time however large the run (tens of ms for a whole 10,000-item
-- document, ~350 bytes an item; well under a ms for a journal append).
local core = require("analytics_engine.core")

local _M = {}
local mt = { __index = _M }

local FLUSH_DELAY, FLUSH_PACE = 0.1, 20
local COMMIT_PACE, COMMIT_MAX_DELAY = 16, 0.5

--- A writer for `state` (a workflow/state.lua object); on_error(message)
-- hears of a write that failed. Until `use` gives it the run's loop, every
-- change is written at once.
function _M.new(state, on_error)
  return setmetatable({ state = state, on_error = on_error, dirty = false, save_waiters = {},
                        committing = {} }, mt)
end

--- The run's loop: from its tasks, changes are coalesced.
function _M.use(self, loop)
  self.loop = loop
  self.turn = loop:semaphore(1)
end

local function remove(list, v)
  for i, x in ipairs(list) do
    if x == v then table.remove(list, i) return end
  end
end

local function in_task(self)
  return self.loop ~= nil and self.loop:current() ~= nil
end

-- Wait on the loop for a journal append's sync -> true | nil, err. A task
-- cancelled meanwhile waits for it here instead.
local function await_sync(self, sync)
  while true do
    local done, err = sync:done()
    if done ~= false then return done, err end
    if not self.loop:wait_fd(sync:fd(), 1) then return sync:wait() end
  end
end

-- Write; with `on_loop` (a task of the run's loop holding self.turn) a
-- journal append's sync is waited for on the loop. Wakes the tasks waiting
-- for a durable save that this write covers.
local function write(self, on_loop)
  local waiters = self.save_waiters
  self.save_waiters = {}
  self.committing[waiters] = true -- (a waiter cancelled meanwhile leaves it)
  self.dirty = false
  local t0 = core.monotime()
  local ok, what, sync = self.state:save(true, on_loop)
  -- The pace follows the writes that come often (journal appends): a whole
  -- write now and then (tens of ms at 10,000 items) made the next commit
  -- wait COMMIT_MAX_DELAY while every submission waited for it. A sync on
  -- its own thread does not count: the loop went on meanwhile.
  if what ~= "whole" or not self.write_cost then self.write_cost = core.monotime() - t0 end
  if sync then
    local synced, serr = await_sync(self, sync)
    if not synced then ok, what = nil, "cannot write the state file's journal: " .. tostring(serr) end
  end
  self.committing[waiters] = nil
  local err = not ok and what or nil
  for _, t in ipairs(waiters) do self.loop:wake(t, ok or false, err) end
  if not ok then self.on_error(err) end -- (after the wakes: it may raise)
  return ok, err
end

--- Write the state file now (waiting here for any sync still running);
-- wakes the tasks waiting for a durable save.
function _M.flush(self)
  return write(self, false)
end

-- A write from one of the writer's own tasks: one at a time. The turn is
-- given back whatever happens (an on_error that raises included), or every
-- later write would wait for it.
local function write_in_turn(self)
  local got = self.turn.acquire()
  if not got then return write(self, false) end -- (cancelled: write here)
  local done, ok, err = pcall(write, self, true)
  self.turn.release()
  if not done then error(ok, 0) end
  return ok, err
end

--- Note that `rec` (an item record or attempt; nil: anything) changed,
-- without asking for a write.
function _M.changed(self, rec)
  self.state:changed(rec)
end

--- Record a change to `rec` (an item record or attempt; nil: anything):
-- written within FLUSH_DELAY (at once outside a task).
function _M.save(self, rec)
  self.state:changed(rec)
  if not in_task(self) then return self:flush() end
  self.dirty = true
  if not self.flusher then
    self.flusher = self.loop:spawn("state flush", function()
      self.loop:sleep(math.max(FLUSH_DELAY, FLUSH_PACE * (self.write_cost or 0)))
      self.flusher = nil
      if self.dirty then write_in_turn(self) end
    end)
  end
  return true
end

--- Record a change to `rec` (as for save) and return once it is on disk:
-- true, or nil/false, err.
function _M.save_durable(self, rec)
  self.state:changed(rec)
  if not in_task(self) then return self:flush() end
  self.dirty = true
  local loop, me = self.loop, self.loop:current()
  table.insert(self.save_waiters, me)
  if not self.committer then
    -- Runs after every task already runnable this turn: one write for all.
    self.committer = loop:spawn("state commit", function()
      local done, perr = pcall(function()
        repeat -- (again for the intents that came while the last one synced)
          -- A journal append goes at once: waiting to gather more intents
          -- let the transfers run dry (every worker waiting for the commit)
          -- and the service idle. Whole writes every time (a state file that
          -- can have no journal: /dev/stdout) are paced by their cost.
          local cost = self.write_cost or 0
          if cost > 0.002 and self.state.journaled == false then
            loop:sleep(math.min(COMMIT_MAX_DELAY, COMMIT_PACE * cost))
          end
          write_in_turn(self)
        until self.save_waiters[1] == nil
      end)
      self.committer = nil -- (also after an error: the next save starts another)
      if not done then error(perr, 0) end
    end)
  end
  return loop:suspend(function()
    remove(self.save_waiters, me)
    for list in pairs(self.committing) do remove(list, me) end
  end)
end

return _M
