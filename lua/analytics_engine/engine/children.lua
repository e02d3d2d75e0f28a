--- Everything the engine starts dies with it. Three layers:
--   * each child is spawned with die_with_parent (PR_SET_PDEATHSIG in the C
--     core): the kernel signals it when the engine ends, even by SIGKILL;
--   * each child leads its own process group, which stop/kill address whole;
--   * each child's environment carries AE_ENGINE_DATA=<data dir> (inherited
--     by what it starts: Jupyter's kernels, an application's subprocesses),
--     and an engine starting on a data directory first kills the processes
--     that carry that exact marker: what a previous engine there left behind
--     (a grandchild that outlived its parent, a daemonized history server).
-- Only processes proven to be this data directory's are touched: the marker
-- must be an exact entry of /proc/PID/environ, which is readable only for the
-- processes of the same user.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")

local _M = {}

_M.MARKER = "AE_ENGINE_DATA"
-- Applications and helpers: KILL (nothing to tidy); Jupyter: TERM, so it
-- shuts its kernels down (the sweep catches what it does not).
_M.SIGNAL = { application = "KILL", jupyter = "TERM", helper = "KILL" }

--- The marker's environment entry for a data directory.
function _M.marker(data_dir)
  return _M.MARKER .. "=" .. data_dir
end

--- Does process `pid` carry `entry` ("K=V") as an exact entry of its
-- environment? (false when it is gone or another user's)
function _M.carries(pid, entry)
  local env = util.read_file(("/proc/%d/environ"):format(pid))
  return env ~= nil and ("\0" .. env):find("\0" .. entry .. "\0", 1, true) ~= nil
end

local function parent_of(pid)
  local s = util.read_file(("/proc/%d/stat"):format(pid))
  if not s then return nil end
  -- pid (comm) state ppid ...: comm may hold spaces and parentheses
  return tonumber(s:match("%) %S+ (%d+)"))
end

local function pids()
  local out = {}
  local p = io.popen("ls /proc 2>/dev/null")
  if not p then return out end
  for name in p:lines() do
    local n = tonumber(name:match("^(%d+)$"))
    if n then out[#out + 1] = n end
  end
  p:close()
  return out
end

--- The processes whose environment carries this data directory's marker
-- (never this process nor its ancestors).
function _M.survivors(data_dir)
  local entry = _M.marker(data_dir)
  local spared = {}
  local p = core.getpid()
  while p and p > 1 and not spared[p] do
    spared[p] = true
    p = parent_of(p)
  end
  local found = {}
  for _, pid in ipairs(pids()) do
    if not spared[pid] and _M.carries(pid, entry) then found[#found + 1] = pid end
  end
  return found
end

--- Kill what a previous engine on `data_dir` left behind -> the pids killed.
function _M.sweep(data_dir)
  local killed = {}
  for _ = 1, 3 do -- a dying parent may start nothing new, but look again
    local found = _M.survivors(data_dir)
    if #found == 0 then break end
    for _, pid in ipairs(found) do
      if core.kill(pid, "KILL") then killed[#killed + 1] = pid end
    end
    core.sleep(0.05)
  end
  return killed
end

return _M
