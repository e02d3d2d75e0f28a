--- The verbs that never contact anything: validate, plan, graph.
local args_mod = require "analytics_engine.cli.args"
local out = require "analytics_engine.cli.out"
local util = require "analytics_engine.util"
local dsl = require "analytics_engine.workflow.dsl"
local plan_mod = require "analytics_engine.workflow.plan"
local record = require "analytics_engine.report.record"
local graphviz = require "analytics_engine.report.graphviz"

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

_M.plan = {
  options = { ["--param"] = "multi", ["--json"] = "flag" },
  help = [[
usage: aeflow plan FILE [--param k=v]... [--json]

Prints the order of the steps and every request each would make; nothing is
sent. --json prints the step graph and each step's requests as one document.]],
  run = function(pos, opt)
    local plan, code = _M.load("plan", pos, opt)
    if not plan then return code end
    if opt["--json"] then
      local g = record.graph(plan)
      for _, s in ipairs(g.steps) do
        local reqs = plan_mod.requests(plan.by_name[s.name])
        s.requests = util.array(reqs)
      end
      g.workflow = plan.name
      out.json(g)
      return 0
    end
    local text = plan_mod.describe(plan)
    io.stdout:write(type(text) == "table" and table.concat(text, "\n") or text, "\n")
    return 0
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
