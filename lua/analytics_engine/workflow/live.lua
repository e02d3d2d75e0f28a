--- The live view for terminals (as `argo watch` or a good progress bar):
-- one row per step of the plan (pending ones too), each running step with its
-- elapsed time and its applications' states, a fan-out as counts
-- (`sleepers  37/50 finished · 10 running · 3 queued  1m12s`). Redrawn on
-- every event (at most ten times a second) and on a clock (tick), so a long
-- wait moves and an event that came too soon after a draw is drawn by the
-- next tick, never dropped. The last frame (run_end) is drawn whatever the
-- rate, with the final state of every step and application. Lines are cut to
-- the terminal's width, so a long line never wraps and the in-place redraw
-- never garbles.
local api = require("analytics_engine.api")
local sanitize = require("analytics_engine.sanitize")

local _M = {}

local SYMBOL = { pending = " ", running = ">", succeeded = "+", failed = "x", skipped = "-", cancelled = "!" }
-- An application this many or fewer per step is listed; more are counted.
_M.LIST_MAX = 3

function _M.elapsed(s)
  s = math.max(0, s)
  if s < 60 then return ("%.0fs"):format(math.floor(s)) end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, math.floor(s % 60)) end
  return ("%dh%02dm"):format(s // 3600, math.floor(s % 3600 / 60))
end
local elapsed = _M.elapsed

-- Cut to `width` columns (UTF-8 aware: the middle dot is one column).
local function fit(line, width)
  if not width or utf8.len(line) == nil or utf8.len(line) <= width then return line end
  return line:sub(1, utf8.offset(line, width) - 1)
end

local RUNNING_STATES = { RUNNING = true }

-- Counts of a step's applications: finished, failed, running, queued (the
-- service has it but it does not run yet) and waiting (items not submitted).
local function counts(st, apps)
  local c = { finished = 0, failed = 0, stopped = 0, running = 0, queued = 0, submitted = 0 }
  for _, a in pairs(apps) do
    if a.step == st.name then
      c.submitted = c.submitted + 1
      local s = (a.state or ""):upper()
      if s == "FINISHED" then
        c.finished = c.finished + 1
      elseif s == "STOPPED" or s == "STOPPING" then
        c.stopped = c.stopped + 1
      elseif api.is_terminal(s) then
        c.failed = c.failed + 1
      elseif RUNNING_STATES[s] then
        c.running = c.running + 1
      else
        c.queued = c.queued + 1
      end
    end
  end
  return c
end
_M.counts = counts

