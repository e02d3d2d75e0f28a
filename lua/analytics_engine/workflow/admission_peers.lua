--- Runs on one machine that share an instance take turns in the order of
-- their intents. Each run notes the intent time of its oldest held
-- submission in a small SQLite file per instance and admits only when no
-- live run holds an older one, so the run whose own application just ended
-- (and so learns of the room first) does not take every room while another
-- run waits. Runs on other machines share through the service's numbers alone.
local core = require("analytics_engine.core")

local _M = {}
local mt = { __index = _M }

_M.STALE = 60 -- seconds without a note after which a run's entry is ignored

local function dir_of()
  local d = os.getenv("AEFLOW_ADMISSION_DIR")
  if d and d ~= "" then return d end
  return (os.getenv("XDG_RUNTIME_DIR") or "/tmp") .. "/aeflow-admission"
end

-- States of a process that will not take its turn: a zombie or dead one,
-- and one stopped (a run suspended with Ctrl-Z, or a debugger's): the others
-- would otherwise wait for it until its entry is stale. Resumed, it notes its
-- intent again and gets its place back.
local NOT_RUNNING = { Z = true, X = true, x = true, T = true, t = true }

-- Is process `pid` alive and running (Linux /proc; elsewhere assumed so until stale)?
local function alive(pid)
  pid = tonumber(pid)
  if not pid then return false end
  local f = io.open("/proc/" .. math.floor(pid) .. "/stat", "r")
  if f then
    local stat = f:read("a") or ""
    f:close()
    -- pid (comm) state ...: comm may hold spaces and parentheses
    return not NOT_RUNNING[stat:match("%) (%S)") or ""]
  end
  return io.open("/proc/self/stat", "r") == nil
end

--- The turn file of `instance_id` (in `dir`, default $AEFLOW_ADMISSION_DIR,
-- else $XDG_RUNTIME_DIR/aeflow-admission or /tmp/aeflow-admission), or nil
-- (then runs share through the service alone).
function _M.open(instance_id, run_id, dir)
  if type(instance_id) ~= "string" or not instance_id:find("^[%w-]+$") then return nil end
  dir = dir or dir_of()
  if core.mkdir_p then core.mkdir_p(dir, 448) end
  local db = core.sqlite_open(dir .. "/" .. instance_id .. ".db", { busy_timeout = 500 })
  if not db then return nil end
  if not db:exec("CREATE TABLE IF NOT EXISTS heads (run_id TEXT PRIMARY KEY, pid INTEGER NOT NULL, "
    .. "intent_at REAL NOT NULL, noted REAL NOT NULL)") then
    db:close()
    return nil
  end
  return setmetatable({ db = db, run_id = run_id, pid = core.getpid(), noted = nil }, mt)
end

--- Note this run's oldest held intent (nil: nothing held).
function _M.note(self, intent_at)
  local now = core.time()
  if intent_at == nil then
    if self.noted then self.db:run("DELETE FROM heads WHERE run_id = ?", self.run_id) end
    self.noted = nil
    return
  end
  -- Written when the head changes, and as a heartbeat now and then.
  if self.noted == intent_at and self.beat and now - self.beat < _M.STALE / 4 then return end
  self.db:run("INSERT INTO heads (run_id, pid, intent_at, noted) VALUES (?, ?, ?, ?) ON CONFLICT(run_id) "
    .. "DO UPDATE SET pid = excluded.pid, intent_at = excluded.intent_at, noted = excluded.noted",
    self.run_id, self.pid, intent_at, now)
  self.noted, self.beat = intent_at, now
end

--- Does another live run hold an intent older than `intent_at`?
function _M.older(self, intent_at)
  local rows = self.db:query("SELECT run_id, pid FROM heads WHERE run_id <> ? AND noted > ? AND (intent_at < ? "
    .. "OR (intent_at = ? AND run_id < ?))", self.run_id, core.time() - _M.STALE, intent_at, intent_at, self.run_id)
  for _, r in ipairs(rows or {}) do
    if alive(r.pid) then return true end
  end
  return false
end

function _M.close(self)
  if not self.db then return end
  self:note(nil)
  self.db:close()
  self.db = nil
end

return _M
