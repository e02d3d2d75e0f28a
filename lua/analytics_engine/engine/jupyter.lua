--- The Jupyter Server the local engine runs for its kernels: found, started
-- on 127.0.0.1 with a token of its own, watched, and stopped. Nothing here
-- blocks: `want` queues a callback, `tick` (called from the engine loop)
-- advances the state machine and calls the callbacks back.
--
-- States: idle → probing (is `python3 -m jupyter_server` importable?) →
-- starting (spawned; waiting for its jpserver-<pid>.json) → ready. A probe
-- that finds no Jupyter makes it `unavailable` (asked again after
-- REPROBE_SECONDS, so installing the packages needs no engine restart); a
-- server that does not come up or dies goes back to idle with an error.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local runner = require("analytics_engine.engine.runner")
local children = require("analytics_engine.engine.children")

local _M = {}
local mt = { __index = _M }

_M.MISSING = "kernels need a Jupyter Server: install python3-jupyter-server and python3-ipykernel"
_M.DISABLED = "kernels need a Jupyter Server and this local engine runs without one (--no-jupyter); "
  .. "without that option it starts one when python3-jupyter-server and python3-ipykernel are installed"
_M.START_TIMEOUT = 60
_M.STOP_TIMEOUT = 8
_M.REPROBE_SECONDS = 30

local monotime = core.monotime

--- opts: { data_dir, enabled (default true), python (interpreter; default
-- $AE_JUPYTER_PYTHON, else python3 on PATH, else /usr/bin/python3) }
function _M.new(opts)
  local pythons
  local env_python = os.getenv("AE_JUPYTER_PYTHON")
  if opts.python then
    pythons = { opts.python }
  elseif env_python and env_python ~= "" then
    pythons = { env_python }
  else
    -- python3 on PATH may be another interpreter (pyenv, a venv) without
    -- Jupyter; Debian's packages live in /usr/bin/python3's path.
    pythons = { "python3", "/usr/bin/python3" }
  end
  return setmetatable({
    dir = opts.data_dir .. "/jupyter", data_dir = opts.data_dir,
    enabled = opts.enabled ~= false,
    pythons = pythons,
    state = opts.enabled == false and "disabled" or "idle",
    waiters = {},
  }, mt)
end

