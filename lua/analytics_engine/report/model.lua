--- A run's state file as the report sees it: steps in graph order with
-- their attempts, each attempt's phases on a time line (submitted, queued,
-- running, then how it ended), and the run's time bounds.
local util = require("analytics_engine.util")
local api = require("analytics_engine.api")

local _M = {}

local QUEUED = { ACCEPTED = true, SUBMITTED = true, WAITING = true, QUEUED = true }
-- The states no application leaves: api.lua's one set (client and engine read it too).
local TERMINAL = api.TERMINAL_STATES

local function num(v) return type(v) == "number" and v or nil end

-- The end of a failed application's log as the views show it: { stream,
-- text } (the pointer, or the lines), or nil when it has nothing to show.
local function log_of(tail)
  if type(tail) ~= "table" then return nil end
  local text = tail.pointer or (type(tail.lines) == "table" and #tail.lines > 0 and table.concat(tail.lines, "\n"))
  if not text then return nil end
  return { stream = tail.stream or "stderr", text = text }
end
local function str(v) return type(v) == "string" and v or nil end

--- Load and decode a state file -> doc | nil, message.
function _M.load(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, "cannot read the state file: " .. tostring(err) end
  local src = f:read("a")
  f:close()
  local doc = util.json_decode(src)
  if type(doc) ~= "table" or type(doc.steps) ~= "table" or not doc.run_id then
    return nil, ("%s is not an aeflow state file"):format(path)
  end
  return doc
end

-- The graph recorded at run start, or one guessed from the records alone
-- (state files written before the graph was recorded have no edges).
local function graph_of(doc)
  if type(doc.graph) == "table" and type(doc.graph.steps) == "table" then return doc.graph end
  local steps = {}
  local function add(bucket, fin)
    local names = {}
    for name in pairs(bucket or {}) do names[#names + 1] = name end
    table.sort(names, function(a, b)
      local ra, rb = bucket[a].started_at or math.huge, bucket[b].started_at or math.huge
      if ra ~= rb then return ra < rb end
      return a < b
    end)
    for _, name in ipairs(names) do steps[#steps + 1] = { name = name, after = {}, finally = fin or nil } end
  end
  add(doc.steps, false)
  add(doc.finally, true)
  return { steps = steps }
end

-- How an attempt ended, in the report's words.
local function ending(att, item_status)
  if att.result == "succeeded" then return "succeeded" end
  local err = str(att.error) or ""
  if err:find("^timed out") then return "timed out" end
  if att.result == nil then
    if item_status == "cancelled" then return "cancelled" end
    return att.finished_at and "failed" or "running"
  end
  if err == "cancelled" or err:find("^cancel") then return "cancelled" end
  if att.stopped then return "stopped" end
  return "failed"
end

-- Phases of one attempt: { kind = held|submitted|queued|running|attempt, from, to }.
-- "held" is the runner's own wait for room in the instance's quota (admission),
-- before the service saw anything; "queued" is the service's.
local function phases(att, now)
  local out = {}
  local start = num(att.intent_at) or num(att.started_at)
  local stop = num(att.finished_at) or now
  local states = type(att.states) == "table" and att.states or {}
  local held = num(att.held_at)
  if held then
    local to = num(att.admitted_at) or stop
    out[1] = { kind = "held", state = "for quota", from = held, to = math.max(held, to), detail = str(att.held) }
  end
  if not att.application_id or #states == 0 then
    if start and not (held and not att.admitted_at) then
      out[#out + 1] = { kind = "attempt", from = num(att.started_at) or start, to = stop }
    end
    return out
  end
  local sub = num(att.submitted_at) or (states[1] and num(states[1].at))
  if start and sub and sub > start then out[#out + 1] = { kind = "submitted", from = start, to = sub } end
  for i, s in ipairs(states) do
    local from = num(s.at)
    local st = str(s.state) and s.state:upper() or "?"
    if from and not TERMINAL[st] then
      local to = states[i + 1] and num(states[i + 1].at) or stop
      out[#out + 1] = { kind = QUEUED[st] and "queued" or (st == "RUNNING" and "running" or "other"),
                        state = st, from = from, to = math.max(from, to) }
    end
  end
  return out
end

--- The model: { run = {...}, steps = { {name, status, started_at, finished_at,
-- duration, after, finally, outputs, error, items = { {index, attempts} } } },
-- t0, t1, engine }.
function _M.build(doc, now)
  now = now or os.time()
  local g = graph_of(doc)
  local m = { run = { run_id = doc.run_id, workflow = doc.workflow, file = doc.file, status = doc.status,
                      started_at = num(doc.started_at), finished_at = num(doc.finished_at),
                      resumes = doc.resumes, params = doc.params },
              engine = type(doc.engine) == "table" and doc.engine or nil, steps = {} }
  local t0, t1 = m.run.started_at, m.run.finished_at
  local function widen(t)
    if not t then return end
    if not t0 or t < t0 then t0 = t end
    if not t1 or t > t1 then t1 = t end
  end
  for _, info in ipairs(g.steps) do
    local bucket = info.finally and doc.finally or doc.steps
    local rec = type(bucket) == "table" and bucket[info.name] or nil
    rec = type(rec) == "table" and rec or { status = "pending", items = {} }
    local s = { name = info.name, action = info.action, after = info.after or {}, finally = info.finally,
                for_each = math.tointeger(info.for_each) or info.for_each, retries = info.retries,
                timeout = info.timeout,
                status = rec.status or "pending", started_at = num(rec.started_at),
                finished_at = num(rec.finished_at), outputs = rec.outputs, error = str(rec.error), items = {} }
    widen(s.started_at)
    widen(s.finished_at)
    local keys = {}
    for k in pairs(type(rec.items) == "table" and rec.items or {}) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return (tonumber(a) or 0) < (tonumber(b) or 0) end)
    for _, k in ipairs(keys) do
      local it = rec.items[k]
      local item = { index = math.tointeger(tonumber(k)) or k, status = it.status, error = str(it.error),
                     attempts = {} }
      for _, att in ipairs(type(it.attempts) == "table" and it.attempts or {}) do
        local a = { n = math.tointeger(att.n) or att.n, application_id = str(att.application_id),
                    -- the state the engine last reported (a wait = false one's too)
                    state = str(type(att.states) == "table" and att.states[#att.states]
                      and att.states[#att.states].state or att.state),
                    return_code = att.return_code, error = str(att.error), stopped = att.stopped,
                    resumed = att.resumed, started_at = num(att.intent_at) or num(att.started_at),
                    held_at = num(att.held_at), admitted_at = num(att.admitted_at), held = str(att.held),
                    finished_at = num(att.finished_at), ending = ending(att, it.status),
                    states = type(att.states) == "table" and att.states or {},
                    log = log_of(att.log_tail) }
        a.retry = (tonumber(att.n) or 1) > 1
        a.phases = phases(att, t1 or now)
        widen(a.held_at)
        widen(a.started_at)
        widen(a.finished_at)
        for _, st in ipairs(a.states) do widen(num(st.at)) end
        item.attempts[#item.attempts + 1] = a
      end
      s.items[#s.items + 1] = item
    end
    if s.started_at then
      s.duration = (s.finished_at or t1 or now) - s.started_at
    end
    m.steps[#m.steps + 1] = s
  end
  m.t0, m.t1 = t0 or now, math.max(t1 or now, (t0 or now) + 0.001)
  m.run.duration = m.run.started_at and ((m.run.finished_at or m.t1) - m.run.started_at) or nil
  return m
end

--- Seconds for people: 0.42s, 12.3s, 4m05s, 1h02m.
function _M.duration(s)
  if type(s) ~= "number" then return "" end
  if s < 10 then return ("%.2fs"):format(s) end
  if s < 60 then return ("%.1fs"):format(s) end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, math.floor(s % 60)) end
  return ("%dh%02dm"):format(s // 3600, math.floor(s % 3600 / 60))
end

--- A UTC time of day with milliseconds, or "".
function _M.clock(t)
  if type(t) ~= "number" then return "" end
  return os.date("!%H:%M:%S", math.floor(t)) .. ("%.3f"):format(t % 1):sub(2)
end

--- Log links for an application when the run's engine is local: the
-- engine page's view (works in a browser after its login) and the API URL.
function _M.log_links(m, id)
  local e = m.engine
  if not (e and e["local"] and type(e.url) == "string" and id) then return nil end
  return { page = e.url .. "/?app=" .. id,
           stdout = e.url .. "/engine/v1/applications/" .. id .. "/logs?stream=stdout",
           stderr = e.url .. "/engine/v1/applications/" .. id .. "/logs?stream=stderr" }
end

return _M
