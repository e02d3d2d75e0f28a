--- `aeflow serve`: options, the data directory, start-up and shutdown of the
-- local engine. serve(o) returns an exit code: 0 ok, 1 failure.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local state = require("analytics_engine.engine.state")
local auth = require("analytics_engine.engine.auth")
local faults = require("analytics_engine.engine.faults")
local router = require("analytics_engine.engine.router")
local handlers = require("analytics_engine.engine.handlers")
local apps = require("analytics_engine.engine.apps")
local lifecycle = require("analytics_engine.engine.lifecycle")
local runner = require("analytics_engine.engine.runner")
local server = require("analytics_engine.engine.server")
local confine = require("analytics_engine.engine.confine")
local children = require("analytics_engine.engine.children")
local private = require("analytics_engine.engine.private")
local answers = require("analytics_engine.engine.answers")

local _M = {}

local tointeger = util.tointeger

local OPTIONS = {
  host = "string", port = "integer", data = "string", ["app-root"] = "string", ["examples-dir"] = "string",
  users = "string", ["token-ttl"] = "integer", faults = "number", ["fault-kinds"] = "string",
  ["fault-seed"] = "integer", ["fault-ops"] = "string", ["fault-delay"] = "number", ["max-body"] = "integer",
  ["tls-cert"] = "string", ["tls-key"] = "string", ["max-connections"] = "integer", ["request-timeout"] = "number",
  ["answer-cache"] = "integer",
  ["quota-cores"] = "string", ["quota-memory"] = "string", ["app-timeout"] = "string",
  ["spark-master"] = "string", ["deploy-mode"] = "string", ["spark-submit"] = "string",
  quiet = "flag", ["no-jupyter"] = "flag", ["allow-any-program"] = "flag", ["no-list-changes"] = "flag",
}

-- A connection has this long to deliver a complete request (line, headers
-- and body) after it opens or after its previous answer; trickling bytes
-- does not extend it (slow-loris), and idle keep-alive connections close then.
_M.REQUEST_TIMEOUT = 30
-- File descriptors kept for everything but connections: the database, logs,
-- the applications' pipes, Jupyter, the history server.
local FD_RESERVE = 256

--- How many connections the server may hold: what was asked, else what the
-- open-file limit allows once raised to its hard limit (at most 100000).
function _M.max_connections(asked)
  local soft = core.raise_fd_limit() or 1024
  local fit = math.max(16, math.min(soft - FD_RESERVE, 100000))
  return asked and math.min(asked, math.max(16, soft - FD_RESERVE)) or fit
end

--- The engine's options, name → kind (string, integer, number, flag): the
-- CLI's one argument parser (cli/args.lua, via cli/serve.lua) reads them.
_M.OPTIONS = OPTIONS

--- check(o) -> o | nil, message: what the options mean together, once
-- parsed (o: option name without dashes → value).
function _M.check(o)
  if o.port and (o.port < 0 or o.port > 65535) then return nil, "--port must be between 0 and 65535" end
  if o.faults and (o.faults < 0 or o.faults > 1) then return nil, "--faults must be between 0 and 1" end
  if o["token-ttl"] and o["token-ttl"] < 1 then return nil, "--token-ttl must be at least 1" end
  if (o["tls-cert"] == nil) ~= (o["tls-key"] == nil) then return nil, "--tls-cert and --tls-key go together" end
  if o["quota-cores"] and not apps.millicores(o["quota-cores"]) then
    return nil, "--quota-cores must be a number of cores, such as 16"
  end
  if o["quota-memory"] and not apps.memory_mib(o["quota-memory"]) then
    return nil, "--quota-memory must be a memory size, such as 64Gi"
  end
  if o["app-timeout"] and not apps.seconds(o["app-timeout"]) then
    return nil, "--app-timeout must be a duration such as 600, 90s, 15m or 2h"
  end
  if o["deploy-mode"] and o["deploy-mode"] ~= "client" and o["deploy-mode"] ~= "cluster" then
    return nil, "--deploy-mode must be client or cluster"
  end
  if o["max-body"] and o["max-body"] < 0 then return nil, "--max-body must be at least 0" end
  if o["max-connections"] and (o["max-connections"] < 16 or o["max-connections"] > 1000000) then
    return nil, "--max-connections must be between 16 and 1000000"
  end
  if o["request-timeout"] and (o["request-timeout"] < 0 or o["request-timeout"] > 86400) then
    return nil, "--request-timeout must be between 0 and 86400 seconds"
  end
  if o["answer-cache"] and (o["answer-cache"] < 0 or o["answer-cache"] > 1000000) then
    return nil, "--answer-cache must be between 0 and 1000000 answers (0: off)"
  end
  if o["allow-any-program"] and not confine.loopback(o.host or "127.0.0.1") then
    return nil, "--allow-any-program is only for an engine on loopback: listening on " .. o.host
      .. ", programs are confined to --app-root and the samples"
  end
  if o["fault-ops"] then
    local ops, err = faults.parse_ops(o["fault-ops"])
    if not ops then return nil, "--fault-ops: " .. err end
    o.ops = ops
  end
  if o["fault-delay"] and o["fault-delay"] < 0 then return nil, "--fault-delay must be at least 0" end
  if o["fault-kinds"] then
    local kinds, err = faults.parse_kinds(o["fault-kinds"])
    if not kinds then return nil, "--fault-kinds: " .. err end
    o.kinds = kinds
  end
  return o
