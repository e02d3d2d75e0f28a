--- aeflow's command line. main(argv, exe) returns the exit code:
-- 0 success, 1 the operation or run failed, 2 usage or validation error.
local ae = require "analytics_engine"
local api = require "analytics_engine.api"
local util = require "analytics_engine.util"
local sanitize = require "analytics_engine.sanitize"

local _M = {}

local stdout, stderr = io.stdout, io.stderr

local USAGE = [[
usage: aeflow <command> [options]

commands:
  run FILE [--param k=v]... [--state F] [--resume] [--json] [--max-parallel N]
                               run a workflow (a local engine when no endpoint
                               is configured)
  validate FILE                check a workflow without contacting anything
  plan FILE                    the DAG and every request it would make
  graph FILE [--format dot|mermaid|svg|png] [-o FILE]
                               the step graph (svg and png need Graphviz)
  report STATE_FILE [-o FILE] [--format html|md]
                               a run's report: graph, time line, outputs
  orphans [--state F]... [--stop]
                               applications with a run token no state file knows
  exec FILE                    run a plain Lua script with `client` ready
  call OPERATION [ID...] [JSON|@FILE|-]
                               one API call; prints the JSON answer
  operations                   list the operations `call` knows
  serve [--port N] [--data DIR] [--host H] [--faults RATE] ...
                               run the local engine (the v4 API on this machine)
  serve --stop [--data DIR]    stop a local engine started in the background
  logs APP_ID [--stream stderr] [--follow]
                               an application's output on the local engine
  help [COMMAND]               this text, or one command's
  --version                    print the version

The endpoint comes from AE_URL, AE_INSTANCE_ID and AE_TOKEN or AE_USERNAME with
AE_API_KEY/AE_PASSWORD, or the profile file (~/.config/analytics-engine/config.json).
With none configured, `call` uses (and if needed starts) the local engine.
]]

