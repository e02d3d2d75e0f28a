--- How an application runs on this machine: which program, with which argv.
-- spark-submit when one is installed (for .py, .jar, .R), otherwise by file
-- type (.py python3, .lua lua5.4, .sh sh, .R Rscript), otherwise the file
-- itself. The vendor's sample applications under /opt/ibm/spark/examples map
-- to small stand-ins shipped in workflows/apps, so the seed's payloads run.
local core = require("analytics_engine.core")

local _M = {}

local EXAMPLES = "/opt/ibm/spark/examples"

-- Sample path (Lua pattern) -> stand-in file and what it stands for.
_M.SAMPLES = {
  -- file_arguments: the stand-in opens its arguments (confine.lua keeps them inside the roots)
  { pattern = "^" .. EXAMPLES .. "/src/main/python/wordcount%.py$", file = "wordcount.py",
    what = "the PySpark wordcount example", file_arguments = true },
  { pattern = "^" .. EXAMPLES .. "/jars/spark%-examples[^/]*%.jar$", file = "sparkpi.lua",
    what = "the Scala SparkPi example", class = "org.apache.spark.examples.SparkPi" },
  { pattern = "^" .. EXAMPLES .. "/src/main/r/dataframe%.R$", file = "dataframe.lua",
    what = "the SparkR dataframe example" },
}
_M.SAMPLE_DATA = {
  [EXAMPLES .. "/src/main/resources/people.txt"] = "people.txt",
}

local INTERPRETERS = { py = "python3", lua = "lua5.4", sh = "sh", R = "Rscript", r = "Rscript" }
local SUBMITTABLE = { py = true, jar = true, R = true, r = true }

-- What `path` is ("file", "directory", "fifo", ...; symlinks followed) or
-- nil, by stat: never opened, as open(2) on a FIFO waits for a writer, and
-- the engine's one thread with it.
local function kind_of(path)
  local mode, kind = core.file_mode(path)
  return mode and kind
end
_M.kind_of = kind_of

-- A regular file.
local function exists(path)
  return kind_of(path) == "file"
end
_M.exists = exists

--- Find `name` on PATH (or return it when it has a slash and exists).
function _M.which(name, path_var)
  if name:find("/", 1, true) then return exists(name) and name or nil end
  for dir in (path_var or os.getenv("PATH") or "/usr/bin:/bin"):gmatch("[^:]+") do
    local p = dir .. "/" .. name
    if exists(p) then return p end
  end
  return nil
end

--- spark-submit from $SPARK_HOME/bin, else PATH, else nil.
function _M.spark_submit(home, path_var)
  home = home or os.getenv("SPARK_HOME")
  if home and home ~= "" and exists(home .. "/bin/spark-submit") then return home .. "/bin/spark-submit" end
  return _M.which("spark-submit", path_var)
end

--- Where the stand-ins live: --examples-dir, $AE_EXAMPLES_DIR, workflows/apps
-- found upward from this file (a source checkout), or analytics-engine/apps in
-- a share directory above it (an install under PREFIX/share/lua/5.4), else nil.
function _M.examples_dir(opt)
  if opt and opt ~= "" then return opt end
  local env = os.getenv("AE_EXAMPLES_DIR")
  if env and env ~= "" then return env end
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) ~= "@" then return nil end
  local dir = src:sub(2):match("^(.*)/[^/]*$") or "."
  for _ = 1, 6 do
    if exists(dir .. "/workflows/apps/sparkpi.lua") then return dir .. "/workflows/apps" end
    if exists(dir .. "/analytics-engine/apps/sparkpi.lua") then return dir .. "/analytics-engine/apps" end
    local up = dir:match("^(.*)/[^/]*$")
    if not up or up == "" then
      if exists(dir .. "/../workflows/apps/sparkpi.lua") then return dir .. "/../workflows/apps" end
      break
    end
    dir = up
  end
  return nil
end

