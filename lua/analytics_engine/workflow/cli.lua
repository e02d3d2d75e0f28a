--- aeflow's workflow verbs: run, validate, plan, graph, orphans, exec, report.
local ae = require "analytics_engine"
local core = require "analytics_engine.core"
local util = require "analytics_engine.util"
local sanitize = require "analytics_engine.sanitize"

local _M = {}

local stdout, stderr = io.stdout, io.stderr

local function fail(code, fmt, ...)
  -- whatever the message quotes (a server, a file) prints safely, on one line
  stderr:write("aeflow: ", sanitize.clean(fmt:format(...)), "\n")
  return code
end

-- Parse `args` against `spec` = { ["--name"] = "value"|"flag"|"multi" }.
-- Returns positional, options or nil, message.
local function parse(args, spec)
  local pos, opt = {}, {}
  local i = 1
  while args[i] do
    local a = args[i]
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    local kind = spec[name]
    if a:sub(1, 2) == "--" or (kind and a:sub(1, 1) == "-") then
      if not kind then return nil, ("unknown option '%s'"):format(name) end
      if kind == "flag" then
        opt[name] = true
      else
        local v = inline or args[i + 1]
        if v == nil then return nil, ("%s needs a value"):format(name) end
        if not inline then i = i + 1 end
        if kind == "multi" then
          opt[name] = opt[name] or {}
          table.insert(opt[name], v)
        else
          opt[name] = v
        end
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return pos, opt
end

local function params_of(list)
  local params = {}
  for _, kv in ipairs(list or {}) do
    local k, v = kv:match("^([%w_]+)=(.*)$")
    if not k then return nil, ("--param wants key=value, got '%s'"):format(kv) end
    params[k] = v
  end
  return params
end

local function load_plan(file, params)
  if not file then return nil, "which workflow file?" end
  return require("analytics_engine.workflow.dsl").load_file(file, params)
end

local function slug(s) return (s:gsub("[^%w._-]+", "_")) end

--- A client for the configured endpoint, or a private local engine kept in
-- .aeflow/engine (so a resumed run finds the same records). Returns client,
-- engine (to stop afterwards) or nil, message.
local function run_client(exe, quiet)
  local c, err = ae.client()
  if c then return c end
  if not err.message:find("^no service URL") then return nil, err.message end
  local launcher = require "analytics_engine.engine.launcher"
  local dir = ".aeflow/engine"
  local e = launcher.find_running(dir)
  if not e then
    local lerr
    e, lerr = launcher.start { data_dir = dir, bin = exe }
    if not e then return nil, "cannot start a local engine: " .. tostring(lerr) end
  end
  if not quiet then
    stderr:write(("aeflow: no endpoint configured; using a local engine at %s (data %s)\n"):format(e.url, dir))
  end
  c, err = ae.client { url = e.url, instance_id = e.instance_id,
                       auth = { username = e.username, api_key = e.api_key } }
  if not c then return nil, tostring(err) end
  return c, e
end

local RUN_OPTS = { ["--param"] = "multi", ["--state"] = "value", ["--resume"] = "flag", ["--json"] = "flag",
                   ["--max-parallel"] = "value", ["--on-cancel"] = "value", ["--poll-interval"] = "value",
                   ["--max-poll-interval"] = "value", ["--submit-grace"] = "value", ["--quiet"] = "flag",
                   ["--report"] = "value" }

-- The report format a file name asks for: .md is Markdown, anything else HTML.
local function report_format(path)
  return path:lower():find("%.md$") and "md" or "html"
end

