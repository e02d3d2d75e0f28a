--- Spark applications: the state machine (ACCEPTED -> RUNNING -> FINISHED |
-- FAILED | STOPPED), real local processes, resource accounting and the
-- handlers. Bodies are checked by validate.lua, answers shaped by views.lua.
local core = require("analytics_engine.core")
local api = require("analytics_engine.api")
local util = require("analytics_engine.util")
local duration = require("analytics_engine.duration")
local reply = require("analytics_engine.engine.reply")
local runner = require("analytics_engine.engine.runner")
local resources = require("analytics_engine.resources")
local views = require("analytics_engine.engine.views")
local validate = require("analytics_engine.engine.validate")
local confine = require("analytics_engine.engine.confine")
local children = require("analytics_engine.engine.children")
local changes = require("analytics_engine.engine.changes")

local _M = {}

local floor = math.floor

local tointeger = util.tointeger

-- The states no application leaves: api.lua's one set (client and reports read it too).
_M.TERMINAL = api.TERMINAL_STATES
_M.PENDING = { ACCEPTED = true, SUBMITTED = true, WAITING = true, QUEUED = true }
_M.KILL_GRACE = 5


-- The create_application body, checked and normalised: engine/validate.lua.
_M.validate = validate.application

---------------------------------------------------------------------------
-- resources

-- The arithmetic is resources.lua's (shared with the client). Quotas may be
-- larger than what one driver or executor may ask for.
local QUOTA_MILLICORES, QUOTA_MIB = 1e12, 1024 ^ 5

--- A quota's memory ("1G", "512m", "2Gi", "1024" = MiB) in MiB, or nil.
function _M.memory_mib(s) return resources.memory_mib(s, QUOTA_MIB) end

--- A quota's cores ("1", "0.5", "500m") in millicores, or nil.
function _M.millicores(s) return resources.millicores(s, QUOTA_MILLICORES) end

-- An application's demand, by record: its conf and the defaults it was
-- submitted with never change, and the scheduler sums the demand of every
-- live application at each launch (parsing thousands of confs per create
-- made creates slow down with the number running: ~10/s at 3,000).
local demands = setmetatable({}, { __mode = "k" })

--- What one application asks for: millicores, MiB. A record stored before
-- its conf was validated counts as Spark's defaults rather than failing.
function _M.demand(rec)
  local d = demands[rec]
  if not d then
    d = resources.demand(rec.details.conf, rec.instance_defaults) or resources.demand()
    demands[rec] = d
  end
  return d.cores_m, d.memory_mib
end

-- Running and pending use over the live applications -> millicores, MiB of
-- each (summed by the lifecycle as applications change state: set_state).
local function use(eng)
  return eng.lifecycle:use()
end

-- What a live application counts for in `use`, after a change of its state.
local function count(eng, rec)
  local kind = rec.state == "RUNNING" and "running" or _M.PENDING[rec.state] and "pending" or nil
  local c, m = _M.demand(rec)
  eng.lifecycle:count(rec, kind, c, m)
end

local function quantities(c, m) return { cores = ("%dm"):format(floor(c)), memory = ("%dMi"):format(floor(m)) } end

--- Running and pending use over the live applications -> view, running millicores, MiB.
function _M.consumption(eng)
  local run_c, run_m, pend_c, pend_m = use(eng)
  return { running = quantities(run_c, run_m), pending = quantities(pend_c, pend_m) }, run_c, run_m
end

-- The answers' shapes (get_application, a list row, get_application_state).
_M.view, _M.list_item, _M.status = views.view, views.list_item, views.status

---------------------------------------------------------------------------
-- lifecycle (eng: the engine: store, opts, stats; eng.lifecycle owns the live
-- set, the queue, the processes and the reaping set)
--
-- ACCEPTED --(fits the quota)--> RUNNING --> FINISHED | FAILED | AUTO_TERMINATED
--     \--(does not fit)--> QUEUED --(capacity frees, first come first served)--/
-- DELETE of a live one --> STOPPED. Every change is recorded in rec.transitions.

