--- Executes a plan: steps as tasks on one loop (loop.lua), the state file written
-- before every submission and after every result, one poller for every
-- awaited application, retries that first stop the attempt before them, and
-- cancel that stops what the run started and still runs `finally`.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local loop_mod = require("analytics_engine.loop")
local poller_mod = require("analytics_engine.workflow.poller")
local state_mod = require("analytics_engine.workflow.state")
local writer = require("analytics_engine.workflow.writer")
local actions = require("analytics_engine.workflow.actions")
local submit = require("analytics_engine.workflow.submit")
local kernel_action = require("analytics_engine.workflow.kernel_action")
local admission = require("analytics_engine.workflow.admission")
local admission_peers = require("analytics_engine.workflow.admission_peers")
local template = require("analytics_engine.workflow.template")
local record = require("analytics_engine.report.record")
local fanout = require("analytics_engine.workflow.fanout")
local logtail = require("analytics_engine.workflow.logtail")
local retry = require("analytics_engine.workflow.retry")

local _M = {}
local mt = { __index = _M }

local DONE = { succeeded = true, failed = true, skipped = true, cancelled = true }

local PENDING = fanout.PENDING

function _M.new(plan, opts)
  local run_id = opts.run_id or util.hex(core.random_bytes(4))
  local self = setmetatable({
    plan = plan, client = opts.client, opts = opts,
    emit_fn = opts.on_event or function() end,
    outputs = {}, started_apps = {}, attempt_tasks = {},
    cancelled = false, failed = false,
    max_parallel = opts.max_parallel or plan.max_parallel,
    on_cancel = opts.on_cancel or plan.on_cancel or "stop",
  }, mt)
  -- One runner per state file, for the whole run (the CLI may have taken the
  -- lock already, before it started anything).
  if opts.state_path then
    local lock, lerr = opts.lock, nil
    if not lock then lock, lerr = state_mod.lock(opts.state_path) end
    if not lock then return nil, lerr end
    self.lock = lock
  end
  if opts.resume then
    local st, err = state_mod.load(opts.state_path)
    if not st then return nil, err end
    if st.doc.workflow ~= plan.name then
      return nil, ("cannot resume: %s belongs to workflow '%s', not '%s'"):format(opts.state_path,
        tostring(st.doc.workflow), plan.name)
    end
    if opts.retry then
      local n, rerr = retry.prepare(st.doc, plan)
      if not n then return nil, rerr end
    else
      st.doc.resumes = (st.doc.resumes or 0) + 1
    end
    st.doc.status = "running"
    self.state = st
    self.run_id = st.doc.run_id
    self.params = st.doc.params
  else
    self.run_id = run_id
    self.params = plan.params
    self.state = state_mod.new(opts.state_path, { run_id = run_id, workflow = plan.name, file = plan.file,
                                                  params = plan.params })
  end
  -- What `aeflow report` draws from the state file alone (no secrets).
  self.state.doc.graph = record.graph(plan)
  self.state.doc.engine = record.engine(opts.client, opts.engine_local)
  self.writer = writer.new(self.state, function(err) self:emit { event = "error", message = err } end)
  self.app_attempts = {}
  self.detachable = setmetatable({}, { __mode = "k" }) -- item task → its record, while it may detach
  return self
end

function _M.emit(self, ev)
  ev.time = core.time()
  ev.run_id = self.run_id
  self.emit_fn(ev)
end

-- The state file's writes: coalesced on the run's loop (workflow/writer.lua).
-- `rec`: the item record or attempt that changed (nil: anything may have).
function _M.flush(self)
  self.writer:changed()
  return self.writer:flush()
end
function _M.save(self, rec) return self.writer:save(rec) end
function _M.save_durable(self, rec) return self.writer:save_durable(rec) end

function _M.scope(self, item, index)
  return template.scope(self.params, self.outputs, item, index, self.run_id)
end

