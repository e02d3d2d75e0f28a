--- What a run shows: NDJSON events for machines, one line per event for
-- logs, and a summary table at the end. Events never carry secrets: they are
-- made from step names, ids, states and error messages only, and what a
-- server or a step said is cleaned on the way out (sanitize: credentials
-- masked, control characters shown as \x1b), in every view.
local util = require("analytics_engine.util")
local sanitize = require("analytics_engine.sanitize")
local live = require("analytics_engine.workflow.live")
local state_mod = require("analytics_engine.workflow.state")

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

--- NDJSON: one JSON object per line, to `out` (default stdout) and to every
-- further file given (the line is made once: `aeflow run --json` of a kept
-- run writes each event to its events.ndjson and to stdout).
function _M.json(out, ...)
  local outs = { out or io.stdout, ... }
  return function(ev)
    local line = sanitize.json(util.json_encode(safe(ev, sanitize.redact)))
    for i = 1, #outs do
      outs[i]:write(line, "\n")
      outs[i]:flush()
    end
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
  -- Quota-aware admission (workflow/admission.lua): its own phase, before the service sees anything.
  application_held = function(ev)
    return ("step %s: item %s held for quota: %s"):format(ev.step, tostring(ev.item), ev.message)
  end,
  application_admitted = function(ev)
    return ("step %s: item %s admitted after %.1fs held for quota"):format(ev.step, tostring(ev.item),
      ev.held_seconds or 0)
  end,
  admission = function(ev) return "admission: " .. tostring(ev.message) end,
  application_adopted = function(ev)
    return ("step %s: adopted application %s accepted before the restart"):format(ev.step, ev.application_id)
  end,
  application = function(ev)
    return ("application %s: %s"):format(short(ev.application_id), ev.state)
  end,
  application_log = function(ev)
    if ev.pointer then return ("application %s: %s"):format(short(ev.application_id), ev.pointer) end
    local out = { ("step %s: application %s failed; the end of its %s:"):format(ev.step, ev.application_id,
      ev.stream or "stderr") }
    for _, l in ipairs(ev.lines or {}) do out[#out + 1] = "    | " .. sanitize.clean(l) end
    return table.concat(out, "\n")
  end,
  application_stop = function(ev)
    local why = ev.reason and (" (" .. ev.reason .. ")") or ""
    return ("application %s: stopping%s"):format(short(ev.application_id), why)
  end,
  run_end = function(ev) return ("run %s: %s in %.1fs"):format(ev.run_id, ev.status, ev.seconds or 0) end,
}

-- retry, timeout, cancel, log, error, admission_rate: the live view's notes.
for event, f in pairs(live.NOTES) do LINES[event] = f end

--- One line per event, for logs and terminals.
-- With nothing to say for this long, the lines say what is still running.
_M.HEARTBEAT = 30