local function file_json(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local ok, v = pcall(util.json_decode, s)
  return ok and type(v) == "table" and v or nil
end

-- The last non-empty line of the server's log, for an error message.
local function log_tail(path)
  local f = io.open(path, "rb")
  if not f then return "no log" end
  local last
  for line in f:lines() do
    if line:find("%S") then last = line end
  end
  f:close()
  return last and last:gsub("%s+$", ""):sub(1, 300) or "empty log"
end

local function mkdirs(dir)
  for _, d in ipairs({ dir, dir .. "/runtime", dir .. "/data", dir .. "/config", dir .. "/work" }) do
    local ok, err = core.mkdir_p(d, 448)
    if not ok then return nil, err or ("cannot create " .. d) end
  end
  return true
end

local function settle(self, ok, err)
  local w = self.waiters
  self.waiters = {}
  for _, cb in ipairs(w) do cb(ok, err) end
end

--- Call cb(true) once the server is ready, or cb(nil, message) when it cannot be.
function _M.want(self, cb)
  if self.state == "ready" then return cb(true) end
  if self.state == "disabled" then
    return cb(nil, _M.DISABLED)
  end
  if self.state == "unavailable" then
    if monotime() < self.reprobe_at then return cb(nil, _M.MISSING) end
    self.state = "idle"
  end
  self.waiters[#self.waiters + 1] = cb
  if self.state == "idle" then self:probe(1) end
end

--- Start probing the candidate interpreters from index i.
function _M.probe(self, i)
  local python = self.pythons[i]
  if not python then
    self.state, self.reprobe_at = "unavailable", monotime() + _M.REPROBE_SECONDS
    return settle(self, nil, _M.MISSING)
  end
  local pid = core.spawn{ argv = { python, "-c", "import jupyter_server, ipykernel" },
                          stdout = "/dev/null", stderr = "/dev/null", die_with_parent = children.SIGNAL.helper }
  if not pid then return self:probe(i + 1) end
  self.state, self.probe_pid, self.probe_index = "probing", pid, i
end

local function start_server(self, python)
  local ok, err = mkdirs(self.dir)
  if not ok then
    self.state = "idle"
    return settle(self, nil, "cannot prepare the Jupyter Server's directory: " .. tostring(err))
  end
  self.token = util.hex(core.random_bytes(24))
  -- A random starting port; Jupyter tries the next ones when it is taken and
  -- reports the port it bound in its jpserver-<pid>.json.
  local b1, b2 = core.random_bytes(2):byte(1, 2)
  local port = 20000 + (b1 * 256 + b2) % 30000
  local log = self.dir .. "/server.log"
  os.remove(log)
  -- The token goes in the environment, which only this user can read, never in argv.
  local env = {}
  for _, kv in ipairs(runner.inherited_env()) do
    -- The user's own Jupyter settings (a token, a port, a config dir) would
    -- fight ours; JUPYTER_PATH (where more kernelspecs live) is kept.
    if not kv:find("^JUPYTER_") or kv:find("^JUPYTER_PATH=") then env[#env + 1] = kv end
  end
  -- The marker (children.lua) reaches the kernels too: Jupyter passes its environment on.
  for k, v in pairs({ JUPYTER_TOKEN = self.token, JUPYTER_RUNTIME_DIR = self.dir .. "/runtime",
                      JUPYTER_DATA_DIR = self.dir .. "/data", JUPYTER_CONFIG_DIR = self.dir .. "/config",
                      [children.MARKER] = self.data_dir }) do
    env[#env + 1] = k .. "=" .. v
  end
  local argv = { python, "-m", "jupyter_server",
                 "--ServerApp.ip=127.0.0.1", "--ServerApp.port=" .. port, "--ServerApp.port_retries=50",
                 "--ServerApp.open_browser=False", "--ServerApp.allow_root=True",
                 "--ServerApp.root_dir=" .. self.dir .. "/work" }
  local pid, serr = core.spawn{ argv = argv, env = env, cwd = self.dir .. "/work", stdout = log, stderr = log,
                                die_with_parent = children.SIGNAL.jupyter }
  if not pid then
    self.state = "idle"
    return settle(self, nil, "cannot start the Jupyter Server: " .. tostring(serr))
  end
  self.pid, self.python, self.log = pid, python, log
  self.state, self.deadline = "starting", monotime() + _M.START_TIMEOUT
end

local function exited(self, st, code)
  local msg = ("the Jupyter Server exited (%s %s): %s"):format(tostring(st), tostring(code), log_tail(self.log))
  self.pid, self.url, self.state = nil, nil, "idle"
  return msg
end

--- Advance the state machine; true while something is in progress (the
-- engine loop then waits less).
function _M.tick(self)
  local s = self.state
  if s == "probing" then
    local st, code = core.wait(self.probe_pid)
    if st == nil then return true end
    self.probe_pid = nil
    if st == "exited" and code == 0 then
      start_server(self, self.pythons[self.probe_index])
    else
      self:probe(self.probe_index + 1)
    end
    return self.state == "probing" or self.state == "starting"
  elseif s == "starting" then
    local st, code = core.wait(self.pid)
    if st ~= nil then
      settle(self, nil, exited(self, st, code))
      return false
    end
    local info = file_json(("%s/runtime/jpserver-%d.json"):format(self.dir, self.pid))
    local port = info and tonumber(info.port)
    if port and port > 0 then
      self.port = port
      self.url = ("http://127.0.0.1:%d"):format(port)
      self.base_url = type(info.base_url) == "string" and info.base_url or "/"
      self.state = "ready"
      settle(self, true)
      return false
    end
    if monotime() > self.deadline then
      core.kill(self.pid, "KILL")
      core.wait(self.pid)
      local msg = ("the Jupyter Server did not start within %ds: %s"):format(_M.START_TIMEOUT, log_tail(self.log))
      self.pid, self.state = nil, "idle"
      settle(self, nil, msg)
      return false
    end
    return true
  elseif s == "ready" then
    local st, code = core.wait(self.pid)
    if st ~= nil then
      io.stderr:write("engine: ", exited(self, st, code), "\n")
    end
  end
  return false
end

--- The Authorization header value Jupyter accepts.
function _M.authorization(self)
  return "token " .. self.token
end

--- Stop the server (TERM: it shuts its kernels down), waiting up to
-- STOP_TIMEOUT seconds before KILL. Used at engine shutdown only.
function _M.stop(self)
  if self.probe_pid then
    core.kill(self.probe_pid, "KILL")
    core.wait(self.probe_pid)
    self.probe_pid = nil
  end
  local pid = self.pid
  if not pid then return true end
  core.kill(pid, "TERM")
  local deadline = monotime() + _M.STOP_TIMEOUT
  while core.wait(pid) == nil do
    if monotime() > deadline then
      core.kill(pid, "KILL")
      core.wait(pid)
      break
    end
    core.sleep(0.05)
  end
  self.pid, self.url, self.state = nil, nil, "idle"
  settle(self, nil, "the local engine is stopping")
  return true
end

return _M
