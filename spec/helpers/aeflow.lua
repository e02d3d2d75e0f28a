--- Run the real `aeflow` binary from specs: in the background (to kill it)
-- or to completion, with its output captured in files.
local core = require("analytics_engine.core")
local engine = require("helpers.engine")

local helper = {}

local function read(path)
  return require("analytics_engine.util").read_file(path) or ""
end
helper.read = read

--- Environment for an aeflow talking to engine `e` (nil: no endpoint).
function helper.env(e, extra)
  local env = { "PATH=" .. (os.getenv("PATH") or "/usr/bin:/bin"), "HOME=" .. (os.getenv("HOME") or "/tmp"),
                "LANG=C.UTF-8" }
  if e then
    env[#env + 1] = "AE_URL=" .. e.url
    env[#env + 1] = "AE_INSTANCE_ID=" .. e.instance_id
    env[#env + 1] = "AE_USERNAME=" .. e.username
    env[#env + 1] = "AE_API_KEY=" .. e.api_key
  end
  for _, kv in ipairs(extra or {}) do env[#env + 1] = kv end
  return env
end

--- Start aeflow with `args`; returns a handle { pid, out, err, dir }.
function helper.spawn(args, opts)
  opts = opts or {}
  local dir = opts.dir or assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-spec-"))
  local bin = core.realpath(engine.bin()) or engine.bin()
  local argv = { bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local h = { dir = dir, out = dir .. "/stdout", err = dir .. "/stderr" }
  os.remove(h.out)
  os.remove(h.err)
  h.pid = assert(core.spawn { argv = argv, env = opts.env or helper.env(opts.engine), cwd = dir,
                              stdout = h.out, stderr = h.err })
  return h
end

--- Wait for a spawned aeflow; returns exit code (or 128+signal), stdout, stderr.
function helper.wait(h, timeout)
  local deadline = core.monotime() + (timeout or 120)
  while true do
    local how, code = core.wait(h.pid)
    if how == "exited" then return code, read(h.out), read(h.err) end
    if how == "signaled" then return 128 + code, read(h.out), read(h.err) end
    if core.monotime() > deadline then
      core.kill(h.pid, "KILL")
      error("aeflow did not finish in time; stderr: " .. read(h.err))
    end
    core.sleep(0.05)
  end
end

--- Run to completion: code, stdout, stderr.
function helper.run(args, opts)
  local h = helper.spawn(args, opts)
  return helper.wait(h, opts and opts.timeout)
end

--- Write a workflow (or any) file into dir; returns its path.
function helper.write(dir, name, text)
  return engine.write(dir .. "/" .. name, text)
end

--- A local engine (started with `engine_args`) and a fresh directory named
-- after `prefix` holding `files` ({ name = text }) -> e, dir.
function helper.workspace(prefix, files, engine_args)
  local e = engine.start(engine_args)
  local dir = engine.temp_dir(prefix)
  for name, text in pairs(files or {}) do helper.write(dir, name, text) end
  return e, dir
end

--- Stop what helper.workspace started and remove its directory.
function helper.finish(e, dir)
  engine.stop(e)
  if dir then os.execute("rm -rf '" .. dir .. "'") end
end

--- Every application the engine has on record (asking again through the
-- engine's own injected faults).
function helper.applications(e)
  local status, doc
  for _ = 1, 50 do
    status, doc = engine.request(e, "GET", engine.v4(e, "/spark_applications"))
    if status == 200 then return doc.applications end
  end
  error("list_applications failed: " .. tostring(status))
end

--- The application's details (start/finish times, state).
function helper.application(e, id)
  local _, doc = engine.request(e, "GET", engine.v4(e, "/spark_applications/" .. id))
  return doc
end

local MONTHS = { January = 1, February = 2, March = 3, April = 4, May = 5, June = 6, July = 7, August = 8,
                 September = 9, October = 10, November = 11, December = 12 }

--- The service's long time ("Friday 03 January 2025 08:40:42.324+0000") as epoch seconds.
function helper.parse_time(s)
  if type(s) ~= "string" then return nil end
  local d, mon, y, h, mi, sec, ms = s:match("%a+ (%d+) (%a+) (%d+) (%d+):(%d+):(%d+)%.(%d+)")
  if not d then return nil end
  local t = os.time { year = tonumber(y), month = MONTHS[mon], day = tonumber(d), hour = tonumber(h),
                      min = tonumber(mi), sec = tonumber(sec) }
  local offset = os.time(os.date("!*t", 0)) - os.time(os.date("*t", 0))
  return t - offset + tonumber(ms) / 1000
end

return helper