function _M.run(args, exe)
  local pos, opt = parse(args, RUN_OPTS)
  if not pos then return fail(2, "run: %s", opt) end
  local params, perr = params_of(opt["--param"])
  if not params then return fail(2, "run: %s", perr) end
  local plan, err = load_plan(pos[1], params)
  if not plan then return fail(2, "%s", err) end
  if pos[2] then return fail(2, "run: unexpected argument '%s'", pos[2]) end
  local max_parallel = opt["--max-parallel"] and math.tointeger(tonumber(opt["--max-parallel"]))
  if opt["--max-parallel"] and (not max_parallel or max_parallel < 1) then
    return fail(2, "run: --max-parallel wants a positive integer, got '%s'", opt["--max-parallel"])
  end
  local on_cancel = opt["--on-cancel"]
  if on_cancel and on_cancel ~= "stop" and on_cancel ~= "leave" then
    return fail(2, "run: --on-cancel wants stop or leave, got '%s'", on_cancel)
  end
  local state_path = opt["--state"] or (".aeflow/" .. slug(plan.name) .. ".state.json")
  if not opt["--state"] and core.mkdir_p then core.mkdir_p(".aeflow", 448) end
  local json = opt["--json"]
  local c, engine = run_client(exe, json or opt["--quiet"])
  if not c then return fail(1, "%s", engine) end
  local render = require "analytics_engine.workflow.render"
  local emit
  if json then
    emit = render.json(stdout)
  elseif not opt["--quiet"] then
    local term = os.getenv("TERM")
    local tty = core.isatty and core.isatty(1) and term and term ~= "dumb"
    emit = tty and render.live(stdout, core.monotime) or render.lines(stdout)
  end
  local runner, rerr = require("analytics_engine.workflow.runner").new(plan, {
    client = c, state_path = state_path, resume = opt["--resume"], max_parallel = max_parallel,
    on_cancel = on_cancel, on_event = emit, engine_local = engine ~= nil,
    poll_interval = tonumber(opt["--poll-interval"]), max_poll_interval = tonumber(opt["--max-poll-interval"]),
    submit_grace = tonumber(opt["--submit-grace"]),
  })
  if not runner then
    if engine then engine:stop() end
    return fail(2, "%s", rerr)
  end
  core.signal_watch { "INT", "TERM" }
  local status = runner:run()
  if engine then engine:stop() end
  if not json and not opt["--quiet"] then
    stdout:write("\n", render.summary(plan, runner.state.doc))
    stdout:write(("state: %s\n"):format(state_path))
  end
  if opt["--report"] then
    -- Written whatever the outcome: a failed or cancelled run is the one to look at.
    local ok, rerr2 = require("analytics_engine.report").write(runner.state.doc, opt["--report"],
      report_format(opt["--report"]))
    if not ok then
      stderr:write("aeflow: run: ", rerr2, "\n")
    elseif not json and not opt["--quiet"] then
      stdout:write(("report: %s\n"):format(opt["--report"]))
    end
  end
  if status == "succeeded" then return 0 end
  if status == "cancelled" then return 130 end
  return 1
end

-- The offline verbs' common start: options, --param values, the plan.
-- Returns plan, options, positional or nil and the exit code (after saying why).
local function offline_plan(verb, args, spec)
  spec = spec or {}
  spec["--param"] = "multi"
  local pos, opt = parse(args, spec)
  if not pos then return nil, fail(2, "%s: %s", verb, opt) end
  local params, perr = params_of(opt["--param"])
  if not params then return nil, fail(2, "%s: %s", verb, perr) end
  local plan, err = load_plan(pos[1], params)
  if not plan then return nil, fail(2, "%s", err) end
  return plan, opt, pos
end

