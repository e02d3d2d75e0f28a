--- aeflow's command line. main(argv, exe) returns the exit code:
-- 0 success, 1 the operation or run failed, 2 usage or validation error,
-- 130 a run cancelled. One module per verb or group under cli/, one
-- argument parser (cli/args), one rule for "which engine" (cli/engine), one
-- way to fail and print (cli/out).
local version = require("analytics_engine.version")
local args_mod = require("analytics_engine.cli.args")
local out = require("analytics_engine.cli.out")
local schema = require("analytics_engine.workflow.schema")
local sandbox = require("analytics_engine.workflow.sandbox")

local _M = {}

local USAGE = [[
usage: aeflow <command> [options]        (aeflow <command> -h: that command's help)

commands:
  run FILE [--param k=v]... [--state F] [--resume] [--json] [--max-parallel N]
                               run a workflow
  validate FILE                check a workflow without contacting anything
  plan FILE                    the DAG and every request it would make
  graph FILE [--format dot|mermaid|svg|png] [-o FILE]
                               the step graph (svg and png need Graphviz)
  runs [WORKFLOW] [--prune KEEP]
                               the kept runs: workflow, id, start, duration, result
  retry [RUN]                  run a kept run's failed, skipped and cancelled steps
                               (and finally) again, keeping what succeeded
  report [RUN|STATE_FILE] [-o FILE] [--format html|md]
                               a run's report (default: the latest run)
  orphans [--state F]... [--stop]
                               applications with a run token no kept run knows
  exec FILE                    run a plain Lua script with `client` ready
  call OPERATION [ID...] [JSON|@FILE|-]
                               one API call; prints the JSON answer
  operations                   list the operations `call` knows
  serve [--background] [--port N] [--data DIR] ...
                               run the local engine (the v4 API on this machine)
  serve --stop [--data DIR]    stop a local engine started in the background
  logs [APP_ID] [--run RUN] [--stream stderr] [--follow]
                               an application's output on the local engine
                               (default: the latest run's failed application)
  help [COMMAND]               this text, or one command's
  --version                    print the version

Every command takes -h/--help and --profile NAME (before the command too);
every command that prints data takes --json (NDJSON for streams such as run's
events, one document otherwise).

Which service: the endpoint from --profile NAME, else AE_URL, AE_INSTANCE_ID
and AE_TOKEN or AE_USERNAME with AE_API_KEY/AE_PASSWORD, else the profile file
(~/.config/analytics-engine/config.json). With none configured, every command
uses the same local engine: the one whose data is in $AEFLOW_DIR/engine
(default .aeflow/engine, beside the runs). If `aeflow serve` (or
`aeflow serve --background`) already serves it, that one is used; otherwise
it is started for the command and stopped when the command ends.
]]

-- Verb -> its module under cli/ (each returns { verb = { run, help, options[,
-- raw][, stop_at] } }). A module is loaded only when its verb runs or its
-- help is asked for: `aeflow --version` or `validate` must not pay for the
-- engine, the runner and the client they never use.
local VERBS = { call = "call", operations = "call", serve = "serve", logs = "logs", validate = "offline",
                plan = "offline", graph = "offline", run = "run", report = "report", orphans = "orphans",
                exec = "exec", runs = "runs", retry = "retry" }

local HELP_HELP = [[
usage: aeflow help [COMMAND] [--json]

Prints the overview, or one command's usage. `aeflow COMMAND -h` (or --help,
anywhere after the command) does the same. --json: { "command", "help" } for
a command, { "usage", "commands" } for the overview.]]

-- A verb's definition (loading its module), or nil for an unknown verb.
local function command(verb)
  local m = VERBS[verb]
  return m and require("analytics_engine.cli." .. m)[verb] or nil
end

local function help_of(verb)
  if verb == "help" then return HELP_HELP end
  local cmd = command(verb)
  return cmd and cmd.help or nil
end

--- Every verb's definition: loads every verb module (for the specs that
-- check each verb's help, options and completions; main() never calls it).
function _M.commands()
  local all = {}
  for verb in pairs(VERBS) do all[verb] = command(verb) end
  return all
end

--- Every verb's help text, `help` included (loads every verb module).
function _M.help_texts()
  local all = { help = HELP_HELP }
  for verb in pairs(VERBS) do all[verb] = help_of(verb) end
  return all
end
_M.VERBS, _M.USAGE = VERBS, USAGE

-- Global options before the verb (`aeflow --profile NAME runs`) go right
-- after it, where every verb's parser takes them (a verb's positionals and
-- exec's script arguments come later). Returns the new argv or nil, message.
local function verb_first(argv)
  local i, pre = 1, {}
  while argv[i] == "--profile" or (argv[i] or ""):find("^%-%-profile=") do
    if argv[i] == "--profile" then
      if argv[i + 1] == nil then return nil, "--profile needs a value (a profile name)" end
      pre[#pre + 1], pre[#pre + 2] = argv[i], argv[i + 1]
      i = i + 2
    else
      pre[#pre + 1] = argv[i]
      i = i + 1
    end
  end
  if i == 1 or argv[i] == nil then return argv end
  local new = { argv[i] }
  table.move(pre, 1, #pre, 2, new)
  table.move(argv, i + 1, #argv, #new + 1, new)
  return new
end

local function help(rest)
  local pos, opt = args_mod.parse(rest, { ["--json"] = "flag" })
  if not pos then return out.fail(2, "help", "%s (see `aeflow help -h`)", opt) end
  if pos[2] then return out.fail(2, "help", "unexpected argument '%s'", pos[2]) end
  -- `aeflow help -h`: the help of help.
  local topic = pos[1] or (opt.help and "help") or nil
  local text = topic and help_of(topic)
  if topic and not text then return out.fail(2, "help", "no command '%s' (see `aeflow help`)", topic) end
  if opt["--json"] then
    if topic then
      out.json { command = topic, help = text }
    else
      local names = { "help" }
      for name in pairs(VERBS) do names[#names + 1] = name end
      table.sort(names)
      out.json { usage = USAGE, commands = names }
    end
  else
    io.stdout:write(text or USAGE, text and "\n" or "")
  end
  return 0
end

function _M.main(argv, exe)
  -- One command per process: a workflow file stuck inside one C call while
  -- it loads (which the sandbox's hook cannot stop) may end this process.
  sandbox.HARD_DEADLINE = 3
  local moved, merr = verb_first(argv)
  if not moved then return out.fail(2, nil, "%s", merr) end
  argv = moved
  local verb = argv[1]
  if verb == nil or verb == "--help" or verb == "-h" then
    io.stdout:write(USAGE)
    return verb == nil and 2 or 0
  end
  if verb == "--version" or verb == "version" then
    if argv[2] == "--json" then
      out.json { version = version.VERSION, lua = _VERSION }
    else
      io.stdout:write("aeflow ", version.VERSION, " (", _VERSION, ")\n")
    end
    return 0
  end
  if verb == "help" then return help(table.move(argv, 2, #argv, 1, {})) end
  local cmd = command(verb)
  if not cmd then
    local names = {}
    for name in pairs(VERBS) do names[#names + 1] = name end
    local near = schema.suggest(verb, names)
    return out.fail(2, nil, "unknown command '%s'%s", verb,
      near and (" (did you mean '%s'?)"):format(near) or " (see `aeflow --help`)")
  end
  local rest = table.move(argv, 2, #argv, 1, {})
  local ctx = { exe = exe }
  if cmd.raw then return cmd.run(rest, ctx) end
  local pos, opt = args_mod.parse(rest, cmd.options, { stop_at = cmd.stop_at })
  if not pos then return out.fail(2, verb, "%s (see `aeflow %s -h`)", opt, verb) end
  if opt.help then
    io.stdout:write(cmd.help, "\n")
    return 0
  end
  return cmd.run(pos, opt, ctx)
end

return _M