local HELP = {
  call = [[
usage: aeflow call OPERATION [ID...] [JSON|@FILE|-]

Calls one operation and prints its JSON answer. Ids come first, in the order
of the path (application_id, kernel_id, cluster_id); then the body (for PUT,
PATCH and POST operations) or query (list_applications: {"state": "RUNNING"})
as JSON text, @file.json, or - for standard input.
Exit status: 0 success, 1 the call failed (the error on stderr), 2 usage.
Run `aeflow operations` for the list.]],
  run = [[
usage: aeflow run FILE [--param key=value]... [--state FILE] [--resume] [--json]
                  [--max-parallel N] [--on-cancel stop|leave] [--poll-interval S]
                  [--max-poll-interval S] [--submit-grace S] [--quiet] [--report FILE]

Runs the workflow FILE returns. The state file (default .aeflow/NAME.state.json)
records every submission before it is sent; --resume continues a run that
crashed or was killed, adopting applications already accepted. SIGINT/SIGTERM
cancel: stop the applications this run started (unless --on-cancel leave), run
the finally steps, exit 130. --submit-grace S (default 120): how long after a
submission whose answer was lost the service may still act on it; the runner
looks for it by its token that long before sending it again. --json prints
NDJSON events. --report FILE writes
the run's report at the end, also of a failed or cancelled run (FILE.md:
Markdown, anything else: HTML; see `aeflow help report`).
Exit status: 0 success, 1 a step failed, 2 usage or validation error, 130 cancelled.]],
  exec = [[
usage: aeflow exec FILE [ARGS...]

Runs a plain Lua script with a ready client in the global `client` (and the
module in `ae`). With no endpoint configured, a local engine serves it.]],
  validate = [[
usage: aeflow validate FILE [--param k=v]...

Loads the workflow and checks it (types, unknown keys, dependencies, cycles);
nothing is contacted. Errors name the file and line.]],
  plan = [[
usage: aeflow plan FILE [--param k=v]...

Prints the order of the steps and every request each would make; nothing is sent.]],
  graph = [[
usage: aeflow graph FILE [--format dot|mermaid|svg|png] [-o FILE] [--param k=v]...

Prints the step graph as Graphviz dot (default) or a Mermaid flowchart, or
renders it as SVG or PNG with Graphviz's `dot` (Debian package graphviz).
-o writes to FILE instead of standard output.]],
  report = [[
usage: aeflow report STATE_FILE [-o FILE] [--format html|md]

Writes the report of a run from its state file (default .aeflow/NAME.state.json):
one self-contained HTML page (no scripts, no network) with the step graph, a
time line of steps and applications (submitted, queued, running, finished;
retries, timeouts and cancels marked), durations, outputs, errors and, for a
local engine, links to each application's logs. --format md writes a Markdown
summary for CI job summaries. Default FILE: report.html (report.md); -o - writes
to standard output; the format follows FILE's extension when not given.
Exit status: 0 written, 1 the state file could not be read or the report written,
2 usage.]],
  operations = [[
usage: aeflow operations

Lists every API operation `aeflow call` knows: name, HTTP method and path.]],
  help = [[
usage: aeflow help [COMMAND]

Prints the overview, or one command's usage. `aeflow COMMAND --help` does the same.]],
  orphans = [[
usage: aeflow orphans [--state FILE]... [--stop] [--json]

Lists applications on the instance that carry an aeflow run token which no
state file (default: .aeflow/*.state.json) records with that application id:
submissions whose runner died before saving the id. --stop stops them.]],
  serve = require "analytics_engine.engine.usage",
}

local function fail(code, fmt, ...)
  -- whatever the message quotes (a server, a file) prints safely, on one line
  stderr:write("aeflow: ", sanitize.clean(fmt:format(...)), "\n")
  return code
end

local function default_data_dir()
  local base = os.getenv("XDG_DATA_HOME")
  if not base or base == "" then base = (os.getenv("HOME") or "/tmp") .. "/.local/share" end
  return base .. "/analytics-engine/engine"
end

local function option_value(args, name)
  for i = 1, #args do
    if args[i] == name then return args[i + 1] end
    local v = args[i]:match("^" .. name:gsub("%-", "%%-") .. "=(.*)$")
    if v then return v end
  end
end

--- A client for the configured endpoint, or for the local engine (started in
-- the background when `start` is true and none is running).
-- Returns client, engine_info_or_nil, or nil, message.
function _M.connect(exe, opts)
  opts = opts or {}
  local c, err = ae.client(opts.client_opts)
  if c then return c end
  local cfg_missing = err.message:find("^no service URL")
  if not cfg_missing then return nil, tostring(err.message) end
  local launcher = require "analytics_engine.engine.launcher"
  local dir = opts.data_dir or default_data_dir()
  local info = launcher.find_running(dir)
  local started
  if not info then
    local lerr
    info, lerr = launcher.start { data_dir = dir, bin = exe }
    if not info then return nil, "cannot start a local engine: " .. tostring(lerr) end
    started = info
    if not opts.quiet then
      stderr:write(("aeflow: started a local engine at %s (data %s); stop it with `aeflow serve --stop`\n")
        :format(info.url, dir))
    end
  end
  c, err = ae.client { url = info.url, instance_id = info.instance_id,
                       auth = { username = info.username, api_key = info.api_key } }
  if not c then return nil, tostring(err) end
  return c, started
end

-- Read a JSON argument: literal text, @file, or - for stdin.
local function read_json_arg(s)
  local src = s
  if s == "-" then
    src = io.read("a")
  elseif s:sub(1, 1) == "@" then
    local f, ferr = io.open(s:sub(2), "rb")
    if not f then return nil, ferr end
    src = f:read("a")
    f:close()
  end
  local v, err = util.json_decode(src)
  if v == nil then return nil, ("%s is not valid JSON: %s"):format(s == src and "the argument" or s, err) end
  return v
end

local function cmd_call(args, exe)
  local name = args[1]
  if not name then return fail(2, "call: which operation? (see `aeflow operations`)") end
  local op = api.by_name[name]
  if not op then return fail(2, "call: unknown operation '%s' (see `aeflow operations`)", name) end
  local call_args = {}
  for i = 1, #op.ids do
    local id = args[1 + i]
    if not id then return fail(2, "call %s: missing %s", name, op.ids[i]) end
    call_args[i] = id
  end
  local extra = args[#op.ids + 2]
  if extra then
    if not (op.body or op.query) then return fail(2, "call %s: takes no body", name) end
    local v, err = read_json_arg(extra)
    if v == nil then return fail(2, "call %s: %s", name, err) end
    call_args[#op.ids + 1] = v
  end
  if args[#op.ids + 3] then return fail(2, "call %s: too many arguments", name) end
  local c, cerr = _M.connect(exe)
  if not c then return fail(1, "%s", cerr) end
  local res, err = c:call(name, table.unpack(call_args))
  -- Bad input found before anything was sent is a usage error.
  if res == nil then return fail(err.code == "invalid_argument" and 2 or 1, "%s", tostring(err)) end
  stdout:write(res == true and "{}" or sanitize.redact_known(util.json_pretty(res)), "\n")
  return 0
end

local function cmd_operations()
  for _, op in ipairs(api.operations) do
    stdout:write(("%-36s %-6s %s\n"):format(op.name, op.method, op.full_path))
  end
  return 0
end

local function cmd_serve(args, exe)
  for _, a in ipairs(args) do
    if a == "--stop" then
      local launcher = require "analytics_engine.engine.launcher"
      local dir = option_value(args, "--data") or default_data_dir()
      local info = launcher.find_running(dir)
      if not info then return fail(1, "no local engine is running with data %s", dir) end
      info:stop()
      stdout:write(("stopped the local engine at %s\n"):format(info.url))
      return 0
    end
  end
  return require("analytics_engine.engine.main").serve(args, exe)
end

local wf = require "analytics_engine.workflow.cli"

local COMMANDS = { call = cmd_call, serve = cmd_serve, operations = cmd_operations,
                   run = wf.run, validate = wf.validate, plan = wf.plan, graph = wf.graph,
                   orphans = wf.orphans, exec = wf.exec }
COMMANDS.report = wf.report
local logs_cli = require "analytics_engine.logs_cli"
COMMANDS.logs, HELP.logs = logs_cli.main, logs_cli.HELP
_M.COMMANDS, _M.HELP = COMMANDS, HELP -- for the spec that every verb has help

function _M.main(argv, exe)
  local verb = argv[1]
  if verb == nil or verb == "--help" or verb == "-h" then
    stdout:write(USAGE)
    return verb == nil and 2 or 0
  end
  if verb == "--version" or verb == "version" then
    stdout:write("aeflow ", ae.VERSION, " (", _VERSION, ")\n")
    return 0
  end
  if verb == "help" then
    local topic = argv[2]
    if topic and not HELP[topic] and not COMMANDS[topic] then return fail(2, "help: no command '%s'", topic) end
    stdout:write(topic and (HELP[topic] or USAGE) or USAGE, topic and "\n" or "")
    return 0
  end
  local cmd = COMMANDS[verb]
  if not cmd then return fail(2, "unknown command '%s' (see `aeflow --help`)", verb) end
  local rest = table.move(argv, 2, #argv, 1, {})
  if rest[1] == "--help" then
    stdout:write(HELP[verb] or USAGE, "\n")
    return 0
  end
  return cmd(rest, exe)
end

return _M
