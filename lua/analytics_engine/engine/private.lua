--- The data directory is the engine user's alone: directories 0700, files
-- 0600, whatever the umask or the modes a directory had before (an existing
-- 0755 directory, a state.db made by an older engine). The engine runs with
-- umask 077, so what it creates later (SQLite's -wal and -shm, application
-- output, Jupyter's files) is private too; what was there is chmod'ed at start.
-- state.db holds what applications were given in conf and env: these modes
-- are what keeps it from other users (docs/security.md).
local core = require("analytics_engine.core")

local _M = {}

_M.UMASK = 63 -- 077
_M.DIRS = { "", "/apps", "/spark-events", "/jupyter", "/history" }
_M.FILES = { "state.db", "state.db-wal", "state.db-shm", "state.db-journal", "state.json", "secret", "users.json",
             "credentials.json", "engine.json", "engine.log" }

local function exists(p)
  return core.file_mode(p) ~= nil
end

--- Make `data_dir` private -> true | nil, message (a chmod that failed).
function _M.enforce(data_dir)
  core.umask(_M.UMASK)
  local function set(path, mode)
    if not exists(path) then return true end
    local ok, err = core.chmod(path, mode)
    if not ok then return nil, err end
    return true
  end
  for _, d in ipairs(_M.DIRS) do
    local ok, err = set(data_dir .. d, 448) -- 0700
    if not ok then return nil, err end
  end
  for _, f in ipairs(_M.FILES) do
    local ok, err = set(data_dir .. "/" .. f, 384) -- 0600
    if not ok then return nil, err end
  end
  -- each application's directory and output (an older engine made them 0755/0644)
  local p = io.popen("ls -A '" .. (data_dir .. "/apps"):gsub("'", "'\\''") .. "' 2>/dev/null")
  if p then
    for name in p:lines() do
      local d = data_dir .. "/apps/" .. name
      local ok, err = set(d, 448)
      if ok then ok, err = set(d .. "/stdout", 384) end
      if ok then ok, err = set(d .. "/stderr", 384) end
      if not ok then
        p:close()
        return nil, err
      end
    end
    p:close()
  end
  return true
end

return _M
