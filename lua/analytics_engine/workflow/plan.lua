--- The plan: a workflow as a DAG of steps, plain data.
--
-- `build` checks what needs the whole graph (names in `after`, finally rules,
-- cycles, `${outputs.X}` references) and adds the topological `order`.
-- `describe` is the text of `aeflow plan`; `graph` draws the DAG for Graphviz
-- or Mermaid. Both read the requests from actions.lua and api.lua.
local actions = require("analytics_engine.workflow.actions")
local api = require("analytics_engine.api")
local duration = require("analytics_engine.duration")
local sanitize = require("analytics_engine.sanitize")
local schema = require("analytics_engine.workflow.schema")
local template = require("analytics_engine.workflow.template")
local types = require("analytics_engine.workflow.types")

local _M = {}

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local concat, sort = table.concat, table.sort
local fmt = string.format

--- `file:line: step "name": message` (or finally "name").
function _M.located(step, msg)
  return fmt('%s: %s "%s": %s', step.where, step.is_finally and "finally" or "step", step.name, msg)
end
local located = _M.located

local function names_of(steps)
  local t = {}
  for i, s in ipairs(steps) do t[i] = s.name end
  return t
end

-- Every name in `after` exists, and kinds do not mix.
local function check_after(p, step)
  for _, dep in ipairs(step.after) do
    local d = p.by_name[dep]
    if not d then
      local all = {}
      for name in pairs(p.by_name) do all[#all + 1] = name end
      return nil, located(step, fmt('after: no step named "%s"%s', dep, schema.did_you_mean(dep, all)))
    end
    if step.is_finally and not d.is_finally then
      return nil, located(step, fmt('after: "%s" is not a finally step (a finally step may only come after '
        .. 'other finally steps; all steps run before any of them)', dep))
    end
    if not step.is_finally and d.is_finally then
      return nil, located(step, fmt('after: "%s" is a finally step (finally steps run after all steps)', dep))
    end
  end
  return true
end

-- A cycle among the steps left over by Kahn's algorithm, as "a -> b -> a"
-- (x -> y: y comes after x), starting at the member declared first.
local function find_cycle(steps, placed, by_name)
  local index = {}
  for i, s in ipairs(steps) do index[s.name] = i end
  local start
  for _, s in ipairs(steps) do
    if not placed[s.name] then start = s; break end
  end
  -- Walk `after` edges among unplaced steps until a step repeats.
  local seen, path = {}, {}
  local cur = start
  while not seen[cur.name] do
    seen[cur.name] = #path + 1
    path[#path + 1] = cur
    local nxt
    for _, dep in ipairs(cur.after) do
      if not placed[dep] then nxt = by_name[dep]; break end
    end
    cur = nxt
  end
  local cycle = {}
  for i = seen[cur.name], #path do cycle[#cycle + 1] = path[i] end
  -- `after` edges point backwards in time: reverse for the flow direction.
  local flow = {}
  for i = #cycle, 1, -1 do flow[#flow + 1] = cycle[i] end
  local first = 1
  for i, s in ipairs(flow) do
    if index[s.name] < index[flow[first].name] then first = i end
  end
  local names = {}
  for i = 0, #flow do
    names[#names + 1] = flow[(first - 1 + i) % #flow + 1].name
  end
  return flow[first], concat(names, " -> ")
end

--- A topological order of `steps` (declaration order among ready steps), or
-- nil, "file:line: cycle: a -> b -> a".
function _M.order(steps, by_name)
  local placed, order = {}, {}
  local n = #steps
  while #order < n do
    local progressed = false
    for _, s in ipairs(steps) do
      if not placed[s.name] then
        local ready = true
        for _, dep in ipairs(s.after) do
          if not placed[dep] then ready = false; break end
        end
        if ready then
          placed[s.name] = true
          order[#order + 1] = s.name
          progressed = true
          break
        end
      end
    end
    if not progressed then
      local first, text = find_cycle(steps, placed, by_name)
      return nil, fmt("%s: cycle: %s", first.where, text)
    end
  end
  return order
end

--- The names a step comes after, directly or not, as a set.
function _M.ancestors(p, name)
  local set = {}
  local function visit(n)
    for _, dep in ipairs(p.by_name[n].after) do
      if not set[dep] then
        set[dep] = true
        visit(dep)
      end
    end
  end
  visit(name)
  return set
end

-- The step an `outputs.` reference names: the longest step name that the
-- rest of the path starts with (step names may contain dots).
local function output_target(p, rest)
  local best
  for name in pairs(p.by_name) do
    if (rest == name or rest:sub(1, #name + 1) == name .. ".") and (not best or #name > #best) then
      best = name
    end
  end
  return best
end

-- `${outputs.X...}`: X is a step this one comes after (a finally step may
-- use any step's outputs). Returns a message, or nil when fine.
local function check_output(p, step, rest)
  local target = output_target(p, rest)
  if not target then
    local x = rest:match("^[^.]*")
    return located(step, fmt('uses outputs.%s but there is no step "%s"', x, x))
  end
  if step.is_finally and not p.by_name[target].is_finally then return nil end
  if not _M.ancestors(p, step.name)[target] then
    return located(step, fmt("uses outputs.%s but does not come after it", target))
  end
  return nil
end

-- Every `${...}` in the step's arguments and for_each names something the
-- runner will have: a param, item/index under for_each, or the outputs of a
-- step this one comes after.
local function check_refs(p, step)
  local sources = {}
  if type(step.args) ~= "function" then sources[#sources + 1] = { step.args, false } end
  if type(step.for_each) == "string" then sources[#sources + 1] = { step.for_each, true } end
  for _, src in ipairs(sources) do
    local refs, err = template.names(src[1])
    if not refs then return nil, located(step, (src[2] and "for_each: " or step.action .. ": ") .. err) end
    for _, path in ipairs(refs) do
      local root = template.root(path)
      local rest = path:sub(#root + 2)
      if root == "outputs" then
        -- `${outputs}` alone is the whole table: nothing to check
        local e = rest ~= "" and check_output(p, step, rest)
        if e then return nil, e end
      elseif root == "item" or root == "index" then
        if src[2] then
          return nil, located(step, fmt("for_each: uses ${%s}, which exists only inside the loop", path))
        end
        if step.for_each == nil then
          return nil, located(step, fmt("uses ${%s} but has no for_each", path))
        end
      elseif not schema.RESERVED[root] or root == "params" then
        local param = root
        if root == "params" then param = rest:match("^[^.]*") end
        if p.params[param] == nil then
          local declared = {}
          for k in pairs(p.params) do declared[#declared + 1] = k end
          for k in pairs(schema.RESERVED) do declared[#declared + 1] = k end
          return nil, located(step, fmt("uses ${%s}, but '%s' is not a parameter%s", path, param,
            schema.did_you_mean(param, declared)))
        end
      end
    end
  end
  return true
end

-- The values a step's templates can take: one scope per distinct item of a
-- literal for_each (a "${param}" list gives strings), params as given, and
-- outputs of other steps unknown. Each is expanded and brought to the API's
-- types exactly as the runner will (template.expand_args); the first that
-- fails is reported with the step's file:line.
local function check_types(p, step)
  if type(step.args) == "function" or not types.node(step.action, step.args) then return true end
  local items, seen = {}, {}
  if type(step.for_each) == "table" then
    for i, v in ipairs(step.for_each) do
      local key = type(v) .. ":" .. tostring(v)
      if type(v) == "table" or not seen[key] then
        seen[key] = true
        items[#items + 1] = { v, i }
      end
    end
  elseif step.for_each ~= nil then
    items[1] = { "item", nil }
  end
  if #items == 0 then items[1] = { nil, nil } end
  for _, it in ipairs(items) do
    local _, err = template.expand_args(step, template.scope(p.params, types.UNKNOWN, it[1], 1, "run"))
    if err then
      return nil, located(step, err .. (it[2] and fmt(" (for_each item %d: %s)", it[2], schema.show(it[1])) or ""))
    end
  end
  return true
end

--- Check the graph of a plan (steps, finally, by_name filled in) and add
-- `order` and `finally_order`. Returns the plan, or nil, message.
function _M.build(p)
  for _, group in ipairs({ p.steps, p.finally }) do
    for _, step in ipairs(group) do
      local ok, err = check_after(p, step)
      if not ok then return nil, err end
    end
  end
  local order, err = _M.order(p.steps, p.by_name)
  if not order then return nil, err end
  local forder, ferr = _M.order(p.finally, p.by_name)
  if not forder then return nil, ferr end
  p.order, p.finally_order = order, forder
  for _, group in ipairs({ p.steps, p.finally }) do
    for _, step in ipairs(group) do
      local ok, e = check_refs(p, step)
      if not ok then return nil, e end
      ok, e = check_types(p, step)
      if not ok then return nil, e end
    end
  end
  return p
end

-- describe ------------------------------------------------------------------

--- Seconds as people write them: 90 → "1m30s", 1800 → "30m" (analytics_engine.duration).
_M.format_duration = duration.format

local function show_value(v)
  if type(v) == "string" then return fmt("%q", v) end
  return tostring(v)
end

local function path_of(op, info, ids)
  local values = {}
  if info and info.instance_id then values.instance_id = info.instance_id end
  for i, id in ipairs(op.ids) do
    local v = ids and ids[i]
    if type(v) == "string" then values[id] = v end
  end
  return (op.full_path:gsub("{([%w_]+)}", function(k) return values[k] end))
end

local POLL = "(poll until terminal)"

--- The HTTP requests a step would make, one string per line.
function _M.requests(step, info)
  local spec = actions.list[step.action]
  if step.action == "run" then return { "Lua function (requests unknown until run)" } end
  local op, ids
  if step.action == "call" then
    op, ids = api.by_name[step.args.operation], step.args.ids
  else
    op = api.by_name[spec.operation]
    if spec.arg == "id" then ids = { step.args } end
  end
  local out = {}
  if step.action == "await" then
    out[1] = fmt("%s %s %s", op.method, path_of(op, info), POLL)
    return out
  end
  out[1] = fmt("%s %s", op.method, path_of(op, info, ids))
  if spec.submits and step.wait ~= false then
    local list = api.by_name.list_applications
    out[2] = fmt("%s %s %s", list.method, path_of(list, info), POLL)
  end
  return out
end

local function step_line(i, step)
  local head = fmt("%d. %s (%s", i, step.name, step.action)
  if type(step.for_each) == "table" then
    head = head .. fmt(" × %d", #step.for_each)
  elseif type(step.for_each) == "string" then
    head = head .. fmt(" × per item of %s", step.for_each)
  end
  if step.max_parallel then head = head .. fmt(", at most %d at a time", step.max_parallel) end
  head = head .. ")"
  local notes = {}
  if #step.after > 0 then notes[#notes + 1] = "after " .. concat(step.after, ", ") end
  if step.retries > 0 then
    notes[#notes + 1] = fmt("retries %d (backoff from %s)", step.retries, _M.format_duration(step.retry_delay))
  end
  if step.timeout then
    notes[#notes + 1] = fmt("timeout %s%s", _M.format_duration(step.timeout),
      step.on_timeout == "leave" and " (then leave it running)" or "")
  end
  if step.continue_on_failure then notes[#notes + 1] = "continues on failure" end
  if step.wait == false then notes[#notes + 1] = "does not await the application" end
  if #notes > 0 then head = head .. " " .. concat(notes, "; ") end
  if step.description then head = head .. " — " .. step.description end
  return head
end

--- The text of `aeflow plan`: what would run, in which order, and which
-- requests each step makes. `info` (optional) = { url, instance_id }.
-- Returns the text (lines joined by "\n", no final newline).
function _M.describe(p, info)
  local lines = {}
  -- descriptions and parameters are the file's text: no escape sequence of
  -- theirs may reach the terminal
  local function add(s) lines[#lines + 1] = sanitize.escape(s) end
  add(fmt('workflow "%s" (%s)', p.name, p.where))
  if p.description then add("  " .. p.description) end
  local keys = {}
  for k in pairs(p.params) do keys[#keys + 1] = k end
  sort(keys)
  if #keys > 0 then
    local ps = {}
    for i, k in ipairs(keys) do ps[i] = k .. " = " .. show_value(p.params[k]) end
    add("params: " .. concat(ps, ", "))
  end
  add(fmt("options: max_parallel = %s, on_cancel = %s", p.max_parallel and tostring(p.max_parallel) or "unlimited",
    p.on_cancel))
  if info and info.url then
    add(fmt("endpoint: %s%s", info.url, info.instance_id and (" (instance " .. info.instance_id .. ")") or ""))
  end
  add("")
  add(fmt("steps, in order (%d):", #p.order))
  for i, name in ipairs(p.order) do
    local step = p.by_name[name]
    add("  " .. step_line(i, step))
    for _, r in ipairs(_M.requests(step, info)) do add("       " .. r) end
  end
  if #p.finally > 0 then
    add("")
    add(fmt("finally, after the steps whatever their outcome (%d):", #p.finally))
    for i, name in ipairs(p.finally_order or names_of(p.finally)) do
      local step = p.by_name[name]
      add("  " .. step_line(i, step))
      for _, r in ipairs(_M.requests(step, info)) do add("       " .. r) end
    end
  end
  return concat(lines, "\n")
end

-- graph ----------------------------------------------------------------------

local function sorted_names(steps)
  local t = names_of(steps)
  sort(t)
  return t
end

local function edges_of(steps)
  local e = {}
  for _, s in ipairs(steps) do
    for _, dep in ipairs(s.after) do e[#e + 1] = { dep, s.name } end
  end
  sort(e, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  return e
end

-- Steps nothing comes after (the last ones) and finally steps that come
-- after nothing (the first ones): the dashed edges into the finally block.
local function handoff(p)
  local has_child = {}
  for _, s in ipairs(p.steps) do
    for _, dep in ipairs(s.after) do has_child[dep] = true end
  end
  local sinks, roots = {}, {}
  for _, name in ipairs(sorted_names(p.steps)) do
    if not has_child[name] then sinks[#sinks + 1] = name end
  end
  for _, name in ipairs(sorted_names(p.finally)) do
    if #p.by_name[name].after == 0 then roots[#roots + 1] = name end
  end
  local e = {}
  for _, a in ipairs(sinks) do
    for _, b in ipairs(roots) do e[#e + 1] = { a, b } end
  end
  return e
end

local function label(step)
  local s = step.action
  if type(step.for_each) == "table" then
    s = s .. fmt(" × %d", #step.for_each)
  elseif step.for_each then
    s = s .. " × each"
  end
  return s
end

-- The report's look (report/html.lua's DAG): its palette (pending fill,
-- slate strokes and edges), its fonts, the step's name over its kind, and
-- the finally steps in a dashed box. A fan-out is one node with its count,
-- drawn as a stack (two outlines).
local DOT_STYLE = {
  '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.5, pad=0.2, bgcolor="white"];',
  '  node [shape=box, style="rounded,filled", fillcolor="#cfd8dc", color="#52606d", penwidth=1, '
    .. 'fontname="Helvetica", fontsize=11, fontcolor="#1f2933", margin="0.12,0.06"];',
  '  edge [color="#7b8794", penwidth=1.2, arrowsize=0.7];',
}

local function dot_node(indent, step)
  local esc = function(x) return (tostring(x):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;")) end
  return fmt('%s"%s" [label=<<b>%s</b><br/><font point-size="9" color="#52606d">%s</font>>%s];', indent,
    step.name, esc(step.name), esc(label(step)), step.for_each and ", peripheries=2" or "")
end

local function dot(p)
  local out = { fmt('digraph "%s" {', p.name) }
  for _, l in ipairs(DOT_STYLE) do out[#out + 1] = l end
  for _, name in ipairs(sorted_names(p.steps)) do out[#out + 1] = dot_node("  ", p.by_name[name]) end
  if #p.finally > 0 then
    out[#out + 1] = "  subgraph cluster_finally {"
    out[#out + 1] = '    label=<<i>finally</i>>; style="dashed,rounded"; color="#9aa5ab"; fontcolor="#7b8794";'
    for _, name in ipairs(sorted_names(p.finally)) do out[#out + 1] = dot_node("    ", p.by_name[name]) end
    out[#out + 1] = "  }"
  end
  for _, e in ipairs(edges_of(p.steps)) do out[#out + 1] = fmt('  "%s" -> "%s";', e[1], e[2]) end
  for _, e in ipairs(edges_of(p.finally)) do out[#out + 1] = fmt('  "%s" -> "%s";', e[1], e[2]) end
  for _, e in ipairs(handoff(p)) do out[#out + 1] = fmt('  "%s" -> "%s" [style=dashed];', e[1], e[2]) end
  out[#out + 1] = "}"
  return concat(out, "\n")
end

local function mermaid(p)
  local ids = {}
  local all = sorted_names(p.steps)
  for _, name in ipairs(sorted_names(p.finally)) do all[#all + 1] = name end
  for i, name in ipairs(all) do ids[name] = "s" .. i end
  local out = { "flowchart TD" }
  for _, name in ipairs(sorted_names(p.steps)) do
    out[#out + 1] = fmt('  %s["%s<br/>%s"]', ids[name], name, label(p.by_name[name]))
  end
  if #p.finally > 0 then
    out[#out + 1] = "  subgraph finally_steps [\"finally\"]"
    for _, name in ipairs(sorted_names(p.finally)) do
      out[#out + 1] = fmt('    %s["%s<br/>%s"]', ids[name], name, label(p.by_name[name]))
    end
    out[#out + 1] = "  end"
  end
  for _, e in ipairs(edges_of(p.steps)) do out[#out + 1] = fmt("  %s --> %s", ids[e[1]], ids[e[2]]) end
  for _, e in ipairs(edges_of(p.finally)) do out[#out + 1] = fmt("  %s --> %s", ids[e[1]], ids[e[2]]) end
  for _, e in ipairs(handoff(p)) do out[#out + 1] = fmt("  %s -.-> %s", ids[e[1]], ids[e[2]]) end
  return concat(out, "\n")
end

local FORMATS = { dot = dot, mermaid = mermaid }

--- The DAG as Graphviz ("dot") or Mermaid ("mermaid") text, deterministic,
-- without a final newline.
function _M.graph(p, format)
  local f = FORMATS[format or "dot"]
  if not f then return nil, fmt("unknown graph format '%s' (expected dot or mermaid)", tostring(format)) end
  return f(p)
end

return _M
