--- The Spark history server behind start/stop/get_spark_history_server.
-- With Spark installed ($SPARK_HOME/sbin/start-history-server.sh) the engine
-- runs the real one over its event-log directory (DATA/spark-events, where
-- applications submitted with spark-submit write their event logs); without
-- it the server is state-only: the engine records start and stop, serves no
-- UI, and its answer says so.
local core = require("analytics_engine.core")
local children = require("analytics_engine.engine.children")
local runner = require("analytics_engine.engine.runner")
local resources = require("analytics_engine.resources")

local _M = {}

_M.STATE_ONLY_NOTE = "The local engine's history server is state-only (Apache Spark is not installed: set "
  .. "SPARK_HOME): it records start and stop but serves no UI."
_M.UI_PORT = 18080
_M.SCRIPT_TIMEOUT = 60


--- The Spark installation whose history server scripts exist, or nil.
function _M.spark_home()
  local home = os.getenv("SPARK_HOME")
  if home and home ~= "" and runner.exists(home .. "/sbin/start-history-server.sh") then return home end
  return nil
end

--- The daemon's -Xmx from the API's memory ("4G", "2Gi", "4096" = MiB,
-- "1.5g"): whole MiB, which the JVM takes ("2Gi" or a bare number it would not,
-- or read as bytes).
function _M.jvm_memory(memory)
  local mib = resources.memory_mib(memory, math.huge)
  if not mib then return memory end
  return ("%dm"):format(math.max(1, math.floor(mib)))
end

local function script_env(eng, h)
  local dir = eng.opts.data_dir .. "/history"
  core.mkdir_p(dir, 448)
  core.mkdir_p(eng.opts.event_log_dir, 448)
  return runner.env(nil, {
    SPARK_HISTORY_OPTS = ("-Dspark.history.fs.logDirectory=file:%s -Dspark.history.ui.port=%d")
      :format(eng.opts.event_log_dir, h.ui_port or _M.UI_PORT),
    SPARK_LOG_DIR = dir, SPARK_PID_DIR = dir, SPARK_DAEMON_MEMORY = _M.jvm_memory(h.memory),
    -- the daemon leaves the script's process group: the marker lets a restart find it
    [children.MARKER] = eng.opts.data_dir,
  })
end

-- Run one of Spark's sbin scripts; the loop reaps it (it daemonizes and exits).
local function run_script(eng, home, name, h)
  local dir = eng.opts.data_dir .. "/history"
  local pid, err = core.spawn{ argv = { home .. "/sbin/" .. name }, env = script_env(eng, h),
                               stdout = dir .. "/" .. name .. ".out", stderr = dir .. "/" .. name .. ".out",
                               die_with_parent = children.SIGNAL.helper }
  if not pid then return nil, ("cannot run %s/sbin/%s: %s"):format(home, name, tostring(err)) end
  eng.lifecycle:await_exit(pid, _M.SCRIPT_TIMEOUT)
  return true
end

--- Start it (h: the settings' history table, filled in) -> true | nil, err
function _M.start(eng, h)
  local home = _M.spark_home()
  if not home then
    h.mode = "state-only"
    return true
  end
  h.mode = "spark"
  h.ui_port = h.ui_port or _M.UI_PORT
  return run_script(eng, home, "start-history-server.sh", h)
end

function _M.stop(eng, h)
  local home = h.mode == "spark" and _M.spark_home()
  if home then return run_script(eng, home, "stop-history-server.sh", h) end
  return true
end

--- Extra fields for the API's answer.
function _M.describe(eng, h)
  if h.mode == "spark" then
    return { mode = "spark", ui_url = ("http://127.0.0.1:%d"):format(h.ui_port or _M.UI_PORT),
             event_log_dir = eng.opts.event_log_dir,
             local_engine_note = "The local engine runs Apache Spark's history server over its event-log directory." }
  end
  return { mode = "state-only", local_engine_note = _M.STATE_ONLY_NOTE }
end

return _M