local function add_detail(rec, kind, code, message)
  rec.state_details = rec.state_details or {}
  for _, d in ipairs(rec.state_details) do
    if d.code == code and d.message == message then return end
  end
  rec.state_details[#rec.state_details + 1] = { type = kind, code = code, message = message }
end

local function set_state(eng, rec, state, now)
  rec.state = state
  rec.transitions = rec.transitions or {}
  rec.transitions[#rec.transitions + 1] = { state = state, time = now or core.time() }
  eng.store:touch("applications", rec)
  count(eng, rec)
  -- (what a state change brings along, start/finish time, spark id and
  -- return code, is set in the same tick: no answer is made in between)
  changes.note(eng, rec)
end

local function finish(eng, rec, state, now)
  now = now or core.time()
  set_state(eng, rec, state, now)
  rec.finish_ts = now
  rec.pid = nil
  rec.deadline = nil
  eng.lifecycle:retire(rec)
end

--- Positive seconds from "90", "90s", "15m", "2h", "1h30m" (the project's one
-- duration grammar, analytics_engine.duration), or nil.
function _M.seconds(v)
  local n = duration.parse(v)
  if not n or n <= 0 or n ~= n or n == math.huge then return nil end
  return n
end

-- The conf key that sets one application's time limit (over --app-timeout).
_M.TIMEOUT_KEY = "ae.local-engine.timeout"

--- The effective quota: the instance's (--quota-cores/--quota-memory) capped
-- by resource_consumption_limits when they are set -> millicores, MiB.
function _M.capacity(eng)
  local q = eng.opts.quota or {}
  local cores, mem = q.millicores or math.huge, q.mib or math.huge
  local lim = eng.store:settings().limits
  if type(lim) == "table" then
    cores = math.min(cores, _M.millicores(lim.max_cores) or cores)
    mem = math.min(mem, _M.memory_mib(lim.max_memory) or mem)
  end
  return cores, mem
end

--- Create the record for a validated submission; the next tick schedules it.
-- -> rec | nil, status, code, message (a submission that can never run, or
-- one that may not wait when there is no room now)
function _M.create(eng, details, extras)
  local s = eng.store:settings()
  local now = core.time()
  local id = util.uuid4(core.random_bytes)
  local version = details.runtime and details.runtime.spark_version or s.default_runtime.spark_version
  details.runtime = nil
  local conf = details.conf or {}
  local rec = {
    id = id, state = "ACCEPTED", details = details,
    volumes = extras.volumes, queuing_enabled = extras.queuing_enabled, any_program = extras.any_program,
    instance_defaults = util.copy(s.default_configs),
    runtime = version, template_id = ("spark-%s-local-engine-template"):format(version),
    spark_application_name = conf["spark.app.name"] or details.name
      or details.application:match("([^/]+)$"),
    creation_ts = now, start_ts = now,
    dir = eng.opts.data_dir .. "/apps/" .. id,
    transitions = { { state = "ACCEPTED", time = now } },
  }
  local d, derr = resources.demand(conf, rec.instance_defaults)
  if not d then -- conf itself was validated: the instance's defaults hold the bad value
    return nil, 400, "invalid_default_configs", "default_configs." .. derr
  end
  demands[rec] = d -- parsed once: the scheduler reads it from here
  local c, m = d.cores_m, d.memory_mib
  local q = eng.opts.quota or {}
  if not resources.fits({ cores_m = q.millicores, memory_mib = q.mib }, nil, d) then
    return nil, 400, "exceeds_instance_quota", ("the application asks for %dm cores and %dMi memory, more "
      .. "than the instance's quota of %dm cores and %dMi"):format(floor(c), floor(m), floor(q.millicores or 0),
      floor(q.mib or 0))
  end
  if extras.queuing_enabled == false then
    local cap_c, cap_m = _M.capacity(eng)
    local run_c, run_m = use(eng)
    -- What is queued only because the next tick has not started it yet
    -- (several creates in one batch) counts as running: refused only when
    -- this one would really wait (behind them, or for room).
    local q_c, q_m = _M.queued_demand(eng, cap_c, cap_m)
    if not resources.fits({ cores_m = cap_c, memory_mib = cap_m },
                          { cores_m = run_c + q_c, memory_mib = run_m + q_m }, d) then
      return nil, 503, "instance_quota_exhausted", "the instance has no room for the application now "
        .. "and queuing_enabled is false"
    end
  end
  local timeout = _M.seconds((rec.instance_defaults or {})[_M.TIMEOUT_KEY])
  timeout = _M.seconds(conf[_M.TIMEOUT_KEY]) or timeout or eng.opts.app_timeout
  rec.timeout = timeout
  if extras.volumes and #extras.volumes > 0 then
    add_detail(rec, "info", "volumes_not_mounted",
      "the local engine does not mount volumes; paths are used as they are")
  end
  eng.store:put("applications", rec)
  changes.note(eng, rec)
  eng.lifecycle:admit(rec)
  count(eng, rec)
  if not core.mkdir_p(rec.dir, 448) then eng.lifecycle:set_proc(id, { mkdir = false }) end
  eng.stats.applications_created = eng.stats.applications_created + 1
  return rec
end

local function fail(eng, rec, code, message)
  add_detail(rec, "error", code, message)
  finish(eng, rec, "FAILED")
end

local function spark_app_id(eng)
  local s = eng.store:settings()
  local seq = (s.app_seq or 0)
  s.app_seq = seq + 1
  eng.store:touch("settings")
  return ("app-%s-%04d"):format(os.date("!%Y%m%d%H%M%S"), seq % 10000)
end

local function launch(eng, rec)
  -- checked again at launch: a symlink may have changed since the submission
  local allowed, _, ccode, cmessage = confine.check(rec.details.application, eng.opts,
    rec.any_program and { role = "admin" } or nil)
  if not allowed then return fail(eng, rec, ccode, cmessage) end
  local plan, code, message = runner.plan(rec.details, {
    app_root = eng.opts.app_root, examples_dir = eng.opts.examples_dir, name = rec.spark_application_name,
    spark_submit = eng.opts.spark_submit, master = eng.opts.spark_master, deploy_mode = eng.opts.deploy_mode,
    event_log_dir = eng.opts.event_log_dir, instance_defaults = rec.instance_defaults })
  if not plan then return fail(eng, rec, code, message) end
  if plan.note then add_detail(rec, "info", "local_stand_in", plan.note) end
  local env = runner.env(rec.details.env, { AE_APPLICATION_ID = rec.id, AE_INSTANCE_ID = eng.instance_id,
                                            [children.MARKER] = eng.opts.data_dir })
  local pid, err = core.spawn{ argv = plan.argv, env = env, cwd = eng.opts.app_root,
                               stdout = rec.dir .. "/stdout", stderr = rec.dir .. "/stderr",
                               die_with_parent = children.SIGNAL.application }
  if not pid then return fail(eng, rec, "launch_failed", "could not start the application: " .. tostring(err)) end
  local now = core.time()
  rec.pid = pid
  rec.start_ts = now
  rec.stdout_path, rec.stderr_path = rec.dir .. "/stdout", rec.dir .. "/stderr"
  rec.submitted_with = plan.submit and "spark-submit" or "local"
  if rec.timeout then
    rec.deadline = now + rec.timeout
    eng.lifecycle:due(rec.deadline)
  end
  rec.spark_application_id = spark_app_id(eng)
  eng.lifecycle:set_proc(rec.id, { pid = pid })
  set_state(eng, rec, "RUNNING", now)
end

-- Kill a process group: TERM now, KILL after the grace period (lifecycle.reap).
local function terminate(eng, pid)
  eng.lifecycle:terminate(pid, _M.KILL_GRACE)
end

-- Larger than the whole capacity (the limits were set below it): it cannot
-- start until they are raised, so it waits without holding up the queue.
local function never_fits(rec, cap_c, cap_m)
  local c, m = _M.demand(rec)
  return not resources.fits({ cores_m = cap_c, memory_mib = cap_m }, nil, { cores_m = c, memory_mib = m })
end

--- The demand of the queued applications that can ever fit: cores_m,
-- memory_mib (what a submission with queuing_enabled = false would wait behind).
function _M.queued_demand(eng, cap_c, cap_m)
  local c, m = 0, 0
  for _, rec in ipairs(eng.lifecycle:queued()) do
    if not never_fits(rec, cap_c, cap_m) then
      local rc, rm = _M.demand(rec)
      c, m = c + rc, m + rm
    end
  end
  return c, m
end

-- Start queued applications in submission order while they fit; the first
-- that does not fit waits (QUEUED) and so does everything behind it, except
-- one that cannot fit at all: it keeps its place and the next one may start.
local function schedule(eng, now)
  local lc = eng.lifecycle
  local queue = lc:queued()
  if #queue == 0 then return end
  local cap_c, cap_m = _M.capacity(eng)
  local run_c, run_m = use(eng)
  local i = 1
  while i <= #queue do
    local rec = queue[i]
    local p = lc:proc(rec.id)
    local c, m = _M.demand(rec)
    if p and p.mkdir == false then
      fail(eng, rec, "launch_failed", "could not create " .. rec.dir)
    elseif never_fits(rec, cap_c, cap_m) then
      if rec.state ~= "QUEUED" then
        add_detail(rec, "info", "instance_quota_exhausted", ("the application asks for %.0fm cores and %.0fMi "
          .. "memory, more than the resource_consumption_limits allow (%.0fm cores, %.0fMi): it waits until they "
          .. "are raised"):format(floor(c), floor(m), floor(cap_c), floor(cap_m)))
        set_state(eng, rec, "QUEUED", now)
      end
      i = i + 1
    else
      if not resources.fits({ cores_m = cap_c, memory_mib = cap_m }, { cores_m = run_c, memory_mib = run_m },
                            { cores_m = c, memory_mib = m }) then
        for j = i, #queue do
          local q = queue[j]
          if q.state ~= "QUEUED" then
            add_detail(q, "info", "instance_quota_exhausted", "the application waits for the instance's "
              .. "cores and memory (resource_consumption_limits) to free")
            set_state(eng, q, "QUEUED", now)
          end
        end
        return
      end
      lc:unqueue(rec)
      launch(eng, rec)
      if rec.state == "RUNNING" then run_c, run_m = run_c + c, run_m + m end
    end
  end
end

-- Look at every running application's process: ended ones finish, those
-- past their deadline are stopped. -> the earliest deadline of what still runs.
local function look(eng, now)
  local lc = eng.lifecycle
  local due = math.huge
  for id, rec in lc:live() do
    local p = lc:proc(id)
    if rec.state == "RUNNING" and p and p.pid then
      local st, c = core.wait(p.pid)
      -- An ended application's processes end with it: what it left running in
      -- its process group (a `cmd &`, a daemon thread's process) is killed now,
      -- not when the engine next starts.
      if st == "exited" or st == "signaled" then core.kill(p.pid, "KILL", true) end
      if st == "exited" then
        rec.return_code = tostring(c)
        if c == 0 then finish(eng, rec, "FINISHED", now)
        else
          add_detail(rec, "error", "application_failed", ("the application exited with code %d"):format(c))
          finish(eng, rec, "FAILED", now)
        end
      elseif st == "signaled" then
        rec.return_code = tostring(128 + c)
        add_detail(rec, "error", "application_killed", ("the application was killed by signal %d"):format(c))
        finish(eng, rec, "FAILED", now)
      elseif st == false then
        add_detail(rec, "error", "application_lost", "the engine lost track of the application's process: " .. c)
        finish(eng, rec, "FAILED", now)
      elseif rec.deadline and now >= rec.deadline then
        terminate(eng, p.pid)
        add_detail(rec, "error", "application_timeout", ("the application ran longer than its limit of %gs "
          .. "(%s or --app-timeout) and was stopped"):format(rec.timeout, _M.TIMEOUT_KEY))
        finish(eng, rec, "AUTO_TERMINATED", now)
      elseif rec.deadline and rec.deadline < due then
        due = rec.deadline
      end
    end
  end
  return due
end

--- Advance the live applications one step; never blocks. The running
-- processes are looked at when the lifecycle says a look is due (a child
-- ended, a deadline passed, or a second went by), not at every turn.
function _M.tick(eng)
  local now = core.time()
  local lc = eng.lifecycle
  if lc:look(now) then lc:looked(look(eng, now)) end
  schedule(eng, now)
  -- Stopped process groups: reap them; KILL what outlives the grace period.
  lc:reap(now)
end

--- Stop a live application (DELETE, or the engine shutting down).
function _M.stop(eng, rec, code, message)
  if _M.TERMINAL[rec.state] then return false end
  local p = eng.lifecycle:proc(rec.id) or {}
  if p.pid then terminate(eng, p.pid) end
  add_detail(rec, "info", code, message)
  finish(eng, rec, "STOPPED")
  return true
end

-- Is `pid` still the process the engine started for application `id`? Its
-- environment carries AE_APPLICATION_ID, which a reused pid would not.
local function still_ours(pid, id)
  pid = tointeger(pid) -- JSON gives back 1234.0
  if not pid or pid <= 1 then return false end
  return children.carries(pid, "AE_APPLICATION_ID=" .. id)
end

--- After a restart: what was live when the engine died did not finish.
-- Running ones are FAILED with engine_restarted (their process group, if it
-- outlived the engine, is killed); accepted or queued ones never started and
-- are FAILED the same way, so no client waits on them forever.
function _M.recover(eng)
  local now = core.time()
  for _, rec in ipairs(eng.store:list("applications")) do
    if not _M.TERMINAL[rec.state] then
      if rec.pid and still_ours(rec.pid, rec.id) then core.kill(tointeger(rec.pid), "KILL") end
      add_detail(rec, "error", "engine_restarted",
        "the local engine stopped while the application was " .. rec.state:lower())
      rec.pid, rec.deadline = nil, nil
      rec.finish_ts = now
      set_state(eng, rec, "FAILED", now)
    end
  end
end

---------------------------------------------------------------------------
-- handlers: h(eng, ctx) -> status, body, headers

--- The record of an application id -> rec | nil, status, body, headers
-- (400 for an id that is not one, 404 for one not on record).
local function find(eng, id)
  -- A stored id is a valid one: the pattern runs only for ids not on record.
  local rec = eng.store:get("applications", id)
  if not rec and not util.is_uuid(id) then
    return nil, reply.error(400, "invalid_application_id", ("application_id '%s' is not a valid id"):format(id))
  end
  if not rec then
    return nil, reply.error(404, "application_not_found", ("application %s does not exist"):format(id))
  end
  return rec
end

_M.find = find

local H = {}
_M.handlers = H

function H.create_application(eng, ctx)
  local details, extras = _M.validate(ctx.body, eng.versions)
  if not details then return reply.bad_request(extras) end
  local allowed, cstatus, ccode, cmessage = confine.check(details.application, eng.opts, ctx.user)
  if allowed then
    allowed, cstatus, ccode, cmessage = confine.check_details(details, eng.opts, ctx.user,
      eng.store:settings().default_configs)
  end
  if not allowed then return reply.error(cstatus, ccode, cmessage) end
  extras.any_program = ctx.user and ctx.user.role == "admin" or nil
  local rec, status, code, message = _M.create(eng, details, extras)
  if not rec then return reply.error(status, code, message) end
  return 202, { application_id = rec.id, state = rec.state, start_time = util.long_time(rec.start_ts) }
end

function H.list_applications(eng, ctx)
  local q = ctx.query
  local want
  if q.state and q.state ~= "" then
    want = {}
    for s in q.state:gmatch("[^,%s]+") do want[s:upper()] = true end
  end
  local limit, start = nil, 0
  if q.limit and q.limit ~= "" then
    limit = tointeger(q.limit)
    if not limit or limit < 1 then return reply.bad_request("limit must be a positive integer") end
  end
  if q.start and q.start ~= "" then
    start = tointeger(q.start)
    if not start or start < 0 then return reply.bad_request("start must be a non-negative integer") end
  end
  local since = q.changed_since
  if since and since ~= "" and not eng.opts.no_list_changes then
    local from = changes.parse(eng, since)
    if not from then
      return reply.bad_request("changed_since must be 0 or the changes.cursor of an earlier answer")
    end
    if start ~= 0 then return reply.bad_request("start cannot be used with changed_since (page with the cursor)") end
    local recs, cursor, more = changes.since(eng, from, limit, want)
    local out = util.array()
    for i = 1, #recs do out[i] = _M.list_item(recs[i]) end
    return 200, { applications = out, changes = { cursor = cursor, more = more } }
  end
  local out, seen = util.array(), 0
  for _, rec in ipairs(eng.store:list("applications")) do
    if not want or want[rec.state] then
      seen = seen + 1
      if seen > start and (not limit or #out < limit) then out[#out + 1] = _M.list_item(rec) end
    end
  end
  return 200, { applications = out }
end

function H.get_application(eng, ctx)
  local rec, s, b, h = find(eng, ctx.params.application_id)
  if not rec then return s, b, h end
  return 200, _M.view(rec)
end

-- Read only (reply.encode keeps a Content-Type it is given).
local JSON_HEADERS = { ["Content-Type"] = "application/json" }

function H.get_application_state(eng, ctx)
  local rec, s, b, h = find(eng, ctx.params.application_id)
  if not rec then return s, b, h end
  local json = views.status_json(rec)
  if not json then return 200, _M.status(rec) end -- reply.encode says what failed
  return 200, json, JSON_HEADERS
end

function H.delete_application(eng, ctx)
  local rec, s, b, h = find(eng, ctx.params.application_id)
  if not rec then return s, b, h end
  _M.stop(eng, rec, "stopped_by_user", "the application was stopped by a DELETE request")
  return 204
end

return _M