--- The run's cancel: stop submitting, cancel waits, stop what we started.
function _M.cancel(self, why)
  if self.cancelled then return end
  self.cancelled = true
  self:emit { event = "cancel", reason = why }
  for task in pairs(self.attempt_tasks) do self.sched:cancel(task) end
  -- Items whose task let go of their application: ended as cancelled
  -- (without a result from the poller), like a cancelled await.
  local followed = {}
  for id, w in pairs(self.poller.watched) do
    if w.follows and w.fan then followed[#followed + 1] = id end
  end
  for _, id in ipairs(followed) do
    local w = self.poller.watched[id]
    self.poller:unfollow(id)
    self.sched:spawn("cancelled item", fanout.finish_item, self, w, nil)
  end
end

-- A simple action: one operation with the templated argument.
local function call_action(self, step, args)
  local spec = actions.list[step.action]
  local c = self.client
  if spec.arg == "call" then
    local ids = args.ids or {}
    if args.body ~= nil then
      return c:call(args.operation, table.unpack(ids), args.body)
    end
    return c:call(args.operation, table.unpack(ids))
  elseif spec.arg == "none" then
    return c:call(spec.operation)
  end
  return c:call(spec.operation, args)
end

--- One attempt of one item. Returns true, outputs or false, message, final
-- (final = retrying cannot help).
function _M.attempt(self, step, scope, att, index)
  if step.action == "run" then
    local ctx = { client = self.client, params = self.params, outputs = self.outputs, item = scope.item,
                  index = index, run_id = self.run_id, step = step.name,
                  log = function(...)
                    self:emit { event = "log", step = step.name, message = table.concat({ ... }, " ") }
                  end }
    local ok, res = pcall(step.args, ctx)
    if not ok then return false, tostring(res) end
    return true, res
  end
  local args, terr = template.expand_args(step, scope)
  if terr then return false, terr, true end
  if step.action == "submit" then return submit.run(self.ctx, step, args, att, index) end
  if step.action == "await" then return submit.await(self.ctx, args) end
  if step.action == "kernel" then return kernel_action.run(self.ctx, step, args) end
  local res, err = call_action(self, step, args)
  if res and self.admission and admission.CHANGES[step.action] then self.admission:invalidate() end
  if res == nil then
    -- Already in the state the step asks for: done, not failed.
    if err.status == 409 and (step.action == "start_history_server" or step.action == "stop_history_server") then
      return true, { already = true, message = err.message }
    end
    return false, tostring(err), err.status ~= nil and not err.retryable and err.status ~= 401
  end
  return true, res
end

-- Run an attempt as its own task so a timeout can cancel it; then stop the
-- application it made (unless on_timeout = "leave") before anything retries.
-- `pend` (optional): the item's record for ctx.detach (detach).
function _M.timed_attempt(self, step, scope, att, index, pend)
  local sched = self.sched
  if not step.timeout and not step.is_finally then
    -- No timeout to enforce: the attempt runs in this task (a step's or a
    -- for_each item's own), which the run's cancel cancels instead of a
    -- child. One coroutine per item rather than two: a 1,000-item fan-out
    -- keeps about 4 MB less alive while it waits.
    local me = sched:current()
    self.attempt_tasks[me] = true
    self.detachable[me] = pend
    local okx, ok, out, final = xpcall(self.attempt, debug.traceback, self, step, scope, att, index)
    self.attempt_tasks[me] = nil
    self.detachable[me] = nil
    if not okx then return false, "the step raised an error: " .. tostring(ok), true end
    return ok, out, final
  end
  local child = sched:spawn(step.name .. ":" .. att.n, function() return self:attempt(step, scope, att, index) end)
  self.attempt_tasks[child] = true
  local timer, timed_out
  if step.timeout then
    timer = sched:spawn("timeout", function()
      local ok = sched:sleep(step.timeout)
      if ok ~= nil and not child.done then
        timed_out = true
        sched:cancel(child)
      end
    end)
  end
  -- Only attempt tasks are ever cancelled, so this join returns when the
  -- attempt ends (by itself, by its timeout, or by the run's cancel).
  local _, ok, out, final = sched:join(child)
  self.attempt_tasks[child] = nil
  if timer then sched:cancel(timer) end
  if child.error then return false, "the step raised an error: " .. tostring(child.error), true end
  if timed_out then
    local msg = ("timed out after %gs"):format(step.timeout)
    self:emit { event = "timeout", step = step.name, item = index, attempt = att.n,
                application_id = att.application_id }
    if att.application_id and step.on_timeout ~= "leave" then
      submit.stop_and_wait(self.ctx, att.application_id)
      att.stopped = true
      msg = msg .. "; application " .. att.application_id .. " stopped"
    end
    return false, msg
  end
  return ok, out, final
end

--- Run item `index` of a step's fan (see run_step) to its end: true,
-- outputs | false, message | PENDING (its application is followed; the
-- item ends in finish_item). `ended`: { att, ok, out, final } of an attempt
-- that ended while followed, to continue from.
function _M.run_item(self, fan, index, ended)
  local step, rec = fan.step, fan.rec
  local irec = self.state:item(rec, index)
  if not ended and irec.status == "succeeded" then return true, irec.outputs end
  local scope
  local last = irec.attempts[#irec.attempts]
  local resume_att = not ended and last and last.result == nil and last or nil
  local n = #irec.attempts
  irec.status = "running"
  self.writer:changed(irec)
  while true do
    local att, ok, out, final
    if ended then
      att, ok, out, final = ended.att, ended.ok, ended.out, ended.final
      ended = nil
    else
      att = resume_att
      if att then
        resume_att = nil
        att.resumed = true -- (irec was marked changed above, nothing written since)
      else
        n = n + 1
        att = { n = n, started_at = core.time() }
        self.state:add_attempt(irec, att)
      end
      scope = scope or self:scope(fan.list and fan.list[index], index)
      -- The item's record while its application runs: a few fields, no closure.
      local pend = { fan = fan, index = index, att = att }
      ok, out, final = self:timed_attempt(step, scope, att, index, pend)
      if ok == PENDING then return PENDING end
    end
    att.finished_at = core.time()
    if ok then
      att.result = "succeeded"
      irec.status, irec.outputs = "succeeded", out
      self:save(irec)
      return true, out
    end
    if final == "unreachable" then
      -- The service stopped answering while the application ran: it may
      -- still run. The attempt stays open (no result), so --resume and
      -- `aeflow retry` await its application again instead of submitting anew.
      att.error, att.finished_at = out, nil
      irec.status, irec.error = "failed", out
      self:save(irec)
      return false, out
    end
    att.result, att.error = "failed", out
    if not self.cancelled then
      local engine = self.state.doc.engine
      out = logtail.attach(self.ctx, step, att, index, out, engine and engine["local"])
    end
    if self.cancelled then
      irec.status, irec.error = "cancelled", out
      self:save(irec)
      return false, out
    end
    -- retry_base: attempts made before an `aeflow retry` do not use up its budget.
    if final or att.n - (irec.retry_base or 0) > step.retries then
      irec.status, irec.error = "failed", out
      self:save(irec)
      return false, out
    end
    local delay = step.retry_delay * 2 ^ (att.n - 1) * (0.5 + math.random() * 0.5)
    self:emit { event = "retry", step = step.name, item = index, attempt = att.n, delay = delay, error = out }
    self:save(irec)
    local slept, serr = self.sched:sleep(delay)
    if slept == nil and serr then return false, "cancelled" end
    if self.cancelled then
      irec.status = "cancelled"
      return false, "cancelled"
    end
  end
end

local function items_of(self, step)
  if step.for_each == nil then return nil end
  local v = step.for_each
  if type(v) == "string" then
    local expanded, err = template.expand(v, self:scope())
    if err then return nil, err end
    v = expanded
    if type(v) == "string" then
      local list = {}
      for part in v:gmatch("[^,]+") do list[#list + 1] = part:match("^%s*(.-)%s*$") end
      v = list
    end
  end
  if type(v) ~= "table" then return nil, "for_each did not give a list" end
  return v
end

function _M.run_step(self, step)
  local rec = self.state:step(step.name, step.is_finally)
  local t0 = core.monotime()
  rec.status, rec.started_at = "running", rec.started_at or core.time()
  local list, lerr = items_of(self, step)
  self:emit { event = "step_start", step = step.name, action = step.action, finally = step.is_finally or nil,
              items = list and #list or nil }
  self:save()
  local ok, outputs, err
  if lerr then
    ok, err = false, lerr
  else
    ok, outputs, err = fanout.run(self, step, rec, list)
  end
  if ok then
    rec.status = "succeeded"
  elseif self.cancelled then
    rec.status = "cancelled"
  else
    rec.status = "failed"
  end
  rec.outputs, rec.error, rec.finished_at = outputs, err, core.time()
  self.outputs[step.name] = outputs
  self:emit { event = "step_end", step = step.name, status = rec.status, error = err,
              seconds = core.monotime() - t0, finally = step.is_finally or nil }
  self:save()
  return ok
end

-- Can `step` start? "yes", "no" (wait) or "skip" (an upstream failed).
function _M.readiness(self, step)
  for _, dep in ipairs(step.after) do
    local d = self.state:step(dep, step.is_finally)
    if not DONE[d.status] then return "no" end
    local dstep = self.plan.by_name[dep]
    if d.status ~= "succeeded" and not (d.status == "failed" and dstep.continue_on_failure) then
      return "skip", dep
    end
  end
  return "yes"
end

function _M.main(self)
  local plan, sched = self.plan, self.sched
  self:emit { event = "run_start", workflow = plan.name, resumed = self.opts.resume or nil,
              file = plan.file, params = self.params }
  self:save()
  -- An application that can never fit the quota: said before anything is sent.
  local bad = self.admission and self.admission:preflight(plan, self:scope(), function(name)
    local rec = self.state.doc.steps[name]
    return rec ~= nil and rec.status == "succeeded"
  end)
  if bad then
    local rec = self.state:step(bad.step)
    rec.status, rec.error = "failed", bad.message
    self:emit { event = "step_end", step = bad.step, status = "failed", error = bad.message }
    self.state.doc.status, self.status = "failed", "failed"
    return self:flush()
  end
  local changed = sched:condition()
  local running = {}
  -- Outputs of steps finished before a resume.
  for name, rec in pairs(self.state.doc.steps) do
    if rec.status == "succeeded" then self.outputs[name] = rec.outputs end
  end
  while true do
    local pending = false
    for _, name in ipairs(plan.order) do
      local step = plan.by_name[name]
      local rec = self.state:step(name)
      if not DONE[rec.status] and not running[name] then
        if rec.status == "running" then rec.status = "pending" end -- resumed mid-step
        local ready, dep = self:readiness(step)
        if self.cancelled then
          rec.status = "cancelled"
          self:emit { event = "step_end", step = name, status = "cancelled" }
        elseif ready == "skip" then
          rec.status, rec.error = "skipped", "upstream step '" .. dep .. "' did not succeed"
          self:emit { event = "step_end", step = name, status = "skipped", error = rec.error }
        elseif ready == "yes" then
          running[name] = sched:spawn("step " .. name, function()
            local ok, err = pcall(self.run_step, self, step)
            if not ok then
              rec.status, rec.error = "failed", tostring(err)
              self:emit { event = "step_end", step = name, status = "failed", error = rec.error }
            end
            running[name] = nil
            changed.signal()
          end)
        else
          pending = true
        end
      end
      if running[name] then pending = true end
    end
    if not pending then break end
    changed.wait()
  end
  if self.cancelled and self.on_cancel == "stop" then
    -- Followed until the service says they ended: the last state shown is the real one.
    self.poller:settle(submit.stop_started(self.ctx), 10)
  end
  -- finally steps: once per run, whatever happened, in declaration order.
  for _, name in ipairs(plan.finally_order) do
    local step = plan.by_name[name]
    local rec = self.state:step(step.name, true)
    if rec.status ~= "succeeded" and rec.status ~= "failed" then
      local ok, err = pcall(self.run_step, self, step)
      if not ok then rec.status, rec.error = "failed", tostring(err) end
    end
  end
  local status = "succeeded"
  for _, name in ipairs(plan.order) do
    local rec = self.state.doc.steps[name]
    if rec.status == "failed" and not plan.by_name[name].continue_on_failure then status = "failed" end
    if rec.status == "skipped" then status = "failed" end
  end
  for _, step in ipairs(plan.finally) do
    if self.state.doc.finally[step.name].status == "failed" then status = "failed" end
  end
  if self.cancelled then status = "cancelled" end
  self.state.doc.status = status
  self.state.doc.finished_at = core.time()
  self:flush()
  self.status = status
end

-- What the actions (workflow/submit.lua, workflow/kernel_action.lua) may
-- use of a run: their whole interface to the runner.
local function run_context(self)
  local started_apps, app_attempts = self.started_apps, self.app_attempts
  return {
    client = self.client, loop = self.sched, run_id = self.run_id, dir = self.plan.dir,
    submit_grace = self.opts.submit_grace, poller = self.poller, slots = self.global_sem,
    admission = self.admission, -- nil with --no-admission
    emit = function(ev) self:emit(ev) end,
    save = function(rec) return self:save(rec) end,
    save_durable = function(rec) return self:save_durable(rec) end,
    cancelled = function() return self.cancelled end,
    -- An application this run started (or adopted) for a step; `att` keeps its state times for the report.
    started = function(id, step_name, att)
      started_apps[id] = step_name
      app_attempts[id] = att
    end,
    forget = function(id) started_apps[id] = nil end,
    -- Let go of the running attempt's application (runner.detach); nil: await it in this task.
    detach = function(id, slot) return fanout.detach(self, id, slot) end,
    started_step = function(id) return started_apps[id] end,
  }
end

--- Run the plan to the end. Returns "succeeded" | "failed" | "cancelled".
function _M.run(self)
  local sched = loop_mod.new { on_tick = function()
    local sig = core.signal_pending and core.signal_pending()
    if sig then self:cancel("signal " .. sig) end
  end }
  self.sched = sched
  self.writer:use(sched)
  -- The run's client: the caller's, with this run's loop as an option; every
  -- answer to a submission, retried ones included, reaches admission (429/503).
  local outer = self.client.on_request
  self.client = assert(self.client:with { loop = sched, on_request = function(ev)
    if outer then outer(ev) end
    if self.admission and ev.operation == "create_application" then
      self.admission:observe(ev.status, ev.retry_after)
    end
  end })
  self.poller = poller_mod.new(sched, self.client, {
    interval = self.opts.poll_interval, max_interval = self.opts.max_poll_interval,
    on_state = function(id, state)
      self:emit { event = "application", application_id = id, state = state, step = self.started_apps[id] }
      if self.client.is_terminal(state) then self.started_apps[id] = nil end
      local att = self.app_attempts[id]
      if att then
        record.state_change(att, state)
        self.writer:changed(att)
      end
      if self.admission then self.admission:nudge() end
    end,
    -- A followed item's application ended: finish it (fanout.ended).
    on_end = function(pend, app, failure) fanout.ended(self, pend, app, failure) end,
    unreachable_timeout = self.opts.unreachable_timeout,
    on_unreachable = function(err)
      self:emit { event = "service_unreachable", service = self.client.url, error = err }
    end,
    on_unknown = function(id, state)
      self:emit { event = "application_state_unknown", application_id = id, state = tostring(state),
                  step = self.started_apps[id] }
    end,
    on_reachable = function(seconds)
      self:emit { event = "service_reachable", service = self.client.url, seconds = seconds }
    end,
  })
  if self.opts.admission ~= false then
    self.admission = admission.new { client = self.client, sched = sched, emit = function(ev) self:emit(ev) end,
      interval = self.opts.poll_interval, max_interval = self.opts.max_poll_interval,
      peers = admission_peers.open(self.client.instance_id, self.run_id) }
  end
  if self.max_parallel then self.global_sem = sched:semaphore(self.max_parallel) end
  self.ctx = run_context(self)
  local t0 = core.monotime()
  -- A collection cycle once the heap is 1.5x (not Lua's default 2x) what
  -- was alive after the last one: a 1,000-application run makes megabytes of
  -- short-lived strings (responses, state snapshots), and the runner's
  -- peak RSS follows the pause (about 34 MB at 2x, 31 MB at 1.5x).
  collectgarbage("incremental", 150, 0, 0)
  local main = sched:spawn("main", function() self:main() end)
  if self.opts.on_tick then
    -- A clock for views that move while nothing happens (a long wait).
    sched:spawn("clock", function()
      while not main.done do
        local slept, serr = sched:sleep(self.opts.tick_interval or 0.25)
        if slept == nil and serr then return end
        if not main.done then self.opts.on_tick() end
      end
    end)
  end
  local ok, err = sched:loop(function() return main.done end)
  collectgarbage("incremental", 200, 0, 0) -- Lua's default pause again
  if self.writer.dirty then self:flush() end
  if self.admission then self.admission:close() end
  if main.error or not ok then
    self.status = "failed"
    self:emit { event = "error", message = tostring(main.error or err) }
  end
  self:emit { event = "run_end", status = self.status, seconds = core.monotime() - t0,
              poll_rounds = self.poller.rounds, poll_requests = self.poller.requests,
              poll_direct = self.poller.direct }
  return self.status
end

return _M