local function split_list(s)
  local out = {}
  for item in (s or ""):gmatch("[^,]+") do out[#out + 1] = item end
  return out
end

-- Conf keys that become spark-submit flags (or are the engine's own) rather than --conf.
local NOT_CONF = { ["spark.master"] = true, ["spark.submit.deployMode"] = true, ["spark.submit.pyFiles"] = true }

--- The spark-submit command line for `app` (without its arguments):
--   spark-submit --master M [--deploy-mode D] --name N [--class C]
--     [--conf k=v]... (instance defaults under the application's conf, sorted)
--     [--jars ..] [--packages ..] [--repositories ..] [--files ..] [--archives ..] [--py-files ..] APP
-- M: the engine's --spark-master, else the conf's spark.master, else local[*];
-- D: the engine's --deploy-mode, else the conf's spark.submit.deployMode.
-- py-files come from the conf's spark.submit.pyFiles. Keys starting with "ae."
-- are the service's and the engine's own and are not passed to Spark. With a
-- driver on this machine (client mode) and no spark.eventLog.dir, the event
-- log goes to the engine's event-log directory, where its history server looks.
function _M.submit_argv(submit, app, details, opts)
  local conf = {}
  for k, v in pairs(opts.instance_defaults or {}) do conf[k] = v end
  for k, v in pairs(details.conf or {}) do conf[k] = v end
  local master = opts.master or conf["spark.master"] or "local[*]"
  local deploy = opts.deploy_mode or conf["spark.submit.deployMode"]
  local argv = { submit, "--master", master }
  if deploy then argv[#argv + 1] = "--deploy-mode"; argv[#argv + 1] = deploy end
  argv[#argv + 1] = "--name"; argv[#argv + 1] = opts.name
  if details.class then argv[#argv + 1] = "--class"; argv[#argv + 1] = details.class end
  if opts.event_log_dir and deploy ~= "cluster" and conf["spark.eventLog.dir"] == nil then
    if conf["spark.eventLog.enabled"] == nil then conf["spark.eventLog.enabled"] = "true" end
    conf["spark.eventLog.dir"] = "file:" .. opts.event_log_dir
  end
  if deploy == "cluster" and master:find("^spark://") and conf["spark.standalone.submit.waitAppCompletion"] == nil then
    -- Otherwise spark-submit returns once the driver is launched, not when it ends.
    conf["spark.standalone.submit.waitAppCompletion"] = "true"
  end
  local keys = {}
  for k in pairs(conf) do
    if not NOT_CONF[k] and not k:find("^ae%.") then keys[#keys + 1] = k end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do argv[#argv + 1] = "--conf"; argv[#argv + 1] = k .. "=" .. conf[k] end
  local lists = { jars = details.jars, packages = details.packages, repositories = details.repositories,
                  files = details.files, archives = details.archives, ["py-files"] = conf["spark.submit.pyFiles"] }
  for _, f in ipairs({ "jars", "packages", "repositories", "files", "archives", "py-files" }) do
    local items = split_list(lists[f])
    for i, item in ipairs(items) do items[i] = item:match("^%s*(.-)%s*$") end
    if #items > 0 then
      argv[#argv + 1] = "--" .. f
      argv[#argv + 1] = table.concat(items, ",")
    end
  end
  argv[#argv + 1] = app
  return argv
end

--- plan(details, opts) -> { argv = {...}, note = string|nil, submit = true|nil } | nil, code, message
-- details: application_details; opts: { app_root, examples_dir, name, spark_submit (path),
-- master, deploy_mode, event_log_dir, instance_defaults }
function _M.plan(details, opts)
  local app = details.application
  local args = {}
  for i, a in ipairs(details.arguments or {}) do args[i] = a end
  local note

  if not exists(app) then
    for _, s in ipairs(_M.SAMPLES) do
      if app:find(s.pattern) then
        if s.class and details.class and details.class ~= s.class then
          return nil, "application_not_found", ("%s is not installed here and the local engine's stand-in "
            .. "only runs %s, not %s"):format(app, s.class, details.class)
        end
        if not opts.examples_dir then
          return nil, "application_not_found", ("%s is not installed here and the local engine's stand-ins "
            .. "were not found (set --examples-dir or AE_EXAMPLES_DIR)"):format(app)
        end
        note = ("%s is not installed here: the local engine ran its stand-in %s for %s")
          :format(app, s.file, s.what)
        app = opts.examples_dir .. "/" .. s.file
        break
      end
    end
    for i, a in ipairs(args) do
      local data = _M.SAMPLE_DATA[a]
      if data and not exists(a) and opts.examples_dir then args[i] = opts.examples_dir .. "/" .. data end
    end
  end

  -- A URI (hdfs://, s3a://, local:, file:) is for Spark to fetch: no local check.
  local remote = not note and app:find("^%a[%w+.%-]*:") and (opts.spark_submit or _M.spark_submit())
  if remote then
    local argv = _M.submit_argv(remote, app, details, opts)
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return { argv = argv, submit = true }
  end
  if not note and app:sub(1, 1) ~= "/" then app = (opts.app_root or ".") .. "/" .. app end
  if not exists(app) then
    local kind = kind_of(app)
    if kind then
      return nil, "invalid_application", ("application file %s is a %s, not a regular file")
        :format(details.application, kind)
    end
    return nil, "application_not_found", ("application file %s does not exist"):format(details.application)
  end

  local ext = app:match("%.([%w]+)$")
  local argv
  local submit = not note and ext and SUBMITTABLE[ext] and (opts.spark_submit or _M.spark_submit())
  if submit then
    argv = _M.submit_argv(submit, app, details, opts)
  elseif ext == "jar" then
    return nil, "spark_submit_not_found", ("%s is a jar: running it needs spark-submit "
      .. "(install Apache Spark or set SPARK_HOME)"):format(details.application)
  elseif ext and INTERPRETERS[ext] then
    local prog = _M.which(INTERPRETERS[ext])
    if not prog then
      return nil, "runtime_not_found", ("%s needs %s, which is not installed"):format(details.application,
        INTERPRETERS[ext])
    end
    argv = { prog, app }
  else
    argv = { app }
  end
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return { argv = argv, note = note, submit = submit and true or nil }
end

local inherited
--- The engine's own environment as "K=V" strings (read once).
function _M.inherited_env()
  if inherited then return inherited end
  inherited = {}
  local f = io.open("/proc/self/environ", "rb")
  if f then
    local s = f:read("a")
    f:close()
    for kv in s:gmatch("[^%z]+") do
      if kv:find("=", 2, true) then inherited[#inherited + 1] = kv end
    end
  else
    for _, k in ipairs({ "PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "SPARK_HOME", "JAVA_HOME",
                          "PYTHONPATH", "LUA_PATH", "LUA_CPATH" }) do
      local v = os.getenv(k)
      if v then inherited[#inherited + 1] = k .. "=" .. v end
    end
  end
  return inherited
end

--- Environment for an application: inherited + application_details.env + extra.
function _M.env(app_env, extra)
  local order, vals = {}, {}
  local function set(k, v)
    if vals[k] == nil then order[#order + 1] = k end
    vals[k] = v
  end
  for _, kv in ipairs(_M.inherited_env()) do
    local k, v = kv:match("^([^=]+)=(.*)$")
    if k then set(k, v) end
  end
  for k, v in pairs(app_env or {}) do set(k, v) end
  for k, v in pairs(extra or {}) do set(k, v) end
  local out = {}
  for i, k in ipairs(order) do out[i] = k .. "=" .. vals[k] end
  return out
end

return _M
