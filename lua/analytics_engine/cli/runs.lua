--- `aeflow runs`: the kept runs (newest first), and --prune KEEP.
local util = require("analytics_engine.util")
local sanitize = require("analytics_engine.sanitize")
local out = require("analytics_engine.cli.out")
local runstore = require("analytics_engine.cli.runstore")
local live = require("analytics_engine.workflow.live")
local render = require("analytics_engine.workflow.render")

local _M = {}

local function took(r)
  if r.started_at and r.finished_at then return live.elapsed(r.finished_at - r.started_at) end
  return "-"
end

_M.runs = {
  options = { ["--json"] = "flag", ["--prune"] = "integer" },
  help = [[
usage: aeflow runs [WORKFLOW] [--json] [--prune KEEP]

Lists the kept runs, newest first: workflow, run id, start, duration and
result. Each run keeps its record under $AEFLOW_DIR/runs (default
.aeflow/runs/WORKFLOW/RUN_ID/: state.json with the log tails of failed
applications, events.ndjson, report.html). `aeflow report`, `aeflow logs` and
`aeflow retry` take a run id (or a unique prefix) and default to the latest.
--prune KEEP removes all but the newest KEEP runs of each workflow (of
WORKFLOW only, when given); a run in progress is kept. --json prints one JSON
array.]],
  run = function(pos, opt)
    if pos[2] then return out.fail(2, "runs", "unexpected argument '%s'", pos[2]) end
    if opt["--prune"] then
      if opt["--prune"] < 0 then return out.fail(2, "runs", "--prune wants a number of runs to keep (0 or more)") end
      local removed = runstore.prune(opt["--prune"], pos[1])
      if opt["--json"] then
        local list = util.array()
        for _, r in ipairs(removed) do list[#list + 1] = { workflow = r.workflow, run_id = r.run_id, dir = r.dir } end
        out.json(list)
      else
        for _, r in ipairs(removed) do io.stdout:write(("removed %s %s (%s)\n"):format(r.workflow, r.run_id, r.dir)) end
        io.stdout:write(("%d run%s removed\n"):format(#removed, #removed == 1 and "" or "s"))
      end
      return 0
    end
    local runs = runstore.list(pos[1])
    if opt["--json"] then
      local list = util.array()
      for _, r in ipairs(runs) do
        list[#list + 1] = { workflow = r.workflow, run_id = r.run_id, started_at = r.started_at,
                            finished_at = r.finished_at, status = r.status, dir = r.dir,
                            seconds = r.started_at and r.finished_at and (r.finished_at - r.started_at) or nil }
      end
      out.json(list)
      return 0
    end
    if #runs == 0 then
      if pos[1] then
        -- A workflow named: say that it is this one that has none, and which have.
        local names = runstore.workflows()
        io.stdout:write(("no kept runs of workflow '%s' under %s%s\n"):format(sanitize.clean(pos[1]),
          runstore.root(), #names > 0 and (" (runs are kept of: " .. table.concat(names, ", ") .. ")") or ""))
      else
        io.stdout:write(("no kept runs under %s\n"):format(runstore.root()))
      end
      return 0
    end
    local rows = { { "WORKFLOW", "RUN", "STARTED", "TOOK", "RESULT" } }
    for _, r in ipairs(runs) do
      rows[#rows + 1] = { r.workflow, r.run_id, r.started_at and os.date("%Y-%m-%d %H:%M:%S", math.floor(r.started_at))
                          or "-", took(r), r.status }
    end
    io.stdout:write(render.columns(rows))
    return 0
  end,
}

return _M