function _M.validate(args)
  local plan, opt, pos = offline_plan("validate", args)
  if not plan then return opt end
  stdout:write(("%s: workflow '%s' is valid: %d steps, %d finally\n"):format(pos[1], plan.name, #plan.steps,
    #plan.finally))
  return 0
end

function _M.plan(args)
  local plan, code = offline_plan("plan", args)
  if not plan then return code end
  local text = require("analytics_engine.workflow.plan").describe(plan)
  stdout:write(type(text) == "table" and table.concat(text, "\n") or text, "\n")
  return 0
end

function _M.graph(args)
  local plan, opt = offline_plan("graph", args, { ["--format"] = "value", ["-o"] = "value" })
  if not plan then return opt end
  local format = opt["--format"] or "dot"
  local rendered = format == "svg" or format == "png"
  if format ~= "dot" and format ~= "mermaid" and not rendered then
    return fail(2, "graph: --format wants dot, mermaid, svg or png, got '%s'", format)
  end
  local text = require("analytics_engine.workflow.plan").graph(plan, rendered and "dot" or format)
  if rendered then
    local ok, gerr = require("analytics_engine.report.graphviz").render(text, format, opt["-o"])
    if not ok then return fail(1, "graph: %s", gerr) end
    return 0
  end
  if opt["-o"] then
    local f, ferr = io.open(opt["-o"], "wb")
    if not f then return fail(1, "graph: %s", ferr) end
    f:write(text, "\n")
    f:close()
    return 0
  end
  stdout:write(text, "\n")
  return 0
end

--- report STATE_FILE [-o FILE] [--format html|md]: "-o -" writes to stdout.
function _M.report(args)
  local pos, opt = parse(args, { ["-o"] = "value", ["--output"] = "value", ["--format"] = "value" })
  if not pos then return fail(2, "report: %s", opt) end
  if not pos[1] then return fail(2, "report: which state file? (.aeflow/NAME.state.json)") end
  if pos[2] then return fail(2, "report: unexpected argument '%s'", pos[2]) end
  local out = opt["-o"] or opt["--output"]
  local format = opt["--format"] or (out and out ~= "-" and report_format(out)) or "html"
  if format ~= "html" and format ~= "md" then
    return fail(2, "report: --format wants html or md, got '%s'", format)
  end
  out = out or ("report." .. format)
  local report = require "analytics_engine.report"
  local doc, err = report.load(pos[1])
  if not doc then return fail(1, "report: %s", err) end
  if out == "-" then
    stdout:write(report.render(doc, format))
    return 0
  end
  local ok, werr = report.write(doc, out, format)
  if not ok then return fail(1, "report: %s", werr) end
  stdout:write(("report: %s\n"):format(out))
  return 0
end

-- Every (token → application id) pair the given state files know.
local function known_tokens(paths)
  local known = {}
  for _, p in ipairs(paths) do
    local f = io.open(p, "rb")
    if f then
      local doc = util.json_decode(f:read("a"))
      f:close()
      if type(doc) == "table" then
        for _, bucket in ipairs { doc.steps or {}, doc.finally or {} } do
          for _, rec in pairs(bucket) do
            for _, it in pairs(rec.items or {}) do
              for _, att in ipairs(it.attempts or {}) do
                if att.token and att.application_id then known[att.token] = att.application_id end
              end
            end
          end
        end
      end
    end
  end
  return known
end

function _M.orphans(args, exe)
  local pos, opt = parse(args, { ["--state"] = "multi", ["--stop"] = "flag", ["--json"] = "flag" })
  if not pos then return fail(2, "orphans: %s", opt) end
  local paths = opt["--state"] or {}
  if #paths == 0 then
    local h = io.popen("ls .aeflow/*.state.json 2>/dev/null")
    for line in h:lines() do paths[#paths + 1] = line end
    h:close()
  end
  local c, engine = run_client(exe, true)
  if not c then return fail(1, "%s", engine) end
  local list, err = c:list_applications()
  if not list then
    if engine then engine:stop() end
    return fail(1, "%s", tostring(err))
  end
  local submit = require "analytics_engine.workflow.submit"
  local known = known_tokens(paths)
  local found = {}
  for _, app in ipairs(list.applications or {}) do
    local id = app.application_id or app.id
    local tok = submit.token_of(app)
    if tok and known[tok] ~= id then
      found[#found + 1] = { application_id = id, token = tok, state = app.state }
    end
  end
  for _, o in ipairs(found) do
    if opt["--json"] then
      stdout:write(util.json_encode(o), "\n")
    else
      stdout:write(("%s  %-10s  %s\n"):format(o.application_id, tostring(o.state), o.token))
    end
    if opt["--stop"] and not ae.is_terminal(o.state) then
      local _, serr = c:delete_application(o.application_id)
      if serr then stderr:write("aeflow: could not stop ", o.application_id, ": ", tostring(serr), "\n") end
    end
  end
  if engine then engine:stop() end
  return 0
end

--- exec: a plain Lua script with a ready client in `client` and `ae`.
function _M.exec(args, exe)
  local file = args[1]
  if not file then return fail(2, "exec: which file?") end
  local f, ferr = io.open(file, "rb")
  if not f then return fail(2, "exec: %s", ferr) end
  local src = f:read("a")
  f:close()
  local env = setmetatable({ ae = ae, arg = { table.unpack(args, 2) } }, { __index = _G })
  local chunk, lerr = load(src, "@" .. file, "t", env)
  if not chunk then return fail(2, "%s", lerr) end
  local c, engine = run_client(exe)
  if not c then return fail(1, "%s", engine) end
  env.client = c
  local ok, res = xpcall(chunk, debug.traceback)
  if engine then engine:stop() end
  if not ok then return fail(1, "%s", tostring(res)) end
  return res == false and 1 or 0
end

return _M
