--- Start, find and stop a local engine from another program (the runner, the
-- specs). The engine announces itself by writing DATA/engine.json after it
-- binds; its credentials are in DATA/credentials.json.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")

local _M = {}
local mt = { __index = {} }
local E = mt.__index

local tointeger = util.tointeger

_M.START_TIMEOUT = 10
_M.STOP_TIMEOUT = 5

local read_json = util.read_json_file

local function tail(path, n)
  local f = io.open(path, "rb")
  if not f then return "" end
  local lines = {}
  for line in f:lines() do
    lines[#lines + 1] = line
    if #lines > n then table.remove(lines, 1) end
  end
  f:close()
  return table.concat(lines, " | ")
end

local function mkdir(dir) return core.mkdir_p(dir, 448) end -- 0700

--- A fresh private directory under the system's temporary directory.
function _M.temp_dir(prefix)
  local p = os.tmpname()
  os.remove(p)
  p = p:gsub("[^/]*$", (prefix or "ae-engine-") .. p:match("([^/]*)$"))
  local ok, err = mkdir(p)
  if not ok then return nil, err end
  return p
end

local function info(dir, eng)
  local creds = read_json(dir .. "/credentials.json") or {}
  return setmetatable({ url = eng.url, instance_id = eng.instance_id or creds.instance_id,
                        username = creds.username, api_key = creds.api_key, data_dir = dir, pid = eng.pid,
                        log = dir .. "/engine.log" }, mt)
end

--- The engine serving `data_dir`, if its process is alive.
function _M.find_running(data_dir)
  local eng = read_json(data_dir .. "/engine.json")
  if not eng or not tointeger(eng.pid) then return nil end
  core.wait(eng.pid) -- reaps it if it is our own child that died (else a no-op)
  if not core.kill(eng.pid, 0) then return nil end
  return info(data_dir, eng)
end

--- start{ data_dir, port = 0, args = {...}, bin = path or argv prefix, timeout = 10, confined = false }
-- -> engine | nil, message
function _M.start(o)
  o = o or {}
  local dir = o.data_dir
  if not dir then
    local err
    dir, err = _M.temp_dir()
    if not dir then return nil, "cannot create a data directory: " .. tostring(err) end
  else
    mkdir(dir)
  end
  local running = _M.find_running(dir)
  if running then return nil, ("an engine (pid %d) already serves %s"):format(running.pid, dir) end
  os.remove(dir .. "/engine.json")

  local bin = o.bin or os.getenv("AEFLOW_BIN") or "aeflow"
  local argv = {}
  if type(bin) == "table" then for i, a in ipairs(bin) do argv[i] = a end else argv[1] = bin end
  for _, a in ipairs({ "serve", "--port", tostring(o.port or 0), "--data", dir, "--quiet" }) do
    argv[#argv + 1] = a
  end
  local beyond = false
  for _, a in ipairs(o.args or {}) do
    argv[#argv + 1] = tostring(a)
    if tostring(a):find("^%-%-host") then beyond = true end
  end
  -- The engine a runner starts for its own user (loopback, that user's admin
  -- key) runs the workflow's programs wherever they are; `confined = true`
  -- (and any engine given a --host) keeps serve's default confinement.
  if not o.confined and not beyond then argv[#argv + 1] = "--allow-any-program" end

  local log = dir .. "/engine.log"
  local pid, serr = core.spawn{ argv = argv, stdout = log, stderr = log }
  if not pid then return nil, "cannot start the local engine: " .. tostring(serr) end

  local deadline = core.monotime() + (o.timeout or _M.START_TIMEOUT)
  while true do
    local st, code = core.wait(pid)
    if st ~= nil then
      return nil, ("the local engine exited (%s %s) before it was ready: %s"):format(tostring(st), tostring(code),
        tail(log, 5))
    end
    local eng = read_json(dir .. "/engine.json")
    if eng and eng.pid == pid and eng.url then return info(dir, eng) end
    if core.monotime() > deadline then
      core.kill(pid, "KILL")
      core.wait(pid)
      return nil, ("the local engine did not start within %gs: %s"):format(o.timeout or _M.START_TIMEOUT,
        tail(log, 5))
    end
    core.sleep(0.05)
  end
end

--- Stop the engine: TERM, wait up to 5 s, then KILL. -> true, how
function E:stop()
  if self.stopped then return true, self.stopped end
  local pid = self.pid
  core.kill(pid, "TERM")
  local deadline = core.monotime() + _M.STOP_TIMEOUT
  while true do
    local st, code = core.wait(pid)
    if st == false then
      -- Not our child (found with find_running): wait for it to go.
      if not core.kill(pid, 0) then st, code = "exited", "?" end
    end
    if st then
      self.stopped = st .. " " .. tostring(code)
      return true, self.stopped
    end
    if core.monotime() > deadline then
      core.kill(pid, "KILL")
      core.sleep(0.05)
      core.wait(pid)
      self.stopped = "killed"
      return true, self.stopped
    end
    core.sleep(0.02)
  end
end

return _M
