--- The quota's arithmetic, without a run: resource_consumption_limits and
-- current_resource_consumption bodies as numbers ({ cores_m, memory_mib },
-- math.huge where unlimited), those numbers as people read them, and what a
-- plan's submit steps ask for (`aeflow plan`'s waves, the run's preflight).
-- Nothing here sends a request or waits: workflow/admission.lua does that
-- for a run and reads these.
local util = require("analytics_engine.util")
local resources = require("analytics_engine.resources")
local template = require("analytics_engine.workflow.template")

local _M = {}

local floor, huge, max, min = math.floor, math.huge, math.max, math.min

-- numbers as people read them

--- Millicores as cores: 2000 → "2", 1500 → "1.5".
function _M.cores_text(m)
  if m == huge then return "unlimited" end
  local c = m / 1000
  if c == floor(c) then return ("%d"):format(c) end
  return (("%.2f"):format(c):gsub("0+$", ""))
end

--- MiB as GiB when a GiB or more: 2048 → "2 GiB", 512 → "512 MiB".
function _M.memory_text(mib)
  if mib == huge then return "unlimited" end
  if mib >= 1024 then
    local g = mib / 1024
    if g == floor(g) then return ("%d GiB"):format(g) end
    return (("%.2f"):format(g):gsub("0+$", "")) .. " GiB"
  end
  return ("%d MiB"):format(floor(mib))
end

--- "needs 2 cores / 2 GiB"
function _M.need_text(d)
  return ("needs %s core%s / %s"):format(_M.cores_text(d.cores_m), d.cores_m == 1000 and "" or "s",
    _M.memory_text(d.memory_mib))
end

