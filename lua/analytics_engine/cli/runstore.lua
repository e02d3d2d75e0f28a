--- Kept runs: each run's record in its own directory under the local
-- directory (cli/engine.lua's local_dir, default .aeflow):
--   runs/<workflow>/<run_id>/state.json    the state (steps, attempts, log tails)
--   runs/<workflow>/<run_id>/events.ndjson every event of the run (redacted)
--   runs/<workflow>/<run_id>/report.html   the report, written at the end
-- Older single files (.aeflow/<workflow>.state.json) and --state files are
-- still read where a run is looked up by path.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local which = require("analytics_engine.cli.engine")
local state_mod = require("analytics_engine.workflow.state")

local _M = {}

function _M.slug(s) return (tostring(s):gsub("[^%w._-]+", "_")) end

function _M.root() return which.local_dir() .. "/runs" end

--- The directory of run `run_id` of `workflow` (created with mode 0700).
function _M.dir_for(workflow, run_id, create)
  local d = _M.root() .. "/" .. _M.slug(workflow) .. "/" .. run_id
  if create and core.mkdir_p then core.mkdir_p(d, 448) end
  return d
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function glob(pattern_dir, tail)
  local out = {}
  local h = io.popen("ls -d " .. q(pattern_dir) .. tail .. " 2>/dev/null")
  if h then
    for line in h:lines() do out[#out + 1] = line end
    h:close()
  end
  return out
end

--- Every kept run, newest first: { workflow, run_id, dir, state, started_at,
-- finished_at, status } (workflow: optional filter).
function _M.list(workflow)
  local runs = {}
  local pattern = workflow and ("/" .. _M.slug(workflow)) or "/*"
  for _, path in ipairs(glob(_M.root(), pattern .. "/*/state.json")) do
    local doc = util.read_json_file(path)
    if type(doc) == "table" then
      local dir = path:gsub("/state%.json$", "")
      runs[#runs + 1] = { workflow = tostring(doc.workflow or "?"),
                          run_id = tostring(doc.run_id or dir:match("[^/]+$")),
                          dir = dir, state = path, started_at = tonumber(doc.started_at),
                          finished_at = tonumber(doc.finished_at), status = tostring(doc.status or "?") }
    end
  end
  table.sort(runs, function(a, b) return (a.started_at or 0) > (b.started_at or 0) end)
  return runs
end

--- The names (directory slugs) of the workflows with kept runs, sorted.
function _M.workflows()
  local names = {}
  for _, path in ipairs(glob(_M.root(), "/*/*/state.json")) do
    local name = path:match("([^/]+)/[^/]+/state%.json$")
    if name and names[#names] ~= name then names[#names + 1] = name end
  end
  return names
end

--- A run by id (or unique id prefix), or the latest when `id` is nil.
-- Returns run | nil, message.
function _M.find(id, workflow)
  local runs = _M.list(workflow)
  if #runs == 0 then return nil, ("no kept runs under %s"):format(_M.root()) end
  if not id then return runs[1] end
  local found
  for _, r in ipairs(runs) do
    if r.run_id == id then return r end
    if r.run_id:sub(1, #id) == id then
      if found then return nil, ("run id '%s' is ambiguous"):format(id) end
      found = r
    end
  end
  if not found then return nil, ("no kept run '%s' (see `aeflow runs`)"):format(id) end
  return found
end

--- Every state file a kept run or an older single-file run left (their
-- paths: the caller reads them, once).
function _M.state_files()
  local paths = glob(which.local_dir(), "/*.state.json")
  for _, p in ipairs(glob(_M.root(), "/*/*/state.json")) do paths[#paths + 1] = p end
  return paths
end

--- Remove all but the newest `keep` runs of each workflow (a run still in
-- progress, whose state file is locked, is kept). Returns the removed runs.
function _M.prune(keep, workflow)
  local seen, removed = {}, {}
  for _, r in ipairs(_M.list(workflow)) do
    seen[r.workflow] = (seen[r.workflow] or 0) + 1
    if seen[r.workflow] > keep then
      local lock = state_mod.lock(r.state)
      if lock then
        lock:close()
        os.execute("rm -rf " .. q(r.dir))
        removed[#removed + 1] = r
      end
    end
  end
  -- The ids of pruned runs stay known: their applications are not orphans.
  local f = #removed > 0 and io.open(_M.root() .. "/pruned", "a")
  if f then
    for _, r in ipairs(removed) do f:write(r.run_id, "\n") end
    f:close()
  end
  return removed
end

--- The ids of the runs `prune` removed (a set).
function _M.pruned()
  local set = {}
  for id in (util.read_file(_M.root() .. "/pruned") or ""):gmatch("[^\n]+") do set[id] = true end
  return set
end

return _M
