--- `aeflow logs APP_ID`: an application's output from the local engine's
-- engine-only log endpoint, on the engine the CLI's one rule finds
-- (cli/engine.lua). --follow prints new output as it arrives until the
-- application ends; its exit status is then 0 for FINISHED and 1 otherwise.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local sanitize = require("analytics_engine.sanitize")
local out = require("analytics_engine.cli.out")
local which = require("analytics_engine.cli.engine")
local runstore = require("analytics_engine.cli.runstore")
local state = require("analytics_engine.workflow.state")

local _M = {}

_M.POLL_INTERVAL = 0.5

local function fetch(c, o, remote)
  local offset = 0
  while true do
    local doc, err = c:engine_application_logs(o.id, { stream = o.stream, offset = offset, format = "json" })
    if not doc then
      if remote and err.status == 404 then
        -- The vendor's service has no log endpoint: say where to look instead.
        return out.fail(1, "logs", "%s (only the local engine serves application logs; on the service, see "
          .. "the instance's Spark history server or its storage volume)", tostring(err))
      end
      return out.fail(1, "logs", "%s", tostring(err))
    end
    if type(doc) ~= "table" or type(doc.text) ~= "string" then
      return out.fail(1, "logs", "the endpoint did not answer the local engine's log shape")
    end
    if o.json then
      if doc.text ~= "" or not o.follow then
        out.ndjson { application_id = o.id, stream = o.stream, offset = offset, text = doc.text,
                     state = doc.state }
      end
    else
      io.stdout:write(sanitize.clean(doc.text, true)) -- a log is the application's, not ours: escapes shown
      io.stdout:flush()
    end
    offset = doc.next_offset or (offset + #doc.text)
    if not o.follow then return 0 end
    if doc.terminal and doc.text == "" then return doc.state == "FINISHED" and 0 or 1 end
    if doc.text == "" then core.sleep(_M.POLL_INTERVAL) end
  end
end

-- The application a run's logs default to: its last failed one, else its
-- last one. Returns id, step or nil, message.
local function app_of_run(run)
  local doc, err = state.read(run.state)
  if not doc then return nil, err end
  local failed, any
  state.each_attempt(doc, function(att, name)
    local id = att.application_id
    if id then
      local at = tonumber(att.finished_at or att.intent_at) or 0
      if not any or at > any.at then any = { id = id, step = name, at = at } end
      if att.log_tail and (not failed or at > failed.at) then failed = { id = id, step = name, at = at } end
    end
  end)
  local pick = failed or any
  if not pick then return nil, ("run %s submitted no application"):format(run.run_id) end
  return pick.id, pick.step, failed ~= nil
end

_M.logs = {
  options = { ["--stream"] = "value", ["--follow"] = "flag", ["-f"] = "flag", ["--data"] = "value",
              ["--json"] = "flag", ["--run"] = "value" },
  help = [[
usage: aeflow logs [APP_ID] [--run RUN] [--stream stdout|stderr] [--follow] [--json] [--profile NAME]

Without APP_ID: the last failed application of the latest kept run (--run RUN:
of that run), else its last application; its stderr unless --stream says
otherwise.

Prints an application's stdout (or stderr) as the local engine kept it under
its data directory. --follow keeps printing until the application ends, then
exits 0 if it FINISHED and 1 otherwise. --json prints NDJSON chunks
{application_id, stream, offset, text, state}. Works against the local engine
only (the endpoint is engine-only); with no endpoint configured it is the same
engine every verb uses ($AEFLOW_DIR/engine, else .aeflow/engine; --data DIR
for another), started for the command if none is running.]],
  run = function(pos, opt, ctx)
    local o = { id = pos[1], stream = opt["--stream"] or "stdout", follow = opt["--follow"] or opt["-f"],
                json = opt["--json"] }
    -- Usage first: nothing is looked up (or said about a run) for a command that cannot go on.
    if pos[2] then return out.fail(2, "logs", "unexpected argument '%s'", pos[2]) end
    if o.stream ~= "stdout" and o.stream ~= "stderr" then
      return out.fail(2, "logs", "--stream must be stdout or stderr, got '%s'", o.stream)
    end
    if not o.id then
      local run, rerr = runstore.find(opt["--run"])
      if not run then return out.fail(2, "logs", "which application? (aeflow logs APP_ID): %s", rerr) end
      local id, step, failed = app_of_run(run)
      if not id then return out.fail(1, "logs", "%s", step) end
      o.id = id
      if failed and not opt["--stream"] then o.stream = "stderr" end
      if failed then
        io.stderr:write(("aeflow: logs: %s of application %s (step %s of run %s %s: its last failed application)\n")
          :format(o.stream, id, step, run.workflow, run.run_id))
      else
        -- Nothing failed: say so, and what is shown instead (an empty stdout
        -- alone looked like the failure's missing output).
        io.stderr:write(("aeflow: logs: run %s %s had no failed application; %s of its last application %s "
          .. "(step %s); another: aeflow logs APP_ID (the ids: aeflow report %s)\n")
          :format(run.workflow, run.run_id, o.stream, id, step, run.run_id))
      end
    end
    if not util.is_uuid(o.id) then return out.fail(2, "logs", "'%s' is not an application id", o.id) end
    local c, session = which.connect { exe = ctx.exe, profile = opt["--profile"], data = opt["--data"],
                                       quiet = true }
    if not c then return out.fail(1, "logs", "%s", session) end
    local code = fetch(c, o, session.engine == nil)
    session:release()
    return code
  end,
}

return _M