--- "2 cores / 8 GiB" (the parts that are limited)
function _M.limits_text(limits)
  local parts = {}
  if limits.cores_m < huge then parts[#parts + 1] = _M.cores_text(limits.cores_m) .. " cores" end
  if limits.memory_mib < huge then parts[#parts + 1] = _M.memory_text(limits.memory_mib) end
  return table.concat(parts, " / ")
end

--- "needs 2 cores / 2 GiB; free 0 of 6 cores": the demand, then what is
-- free of each limit that is short (cores when nothing is).
function _M.held_text(d, limits, used)
  local parts = {}
  local short_c = used.cores_m + d.cores_m > limits.cores_m
  local short_m = used.memory_mib + d.memory_mib > limits.memory_mib
  if limits.cores_m < huge and (short_c or not short_m) then
    parts[#parts + 1] = ("free %s of %s cores"):format(_M.cores_text(max(0, limits.cores_m - used.cores_m)),
      _M.cores_text(limits.cores_m))
  end
  if limits.memory_mib < huge and (short_m or limits.cores_m == huge) then
    parts[#parts + 1] = ("free %s of %s"):format(_M.memory_text(max(0, limits.memory_mib - used.memory_mib)),
      _M.memory_text(limits.memory_mib))
  end
  if #parts == 0 then return _M.need_text(d) end
  return _M.need_text(d) .. "; " .. table.concat(parts, ", ")
end

--- A demand larger than the whole limits: the message, or nil when it fits an empty instance.
function _M.too_large(d, limits)
  if not limits or resources.fits(limits, { cores_m = 0, memory_mib = 0 }, d) then return nil end
  return ("%s, more than the instance's whole limits of %s (resource_consumption_limits)"):format(
    _M.need_text(d), _M.limits_text(limits))
end

--- Limits from an API body ({ max_cores = "10", max_memory = "20Gi" }) as
-- { cores_m, memory_mib } (math.huge where unset); false when nothing is limited.
function _M.limits_of(body)
  body = type(body) == "table" and body or {}
  local l = { cores_m = resources.millicores(body.max_cores, huge) or huge,
              memory_mib = resources.memory_mib(body.max_memory, huge) or huge }
  if l.cores_m == huge and l.memory_mib == huge then return false end
  return l
end

--- Running plus pending from a current_resource_consumption body
-- ({ running = { cores = "1000m", memory = "1024Mi" }, pending = {...} }).
function _M.used_of(body)
  body = type(body) == "table" and body or {}
  local c, m = 0, 0
  for _, part in ipairs { body.running, body.pending } do
    if type(part) == "table" then
      c = c + (resources.millicores(part.cores, huge) or 0)
      m = m + (resources.memory_mib(part.memory, huge) or 0)
    end
  end
  return { cores_m = c, memory_mib = m }
end

--- How many of `d` fit at once in `limits` (math.huge when unlimited).
function _M.at_once(d, limits)
  local n = huge
  if limits.cores_m < huge and d.cores_m > 0 then n = min(n, floor(limits.cores_m / d.cores_m)) end
  if limits.memory_mib < huge and d.memory_mib > 0 then n = min(n, floor(limits.memory_mib / d.memory_mib)) end
  return n
end

---------------------------------------------------------------------------
-- what a plan asks for, read without running anything

--- What each submit step under admission asks for, read without running
-- anything: its conf (templated with `scope`; per item when for_each is a
-- list) over the default configs as the set_configs/update_configs steps
-- before it leave them. A conf that needs a step's outputs is left out.
-- Returns a list of { step, d (the largest item's demand), count (items, or
-- nil when for_each is only known at run time) }.
function _M.plan_demands(plan, defaults, scope)
  defaults = util.copy(defaults or {})
  scope = scope or plan.params or {}
  local out, names = {}, {}
  for _, n in ipairs(plan.order or {}) do names[#names + 1] = n end
  for _, n in ipairs(plan.finally_order or {}) do names[#names + 1] = n end
  for _, name in ipairs(names) do
    local step = plan.by_name[name]
    if step.action == "set_configs" or step.action == "update_configs" then
      local args = template.expand(step.args, scope)
      if type(args) == "table" then
        if step.action == "set_configs" then defaults = {} end
        for k, v in pairs(args) do
          if v == util.null then defaults[k] = nil else defaults[k] = v end
        end
      end
    elseif step.action == "submit" and step.admission ~= false and type(step.args) == "table" then
      local items = type(step.for_each) == "table" and step.for_each or { false }
      local worst
      for i, item in ipairs(items) do
        local sc = setmetatable({ item = item or nil, index = i }, { __index = scope })
        local conf = template.expand(step.args.conf or {}, sc)
        if type(conf) == "table" then
          local d = resources.demand(conf, defaults)
          if d and (not worst or d.cores_m + d.memory_mib / 1024 > worst.cores_m + worst.memory_mib / 1024) then
            worst = d
          end
        end
      end
      if worst then
        local count = type(step.for_each) == "table" and #step.for_each or (step.for_each == nil and 1 or nil)
        out[#out + 1] = { step = step, d = worst, count = count }
      end
    end
  end
  return out
end

--- The expected admission waves of each submit step alone, as text lines:
-- how many fit at once in `limits` (and max_parallel), and how many rounds
-- of that the step takes. Larger-than-the-quota steps say so with numbers.
-- Returns the lines and whether every step fits.
function _M.waves(plan, limits, defaults, scope)
  local lines, fits = {}, true
  for _, p in ipairs(_M.plan_demands(plan, defaults, scope)) do
    local step, d = p.step, p.d
    local big = _M.too_large(d, limits or nil)
    local head = ("%s: %s"):format(step.name, _M.need_text(d))
    if p.count and p.count > 1 then head = head .. (" each, %d applications"):format(p.count) end
    if big then
      fits = false
      lines[#lines + 1] = ("%s: CANNOT FIT: %s"):format(step.name, big)
    elseif not limits then
      lines[#lines + 1] = head .. "; no limits: all at once"
    else
      local n = _M.at_once(d, limits)
      local cap = step.max_parallel or plan.max_parallel
      if cap and cap < n then n = cap end
      if p.count then
        local waves = math.ceil(p.count / n)
        lines[#lines + 1] = ("%s; %s at a time in %s: %d wave%s"):format(head,
          n == huge and "all" or tostring(n), _M.limits_text(limits), waves, waves == 1 and "" or "s")
      else
        lines[#lines + 1] = ("%s; %s at a time in %s"):format(head, n == huge and "all" or tostring(n),
          _M.limits_text(limits))
      end
    end
  end
  return lines, fits
end

return _M
