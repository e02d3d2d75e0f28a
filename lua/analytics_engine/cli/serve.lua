--- `aeflow serve`: the local engine in the foreground (the engine's options,
-- parsed by the CLI's one parser from engine/main.lua's table), in the background (--background: says
-- where and how to stop it), or stopped (--stop). Its data directory follows
-- the CLI's one rule (cli/engine.lua) unless --data says otherwise.
local out = require("analytics_engine.cli.out")
local which = require("analytics_engine.cli.engine")
local launcher = require("analytics_engine.engine.launcher")
local engine_main = require("analytics_engine.engine.main")
local args_mod = require("analytics_engine.cli.args")

local _M = {}

local HELP = [[
usage: aeflow serve [options]
       aeflow serve --background [--json] [options]   start it and return; it keeps running
       aeflow serve --stop [--json] [--data DIR]       stop the engine serving DIR
  --host H            address to bind (default 127.0.0.1)
  --port N            port (default 0: any free port)
  --data DIR          state, credentials and logs (default $AEFLOW_DIR/engine, else .aeflow/engine:
                      the same engine every other verb uses when no endpoint is configured)
  --app-root DIR      where relative application paths resolve, and with the samples' stand-ins
                      the only place programs run from (default: the current directory)
  --allow-any-program let admins run any program, anywhere (loopback engines only)
  --examples-dir DIR  the stand-ins for the vendor's sample applications (default: workflows/apps)
  --users FILE        extra users: [{username, role, api_key_sha256 | password_sha256}]
  --token-ttl S       lifetime of issued tokens in seconds (default 3600)
  --faults RATE       inject faults into this fraction of /v4 requests (0..1)
  --fault-kinds K,..  429,500,503,reset,reset-after,delay (default: all)
  --fault-seed N      seed for the fault generator
  --fault-ops OP,..   inject faults only into these operations (default: every /v4 one)
  --fault-delay S     how long a `delay` fault stalls (default 2)
  --max-body BYTES    largest accepted request body (default 1048576)
  --max-connections N connections held at once (default: the open-file limit, raised to its
                      hard limit, less 256); near it the oldest idle ones are closed
  --request-timeout S a connection's time to send a whole request, not extended by
                      trickling bytes (default 30; 0: none)
  --answer-cache N    status answers the server may give again without Lua until the
                      application changes (default 16384; 0: off; only with --quiet)
  --tls-cert FILE --tls-key FILE   serve HTTPS (PEM files)
  --quota-cores N     the instance's cpu quota (default 16)
  --quota-memory SIZE the instance's memory quota (default 64Gi)
  --app-timeout S     stop applications that run longer (default: no limit;
                      per application: conf ae.local-engine.timeout)
  --spark-master URL  spark-submit's --master: spark://..., yarn, k8s://..., local[N]
  --deploy-mode MODE  spark-submit's --deploy-mode: client or cluster
  --spark-submit PATH the spark-submit to use (default: $SPARK_HOME/bin, then PATH)
  --no-jupyter        no Jupyter Server: the kernel endpoints answer 503
  --quiet             no per-request log lines
  --no-list-changes   list_applications ignores changed_since, as the vendor's service does
                      (to try a client against it; clients then read the whole list)
]]

-- The engine's options (engine/main.lua's OPTIONS) and this verb's own.
local SPEC = { ["--stop"] = "flag", ["--background"] = "flag", ["--json"] = "flag" }
for name, kind in pairs(engine_main.OPTIONS) do SPEC["--" .. name] = kind end

--- parse(args) -> options (names without dashes), own switches | nil, message
function _M.parse(args)
  local pos, opt = args_mod.parse(args, SPEC)
  if not pos then return nil, opt end
  if pos[1] then return nil, ("unexpected argument '%s'"):format(pos[1]) end
  local o, mine = {}, {}
  for k, v in pairs(opt) do
    local name = type(k) == "string" and k:match("^%-%-(.+)$")
    if name and engine_main.OPTIONS[name] then o[name] = v else mine[k] = v end
  end
  local ok, err = engine_main.check(o)
  if not ok then return nil, err end
  return o, mine
end

-- The engine's command line for a background start (launcher adds --data and --port).
local function argv_of(o)
  local list = {}
  for name, v in pairs(o) do
    local kind = engine_main.OPTIONS[name]
    if kind and name ~= "data" and name ~= "port" then
      if kind == "flag" then
        list[#list + 1] = "--" .. name
      else
        list[#list + 1] = "--" .. name .. "=" .. tostring(v)
      end
    end
  end
  table.sort(list)
  return list
end

_M.serve = {
  raw = true, -- parsed below, against the engine's option table
  help = HELP,
  run = function(args, ctx)
    local o, mine = _M.parse(args)
    if not o then return out.fail(2, "serve", "%s (see `aeflow serve -h`)", mine) end
    if mine.help then
      io.stdout:write(HELP)
      return 0
    end
    if mine["--json"] and not (mine["--background"] or mine["--stop"]) then
      return out.fail(2, "serve", "--json goes with --background or --stop (the foreground engine prints its log)")
    end
    local dir = o.data or which.data_dir()
    if mine["--stop"] then
      local info = launcher.find_running(dir)
      if not info then return out.fail(1, "serve", "no local engine is running with data %s", dir) end
      info:stop()
      if mine["--json"] then
        out.json { stopped = true, url = info.url, pid = info.pid, data_dir = dir }
      else
        io.stdout:write(("stopped the local engine at %s\n"):format(info.url))
      end
      return 0
    end
    o.data = dir
    if mine["--background"] then
      local running = launcher.find_running(dir)
      if running then
        return out.fail(1, "serve", "a local engine (pid %d) already serves %s at %s", running.pid, dir, running.url)
      end
      local info, err = launcher.start { data_dir = dir, bin = ctx.exe, port = o.port, args = argv_of(o) }
      if not info then return out.fail(1, "serve", "%s", err) end
      if mine["--json"] then
        out.json { url = info.url, instance_id = info.instance_id, pid = info.pid, data_dir = dir,
                   log = info.log }
      else
        io.stdout:write(("local engine: running in the background at %s (pid %d, data %s, log %s)\n"):format(
          info.url, info.pid, dir, info.log),
          "  it keeps running until `aeflow serve --stop", dir ~= which.data_dir() and (" --data " .. dir) or "",
          "`\n")
      end
      return 0
    end
    return engine_main.serve(o)
  end,
}

return _M