--- The text of a fan-out's counts: "37/50 finished · 10 running · 3 queued".
-- Items not submitted yet are queued while the step runs, "not run" after.
function _M.fanout_text(c, items, ended)
  local parts = { ("%d/%d finished"):format(c.finished, items or c.submitted) }
  if c.failed > 0 then parts[#parts + 1] = ("%d failed"):format(c.failed) end
  if c.stopped > 0 then parts[#parts + 1] = ("%d stopped"):format(c.stopped) end
  if c.running > 0 then parts[#parts + 1] = ("%d running"):format(c.running) end
  -- Held by the runner for room in the quota (workflow/admission.lua): not the service's queue.
  local held = c.held or 0
  if held > 0 and not ended then parts[#parts + 1] = ("%d held for quota"):format(held) end
  local waiting = items and math.max(0, items - c.submitted - (ended and 0 or held)) or 0
  if ended then
    if c.queued > 0 then parts[#parts + 1] = ("%d queued"):format(c.queued) end
    if waiting > 0 then parts[#parts + 1] = ("%d not run"):format(waiting) end
  elseif c.queued + waiting > 0 then
    parts[#parts + 1] = ("%d queued"):format(c.queued + waiting)
  end
  return table.concat(parts, " · ")
end

--- The events the view shows as notes above the table, one line each;
-- render.lua's line output prints the same lines for them.
local NOTES = {
  retry = function(ev)
    return ("step %s: attempt %d failed (%s); retrying in %.1fs"):format(ev.step, ev.attempt, ev.error, ev.delay)
  end,
  timeout = function(ev) return ("step %s: attempt %d timed out"):format(ev.step, ev.attempt) end,
  cancel = function(ev) return ("cancelling: %s"):format(ev.reason or "") end,
  log = function(ev) return ("step %s: %s"):format(ev.step, ev.message) end,
  error = function(ev) return "error: " .. tostring(ev.message) end,
  admission_rate = function(ev) return "admission: " .. tostring(ev.message) end,
  service_unreachable = function(ev)
    return ("cannot reach the service at %s (%s); still trying"):format(ev.service, ev.error)
  end,
  application_state_unknown = function(ev)
    return ("application %s: state %s is not one aeflow knows; still waiting for FINISHED, FAILED or STOPPED")
      :format(ev.application_id, ev.state)
  end,
  service_reachable = function(ev)
    return ("the service at %s answers again (after %.0fs)"):format(ev.service, ev.seconds or 0)
  end,
}
_M.NOTES = NOTES

--- live(out, { now = fn, plan = plan, width = columns, width_fn = fn, width_every = s }) -> emit(ev), tick()
-- width_fn (optional) is asked again every width_every seconds (default 2; 0:
-- before every frame, for a cheap one): a resized terminal.
function _M.new(out, opts)
  out = out or io.stdout
  opts = opts or {}
  local now_of = opts.now or os.time
  local width = opts.width
  local width_fn, width_at, width_every = opts.width_fn, now_of(), opts.width_every or 2
  local steps, order, apps, app_order = {}, {}, {}, {}
  local run = { id = "", workflow = "", started = now_of() }
  local drawn, last, dirty = {}, -1, false -- drawn: the columns of each line of the frame on screen
  local notes = {}
  -- Each step's counts, made again only after an event about applications:
  -- the clock redraws a frame 4 times a second, and counting walks every
  -- application (10,000 in a large fan-out) while nothing changed.
  local counted = {}

  local function step_of(name, finally)
    local st = steps[name]
    if not st then
      st = { name = name, status = "pending", finally = finally }
      steps[name] = st
      order[#order + 1] = name
    end
    return st
  end
  -- Every step of the plan from the start, pending until it starts.
  if opts.plan then
    for _, name in ipairs(opts.plan.order or {}) do step_of(name) end
    for _, name in ipairs(opts.plan.finally_order or {}) do step_of(name, true) end
  end

  local function frame(now)
    local lines = { ("run %s of %s  %s"):format(run.id, run.workflow,
      elapsed((run.finished or now) - run.started)) .. (run.status and ("  " .. run.status) or "") }
    for _, name in ipairs(order) do
      local st = steps[name]
      local took = st.started and elapsed((st.finished or now) - st.started) or ""
      local c = counted[name]
      if not c then
        c = counts(st, apps)
        counted[name] = c
      end
      c.held = st.held_n
      local fan = (st.items and st.items > 1) or c.submitted > _M.LIST_MAX
      local label = name .. (st.finally and " (finally)" or "")
      local row = ("  [%s] %-24s %-9s"):format(SYMBOL[st.status] or "?", label, st.status)
      if fan then row = row .. " " .. _M.fanout_text(c, st.items, st.status ~= "running") end
      row = row .. "  " .. took
      if st.error then row = row .. "  " .. st.error end
      lines[#lines + 1] = row
      if (st.held_n or 0) > 0 and st.status == "running" then
        lines[#lines + 1] = "        held for quota: " .. (st.held_msg or "")
      end
      if not fan then
        for _, id in ipairs(app_order) do
          local a = apps[id]
          -- A finished step's applications go; a failed one's (and a wait = false
          -- one's still running) stay, with their state.
          if a.step == name and (st.status ~= "succeeded" or not api.is_terminal(a.state)) then
            lines[#lines + 1] = ("        %s  %-10s %s"):format(id, a.state, elapsed((a.until_ or now) - a.since))
            for _, t in ipairs(a.tail or {}) do lines[#lines + 1] = "          | " .. t end
          end
        end
      end
    end
    return lines
  end

  local function draw(force)
    local now = now_of()
    if not force and now - last < 0.1 then
      dirty = true -- the next tick draws it
      return
    end
    last, dirty = now, false
    if width_fn and now - width_at >= width_every then
      width_at = now
      width = width_fn() or width
    end
    -- A terminal that reports no size (0 columns: a pty nobody sized) cuts nothing.
    if width and width < 1 then width = nil end
    local lines = frame(now)
    local buf = {}
    -- Up over the frame on screen: a terminal made narrower since has wrapped
    -- (reflowed) each of its lines onto as many rows as the new width needs.
    local up = 0
    for _, w in ipairs(drawn) do up = up + ((width and w > width) and -(-w // (width + 1)) or 1) end
    -- \r first: the terminal's own echo (^C) may have moved the cursor right.
    -- Each line is cleared to its end (\27[K) and only what is below the new
    -- frame is cleared to the end of the screen: a frame at the top of the
    -- screen cleared with one \27[J from there is a "whole screen clear",
    -- which tmux (scroll-on-clear) copies into the scrollback at every redraw.
    if up > 0 then buf[#buf + 1] = ("\r\27[%dA"):format(up) end
    for _, n in ipairs(notes) do buf[#buf + 1] = fit(n, width) .. "\27[K\n" end
    notes = {}
    drawn = {}
    for i, l in ipairs(lines) do
      local fitted = fit(l, width)
      buf[#buf + 1] = fitted .. "\27[K\n"
      drawn[i] = utf8.len(fitted) or #fitted
    end
    if up > 0 then buf[#buf + 1] = "\27[J" end
    out:write(table.concat(buf))
    out:flush()
  end

  local function emit(ev)
    local e = ev.event
    if type(e) == "string" and e:sub(1, 11) == "application" then counted = {} end
    local now = now_of()
    if e == "run_start" then
      run.id, run.workflow, run.started = ev.run_id, ev.workflow, now
    elseif e == "step_start" then
      local st = step_of(ev.step, ev.finally)
      st.status, st.started, st.finished, st.error, st.items = "running", now, nil, nil, ev.items
    elseif e == "step_end" then
      local st = step_of(ev.step, ev.finally)
      st.status, st.finished = ev.status, st.started and now or nil
      st.error = ev.error and sanitize.clean((tostring(ev.error):gsub("\n.*", ""))) or nil
    elseif e == "application_submitted" or e == "application_adopted" then
      if not apps[ev.application_id] then app_order[#app_order + 1] = ev.application_id end
      apps[ev.application_id] = { step = ev.step, state = ev.state or "SUBMITTED", since = now }
    elseif (e == "application_held" or e == "application_admitted") and ev.step and ev.token then
      local st = step_of(ev.step)
      st.held = st.held or {}
      local was = st.held[ev.token]
      st.held[ev.token] = e == "application_held" or nil
      st.held_n = (st.held_n or 0) + ((st.held[ev.token] and 1 or 0) - (was and 1 or 0))
      if e == "application_held" then st.held_msg = sanitize.clean(tostring(ev.message or "")) end
    elseif e == "application" then
      local a = apps[ev.application_id]
      if a and ev.state then
        if a.state ~= ev.state then a.since = now end
        a.state = ev.state
        if api.is_terminal(ev.state) then a.until_ = now end
      end
    elseif e == "application_stop" then
      local a = apps[ev.application_id]
      if a and not api.is_terminal(a.state) then
        a.state, a.since = "STOPPING", now
      end
    elseif e == "application_log" then
      -- The end of a failed application's stderr, under it (three lines).
      local a = apps[ev.application_id]
      if a then
        local t = {}
        if ev.pointer then t[1] = sanitize.clean(ev.pointer) end
        local ls = ev.lines or {}
        for i = math.max(1, #ls - 2), #ls do t[#t + 1] = sanitize.clean(tostring(ls[i])) end
        a.tail = t
      end
    elseif e == "run_end" then
      run.finished, run.status = now, ev.status
    end
    local note = NOTES[e]
    if note then notes[#notes + 1] = os.date("%H:%M:%S") .. " " .. sanitize.clean(note(ev)) end
    draw(e == "run_end" or e == "step_end" or e == "step_start" or #notes > 0)
  end

  local function tick()
    -- A clock: elapsed times move, and a draw an event had to skip happens.
    draw(dirty or #drawn > 0)
  end

  return emit, tick
end

return _M
