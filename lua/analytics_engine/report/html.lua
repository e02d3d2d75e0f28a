--- The run report as one self-contained HTML page: inline CSS and SVG, no
-- script, no network. Rows carry data-* attributes (step, status,
-- application, ending) so tools and tests can read the page.
local util = require("analytics_engine.util")
local model = require("analytics_engine.report.model")
local sanitize = require("analytics_engine.sanitize")
local svg = require("analytics_engine.report.svg")
local stylesheet = require("analytics_engine.stylesheet")

local _M = {}

local fmt, concat = string.format, table.concat
local esc, class_of = svg.esc, svg.class_of

-- The shared frame (analytics_engine.stylesheet) and the report's own rules.
_M.CSS = stylesheet.with [[
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre.error { background: #fdecea; color: #8a1f17; }
pre.log { background: #f3f1ee; color: #3b2f2a; border-left: 3px solid #d93025; }
.log-title { font-size: 12px; color: #555; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         color: #fff; background: var(--pend); }
.badge.st-succeeded, .badge.st-finished { background: var(--ok); }
.badge.st-failed, .badge.st-timed-out, .badge.st-stopped { background: var(--bad); }
.badge.st-skipped, .badge.st-pending { background: var(--skip); }
.badge.st-cancelled { background: var(--cancel); }
.badge.st-running { background: var(--run); }
svg text { font: 12px system-ui, Helvetica, Arial, sans-serif; fill: #1f2933; }
.dag .node rect { stroke: #52606d; stroke-width: 1; fill: var(--pend); }
.dag .node.st-succeeded rect { fill: #d3f0dc; stroke: var(--ok); }
.dag .node.st-failed rect { fill: #f9d6d3; stroke: var(--bad); }
.dag .node.st-skipped rect { fill: #eceff1; stroke: var(--skip); stroke-dasharray: 4 3; }
.dag .node.st-cancelled rect { fill: #fbe8cc; stroke: var(--cancel); }
.dag .node.st-running rect { fill: #dbe8fe; stroke: var(--run); }
.dag .node .name { font-weight: 600; }
.dag .node .sub { font-size: 11px; fill: #52606d; }
.dag .edge { fill: none; stroke: #7b8794; stroke-width: 1.4; }
.dag .edge.handoff { stroke-dasharray: 5 4; }
.dag .arrowhead { fill: #7b8794; }
.dag .finally-box { fill: none; stroke: #9aa5ab; stroke-dasharray: 6 4; }
.dag .finally-label { fill: #7b8794; font-style: italic; }
.timeline .tick { stroke: #e4e7eb; }
.timeline .tick-label { fill: #7b8794; font-size: 11px; }
.timeline .row-label { font-weight: 600; }
.timeline .row-label.sub { font-weight: 400; fill: #52606d; }
.timeline .bar { fill: var(--pend); }
.timeline .bar.st-succeeded { fill: var(--ok); }
.timeline .bar.st-failed { fill: var(--bad); }
.timeline .bar.st-cancelled { fill: var(--cancel); }
.timeline .bar.st-running { fill: var(--run); }
.timeline .phase.ph-held { fill: #8d6e63; }
.timeline .phase.ph-submitted { fill: #b39ddb; }
.timeline .phase.ph-queued { fill: #ffca28; }
.timeline .phase.ph-running, .timeline .phase.ph-attempt { fill: #42a5f5; }
.timeline .phase.ph-other { fill: #90a4ae; }
.timeline .end { stroke: var(--ok); stroke-width: 2; }
.timeline .end-failed, .timeline .end-timed-out, .timeline .end-stopped { stroke: var(--bad); }
.timeline .end-cancelled { stroke: var(--cancel); }
.timeline .mark { font-size: 11px; fill: var(--bad); }
.timeline .mark-cancelled { fill: #b7791f; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; }
.legend i { display: inline-block; width: 12px; height: 10px; margin-right: 4px; vertical-align: middle; }
details { margin: 6px 0; }
summary { cursor: pointer; }
]]

local function badge(status)
  return fmt('<span class="badge %s">%s</span>', class_of(status), esc(status or "pending"))
end

local function stamp(t)
  if type(t) ~= "number" then return "" end
  return os.date("!%Y-%m-%d %H:%M:%S UTC", math.floor(t))
end

-- The time an attempt first reached one of `states`.
local function first_at(a, want)
  for _, s in ipairs(a.states) do
    if type(s.state) == "string" and want[s.state:upper()] and type(s.at) == "number" then return s.at end
  end
end
local QUEUED = { ACCEPTED = true, SUBMITTED = true, WAITING = true, QUEUED = true }
local RUNNING = { RUNNING = true }

local function pretty(v)
  if v == nil or v == util.null then return "" end
  local ok, s = pcall(util.json_pretty, v)
  return ok and s or tostring(v)
end

local function rel(m, t)
  if type(t) ~= "number" then return "" end
  return "+" .. model.duration(t - m.t0)
end

--- The HTML text of the report for state document `doc`.
function _M.render(doc, now)
  local m = model.build(doc, now)
  local r = m.run
  local o = {}
  local function add(...) for i = 1, select("#", ...) do o[#o + 1] = select(i, ...) end end
  add('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
      '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
      '<meta name="generator" content="aeflow report">\n',
      fmt("<title>%s: %s (run %s)</title>\n", esc(r.workflow or "workflow"), esc(r.status or "?"), esc(r.run_id)),
      "<style>\n", _M.CSS, "</style>\n</head>\n<body>\n")
  add(fmt('<header>\n<h1>Workflow %s %s</h1>\n', esc(r.workflow or "?"), badge(r.status)))
  add(fmt('<div class="meta">run <code id="run-id">%s</code> · started %s · took %s%s%s</div>\n</header>\n',
    esc(r.run_id), esc(stamp(r.started_at)), esc(model.duration(r.duration)),
    r.file and (" · " .. esc(r.file)) or "", (r.resumes or 0) > 0 and fmt(" · resumed %d×", r.resumes) or ""))
  add("<main>\n")

  -- Parameters.
  if type(r.params) == "table" and next(r.params) then
    local keys = {}
    for k in pairs(r.params) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    add('<section id="params">\n<h2>Parameters</h2>\n<table>\n<tr><th>name</th><th>value</th></tr>\n')
    for _, k in ipairs(keys) do
      local v = r.params[k]
      add(fmt("<tr><td><code>%s</code></td><td><code>%s</code></td></tr>\n", esc(k),
        esc(type(v) == "table" and pretty(v) or tostring(v))))
    end
    add("</table>\n</section>\n")
  end

  add('<section id="graph">\n<h2>Graph</h2>\n', svg.dag(m), "\n</section>\n")

  add('<section id="timeline">\n<h2>Time line</h2>\n<div class="legend">',
      '<span><i style="background:#8d6e63">&#160;</i>held for quota</span>',
      '<span><i style="background:#b39ddb">&#160;</i>submitted</span>',
      '<span><i style="background:#ffca28">&#160;</i>queued</span>',
      '<span><i style="background:#42a5f5">&#160;</i>running</span><span><i style="background:#2e9d4f">&#160;</i>step '
      .. 'succeeded</span><span><i style="background:#d64541">&#160;</i>failed / timed out</span>',
      '<span><i style="background:#e6a23c">&#160;</i>cancelled</span></div>\n', svg.timeline(m),
      '\n<p class="note">Application states are as the runner\'s poller saw them: a phase starts at the poll '
      .. "that first showed it.</p>\n</section>\n")

  -- Steps.
  add('<section id="steps">\n<h2>Steps</h2>\n<table>\n<thead><tr><th>step</th><th>action</th><th>status</th>'
      .. "<th>attempts</th><th>started</th><th>duration</th><th>error</th></tr></thead>\n<tbody>\n")
  for _, s in ipairs(m.steps) do
    local n = 0
    for _, item in ipairs(s.items) do n = n + #item.attempts end
    add(fmt('<tr class="step" data-step="%s" data-status="%s"><td>%s%s</td><td>%s</td><td>%s</td>'
      .. '<td class="num">%d</td><td>%s</td><td class="num">%s</td><td>%s</td></tr>\n',
      esc(s.name), esc(s.status), s.finally and "finally " or "", esc(s.name), esc(s.action or ""), badge(s.status),
      n, esc(rel(m, s.started_at)), esc(model.duration(s.duration)), esc(s.error or "")))
  end
  add("</tbody>\n</table>\n</section>\n")

  -- Applications (and every other attempt).
  add('<section id="attempts">\n<h2>Attempts and applications</h2>\n<table>\n<thead><tr><th>step</th>'
      .. "<th>item</th><th>attempt</th><th>application</th><th>submitted</th><th>queued</th><th>running</th>"
      .. "<th>finished</th><th>state</th><th>return code</th><th>outcome</th><th>logs</th></tr></thead>\n<tbody>\n")
  for _, s in ipairs(m.steps) do
    for _, item in ipairs(s.items) do
      for _, a in ipairs(item.attempts) do
        local links = model.log_links(m, a.application_id)
        -- The links work while that engine serves; the command works later too
        -- (the engine's records persist; `aeflow logs` starts it if need be).
        local logs = links and fmt('<a href="%s">page</a> · <a href="%s">stdout</a> · <a href="%s">stderr</a>'
          .. '<br/><code title="reads the same logs later">aeflow logs %s</code>',
          esc(links.page), esc(links.stdout), esc(links.stderr), esc(a.application_id)) or ""
        local outcome = badge(a.ending) .. (a.retry and ' <span class="retry">retry</span>' or "")
        add(fmt('<tr class="attempt" data-step="%s" data-attempt="%s" data-application="%s" data-ending="%s">'
          .. "<td>%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td><td><code>%s</code></td><td>%s</td>"
          .. "<td>%s</td><td>%s</td><td>%s</td><td>%s</td><td class=\"num\">%s</td><td>%s</td><td>%s</td></tr>\n",
          esc(s.name), esc(a.n or ""), esc(a.application_id or ""), esc(a.ending), esc(s.name), esc(item.index),
          esc(a.n or ""), esc(a.application_id or "—"), esc(rel(m, a.started_at)),
          esc(rel(m, first_at(a, QUEUED))), esc(rel(m, first_at(a, RUNNING))), esc(rel(m, a.finished_at)),
          esc(a.state or ""), esc(a.return_code ~= nil and a.return_code ~= util.null and tostring(a.return_code)
            or ""), outcome, logs))
        if a.error then
          add(fmt('<tr class="attempt-error"><td></td><td colspan="11"><pre class="error">%s</pre></td></tr>\n',
            esc(a.error)))
        end
        -- The end of its stderr, copied into the run's record when it failed:
        -- readable after the engine is gone.
        if a.log then
          add(fmt('<tr class="attempt-log" data-application="%s"><td></td><td colspan="11">'
            .. '<div class="log-title">the end of its %s (<code>aeflow logs %s --stream stderr</code>)</div>'
            .. '<pre class="log">%s</pre></td></tr>\n', esc(a.application_id or ""), esc(a.log.stream),
            esc(a.application_id or ""), esc(sanitize.escape(a.log.text, true))))
        end
      end
    end
  end
  add("</tbody>\n</table>\n</section>\n")

  -- Outputs and errors.
  add('<section id="outputs">\n<h2>Outputs and errors</h2>\n')
  for _, s in ipairs(m.steps) do
    local out = pretty(s.outputs)
    if out ~= "" or s.error then
      add(fmt('<details data-step="%s"%s><summary>%s %s</summary>\n', esc(s.name),
        s.error and " open" or "", esc(s.name), badge(s.status)))
      if s.error then add(fmt('<pre class="error">%s</pre>\n', esc(s.error))) end
      if out ~= "" then add(fmt("<pre>%s</pre>\n", esc(out))) end
      add("</details>\n")
    end
  end
  add("</section>\n")
  if m.engine and m.engine.url then
    add(fmt('<p class="note">Engine: <code>%s</code>%s.</p>\n', esc(m.engine.url),
      m.engine["local"] and (" (local: logs are linked while that engine serves them, and the page asks for the"
        .. " API key once; <code>aeflow logs APP_ID</code> reads them later; the end of a failed application's"
        .. " stderr is copied above)") or ""))
  end
  add("</main>\n</body>\n</html>\n")
  return concat(o)
end

return _M
