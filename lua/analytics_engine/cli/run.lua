--- `aeflow run`: a workflow to its end, with a live view, NDJSON events or
-- lines, the summary and (on request) the report.
local core = require("analytics_engine.core")
local out = require("analytics_engine.cli.out")
local which = require("analytics_engine.cli.engine")
local offline = require("analytics_engine.cli.offline")
local render = require("analytics_engine.workflow.render")
local runner_mod = require("analytics_engine.workflow.runner")
local state_mod = require("analytics_engine.workflow.state")
local report = require("analytics_engine.report")
local util = require("analytics_engine.util")
local runstore = require("analytics_engine.cli.runstore")

local _M = {}

local OPTIONS = { ["--param"] = "multi", ["--state"] = "value", ["--resume"] = "flag", ["--json"] = "flag",
                  ["--max-parallel"] = "integer", ["--on-cancel"] = "value", ["--poll-interval"] = "number",
                  ["--max-poll-interval"] = "number", ["--submit-grace"] = "number", ["--quiet"] = "flag",
                  ["--report"] = "value", ["--no-admission"] = "flag", ["--unreachable-timeout"] = "number" }

-- The terminal's width (columns), so the live view's lines never wrap.
local function columns()
  local p = io.popen(("stty size -F /proc/%d/fd/1 2>/dev/null"):format(core.getpid()))
  local cols = p and tonumber((p:read("a") or ""):match("%d+%s+(%d+)"))
  if p then p:close() end
  return cols or tonumber(os.getenv("COLUMNS")) or 80
end

-- How events reach the person: NDJSON, a live view on a terminal (with its
-- clock), or lines. Returns on_event, on_tick.
local function emitter(opt, plan)
  if opt["--json"] then return render.json(io.stdout) end
  if opt["--quiet"] then return nil end
  local term = os.getenv("TERM")
  local tty = out.stdout_is_tty() and term and term ~= "dumb"
  if not tty then return render.lines(io.stdout, { now = core.monotime }) end
  -- The ioctl is cheap enough to ask before every frame (a resize is seen at once);
  -- stty is a process, asked every 2 s.
  local cheap = core.term_columns and core.term_columns(1)
  local width_fn = cheap and function() return (core.term_columns(1) or columns()) - 1 end
    or function() return columns() - 1 end
  return render.live(io.stdout, core.monotime, { plan = plan, width = width_fn(), width_fn = width_fn,
                                                 width_every = cheap and 0 or 2 })
end

--- The options run and retry share: nil, or the exit code after saying why.
function _M.check(opt, verb)
  local max_parallel = opt["--max-parallel"]
  if max_parallel and max_parallel < 1 then
    return out.fail(2, verb, "--max-parallel wants a positive integer, got '%s'", max_parallel)
  end
  local on_cancel = opt["--on-cancel"]
  if on_cancel and on_cancel ~= "stop" and on_cancel ~= "leave" then
    return out.fail(2, verb, "--on-cancel wants stop or leave, got '%s'", on_cancel)
  end
  local unreachable = opt["--unreachable-timeout"]
  if unreachable and unreachable <= 0 then
    return out.fail(2, verb, "--unreachable-timeout wants a positive number of seconds, got '%s'", unreachable)
  end
end