end

local cwd
local function absolute(p)
  if p:sub(1, 1) == "/" then return p end
  if not cwd then
    local f = io.popen("pwd")
    cwd = f and f:read("l") or os.getenv("PWD") or "."
    if f then f:close() end
  end
  if p == "." then return cwd end
  return cwd .. "/" .. p:gsub("^%./", "")
end

local function mkdir(dir) return core.mkdir_p(dir, 448) end -- 0700

local read_file, read_json = util.read_file, util.read_json_file

local function random_seed()
  local n = 0
  for _, b in ipairs({ core.random_bytes(7):byte(1, 7) }) do n = n * 256 + b end
  return n
end

local function fail(msg)
  io.stderr:write("aeflow serve: ", msg, "\n")
  return 1
end

--- Build the engine object (everything but the listening socket).
function _M.setup(o)
  -- Which directory is the CLI's one rule (cli/engine.lua), not the engine's.
  if type(o.data) ~= "string" then error("bad argument #1 to 'setup' (o.data, the data directory, expected)", 2) end
  local data_dir = absolute(o.data)
  core.umask(private.UMASK)
  local ok, err = mkdir(data_dir)
  if not ok then return nil, err end
  local ok2, err2 = mkdir(data_dir .. "/apps")
  if not ok2 then return nil, err2 end
  local running = read_json(data_dir .. "/engine.json")
  if type(running) == "table" and tointeger(running.pid) and running.pid ~= core.getpid()
     and core.kill(running.pid, 0) then
    return nil, ("another local engine (pid %d) already serves %s at %s; stop it or remove %s/engine.json")
      :format(running.pid, data_dir, tostring(running.url), data_dir)
  end
  -- No engine serves this directory: what carries its marker is a previous
  -- engine's leftover (children.lua).
  local swept = children.sweep(data_dir)
  if #swept > 0 then
    io.stderr:write(("engine: stopped %d process(es) a previous engine on %s left running (pids %s)\n")
      :format(#swept, data_dir, table.concat(swept, ", ")))
  end

  local ok3, err3 = mkdir(data_dir .. "/spark-events")
  if not ok3 then return nil, err3 end
  local store, serr = state.open(data_dir .. "/state.db", { json = data_dir .. "/state.json" })
  if not store then return nil, serr end
  local s = store:settings()
  local iid = s.instance and s.instance.instance_id
  if not util.is_uuid(iid) then
    local creds = read_json(data_dir .. "/credentials.json")
    iid = type(creds) == "table" and util.is_uuid(creds.instance_id) and creds.instance_id
      or util.uuid4(core.random_bytes)
    s.instance = nil
  end
  local quota = { cores = o["quota-cores"] or handlers.QUOTA_CORES,
                  memory = o["quota-memory"] or handlers.QUOTA_MEMORY }
  handlers.init_settings(s, iid, quota)
  store:touch("settings")

  local pok, perr = private.enforce(data_dir)
  if not pok then return nil, "cannot make the data directory private: " .. tostring(perr) end
  local a, aerr = auth.open{ data_dir = data_dir, token_ttl = o["token-ttl"], users_file = o.users }
  if not a then return nil, aerr end

  local eng = {
    opts = { data_dir = data_dir, app_root = absolute(o["app-root"] or "."),
             examples_dir = runner.examples_dir(o["examples-dir"]), quiet = o.quiet,
             answer_cache = o["answer-cache"], tls = o["tls-cert"] ~= nil,
             max_body = o["max-body"] or 1048576, jupyter = not o["no-jupyter"],
             quota = { millicores = apps.millicores(quota.cores), mib = apps.memory_mib(quota.memory) },
             app_timeout = o["app-timeout"] and apps.seconds(o["app-timeout"]) or nil,
             spark_master = o["spark-master"], deploy_mode = o["deploy-mode"],
             spark_submit = o["spark-submit"] and absolute(o["spark-submit"]),
             event_log_dir = data_dir .. "/spark-events" },
    store = store, auth = a, instance_id = iid, router = router.new(), versions = handlers.versions(),
    stats = { requests = {}, faults = {}, applications_created = 0 },
    lifecycle = lifecycle.new(), clusters_pending = {}, timers = {},
  }
  if eng.opts.examples_dir then eng.opts.examples_dir = absolute(eng.opts.examples_dir) end
  eng.opts.allow_any_program = o["allow-any-program"] or nil
  -- list_applications ignores changed_since, as the vendor's service does
  -- (to try a client against that behaviour; docs/engine.md)
  eng.opts.no_list_changes = o["no-list-changes"] or nil
  eng.opts.roots = confine.roots(eng.opts)
  if o.faults and o.faults > 0 then
    eng.faults = faults.new{ rate = o.faults, kinds = o.kinds, seed = o["fault-seed"] or random_seed(),
                             ops = o.ops, delay = o["fault-delay"] }
  end
  for _, c in ipairs(store:list("clusters")) do
    if c.state == "ACCEPTED" then eng.clusters_pending[c.id] = c end
  end
  apps.recover(eng)
  local cok, cerr = store:commit()
  if not cok then return nil, cerr end
  return eng
end

--- serve(o): o as cli/serve.lua parsed and check() accepted it.
function _M.serve(o)
  local eng, err = _M.setup(o)
  if not eng then return fail(err) end

  local host = o.host or "127.0.0.1"
  if not confine.loopback(host) then
    for _, r in ipairs(eng.opts.roots) do
      if r == "/" then
        eng.store:close()
        return fail("programs would run from anywhere (--app-root is /) and this engine listens on " .. host
          .. ": give --app-root the directory your applications are in")
      end
    end
  end
  local cert, key
  if o["tls-cert"] then
    cert, key = read_file(o["tls-cert"]), read_file(o["tls-key"])
    if not cert then eng.store:close() return fail("cannot read --tls-cert " .. o["tls-cert"]) end
    if not key then eng.store:close() return fail("cannot read --tls-key " .. o["tls-key"]) end
  end
  local srv, berr = core.http_server{ host = host, port = o.port or 0, max_body = eng.opts.max_body,
                                      tls_cert = cert, tls_key = key,
                                      max_connections = _M.max_connections(o["max-connections"]),
                                      request_timeout = o["request-timeout"] or _M.REQUEST_TIMEOUT,
                                      answer_cache = answers.size(eng.opts, eng.faults) }
  if not srv then
    eng.store:close()
    return fail(("cannot listen on %s:%d: %s"):format(host, o.port or 0, tostring(berr)))
  end
  eng.server = srv
  if answers.size(eng.opts, eng.faults) > 0 then answers.attach(eng, srv) end
  local port = srv:port()
  local url = ("%s://%s:%d"):format(o["tls-cert"] and "https" or "http",
    host:find(":", 1, true) and ("[" .. host .. "]") or host, port)
  eng.url = url
  local dir = eng.opts.data_dir
  local ok, werr = eng.auth:write_credentials(url, eng.instance_id)
  if not ok then srv:close() return fail("cannot write credentials.json: " .. tostring(werr)) end
  ok, werr = core.write_file_atomic(dir .. "/engine.json", util.json_encode({
    url = url, port = port, pid = core.getpid(), instance_id = eng.instance_id, data_dir = dir }) .. "\n", 384)
  if not ok then srv:close() return fail("cannot write engine.json: " .. tostring(werr)) end
  -- CHLD: the applications are looked at when one ended (lifecycle.look)
  core.signal_watch{ "INT", "TERM", "CHLD" }

  io.stdout:write(("local engine: serving the Analytics Engine v4 API at %s\n"):format(url),
    ("  instance id: %s\n"):format(eng.instance_id),
    ("  credentials: %s/credentials.json (user admin; send 'Authorization: ZenApiKey "
      .. "base64(username:api_key)' or exchange them at %s/icp4d-api/v1/authorize)\n"):format(dir, url),
    ("  data:        %s\n"):format(dir))
  io.stdout:write(("  programs:    %s\n"):format(eng.opts.allow_any_program
    and "any, for admins (--allow-any-program); others only under " .. table.concat(eng.opts.roots, ", ")
    or ("confined to %s%s"):format(table.concat(eng.opts.roots, ", "),
      confine.loopback(host) and "" or " (mandatory: this engine listens beyond loopback)")))
  if eng.faults then
    io.stdout:write(("  faults:      %g of /v4 requests (%s)\n"):format(eng.faults.rate,
      table.concat(eng.faults.kinds, ",")))
  end
  if not eng.opts.examples_dir then
    io.stdout:write("  note: the sample-application stand-ins were not found; set --examples-dir\n")
  end
  io.stdout:flush()

  local sig = server.run(eng)
  if not o.quiet then io.stdout:write("local engine: ", sig, " received, stopping\n") end
  server.shutdown(eng)
  -- what applications left behind out of their process groups (setsid) ends
  -- with the engine too, not at its next start
  local left = children.sweep(dir)
  if #left > 0 and not o.quiet then
    io.stdout:write(("local engine: stopped %d process(es) its applications left running (pids %s)\n")
      :format(#left, table.concat(left, ", ")))
  end
  srv:close()
  eng.store:close()
  os.remove(dir .. "/engine.json")
  io.stdout:flush()
  return 0
end

return _M
