--- `aeflow report`: a run's report from its record alone.
local out = require("analytics_engine.cli.out")
local report = require("analytics_engine.report")
local util = require("analytics_engine.util")
local runstore = require("analytics_engine.cli.runstore")
local state = require("analytics_engine.workflow.state")

local _M = {}

_M.report = {
  options = { ["-o"] = "value", ["--output"] = "value", ["--format"] = "value", ["--json"] = "flag" },
  help = [[
usage: aeflow report [RUN|STATE_FILE] [-o FILE] [--format html|md] [--json]

Writes the report of a kept run (its id or a unique prefix, see `aeflow runs`;
default: the latest run) or of a state file, from the record alone:
one self-contained HTML page (no scripts, no network) with the step graph, a
time line of steps and applications (submitted, queued, running, finished;
retries, timeouts and cancels marked), durations, outputs, errors and, for a
local engine, links to each application's logs. --format md writes a Markdown
summary for CI job summaries. Without -o, Markdown is printed to standard output
and HTML (a page for a browser, not a terminal) is written to report.html; -o -
writes either to standard output; the format follows FILE's extension when not
given.
--json prints the run's record (what the report is drawn from) as one document.
Exit status: 0 written, 1 the state file could not be read or the report written,
2 usage.]],
  run = function(pos, opt)
    if pos[2] then return out.fail(2, "report", "unexpected argument '%s'", pos[2]) end
    local target = opt["-o"] or opt["--output"]
    local format = opt["--format"] or (target and target ~= "-" and report.format_of(target)) or "html"
    if format ~= "html" and format ~= "md" then
      return out.fail(2, "report", "--format wants html or md, got '%s'", format)
    end
    -- A path to a state file, else a kept run's id, else the latest run.
    local path = pos[1]
    -- (a FIFO or device is a path too, refused by state.read: opening a FIFO
    -- to see whether it exists would block)
    if not path or not (util.not_regular(path) or util.exists(path)) then
      local run, rerr = runstore.find(path)
      if not run then return out.fail(path and 2 or 1, "report", "%s", rerr) end
      path = run.state
    end
    -- read once, checked against the state schema: a wrong field is named,
    -- not rendered as `table: 0x…` or a traceback
    local doc, serr = state.read(path)
    if not doc then return out.fail(1, "report", "%s", serr) end
    if opt["--json"] then
      out.json(doc)
      return 0
    end
    -- Markdown is text to read or append (CI job summaries): print it;
    -- an HTML page goes to a file unless asked for with -o -
    target = target or (format == "md" and "-" or "report.html")
    if target == "-" then
      io.stdout:write(report.render(doc, format))
      return 0
    end
    local ok, werr = report.write(doc, target, format)
    if not ok then return out.fail(1, "report", "%s", werr) end
    io.stdout:write(("report: %s\n"):format(target))
    return 0
  end,
}

return _M
