--- The report's pictures as inline SVG: the DAG laid out by topological
-- layers (left to right, finally steps in a dashed box after the rest) and
-- a Gantt-like time line of steps and their applications.
local model = require("analytics_engine.report.model")

local _M = {}

local fmt, concat = string.format, table.concat

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                                          ["'"] = "&#39;" }))
end
_M.esc = esc

local function class_of(status)
  return "st-" .. (tostring(status or "pending"):gsub("[^%w]+", "-"))
end
_M.class_of = class_of

-- Layers: a step sits one layer right of its latest `after`; finally steps
-- start after the last layer of the steps.
local function layers(steps)
  local by, layer = {}, {}
  for _, s in ipairs(steps) do by[s.name] = s end
  local function depth(s, seen)
    if layer[s.name] then return layer[s.name] end
    if seen[s.name] then return 1 end -- a cycle cannot come from a valid plan; do not loop
    seen[s.name] = true
    local d = 1
    for _, dep in ipairs(s.after or {}) do
      local p = by[dep]
      if p and (p.finally or false) == (s.finally or false) then d = math.max(d, depth(p, seen) + 1) end
    end
    layer[s.name] = d
    return d
  end
  local last = 0
  for _, s in ipairs(steps) do
    if not s.finally then last = math.max(last, depth(s, {})) end
  end
  for _, s in ipairs(steps) do
    if s.finally then layer[s.name] = depth(s, {}) + last end
  end
  return layer, by, last
end

local NW, NH, GX, GY, PAD = 170, 46, 70, 18, 16

