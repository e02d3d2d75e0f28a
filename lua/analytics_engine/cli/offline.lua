--- The verbs that never contact anything: validate, plan, graph (plan
-- --online reads the instance's limits and default configs, GETs only).
local ae = require("analytics_engine")
local args_mod = require("analytics_engine.cli.args")
local out = require("analytics_engine.cli.out")
local util = require("analytics_engine.util")
local dsl = require("analytics_engine.workflow.dsl")
local plan_mod = require("analytics_engine.workflow.plan")
local record = require("analytics_engine.report.record")
local graphviz = require("analytics_engine.report.graphviz")
local quota = require("analytics_engine.workflow.quota")
local resources = require("analytics_engine.resources")

local _M = {}

--- The workflow FILE with its --param values: plan or nil, exit code (said why).
function _M.load(verb, pos, opt)
  local params, perr = args_mod.params(opt["--param"])
  if not params then return nil, out.fail(2, verb, "%s", perr) end
  if not pos[1] then return nil, out.fail(2, verb, "which workflow file?") end
  if pos[2] then return nil, out.fail(2, verb, "unexpected argument '%s'", pos[2]) end
  local plan, err = dsl.load_file(pos[1], params)
  if not plan then return nil, out.fail(2, nil, "%s", err) end
  return plan
end

_M.validate = {
  options = { ["--param"] = "multi", ["--json"] = "flag" },
  help = [[
usage: aeflow validate FILE [--param k=v]... [--json]

Loads the workflow and checks it (types, unknown keys, unknown names,
dependencies, cycles); nothing is contacted. Errors name the file and line.
--json prints {file, workflow, steps, finally} for a valid workflow.]],
  run = function(pos, opt)
    local plan, code = _M.load("validate", pos, opt)
    if not plan then return code end
    if opt["--json"] then
      out.json { file = pos[1], workflow = plan.name, valid = true, steps = #plan.steps, finally = #plan.finally }
      return 0
    end
    io.stdout:write(("%s: workflow '%s' is valid: %d steps, %d finally\n"):format(pos[1], plan.name, #plan.steps,
      #plan.finally))
    return 0
  end,
}

-- The limits and default configs `plan` weighs submissions against: from
-- --max-cores/--max-memory, or read from the service with --online. Returns
-- true, limits (nil: unknown, false: none set), defaults, where from; or nil, message.
local function plan_limits(opt)
  local limits, defaults, source = nil, {}, nil
  local mc, mm = opt["--max-cores"], opt["--max-memory"]
  if mc and not resources.millicores(mc, math.huge) then
    return nil, ("--max-cores wants cores such as 6, got '%s'"):format(mc)
  end
  if mm and not resources.memory_mib(mm, math.huge) then
    return nil, ("--max-memory wants a size such as 24Gi, got '%s'"):format(mm)
  end
  if mc or mm then
    limits, source = quota.limits_of { max_cores = mc, max_memory = mm }, "--max-cores/--max-memory"
  end
  if opt["--online"] then
    local c, err = ae.client { profile = opt["--profile"] }
    if not c then return nil, "--online: " .. err.message end
    if limits == nil then
      local body, lerr = c:get_resource_consumption_limits()
      if not body and lerr.status ~= 404 then return nil, "--online: " .. tostring(lerr) end
      limits, source = body and quota.limits_of(body) or false, "the service's resource_consumption_limits"
    end
    local defs, derr = c:get_instance_default_configs()
    if not defs then return nil, "--online: " .. tostring(derr) end
    defaults = type(defs) == "table" and defs or {}
  end
  return true, limits, defaults, source
end

-- The admission section of `plan`: the waves, or what can never fit.
local function write_admission(limits, lines, source)
  if limits == nil then
    io.stdout:write("\nadmission (no limits given: --max-cores/--max-memory, or --online to read them):\n")
  elseif limits == false then
    io.stdout:write(("\nadmission (%s: none set):\n"):format(source))
  else
    io.stdout:write(("\nadmission within %s (%s):\n"):format(quota.limits_text(limits), source))
  end
  for _, l in ipairs(lines) do io.stdout:write("  ", l, "\n") end
end

_M.plan = {
  options = { ["--param"] = "multi", ["--json"] = "flag", ["--max-cores"] = "value", ["--max-memory"] = "value",
              ["--online"] = "flag" },
  help = [[
usage: aeflow plan FILE [--param k=v]... [--json] [--max-cores N --max-memory SIZE | --online]

Prints the order of the steps and every request each would make; nothing is
sent. --json prints the step graph and each step's requests as one document.
Then what each submit step asks for (driver + executors, its conf over the
default configs as the steps before it leave them) and the expected admission
waves within the limits given by --max-cores/--max-memory, or read with
--online from the configured service (GET limits and default configs only).
Exit status 1 when an application is larger than the whole limits.]],
  run = function(pos, opt)
    local plan, code = _M.load("plan", pos, opt)
    if not plan then return code end
    local ok, limits, defaults, source = plan_limits(opt)
    if not ok then return out.fail(2, "plan", "%s", limits) end
    local lines, fits = quota.waves(plan, limits, defaults, plan.params)
    if opt["--json"] then
      local g = record.graph(plan)
      for _, s in ipairs(g.steps) do
        local reqs = plan_mod.requests(plan.by_name[s.name])
        s.requests = util.array(reqs)
      end
      g.workflow = plan.name
      g.admission = { limits = limits and { cores = quota.cores_text(limits.cores_m),
                                            memory_mib = limits.memory_mib < math.huge and limits.memory_mib or nil }
                                or nil, source = source, waves = util.array(lines) }
      out.json(g)
      return fits and 0 or 1
    end
    local text = plan_mod.describe(plan)
    io.stdout:write(type(text) == "table" and table.concat(text, "\n") or text, "\n")
    if #lines > 0 then write_admission(limits, lines, source) end
    return fits and 0 or 1
  end,
}

_M.graph = {
  options = { ["--param"] = "multi", ["--format"] = "value", ["-o"] = "value", ["--json"] = "flag" },
  help = [[
usage: aeflow graph FILE [--format dot|mermaid|svg|png] [-o FILE] [--param k=v]... [--json]

Prints the step graph as Graphviz dot (default) or a Mermaid flowchart, or
renders it as SVG or PNG with Graphviz's `dot` (Debian package graphviz), in
the report's palette and fonts. -o writes to FILE instead of standard output;
PNG is never written to a terminal (use -o or a redirection). --json prints
the graph as data (steps, order, finally_order).]],
  run = function(pos, opt)
    local plan, code = _M.load("graph", pos, opt)
    if not plan then return code end
    if opt["--json"] then
      out.json(record.graph(plan))
      return 0
    end
    local format = opt["--format"] or "dot"
    local rendered = format == "svg" or format == "png"
    if format ~= "dot" and format ~= "mermaid" and not rendered then
      return out.fail(2, "graph", "--format wants dot, mermaid, svg or png, got '%s'", format)
    end
    if format == "png" and not opt["-o"] and out.stdout_is_tty() then
      return out.fail(2, "graph", "refusing to write PNG to a terminal: give -o FILE or redirect the output")
    end
    local text = plan_mod.graph(plan, rendered and "dot" or format)
    if rendered then
      local ok, gerr = graphviz.render(text, format, opt["-o"])
      if not ok then return out.fail(1, "graph", "%s", gerr) end
      return 0
    end
    if opt["-o"] then
      local f, ferr = io.open(opt["-o"], "wb")
      if not f then return out.fail(1, "graph", "%s", ferr) end
      f:write(text, "\n")
      f:close()
      return 0
    end
    io.stdout:write(text, "\n")
    return 0
  end,
}

return _M
