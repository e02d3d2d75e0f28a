--- What a run shows: NDJSON events for machines, one line per event for
-- logs, and a summary table at the end. Events never carry secrets: they are
-- made from step names, ids, states and error messages only, and what a
-- server or a step said is cleaned on the way out (sanitize: credentials
-- masked, control characters shown as \x1b), in every view.
local util = require "analytics_engine.util"
local sanitize = require "analytics_engine.sanitize"

local _M = {}

local function clock(t)
  return os.date("%H:%M:%S", math.floor(t))
end

local function short(id)
  return id and id:sub(1, 8) or "-"
end

-- A copy of an event whose strings are safe for a terminal (`clean`) or,
-- for JSON (which escapes control characters itself), only redacted.
local function safe(ev, how)
  local c = {}
  for k, v in pairs(ev) do
    if type(v) == "string" then
      c[k] = how(v)
    elseif type(v) == "table" then
      c[k] = sanitize.deep(v)
    else
      c[k] = v
    end
  end
  return c
end
_M.safe = safe

--- NDJSON: one JSON object per line.
function _M.json(out)
  out = out or io.stdout
  return function(ev)
    out:write(util.json_encode(safe(ev, sanitize.redact)), "\n")
    out:flush()
  end
end

local LINES = {
  run_start = function(ev)
    return ("run %s of %s%s"):format(ev.run_id, ev.workflow, ev.resumed and " (resumed)" or "")
  end,
  step_start = function(ev) return ("step %s: started (%s)"):format(ev.step, ev.action) end,
  step_end = function(ev)
    local s = ("step %s: %s"):format(ev.step, ev.status)
    if ev.seconds then s = s .. (" in %.1fs"):format(ev.seconds) end
    if ev.error then s = s .. ": " .. ev.error end
    return s
  end,
  application_submitted = function(ev)
    return ("step %s: submitted application %s (attempt %d)"):format(ev.step, ev.application_id, ev.attempt)
  end,
  application_adopted = function(ev)
    return ("step %s: adopted application %s accepted before the restart"):format(ev.step, ev.application_id)
  end,
  application = function(ev)
    return ("application %s: %s"):format(short(ev.application_id), ev.state)
  end,
  application_stop = function(ev)
    local why = ev.reason and (" (" .. ev.reason .. ")") or ""
    return ("application %s: stopping%s"):format(short(ev.application_id), why)
  end,
  retry = function(ev)
    return ("step %s: attempt %d failed (%s); retrying in %.1fs"):format(ev.step, ev.attempt, ev.error, ev.delay)
  end,
  timeout = function(ev) return ("step %s: attempt %d timed out"):format(ev.step, ev.attempt) end,
  cancel = function(ev) return ("cancelling: %s"):format(ev.reason or "") end,
  log = function(ev) return ("step %s: %s"):format(ev.step, ev.message) end,
  error = function(ev) return "error: " .. tostring(ev.message) end,
  run_end = function(ev) return ("run %s: %s in %.1fs"):format(ev.run_id, ev.status, ev.seconds or 0) end,
}

--- One line per event, for logs and terminals.
function _M.lines(out)
  out = out or io.stdout
  return function(ev)
    local f = LINES[ev.event]
    if f then
      ev = safe(ev, sanitize.clean)
      out:write(clock(ev.time), " ", f(ev), "\n")
      out:flush()
    end
  end
end

local SYMBOL = { pending = " ", running = ">", succeeded = "+", failed = "x", skipped = "-", cancelled = "!" }