--- The DAG as an <svg> element.
function _M.dag(m)
  local steps = m.steps
  if #steps == 0 then return "<p>No steps recorded.</p>" end
  local layer, _, last = layers(steps)
  local columns, pos = {}, {}
  for i, s in ipairs(steps) do
    local l = layer[s.name]
    columns[l] = columns[l] or {}
    local col = columns[l]
    -- Order within a layer by the mean row of the parents (fewer crossings).
    local sum, n = 0, 0
    for _, dep in ipairs(s.after or {}) do
      if pos[dep] then sum, n = sum + pos[dep].row, n + 1 end
    end
    col[#col + 1] = { step = s, key = n > 0 and sum / n or i / 1000 }
  end
  local nlayers, rows = 0, 0
  for l in pairs(columns) do nlayers = math.max(nlayers, l) end
  for l = 1, nlayers do
    local col = columns[l] or {}
    table.sort(col, function(a, b) return a.key < b.key end)
    for r, c in ipairs(col) do
      pos[c.step.name] = { x = PAD + (l - 1) * (NW + GX), y = PAD + 14 + (r - 1) * (NH + GY), row = r }
    end
    rows = math.max(rows, #col)
  end
  local width = PAD * 2 + nlayers * NW + (nlayers - 1) * GX
  local height = PAD * 2 + 14 + rows * NH + (rows - 1) * GY
  local out = { fmt('<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" '
    .. 'viewBox="0 0 %.0f %.0f" role="img" aria-label="step graph">', width, height, width, height),
    '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
    .. 'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead"/></marker></defs>' }
  -- The finally box.
  if last < nlayers then
    local x = PAD + last * (NW + GX) - GX / 3
    out[#out + 1] = fmt('<rect class="finally-box" x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="8"/>', x, 4,
      width - x - 4, height - 8)
    out[#out + 1] = fmt('<text class="finally-label" x="%.1f" y="%.1f">finally</text>', x + 8, 18)
  end
  local function edge(a, b, dashed)
    local p, q = pos[a], pos[b]
    if not p or not q then return end
    local x1, y1, x2, y2 = p.x + NW, p.y + NH / 2, q.x, q.y + NH / 2
    local mx = (x1 + x2) / 2
    out[#out + 1] = fmt('<path class="edge%s" d="M %.1f %.1f C %.1f %.1f, %.1f %.1f, %.1f %.1f" '
      .. 'marker-end="url(#arrow)"/>',
      dashed and " handoff" or "", x1, y1, mx, y1, mx, y2, x2, y2)
  end
  local has_child = {}
  for _, s in ipairs(steps) do
    for _, dep in ipairs(s.after or {}) do
      has_child[dep] = true
      edge(dep, s.name)
    end
  end
  for _, s in ipairs(steps) do
    if s.finally and #(s.after or {}) == 0 then
      for _, t in ipairs(steps) do
        if not t.finally and not has_child[t.name] then edge(t.name, s.name, true) end
      end
    end
  end
  for _, s in ipairs(steps) do
    local p = pos[s.name]
    local label = s.name
    if #label > 22 then label = label:sub(1, 21) .. "…" end
    local sub = (s.action or "") .. (s.for_each and (" × " .. tostring(s.for_each)) or "")
    out[#out + 1] = fmt('<g class="node %s" data-step="%s"><title>%s: %s%s</title>'
      .. '<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="6"/>'
      .. '<text class="name" x="%.1f" y="%.1f">%s</text><text class="sub" x="%.1f" y="%.1f">%s · %s</text></g>',
      class_of(s.status), esc(s.name), esc(s.name), esc(s.status), s.error and (" — " .. esc(s.error)) or "",
      p.x, p.y, NW, NH, p.x + 10, p.y + 19, esc(label), p.x + 10, p.y + 36, esc(sub), esc(s.status))
  end
  out[#out + 1] = "</svg>"
  return concat(out, "\n")
end

-- A tick step of 1, 2 or 5 times a power of ten giving about 8 ticks.
local function tick_step(span)
  local raw = span / 8
  local p = 10 ^ math.floor(math.log(raw, 10))
  for _, k in ipairs { 1, 2, 5, 10 } do
    if raw <= k * p then return k * p end
  end
  return 10 * p
end

local LABEL_W, CHART_W, ROW_H = 300, 860, 22

--- The time line as an <svg> element: a row per step (its span) and a row
-- per attempt (its phases), with retries, timeouts and cancels marked.
function _M.timeline(m)
  local rows = {}
  for _, s in ipairs(m.steps) do
    rows[#rows + 1] = { kind = "step", step = s }
    for _, item in ipairs(s.items) do
      for _, a in ipairs(item.attempts) do
        rows[#rows + 1] = { kind = "attempt", step = s, item = item, att = a }
      end
    end
  end
  local t0, span = m.t0, m.t1 - m.t0
  local width, height = LABEL_W + CHART_W + 20, 30 + #rows * ROW_H + 10
  local function x(t) return LABEL_W + (t - t0) / span * CHART_W end
  local out = { fmt('<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
    .. 'viewBox="0 0 %d %d" role="img" aria-label="time line">', width, height, width, height) }
  local step = tick_step(span)
  local t = 0
  while t <= span + 1e-9 do
    local px = x(t0 + t)
    out[#out + 1] = fmt('<line class="tick" x1="%.1f" y1="22" x2="%.1f" y2="%d"/><text class="tick-label" '
      .. 'x="%.1f" y="16">+%s</text>', px, px, height - 6, px, (model.duration(t):gsub("%.00s", "s")))
    t = t + step
  end
  for i, r in ipairs(rows) do
    local y = 26 + (i - 1) * ROW_H
    if r.kind == "step" then
      local s = r.step
      out[#out + 1] = fmt('<g class="row step-row" data-step="%s"><text class="row-label" x="6" y="%d">%s</text>',
        esc(s.name), y + 15, esc((s.finally and "finally " or "") .. s.name))
      if s.started_at then
        local x1, x2 = x(s.started_at), x(s.finished_at or m.t1)
        out[#out + 1] = fmt('<rect class="bar %s" x="%.1f" y="%d" width="%.1f" height="%d"><title>%s %s, %s'
          .. '</title></rect>', class_of(s.status), x1, y + 3, math.max(2, x2 - x1), ROW_H - 6, esc(s.name),
          esc(s.status), model.duration(s.duration))
      end
      out[#out + 1] = "</g>"
    else
      local a, item = r.att, r.item
      local label = ("  attempt %s%s%s"):format(tostring(a.n or "?"),
        #r.step.items > 1 and (" of item " .. tostring(item.index)) or "",
        a.application_id and (" · " .. a.application_id:sub(1, 8)) or "")
      out[#out + 1] = fmt('<g class="row attempt-row" data-ending="%s"><text class="row-label sub" x="18" y="%d">'
        .. '%s</text>', esc(a.ending), y + 15, esc(label))
      for _, ph in ipairs(a.phases) do
        local x1, x2 = x(ph.from), x(ph.to)
        out[#out + 1] = fmt('<rect class="phase ph-%s" x="%.1f" y="%d" width="%.1f" height="%d"><title>%s%s: %s'
          .. '</title></rect>', ph.kind, x1, y + 5, math.max(1.5, x2 - x1), ROW_H - 10, ph.kind,
          ph.state and (" (" .. ph.state .. ")") or "", model.duration(ph.to - ph.from))
      end
      local xe = a.finished_at and x(a.finished_at)
      local marks = {}
      if a.retry then marks[#marks + 1] = "↻ retry" end
      if a.ending ~= "succeeded" and a.ending ~= "running" then marks[#marks + 1] = a.ending end
      if xe then
        out[#out + 1] = fmt('<line class="end end-%s" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>',
          class_of(a.ending):sub(4), xe, y + 2, xe, y + ROW_H - 2)
      end
      if #marks > 0 then
        local xt = (xe or x(m.t1)) + 4
        local anchor = ""
        if xt > LABEL_W + CHART_W - 60 then xt, anchor = xt - 8, ' text-anchor="end"' end
        out[#out + 1] = fmt('<text class="mark mark-%s" x="%.1f" y="%d"%s>%s</text>',
          class_of(a.ending):sub(4), xt, y + 15, anchor, esc(concat(marks, ", ")))
      end
      out[#out + 1] = "</g>"
    end
  end
  out[#out + 1] = "</svg>"
  return concat(out, "\n")
end

return _M
