--- The engine's live applications and the processes it waits for, with one
-- owner: the live set (every application not yet terminal), the submission
-- queue (live applications not started yet, in submission order), each live
-- application's process, and the reaping set (process groups the engine
-- stopped or started in the background, waited for and killed after their
-- grace). Other modules change them only through these functions.
--
--   local lc = lifecycle.new()        -- eng.lifecycle
--   lc:admit(rec)                     -- live and queued
--   lc:unqueue(rec); lc:set_proc(id, { pid = pid })
--   lc:retire(rec)                    -- terminal: out of all three
--   lc:terminate(pid, grace); lc:reap(now); lc:drain(seconds)
local core = require("analytics_engine.core")

local _M = {}
local mt = { __index = _M }

local pairs, next = pairs, next

function _M.new()
  return setmetatable({ active = {}, queue = {}, procs = {}, reaping = {} }, mt)
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
