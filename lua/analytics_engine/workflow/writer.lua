--- The run's state file writes, on the run's loop.
--
-- State writes are coalesced: rewriting the whole file (with fsync) on every
-- change made 1,000 applications cost O(n^2) bytes. A change that must be on
-- disk before the next request (a submission intent) waits for one group
-- commit shared by every task that asks in the same loop turn; any other
-- change is written at most FLUSH_DELAY seconds later, and the run's end
-- writes synchronously.
-- A change names the item record (or attempt) it touched, so a write
-- appends only those items to the state's journal (workflow/state.lua); a
-- change that names nothing makes the next write whole.
-- Both delays grow with the cost of the last write (a few ms for a journal
-- append; tens of ms for a whole 10,000-item document, ~350 bytes an item),
-- so writing takes at most about a tenth of the runner's time however large
-- the run:
-- a durable commit waits up to COMMIT_PACE x that cost (gathering more
-- intents; the workers keep the transfers busy meanwhile), other changes
-- FLUSH_PACE x.
local core = require("analytics_engine.core")

local _M = {}
local mt = { __index = _M }

local FLUSH_DELAY, FLUSH_PACE = 0.1, 20
local COMMIT_PACE, COMMIT_MAX_DELAY = 16, 0.5

--- A writer for `state` (a workflow/state.lua object); on_error(message)
-- hears of a write that failed. Until `use` gives it the run's loop, every
-- change is written at once.
function _M.new(state, on_error)
  return setmetatable({ state = state, on_error = on_error, dirty = false, save_waiters = {} }, mt)
end

--- The run's loop: from its tasks, changes are coalesced.
function _M.use(self, loop)
  self.loop = loop
end

local function in_task(self)
  return self.loop ~= nil and self.loop:current() ~= nil
end

--- Write the state file now; wakes the tasks waiting for a durable save.
function _M.flush(self)
  self.dirty = false
  local t0 = core.monotime()
  local ok, what = self.state:save(true)
  local err = not ok and what or nil
  -- The pace follows the writes that come often (journal appends): a whole
  -- write now and then (tens of ms at 10,000 items) made the next commit
  -- wait COMMIT_MAX_DELAY while every submission waited for it.
  if what ~= "whole" or not self.write_cost then self.write_cost = core.monotime() - t0 end
  if not ok then self.on_error(err) end
  local waiters = self.save_waiters
  self.save_waiters = {}
  for _, t in ipairs(waiters) do self.loop:wake(t, ok or false, err) end
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
      if self.dirty then self:flush() end
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
    -- Runs after every task already runnable this turn (and, once writes
    -- cost more than a few ms, a little later): one write for all.
    self.committer = loop:spawn("state commit", function()
      local cost = self.write_cost or 0
      if cost > 0.002 then loop:sleep(math.min(COMMIT_MAX_DELAY, COMMIT_PACE * cost)) end
      self.committer = nil
      self:flush()
    end)
  end
  return loop:suspend(function()
    for i, t in ipairs(self.save_waiters) do
      if t == me then table.remove(self.save_waiters, i) break end
    end
  end)
end

return _M
