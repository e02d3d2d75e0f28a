--- How an application runs on this machine: which program, with which argv.
-- spark-submit when one is installed (for .py, .jar, .R), otherwise by file
-- type (.py python3, .lua lua5.4, .sh sh, .R Rscript), otherwise the file
-- itself. The vendor's sample applications under /opt/ibm/spark/examples map
-- to small stand-ins shipped in workflows/apps, so the seed's payloads run.
local _M = {}

local EXAMPLES = "/opt/ibm/spark/examples"

-- Sample path (Lua pattern) -> stand-in file and what it stands for.
_M.SAMPLES = {
  { pattern = "^" .. EXAMPLES .. "/src/main/python/wordcount%.py$", file = "wordcount.py",
    what = "the PySpark wordcount example" },
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

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
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

function _M.spark_submit()
  local home = os.getenv("SPARK_HOME")
  if home and home ~= "" and exists(home .. "/bin/spark-submit") then return home .. "/bin/spark-submit" end
  return _M.which("spark-submit")
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

--- plan(details, opts) -> { argv = {...}, note = string|nil } | nil, code, message
-- details: application_details; opts: { app_root, examples_dir, name }
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

  if not note and app:sub(1, 1) ~= "/" then app = (opts.app_root or ".") .. "/" .. app end
  if not exists(app) then
    return nil, "application_not_found", ("application file %s does not exist"):format(details.application)
  end

  local ext = app:match("%.([%w]+)$")
  local argv
  local submit = not note and ext and SUBMITTABLE[ext] and _M.spark_submit()
  if submit then
    argv = { submit, "--name", opts.name }
    local conf = details.conf or {}
    if not conf["spark.master"] then argv[#argv + 1] = "--master"; argv[#argv + 1] = "local[*]" end
    if details.class then argv[#argv + 1] = "--class"; argv[#argv + 1] = details.class end
    local keys = {}
    for k in pairs(conf) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do argv[#argv + 1] = "--conf"; argv[#argv + 1] = k .. "=" .. conf[k] end
    for _, f in ipairs({ "jars", "packages", "repositories", "files", "archives" }) do
      if details[f] and details[f] ~= "" then
        argv[#argv + 1] = "--" .. f
        argv[#argv + 1] = table.concat(split_list(details[f]), ",")
      end
    end
    argv[#argv + 1] = app
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
  return { argv = argv, note = note }
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