--- One line per event, for logs and CI; returns emit(ev) and tick() (call it
-- on a clock: after HEARTBEAT quiet seconds a "still running" line, so a log
-- of a long wait does not look frozen). opts.now: a monotonic clock.
function _M.lines(out, opts)
  out = out or io.stdout
  local now_of = opts and opts.now or os.time
  local last = now_of()
  local running, order, apps = {}, {}, {}
  local function emit(ev)
    local e = ev.event
    if e == "step_start" then
      if not running[ev.step] then order[#order + 1] = ev.step end
      running[ev.step] = { name = ev.step, since = now_of(), items = ev.items }
    elseif e == "step_end" then
      running[ev.step] = nil
    elseif e == "application_submitted" or e == "application_adopted" then
      apps[ev.application_id] = { step = ev.step, state = "SUBMITTED" }
    elseif e == "application" and apps[ev.application_id] then
      apps[ev.application_id].state = ev.state
    end
    local f = LINES[e]
    if f then
      ev = safe(ev, sanitize.clean)
      out:write(clock(ev.time), " ", f(ev), "\n")
      out:flush()
      last = now_of()
    end
  end
  local function tick()
    local now = now_of()
    if now - last < _M.HEARTBEAT then return end
    last = now
    local parts = {}
    for _, name in ipairs(order) do
      local st = running[name]
      if st then
        local c = live.counts(st, apps)
        local detail = (st.items and st.items > 1 or c.submitted > 1) and live.fanout_text(c, st.items)
          or (c.running > 0 and "running") or (c.queued > 0 and "queued") or nil
        parts[#parts + 1] = ("%s %s%s"):format(sanitize.clean(name), live.elapsed(now - st.since),
          detail and (" (" .. detail .. ")") or "")
      end
    end
    if #parts > 0 then
      out:write(clock(os.time()), " still running: ", table.concat(parts, "; "), "\n")
      out:flush()
    end
  end
  return emit, tick
end

--- The live view for terminals (workflow/live.lua): returns emit(ev) and
-- tick() (call it on a clock). opts: { plan, width }.
function _M.live(out, now_fn, opts)
  opts = opts or {}
  local emit, tick = live.new(out, { now = now_fn, plan = opts.plan, width = opts.width, width_fn = opts.width_fn,
                                     width_every = opts.width_every })
  return function(ev) emit(safe(ev, sanitize.clean)) end, tick
end

-- What a step's record says it did: attempts made (an attempt counts once it
-- did something: sent its submission, or ran its action; one still waiting
-- for a --max-parallel slot when the run ended does not), applications the
-- service accepted, and the last state the service reported for the last one.
function _M.step_counts(rec)
  local attempts, apps, last = 0, 0, nil
  state_mod.each_attempt_of(rec, function(att)
    if att.application_id then
      apps = apps + 1
      attempts = attempts + 1
      last = att
    elseif att.intent_at or (att.result and att.error ~= "cancelled") then
      attempts = attempts + 1
    end
  end)
  return attempts, apps, last
end

--- The ends of failed applications' stderr the run copied into its record
-- (at most `n` lines each), for the text after the summary; "" when none.
function _M.tails(plan, doc, n)
  n = n or 10
  local out = {}
  local function add(step, rec)
    state_mod.each_attempt_of(rec, function(att)
      local t = att.log_tail
      if type(t) == "table" and att.application_id then
        if t.pointer then
          out[#out + 1] = ("%s: application %s: %s"):format(step.name, att.application_id, sanitize.clean(t.pointer))
        elseif t.lines and #t.lines > 0 then
          out[#out + 1] = ("%s: application %s %s, the end of its %s:"):format(step.name, att.application_id,
            tostring(att.state), t.stream or "stderr")
          for i = math.max(1, #t.lines - n + 1), #t.lines do
            out[#out + 1] = "    | " .. sanitize.clean(tostring(t.lines[i]))
          end
        end
      end
    end)
  end
  for _, name in ipairs(plan.order) do add(plan.by_name[name], doc.steps[name]) end
  for _, step in ipairs(plan.finally) do add(step, doc.finally[step.name]) end
  return #out > 0 and (table.concat(out, "\n") .. "\n") or ""
end

--- The summary table: one row per step (and finally step).
function _M.summary(plan, doc)
  local rows = { { "STEP", "STATUS", "ATTEMPTS", "APPS", "SECONDS", "DETAIL" } }
  local function add(step, rec)
    if not rec then return end
    local attempts, napps, last = _M.step_counts(rec)
    local detail = rec.error or ""
    local secs = (rec.started_at and rec.finished_at) and ("%.1f"):format(rec.finished_at - rec.started_at) or "-"
    local out = rec.outputs
    if detail == "" and type(out) == "table" then
      if out.application_id then
        -- The state as the service last reported it (a wait = false step's too).
        local seen = last and last.states and last.states[#last.states]
        local state = seen and seen.state or out.state
        detail = ("%s %s"):format(out.application_id, tostring(state))
        if out.return_code ~= nil then detail = detail .. " rc=" .. tostring(out.return_code) end
      elseif #out > 0 then
        detail = ("%d items"):format(#out)
      end
    end
    rows[#rows + 1] = { step.name .. (step.is_finally and " (finally)" or ""), rec.status,
                        tostring(attempts), tostring(napps), secs,
                        sanitize.clean((tostring(detail):gsub("\n.*", ""))) }
  end
  for _, name in ipairs(plan.order) do add(plan.by_name[name], doc.steps[name]) end
  for _, step in ipairs(plan.finally) do add(step, doc.finally[step.name]) end
  return _M.columns(rows)
end

--- Rows of text cells as aligned columns, two spaces apart (the last column
-- unpadded), one line each: the summary's table and `aeflow runs`.
function _M.columns(rows)
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
