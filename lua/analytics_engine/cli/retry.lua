--- `aeflow retry [RUN]`: a kept run again, only what did not succeed
-- (workflow/retry.lua says exactly what), in the same record.
local util = require("analytics_engine.util")
local out = require("analytics_engine.cli.out")
local runstore = require("analytics_engine.cli.runstore")
local run_cli = require("analytics_engine.cli.run")
local dsl = require("analytics_engine.workflow.dsl")
local state_mod = require("analytics_engine.workflow.state")

local _M = {}

_M.retry = {
  options = { ["--json"] = "flag", ["--quiet"] = "flag", ["--report"] = "value", ["--max-parallel"] = "integer",
              ["--on-cancel"] = "value", ["--poll-interval"] = "number", ["--max-poll-interval"] = "number",
              ["--submit-grace"] = "number", ["--no-admission"] = "flag", ["--state"] = "value",
              ["--unreachable-timeout"] = "number" },
  help = [[
usage: aeflow retry [RUN] [--state FILE] [--json] [--quiet] [--report FILE] [--max-parallel N]
                    [--on-cancel stop|leave] [--poll-interval S] [--max-poll-interval S]
                    [--unreachable-timeout S]

Runs a kept run (its id or a unique prefix; default: the latest; --state FILE:
that state file) again, only what did not succeed, as argo retry, Airflow's
clear and Databricks' repair run do: failed, skipped, cancelled and pending
steps run again, and the finally steps; succeeded steps keep their outputs
(later steps read them); in a fan-out only the items that did not succeed run.
The same record goes on (aeflow report shows every attempt); new attempts get
new submission tokens, so nothing is submitted twice, and an attempt whose
submission was never confirmed is looked up by its token first. The workflow
file and params are the run's own.
Exit status: 0 success, 1 a step failed, 2 usage (or nothing to retry), 130 cancelled.]],
  run = function(pos, opt, ctx)
    if pos[2] then return out.fail(2, "retry", "unexpected argument '%s'", pos[2]) end
    local bad = run_cli.check(opt, "retry")
    if bad then return bad end
    local state_path, run_dir = opt["--state"], nil
    if not state_path then
      local run, rerr = runstore.find(pos[1])
      if not run then return out.fail(2, "retry", "%s", rerr) end
      state_path, run_dir = run.state, run.dir
    end
    -- Through state.read, as every reader of a state file: a regular file, checked.
    local doc, derr = state_mod.read(state_path)
    if not doc then return out.fail(2, "retry", "%s", derr) end
    if type(doc.file) ~= "string" then
      return out.fail(2, "retry", "%s: not a run's state (no workflow file recorded)", state_path)
    end
    local plan, err = dsl.load_file(doc.file, util.copy(doc.params))
    if not plan then return out.fail(2, nil, "%s", err) end
    return run_cli.execute(plan, opt, ctx, { state_path = state_path, run_dir = run_dir, resume = true,
                                             retry = true, verb = "retry" })
  end,
}

return _M