--- Run `plan` with its record at where.state_path (where.run_dir: a kept
-- run's directory; where.resume / where.retry: continue that record).
-- Returns the exit code.
function _M.execute(plan, opt, ctx, where)
  local state_path, run_dir = where.state_path, where.run_dir
  -- Locked before anything starts: a second runner on the same state file
  -- leaves at once and touches nothing (not even a shared local engine).
  local lock, lerr = state_mod.lock(state_path)
  if not lock then return out.fail(2, where.verb, "%s", lerr) end
  local json, quiet = opt["--json"], opt["--quiet"]
  if where.resume and not where.retry then
    -- The record is checked before an engine is started or contacted.
    local doc, serr = state_mod.read(state_path)
    if not doc then return out.fail(2, nil, "cannot resume: %s", serr) end
    -- --resume continues a run that died; one that ended has nothing left.
    if doc.finished_at and (doc.status == "failed" or doc.status == "cancelled") then
      io.stderr:write(("aeflow: run: run %s already ended %s: --resume has nothing left to do; "
        .. "`aeflow retry %s` re-runs what did not succeed\n"):format(tostring(doc.run_id), doc.status,
        tostring(doc.run_id)))
    end
  end
  local c, session = which.connect { exe = ctx.exe, profile = opt["--profile"], quiet = json or quiet }
  if not c then return out.fail(1, nil, "%s", session) end
  local on_event, on_tick = emitter(opt, plan)
  local events_file = run_dir and io.open(run_dir .. "/events.ndjson", "a")
  if events_file and json then
    on_event = render.json(events_file, io.stdout) -- each line made once for both
  elseif events_file then
    local to_file, to_person = render.json(events_file), on_event
    on_event = function(ev)
      to_file(ev)
      if to_person then to_person(ev) end
    end
  end
  local runner, rerr = runner_mod.new(plan, {
    run_id = where.run_id,
    client = c, state_path = state_path, lock = lock, resume = where.resume, retry = where.retry,
    max_parallel = opt["--max-parallel"],
    on_cancel = opt["--on-cancel"], on_event = on_event, on_tick = on_tick, engine_local = session.engine ~= nil,
    poll_interval = opt["--poll-interval"], max_poll_interval = opt["--max-poll-interval"],
    submit_grace = opt["--submit-grace"], admission = not opt["--no-admission"],
    unreachable_timeout = opt["--unreachable-timeout"],
  })
  if not runner then
    session:release()
    return out.fail(2, nil, "%s", rerr)
  end
  core.signal_watch { "INT", "TERM" }
  local status = runner:run()
  session:release()
  if events_file then events_file:close() end
  if run_dir then
    -- The run's own report, from its record (see `aeflow report RUN`).
    local ok, werr = report.write(runner.state.doc, run_dir .. "/report.html", "html")
    if not ok then out.fail(1, where.verb, "%s", werr) end
  end
  if not json and not quiet then
    io.stdout:write("\n", render.summary(plan, runner.state.doc), render.tails(plan, runner.state.doc))
    io.stdout:write(("state: %s\n"):format(state_path))
    if run_dir then
      io.stdout:write(("run %s kept in %s (aeflow runs; aeflow report %s%s)\n"):format(runner.run_id, run_dir,
        runner.run_id, status == "succeeded" and "" or ("; aeflow retry " .. runner.run_id)))
    end
  end
  if opt["--report"] then
    -- Written whatever the outcome: a failed or cancelled run is the one to look at.
    local ok, werr = report.write(runner.state.doc, opt["--report"], report.format_of(opt["--report"]))
    if not ok then
      out.fail(1, where.verb, "%s", werr)
    elseif not json and not quiet then
      io.stdout:write(("report: %s\n"):format(opt["--report"]))
    end
  end
  if status == "succeeded" then return 0 end
  if status == "cancelled" then return 130 end
  return 1
end

_M.run = {
  options = OPTIONS,
  help = [[
usage: aeflow run FILE [--param key=value]... [--state FILE] [--resume] [--json]
                  [--max-parallel N] [--on-cancel stop|leave] [--poll-interval S]
                  [--max-poll-interval S] [--submit-grace S] [--quiet] [--report FILE]
                  [--no-admission] [--unreachable-timeout S] [--profile NAME]

Runs the workflow FILE returns. Each run is kept in a directory of its own,
.aeflow/runs/NAME/RUN_ID/ ($AEFLOW_DIR/runs when set): state.json records
every submission before it is sent (and the end of failed applications'
stderr), events.ndjson every event, report.html the report (see `aeflow
runs`). --state FILE puts the state there instead. --resume continues the
workflow's latest run (or --state FILE's) that crashed or was killed,
adopting applications already accepted; `aeflow retry` re-runs what failed. SIGINT/SIGTERM
cancel: stop the applications this run started (unless --on-cancel leave), run
the finally steps, exit 130. --submit-grace S (default 120): how long after a
submission whose answer was lost the service may still act on it; the runner
looks for it by its token that long before sending it again.
--unreachable-timeout S (default 300): when no poll of the service has
answered for S seconds (it is down or unreachable; the first failed poll is
reported at once), the steps waiting for applications fail with the last
error; nothing is submitted again for them (aeflow retry awaits them again).
--json prints
NDJSON events. --report FILE writes
the run's report at the end, also of a failed or cancelled run (FILE.md:
Markdown, anything else: HTML; see `aeflow help report`).
Submissions wait ("held for quota") until the instance's running + pending use
plus the application fits its resource_consumption_limits; --no-admission sends
them as they come (README: Quota-aware admission).
With no endpoint configured, the local engine of `aeflow help` serves the run.
Exit status: 0 success, 1 a step failed, 2 usage or validation error, 130 cancelled.]],
  run = function(pos, opt, ctx)
    local plan, code = offline.load("run", pos, opt)
    if not plan then return code end
    local bad = _M.check(opt, "run")
    if bad then return bad end
    -- Where the run's record goes: --state FILE as asked; else a directory of
    -- its own under the kept runs (--resume: the workflow's latest run, or
    -- an older single state file).
    local state_path, run_dir, run_id = opt["--state"], nil, nil
    if not state_path and opt["--resume"] then
      local latest = runstore.find(nil, plan.name)
      local legacy = which.local_dir() .. "/" .. runstore.slug(plan.name) .. ".state.json"
      if latest then
        state_path, run_dir = latest.state, latest.dir
      elseif util.exists(legacy) then
        state_path = legacy
      else
        return out.fail(2, "run", "--resume: no kept run of workflow '%s' (see `aeflow runs`)", plan.name)
      end
    elseif not state_path then
      run_id = util.hex(core.random_bytes(4))
      run_dir = runstore.dir_for(plan.name, run_id, true)
      state_path = run_dir .. "/state.json"
    end
    return _M.execute(plan, opt, ctx, { state_path = state_path, run_dir = run_dir, run_id = run_id,
                                        resume = opt["--resume"], verb = "run" })
  end,
}

return _M