local function elapsed(s)
  if s < 60 then return ("%.0fs"):format(s) end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, math.floor(s % 60)) end
  return ("%dh%02dm"):format(s // 3600, math.floor(s % 3600 / 60))
end

--- A live view for terminals: one row per step and per application in
-- flight, redrawn in place at most ten times a second.
function _M.live(out, now_fn)
  out = out or io.stdout
  local now_of = now_fn or os.time
  local steps, order, apps, app_order = {}, {}, {}, {}
  local run = { id = "", workflow = "", started = now_of() }
  local drawn, last = 0, -1
  local notes = {}

  local function draw(force)
    local now = now_of()
    if not force and now - last < 0.1 then return end
    last = now
    local lines = { ("run %s of %s  %s"):format(run.id, run.workflow, elapsed(now - run.started)) }
    for _, name in ipairs(order) do
      local st = steps[name]
      local row = ("  [%s] %-24s %-10s %s"):format(SYMBOL[st.status] or "?", name, st.status,
        st.finished and elapsed(st.finished - st.started) or elapsed(now - st.started))
      if st.error then row = row .. "  " .. st.error:gsub("\n.*", "") end
      lines[#lines + 1] = row
      for _, id in ipairs(app_order) do
        local a = apps[id]
        if a.step == name and not a.done then
          lines[#lines + 1] = ("        %s  %-10s %s"):format(id, a.state, elapsed(now - a.since))
        end
      end
    end
    local buf = {}
    if drawn > 0 then buf[#buf + 1] = ("\27[%dA\27[J"):format(drawn) end
    for _, n in ipairs(notes) do buf[#buf + 1] = n .. "\n" end
    notes = {}
    for _, l in ipairs(lines) do buf[#buf + 1] = l .. "\n" end
    out:write(table.concat(buf))
    out:flush()
    drawn = #lines
  end

  return function(ev)
    ev = safe(ev, sanitize.clean)
    local e = ev.event
    if e == "run_start" then
      run.id, run.workflow, run.started = ev.run_id, ev.workflow, now_of()
    elseif e == "step_start" or e == "step_end" then
      local st = steps[ev.step]
      if not st then
        st = { started = now_of() }
        steps[ev.step] = st
        order[#order + 1] = ev.step
      end
      st.status = e == "step_start" and "running" or ev.status
      if e == "step_end" then st.finished, st.error = now_of(), ev.error end
    elseif e == "application_submitted" or e == "application_adopted" then
      if not apps[ev.application_id] then app_order[#app_order + 1] = ev.application_id end
      apps[ev.application_id] = { step = ev.step, state = "SUBMITTED", since = now_of() }
    elseif e == "application" then
      local a = apps[ev.application_id]
      if a then
        if a.state ~= ev.state then a.since = now_of() end
        a.state = ev.state
        a.done = require("analytics_engine.client").is_terminal(ev.state)
      end
    elseif e == "retry" or e == "error" or e == "cancel" or e == "timeout" or e == "log" then
      local f = LINES[e]
      notes[#notes + 1] = os.date("%H:%M:%S") .. " " .. f(ev)
    end
    draw(e == "run_end" or e == "step_end" or #notes > 0)
  end
end


--- The summary table: one row per step (and finally step).
function _M.summary(plan, doc)
  local rows = { { "STEP", "STATUS", "ATTEMPTS", "SECONDS", "DETAIL" } }
  local function add(step, rec)
    if not rec then return end
    local attempts, detail = 0, rec.error or ""
    for _, it in pairs(rec.items or {}) do attempts = attempts + #it.attempts end
    local secs = (rec.started_at and rec.finished_at) and ("%.1f"):format(rec.finished_at - rec.started_at) or "-"
    local out = rec.outputs
    if detail == "" and type(out) == "table" then
      if out.application_id then
        detail = ("%s %s rc=%s"):format(out.application_id, tostring(out.state), tostring(out.return_code))
      elseif #out > 0 then
        detail = ("%d items"):format(#out)
      end
    end
    rows[#rows + 1] = { step.name .. (step.is_finally and " (finally)" or ""), rec.status,
                        tostring(attempts), secs, sanitize.clean((tostring(detail):gsub("\n.*", ""))) }
  end
  for _, name in ipairs(plan.order) do add(plan.by_name[name], doc.steps[name]) end
  for _, step in ipairs(plan.finally) do add(step, doc.finally[step.name]) end
  local widths = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do widths[i] = math.max(widths[i] or 0, #c) end
  end
  local lines = {}
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do cells[i] = i < #r and (c .. (" "):rep(widths[i] - #c)) or c end
    lines[#lines + 1] = table.concat(cells, "  ")
  end
  return table.concat(lines, "\n") .. "\n"
end

return _M
