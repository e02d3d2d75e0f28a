--- The run report as Markdown: a summary for CI job summaries
-- ($GITHUB_STEP_SUMMARY and the like): the run's status and one table row
-- per step, then one per application.
local model = require("analytics_engine.report.model")
local sanitize = require("analytics_engine.sanitize")

local _M = {}

local fmt, concat = string.format, table.concat

local ICON = { succeeded = "✅", failed = "❌", skipped = "⏭️", cancelled = "🛑", running = "⏳", pending = "…",
               ["timed out"] = "⏱️", stopped = "⏹️" }

-- A table cell: one line, pipes escaped.
local function cell(s)
  s = tostring(s or ""):gsub("[\r\n]+", " "):gsub("|", "\\|")
  if #s > 160 then s = s:sub(1, 157) .. "..." end
  return s
end

local function status(s) return (ICON[s] and (ICON[s] .. " ") or "") .. tostring(s or "") end

function _M.render(doc, now)
  local m = model.build(doc, now)
  local r = m.run
  local o = {}
  o[#o + 1] = fmt("## Workflow `%s`: %s\n", cell(r.workflow), status(r.status))
  o[#o + 1] = fmt("Run `%s`, %s, took %s.\n", cell(r.run_id),
    r.started_at and os.date("!%Y-%m-%d %H:%M:%S UTC", math.floor(r.started_at)) or "not started",
    model.duration(r.duration) ~= "" and model.duration(r.duration) or "?")
  o[#o + 1] = "| step | action | status | attempts | duration | error |"
  o[#o + 1] = "|---|---|---|---:|---:|---|"
  local apps = {}
  for _, s in ipairs(m.steps) do
    local n = 0
    for _, item in ipairs(s.items) do
      n = n + #item.attempts
      for _, a in ipairs(item.attempts) do
        if a.application_id then apps[#apps + 1] = { s, item, a } end
      end
    end
    o[#o + 1] = fmt("| %s%s | %s | %s | %d | %s | %s |", s.finally and "finally " or "", cell(s.name),
      cell(s.action), status(s.status), n, model.duration(s.duration), cell(s.error))
  end
  if #apps > 0 then
    o[#o + 1] = ""
    o[#o + 1] = "| step | item | attempt | application | state | return code | outcome |"
    o[#o + 1] = "|---|---:|---:|---|---|---:|---|"
    for _, t in ipairs(apps) do
      local s, item, a = t[1], t[2], t[3]
      o[#o + 1] = fmt("| %s | %s | %s | `%s` | %s | %s | %s |", cell(s.name), cell(item.index), cell(a.n),
        cell(a.application_id), cell(a.state), cell(type(a.return_code) ~= "userdata" and a.return_code or ""),
        status(a.ending) .. (a.retry and " (retry)" or "")
          .. (a.held_at and a.admitted_at and (" (held %s for quota)"):format(model.duration(a.admitted_at - a.held_at))
            or ""))
    end
  end
  -- The ends of failed applications' stderr, from the run's record.
  for _, t in ipairs(apps) do
    local a = t[3]
    if a.log then
      o[#o + 1] = ""
      o[#o + 1] = fmt("**%s** `%s` %s, the end of its %s:", cell(t[1].name), cell(a.application_id),
        cell(a.state), cell(a.log.stream))
      o[#o + 1] = "~~~~"
      o[#o + 1] = (sanitize.escape(a.log.text, true):gsub("~~~~", "~ ~ ~ ~"))
      o[#o + 1] = "~~~~"
    end
  end
  return concat(o, "\n") .. "\n"
end

return _M
