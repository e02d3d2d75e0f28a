--- The engine's live applications and the processes it waits for, with one
-- owner: the live set (every application not yet terminal), the submission
-- queue (live applications not started yet, in submission order), each live
-- application's process, and the reaping set (process groups the engine
-- stopped or started in the background, waited for and killed after their
-- grace). Other modules change them only through these functions. It also
-- keeps the live applications' use summed (running, pending) and says when
-- the running processes need a look (a child ended, a deadline is due).
--
--   local lc = lifecycle.new()        -- eng.lifecycle
--   lc:admit(rec)                     -- live and queued
--   lc:unqueue(rec); lc:set_proc(id, { pid = pid })
--   lc:retire(rec)                    -- terminal: out of all three
--   lc:terminate(pid, grace); lc:reap(now); lc:drain(seconds)
--   lc:count(rec, "running" | "pending" | nil, cores_m, mib); lc:use()
--   if lc:look(now) then … lc:looked(next_deadline) end; lc:due(deadline)
local core = require("analytics_engine.core")

local _M = {}
local mt = { __index = _M }

local pairs, next = pairs, next
local huge, min = math.huge, math.min

-- Seconds between two looks at every running process when no child ended
-- and no deadline is due: a process lost some other way (reaped by someone
-- else) is noticed within this.
_M.LOOK_EVERY = 1

function _M.new()
  return setmetatable({ active = {}, queue = {}, procs = {}, reaping = {},
                        counted = {}, run_c = 0, run_m = 0, pend_c = 0, pend_m = 0,
                        looked_at = -huge, due_at = huge }, mt)
end

---------------------------------------------------------------------------
-- use: the scheduler and every create with queuing_enabled = false ask for
-- the running and pending use; summing it over the live set made each
-- create O(live) (10,000 records walked per create at 10,000 running).

local function add(self, entry, sign)
  local c, m = sign * entry[2], sign * entry[3]
  if entry[1] == "running" then self.run_c, self.run_m = self.run_c + c, self.run_m + m
  else self.pend_c, self.pend_m = self.pend_c + c, self.pend_m + m end
end

--- What a live application counts for now: `kind` "running" or "pending"
-- (nil: nothing), with its demand in millicores and MiB. Ignored for a record
-- that is not live.
function _M.count(self, rec, kind, c, m)
  local old = self.counted[rec]
  if old then
    add(self, old, -1)
    self.counted[rec] = nil
  end
  if kind and self.active[rec.id] == rec then
    local entry = { kind, c, m }
    self.counted[rec] = entry
    add(self, entry, 1)
  end
end

--- Running millicores, MiB, pending millicores, MiB over the live applications.
function _M.use(self)
  return self.run_c, self.run_m, self.pend_c, self.pend_m
end

-- The sums made afresh (at each full look), so rounding cannot build up.
local function resum(self)
  self.run_c, self.run_m, self.pend_c, self.pend_m = 0, 0, 0, 0
  for _, entry in pairs(self.counted) do add(self, entry, 1) end
end

---------------------------------------------------------------------------
-- looks at the running processes: waitpid on every one at every turn of the
-- engine's loop was O(running) per turn (10,000 calls per turn with 10,000
-- applications running, most of a core). With SIGCHLD watched
-- (core.signal_watch{ "CHLD" }) a look is due when a child ended, when the
-- earliest deadline passed, or LOOK_EVERY seconds after the last; without
-- it, at every turn.

--- Is a look at every running process due at `now`? (Reads the core's
-- SIGCHLD note: call it once per turn.)
function _M.look(self, now)
  local ended = core.child_exited()
  return ended ~= false or now >= self.due_at or core.monotime() - self.looked_at >= _M.LOOK_EVERY
end

--- A look was made; `due` is the earliest deadline of what runs (the
-- clock of `now` in look: core.time()).
function _M.looked(self, due)
  self.looked_at, self.due_at = core.monotime(), due or huge
  resum(self)
end

--- A process started with a deadline: a look is due then.
function _M.due(self, deadline)
  self.due_at = min(self.due_at, deadline)
end

--- A new application: live, and last in the queue.
function _M.admit(self, rec)
  self.active[rec.id] = rec
  self.queue[#self.queue + 1] = rec
end

--- Out of the queue (started, or failed before starting).
function _M.unqueue(self, rec)
  local q = self.queue
  for i = #q, 1, -1 do
    if q[i] == rec then table.remove(q, i) return end
  end
end

--- Terminal (or undone): no longer live, queued, or attached to a process.
function _M.retire(self, rec)
  self:count(rec, nil)
  self.active[rec.id] = nil
  self.procs[rec.id] = nil
  self:unqueue(rec)
end

--- The live applications: for id, rec in lc:live() do … end
function _M.live(self)
  return pairs(self.active)
end

--- The queue in submission order (read it; change it with admit/unqueue/retire).
function _M.queued(self)
  return self.queue
end

--- What the engine knows of a live application's process ({ pid } or
-- { mkdir = false }), or nil.
function _M.proc(self, id)
  return self.procs[id]
end

function _M.set_proc(self, id, p)
  self.procs[id] = p
end

--- Stop a process group: TERM now, KILL once `grace` seconds pass (reap).
function _M.terminate(self, pid, grace)
  core.kill(pid, "TERM")
  self.reaping[pid] = { deadline = core.time() + grace }
end

--- Wait for a process the engine does not stop itself (a daemonizing
-- script): reaped when it exits, KILLed after `limit` seconds.
function _M.await_exit(self, pid, limit)
  self.reaping[pid] = { deadline = core.time() + limit }
end

--- One step of reaping; never blocks.
function _M.reap(self, now)
  for pid, r in pairs(self.reaping) do
    if core.wait(pid) ~= nil then
      self.reaping[pid] = nil
    elseif not r.killed and now >= r.deadline then
      core.kill(pid, "KILL")
      r.killed = true
    end
  end
end

--- Anything live or awaited (the engine's loop then turns faster).
function _M.busy(self)
  return next(self.active) ~= nil or next(self.reaping) ~= nil
end

--- At shutdown: wait up to `seconds` for the reaped processes, then KILL
-- and wait for what is left.
function _M.drain(self, seconds)
  local deadline = core.monotime() + seconds
  local reaping = self.reaping
  while next(reaping) and core.monotime() < deadline do
    for pid in pairs(reaping) do
      if core.wait(pid) ~= nil then reaping[pid] = nil end
    end
    if next(reaping) then core.sleep(0.02) end
  end
  for pid in pairs(reaping) do
    core.kill(pid, "KILL")
    core.wait(pid)
  end
  self.reaping = {}
end

return _M
