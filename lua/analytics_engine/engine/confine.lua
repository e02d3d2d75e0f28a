--- Which programs an application may run. The engine runs a program only
-- when its real path (symlinks and ".." resolved) lies inside an allowed root:
-- --app-root and the bundled stand-ins for the vendor's samples. A program
-- must also be of a known type (.py, .jar, .R, .lua, .sh), so it runs under
-- its interpreter or spark-submit, never as a bare executable. Admins may go
-- beyond both only on an engine started with --allow-any-program, which
-- `serve` refuses when it listens beyond loopback. A URI other than file: or
-- local: (hdfs://, s3a://, ...) is for spark-submit to fetch, not a local file.
-- Policy lives here, in Lua; the C core only resolves paths (core.realpath).
local core = require("analytics_engine.core")
local runner = require("analytics_engine.engine.runner")

local _M = {}

_M.KNOWN_TYPES = { py = true, jar = true, R = true, r = true, lua = true, sh = true }

local function lexical_clean(path)
  local out = {}
  for seg in path:gmatch("[^/]+") do
    if seg == ".." then
      out[#out] = nil
    elseif seg ~= "." then
      out[#out + 1] = seg
    end
  end
  return "/" .. table.concat(out, "/")
end

--- The allowed roots of an engine's options, real paths (made once).
function _M.roots(opts)
  local roots = {}
  for _, dir in ipairs({ opts.app_root, opts.examples_dir }) do
    local real = dir and core.realpath(dir)
    if real then roots[#roots + 1] = real end
  end
  return roots
end

local function inside(path, roots)
  for _, r in ipairs(roots) do
    if r == "/" or path == r or path:sub(1, #r + 1) == r .. "/" then return true end
  end
  return false
end

local function is_sample(app)
  if runner.exists(app) then return false end
  for _, s in ipairs(runner.SAMPLES) do
    if app:find(s.pattern) then return true end
  end
  return false
end

--- check(app, opts, user, any_type) -> true | nil, status, code, message
-- app: application_details.application; opts: the engine's options
-- (app_root, examples_dir, allow_any_program, roots); user: the caller;
-- any_type: a data file or library, not the program (no type check).
function _M.check(app, opts, user, any_type)
  local bad = app:find("%c")
  if bad then
    return nil, 400, "invalid_application", ("application_details.application has a control character "
      .. "(byte %d at position %d): a program path is one line of text"):format(app:byte(bad), bad)
  end
  if opts.allow_any_program and user and user.role == "admin" then return true end
  if is_sample(app) then return true end
  local scheme, rest = app:match("^(%a[%w+.%-]*):(.*)$")
  if scheme then
    scheme = scheme:lower()
    if scheme ~= "file" and scheme ~= "local" then return true end -- spark-submit fetches it
    app = rest:gsub("^//", "")
  end
  local path = app:sub(1, 1) == "/" and app or ((opts.app_root or ".") .. "/" .. app)
  local roots = opts.roots or _M.roots(opts)
  local where = table.concat(roots, ", ")
  -- A missing file: judge its path as written (launch then reports it missing);
  -- an existing one by where it really is, so no symlink leads out.
  local real = core.realpath(path) or lexical_clean(path)
  if not inside(real, roots) then
    return nil, 403, "application_not_allowed", ("%s is outside the directories this engine runs programs "
      .. "from (%s)"):format(app, where)
  end
  -- a FIFO would block the engine when opened, a device or a directory is no program
  local kind = runner.kind_of(real)
  if kind and kind ~= "file" then
    return nil, 400, "invalid_application", ("%s is a %s, not a regular file"):format(app, kind)
  end
  -- the type is the name's as given: that is what picks the interpreter (runner.lua)
  local ext = path:match("%.([%w]+)$")
  if not any_type and not (ext and _M.KNOWN_TYPES[ext]) and not (user and user.role == "admin") then
    return nil, 403, "application_type_not_allowed", ("%s is not a program of a known type (.py, .jar, .R, "
      .. ".lua, .sh): only an admin may run it"):format(app)
  end
  return true
end

-- What a submission may not set when its program is confined: variables and
-- Spark settings that make the interpreter, the dynamic loader, the JVM or
-- spark-submit load code from elsewhere than the program (LUA_INIT runs a
-- chunk before the bundled SparkPi stand-in, LD_PRELOAD loads any library,
-- spark.driver.extraJavaOptions=-XX:OnOutOfMemoryError=... runs a command).
_M.ENV_REFUSED = { "^LD_", "^LUA_INIT", "^LUA_PATH", "^LUA_CPATH", "^PYTHON", "^PYSPARK_", "^SPARK_", "^HADOOP_",
                   "^JAVA_", "^_JAVA_OPTIONS$", "^JDK_JAVA_OPTIONS$", "^CLASSPATH$", "^R_", "^PATH$",
                   "^BASH_ENV$", "^ENV$", "^BASH_FUNC_", "^SHELLOPTS$", "^BASHOPTS$", "^PS4$", "^GCONV_PATH$",
                   "^PERL5", "^RUBYOPT$", "^RUBYLIB$", "^NODE_OPTIONS$" }
-- PYTHON* variables that only change output or hashing, not what is loaded.
_M.ENV_ALLOWED = { PYTHONUNBUFFERED = true, PYTHONIOENCODING = true, PYTHONHASHSEED = true,
                   PYTHONDONTWRITEBYTECODE = true, PYTHONUTF8 = true, PYTHONFAULTHANDLER = true }
_M.CONF_REFUSED = { "^spark%.driver%.extra", "^spark%.executor%.extra", "^spark%.pyspark%.", "^spark%.r%.",
                    "^spark%.plugins$", "^spark%.driver%.defaultJavaOptions$", "^spark%.executor%.defaultJavaOptions$" }
-- Conf keys that set a child's environment: their variable is judged as `env`'s.
local CONF_ENV = { "^spark%.executorEnv%.(.+)$", "^spark%.yarn%.appMasterEnv%.(.+)$",
                   "^spark%.kubernetes%.driverEnv%.(.+)$" }
-- Local files spark-submit puts on a class path or beside the program: confined like it.
local CONF_FILES = { "spark.jars", "spark.files", "spark.archives", "spark.submit.pyFiles" }
local DETAIL_FILES = { "jars", "files", "archives" }

local function env_refused(name)
  if _M.ENV_ALLOWED[name] then return false end
  for _, p in ipairs(_M.ENV_REFUSED) do
    if name:find(p) then return true end
  end
  return false
end

local function conf_refused(key)
  for _, p in ipairs(_M.CONF_REFUSED) do
    if key:find(p) then return "it chooses what the driver or executors load or run" end
  end
  for _, p in ipairs(CONF_ENV) do
    local name = key:match(p)
    if name and env_refused(name) then return ("it sets %s in a child's environment"):format(name) end
  end
end

-- A comma-separated list of files spark-submit loads (`name` says where it
-- was given) -> true | nil, status, code, message for the first refused.
-- Each local file goes through the program's own check (roots, real path,
-- no FIFO).
local function check_files(name, list, opts)
  if type(list) ~= "string" then return true end
  for item in list:gmatch("[^,]+") do
    item = item:match("^%s*(.-)%s*$")
    local ok, status, code, message = _M.check(item, opts, nil, true)
    if not ok and item ~= "" then return nil, status, code, ("%s: %s"):format(name, message) end
  end
  return true
end

--- check_details(details, opts, user, defaults) -> true | nil, status, code, message
-- What else than the program a submission would make run: `env`, `conf` (and
-- the instance's default_configs it runs with) and the local files
-- spark-submit loads. Free for an admin on an --allow-any-program engine.
function _M.check_details(details, opts, user, defaults)
  if opts.allow_any_program and user and user.role == "admin" then return true end
  local names = {}
  for k in pairs(details.env or {}) do names[#names + 1] = tostring(k) end
  table.sort(names)
  for _, k in ipairs(names) do
    if env_refused(k) then
      return nil, 403, "application_env_not_allowed", ("application_details.env.%s is not allowed on this engine: "
        .. "it changes what the interpreter or the loader runs besides the program"):format(k)
    end
  end
  for _, src in ipairs({ { "application_details.conf", details.conf }, { "default_configs", defaults } }) do
    local keys = {}
    for k in pairs(src[2] or {}) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local why = conf_refused(k)
      if why then
        return nil, 403, "application_conf_not_allowed", ("%s.%s is not allowed on this engine: %s")
          :format(src[1], k, why)
      end
    end
  end
  -- A stand-in that reads the file it is given (wordcount) reads only inside
  -- the roots: otherwise any user could print the engine's credentials.json.
  for _, smp in ipairs(runner.SAMPLES) do
    -- the pattern first: the stat in is_sample is then only for that sample's path
    if smp.file_arguments and details.application:find(smp.pattern) and is_sample(details.application) then
      for i, a in ipairs(details.arguments or {}) do
        if not runner.SAMPLE_DATA[a] then
          local ok, status, code, message = _M.check(a, opts, nil, true)
          if not ok then return nil, status, code, ("application_details.arguments[%d]: %s"):format(i, message) end
        end
      end
    end
  end
  local lists = {}
  for _, f in ipairs(DETAIL_FILES) do lists[#lists + 1] = { "application_details." .. f, details[f] } end
  for _, k in ipairs(CONF_FILES) do
    lists[#lists + 1] = { "application_details.conf." .. k, (details.conf or {})[k] }
    lists[#lists + 1] = { "default_configs." .. k, (defaults or {})[k] }
  end
  for _, l in ipairs(lists) do
    local ok, status, code, message = check_files(l[1], l[2], opts)
    if not ok then return nil, status, code, message end
  end
  return true
end

--- Is `host` a loopback address (where --allow-any-program is allowed)?
function _M.loopback(host)
  return host == "127.0.0.1" or host == "localhost" or host == "::1" or host == "[::1]"
    or (host or ""):find("^127%.%d+%.%d+%.%d+$") ~= nil
end

return _M
