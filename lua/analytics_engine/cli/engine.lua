--- The one rule for "which service does this verb talk to":
--   1. an endpoint configured (--profile NAME, AE_URL/AE_INSTANCE_ID/... or the
--      profile file): that service;
--   2. otherwise the local engine whose data lives in LOCAL/engine, where
--      LOCAL is $AEFLOW_DIR, else ./.aeflow (the same directory that keeps the
--      runs). An engine already serving it (`aeflow serve`, in the foreground
--      or with --background) is used as it is; else one is started for the
--      command and stopped when the command ends, so no verb leaves an engine
--      running unless asked to.
-- Commands run at the same time from one directory share that engine: each
-- holds a shared flock on DATA/engine.users while it uses it (the kernel drops
-- it when the command ends, even on kill -9), and one started for a command
-- is marked in DATA/engine.temporary. Whoever ends last (the exclusive lock is
-- free) stops a marked engine: the command that started it never stops it
-- under another one's run, and one whose starter was killed does not linger.
local ae = require("analytics_engine")
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local launcher = require("analytics_engine.engine.launcher")

local _M = {}

--- The directory of local state (runs, the local engine's data).
function _M.local_dir()
  local d = os.getenv("AEFLOW_DIR")
  if d and d ~= "" then return (d:gsub("/+$", "")) end
  return ".aeflow"
end

--- The local engine's data directory.
function _M.data_dir()
  return _M.local_dir() .. "/engine"
end

local session_mt = { __index = {} }

--- Stop the engine if it was started for a command and no other command
-- still uses it (safe to call twice).
function session_mt.__index.release(self)
  if not self.engine or self.released then return end
  self.released = true
  if self.lock then self.lock:close() end
  local dir = self.engine.data_dir
  local marked = tonumber(util.read_file(dir .. "/engine.temporary") or "")
  if not (self.started or marked == self.engine.pid) then return end
  -- The exclusive lock is ours only when no other command holds it shared.
  local alone = core.lock_file(dir .. "/engine.users")
  if not alone then return end
  self.engine:stop()
  os.remove(dir .. "/engine.temporary")
  alone:close()
end

-- The engine serving dir with this command's shared hold on it, starting one
-- if none serves it. -> info, started, lock | nil, message
local function hold(dir, exe)
  local started = false
  for _ = 1, 100 do
    local info = launcher.find_running(dir)
    if not info then
      if core.mkdir_p then core.mkdir_p(_M.local_dir(), 448) end
      local lerr
      info, lerr = launcher.start { data_dir = dir, bin = exe }
      if not info then return nil, "cannot start a local engine: " .. tostring(lerr) end
      started = true
      local f = io.open(dir .. "/engine.temporary", "w")
      if f then
        f:write(tostring(math.tointeger(info.pid) or info.pid))
        f:close()
      end
    end
    local lock, _, why = core.lock_file(dir .. "/engine.users", "shared")
    -- "held": the last user is stopping it right now; wait and look again.
    if lock or why ~= "held" then return info, started, lock end
    core.sleep(0.05)
  end
  return nil, "the local engine in " .. dir .. " is being stopped; try again"
end

--- connect{ exe, profile, quiet, data } -> client, session | nil, message
-- session.engine is the local engine's info (nil for a configured service),
-- session.started whether this command started it; call session:release()
-- when done.
function _M.connect(o)
  o = o or {}
  local c, err = ae.client(o.profile and { profile = o.profile } or nil)
  if c then return c, setmetatable({}, session_mt) end
  -- A profile asked for by name must exist and work: never fall back silently.
  if o.profile or not tostring(err and err.message or err):find("^no service URL") then
    return nil, tostring(err and err.message or err)
  end
  local dir = o.data or _M.data_dir()
  local info, started, lock = hold(dir, o.exe)
  if not info then return nil, started end
  if not o.quiet then
    io.stderr:write(("aeflow: no endpoint configured; %s the local engine at %s (data %s)\n"):format(
      started and "started" or "using", info.url, dir))
  end
  c, err = ae.client { url = info.url, instance_id = info.instance_id,
                       auth = { username = info.username, api_key = info.api_key } }
  local session = setmetatable({ engine = info, started = started, lock = lock }, session_mt)
  if not c then
    session:release()
    return nil, tostring(err)
  end
  return c, session
end

return _M
