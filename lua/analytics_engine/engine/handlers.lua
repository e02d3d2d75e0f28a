--- Handlers for every operation but the applications' (apps.lua): the
-- instance, its defaults and quotas, the history server, clusters, kernels,
-- the token exchange and the engine's own stats. One function per api.lua
-- row name: h(eng, ctx) -> status, body, headers.
-- ctx = { method, params, query, body (decoded JSON object or nil), headers, user }
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local reply = require("analytics_engine.engine.reply")
local apps = require("analytics_engine.engine.apps")
local schemas = require("analytics_engine.schemas")
local history = require("analytics_engine.engine.history")
local clusters = require("analytics_engine.engine.clusters")
local logs = require("analytics_engine.engine.logs")
local kernels = require("analytics_engine.engine.kernels")
local answers = require("analytics_engine.engine.answers")

local _M = {}
local H = {}
_M.handlers = H
for name, h in pairs(apps.handlers) do H[name] = h end
for name, h in pairs(clusters.handlers) do H[name] = h end
for name, h in pairs(logs.handlers) do H[name] = h end
-- kernels: forwarded to a Jupyter Server
for name, h in pairs(kernels.handlers) do H[name] = h end

local floor = math.floor
local null = util.null

_M.SPARK_VERSIONS = { "3.3", "3.4", "3.5" }
_M.DEFAULT_SPARK_VERSION = "3.4"

--- {set = {["3.4"] = true, ...}, text = "3.3, 3.4, 3.5"}
function _M.versions()
  local set = {}
  for _, v in ipairs(_M.SPARK_VERSIONS) do set[v] = true end
  return { set = set, text = table.concat(_M.SPARK_VERSIONS, ", ") }
end

-- The machine's size, for the instance's default quota: read once (it does
-- not change while the engine runs; /proc/cpuinfo is long on a big machine).
local machine_cpus, machine_gib

local function machine()
  if machine_cpus then return machine_cpus, machine_gib end
  local cpus = 0
  local f = io.open("/proc/cpuinfo", "r")
  if f then
    for line in f:lines() do if line:find("^processor%s*:") then cpus = cpus + 1 end end
    f:close()
  end
  local mem_gib
  f = io.open("/proc/meminfo", "r")
  if f then
    local kb = tonumber((f:read("a") or ""):match("MemTotal:%s*(%d+)"))
    f:close()
    if kb then mem_gib = floor(kb / 1024 / 1024) end
  end
  machine_cpus, machine_gib = cpus > 0 and cpus or 4, (mem_gib and mem_gib > 0) and mem_gib or 16
  return machine_cpus, machine_gib
end

_M.QUOTA_CORES, _M.QUOTA_MEMORY = "16", "64Gi"

--- Fill in the settings a fresh (or older) state lacks. quota: the instance
-- quota ({cores, memory} strings), the fresh limits' values.
function _M.init_settings(s, instance_id, quota)
  local now = core.time()
  s.instance = s.instance or { instance_id = instance_id, creation_ts = now, state_change_ts = now }
  s.default_runtime = s.default_runtime or { spark_version = _M.DEFAULT_SPARK_VERSION }
  s.default_configs = s.default_configs or {}
  if s.limits == nil then
    s.limits = { max_cores = quota and quota.cores or _M.QUOTA_CORES,
                 max_memory = quota and quota.memory or _M.QUOTA_MEMORY }
  end
  s.history = s.history or { state = "stopped" }
  return s
end

---------------------------------------------------------------------------
-- instance

function H.get_instance(eng)
  local s = eng.store:settings()
  local i = s.instance
  -- The quota is the instance's (--quota-cores/--quota-memory); what is
  -- available is under the limits when they are lower.
  local q = eng.opts.quota or {}
  local cpu_n, mem_n = machine()
  local cpu = q.millicores and floor(q.millicores / 1000) or cpu_n
  local mem = q.mib and floor(q.mib / 1024) or mem_n
  local cap_c, cap_m = apps.capacity(eng)
  if cap_c == math.huge then cap_c = cpu * 1000 end
  if cap_m == math.huge then cap_m = mem * 1024 end
  local _, used_c, used_m = apps.consumption(eng)
  return 200, {
    instance_id = i.instance_id,
    context_type = "space_instance",
    namespace = "local",
    creation_time = util.long_time(i.creation_ts),
    dataplane_type = "NA",
    endpoint_type = "local",
    home_volume = "local-engine-home",
    resource_quota = {
      cpu_quota = cpu,
      memory_quota_gibibytes = mem,
      avail_cpu_quota = math.max(0, floor((cap_c - used_c) / 1000)),
      avail_memory_quota_gibibytes = math.max(0, floor((cap_m - used_m) / 1024)),
    },
    state = "Created",
    state_change_time = util.long_time(i.state_change_ts),
  }
end

function H.get_instance_default_runtime(eng)
  return 200, { spark_version = eng.store:settings().default_runtime.spark_version }
end

function H.replace_instance_default_runtime(eng, ctx)
  local v = ctx.body.spark_version -- required by the schema
  if not eng.versions.set[v] then
    return reply.bad_request(("spark_version must be one of %s"):format(eng.versions.text))
  end
  local s = eng.store:settings()
  s.default_runtime = { spark_version = v }
  eng.store:touch("settings")
  return 200, { spark_version = v }
end

function H.get_instance_default_configs(eng)
  return 200, util.copy(eng.store:settings().default_configs)
end

-- The default_configs bodies are held to their schemas (a map of strings;
-- PATCH: or null) before a handler runs.
function H.replace_instance_default_configs(eng, ctx)
  local s = eng.store:settings()
  s.default_configs = util.copy(ctx.body)
  eng.store:touch("settings")
  return 200, util.copy(s.default_configs)
end

function H.update_instance_default_configs(eng, ctx)
  local ct = (ctx.headers["content-type"] or ""):match("^%s*([^;%s]+)")
  ct = ct and ct:lower()
  if ct ~= "application/merge-patch+json" and ct ~= "application/json" then
    return reply.error(415, "unsupported_media_type",
      "Content-Type must be application/merge-patch+json or application/json")
  end
  local s = eng.store:settings()
  -- The merged map is held to PUT's bound too: patches one after another
  -- grew it without end, and every application keeps a copy of it.
  local n, size, bound = 0, 0, schemas.replace_instance_default_configs
  for k, v in pairs(s.default_configs) do
    if ctx.body[k] == nil then n, size = n + 1, size + #k + #v end
  end
  for k, v in pairs(ctx.body) do
    if v ~= null then n, size = n + 1, size + #k + #v end
  end
  if n > bound.max then
    return reply.bad_request(("default_configs would have %d keys, more than %d"):format(n, bound.max))
  elseif size > bound.bytes then
    return reply.bad_request(("default_configs would hold %d bytes, more than %d"):format(size, bound.bytes))
  end
  for k, v in pairs(ctx.body) do
    if v == null then s.default_configs[k] = nil else s.default_configs[k] = v end
  end
  eng.store:touch("settings")
  return 200, util.copy(s.default_configs)
end

---------------------------------------------------------------------------
-- quotas

-- The service's spelling ("10", "0.5", "500m"; "20Gi", "512M"), and a value
-- the quota can apply: one it cannot parse ("0", "5Ei") would be stored and
-- echoed while the quota went on using the instance's own.
local CORES = { "^%d+$", "^%d+%.%d+$", "^%d+m$" }
local MEMORY = { "^%d+[KMGTP]i?$", "^%d+%.%d+[KMGTP]i?$" }

local function matches_any(v, pats)
  if type(v) ~= "string" then return false end
  for _, p in ipairs(pats) do if v:find(p) then return true end end
  return false
end

function H.get_resource_consumption_limits(eng)
  local lim = eng.store:settings().limits
  if not lim then
    return reply.error(404, "resource_quota_not_found", "no resource consumption limits are set for this instance")
  end
  return 200, { max_cores = lim.max_cores, max_memory = lim.max_memory }
end

function H.replace_resource_consumption_limits(eng, ctx)
  local b = ctx.body
  if not matches_any(b.max_cores, CORES) or not apps.millicores(b.max_cores) then
    return reply.bad_request('max_cores must be a string with a number of cores, such as "10"')
  end
  if not matches_any(b.max_memory, MEMORY) or not apps.memory_mib(b.max_memory) then
    return reply.bad_request('max_memory must be a string with a memory quantity, such as "20Gi"')
  end
  local s = eng.store:settings()
  s.limits = { max_cores = b.max_cores, max_memory = b.max_memory }
  eng.store:touch("settings")
  return 200, { max_cores = b.max_cores, max_memory = b.max_memory }
end

function H.delete_resource_consumption_limits(eng)
  local s = eng.store:settings()
  if not s.limits then
    return reply.error(404, "resource_quota_not_found", "no resource consumption limits are set for this instance")
  end
  s.limits = false
  eng.store:touch("settings")
  return 204
end

function H.get_current_resource_consumption(eng)
  return 200, (apps.consumption(eng))
end

---------------------------------------------------------------------------
-- history server (history.lua: Spark's when installed, else state-only)

local function history_view(eng, h)
  local v = history.describe(eng, h)
  v.state, v.cores, v.memory, v.start_time = h.state, h.cores, h.memory, util.iso_time(h.start_ts)
  return v
end

function H.start_spark_history_server(eng, ctx)
  local s = eng.store:settings()
  if s.history.state == "started" then
    return reply.error(409, "history_server_already_started", "History server already started")
  end
  local b = ctx.body or {}
  local defaults = s.default_configs
  local cores = b.cores ~= nil and b.cores ~= null and b.cores or defaults["ae.spark.history-server.cores"] or "1"
  local memory = b.memory ~= nil and b.memory ~= null and b.memory
    or defaults["ae.spark.history-server.memory"] or "4G"
  -- numbers as the schema took them (a resource: cores, or memory in MiB), kept as the service's strings
  if type(cores) == "number" then cores = ("%.15g"):format(cores) end
  if type(memory) == "number" then memory = ("%.15g"):format(memory) end
  if type(cores) ~= "string" or not apps.millicores(cores) then
    return reply.bad_request('cores must be a string with a number of cores, such as "1"')
  end
  if type(memory) ~= "string" or not apps.memory_mib(memory) then
    return reply.bad_request('memory must be a string with a memory size, such as "4G"')
  end
  local h = { state = "started", cores = cores, memory = memory, start_ts = core.time() }
  local ok, err = history.start(eng, h)
  if not ok then return reply.error(500, "history_server_failed", err) end
  s.history = h
  eng.store:touch("settings")
  return 200, history_view(eng, h)
end

function H.get_spark_history_server(eng)
  local h = eng.store:settings().history
  if h.state ~= "started" then
    return reply.error(404, "history_server_not_found", "History server already stopped")
  end
  return 200, history_view(eng, h)
end

function H.stop_spark_history_server(eng)
  local s = eng.store:settings()
  if s.history.state ~= "started" then
    return reply.error(409, "history_server_already_stopped", "History server already stopped")
  end
  history.stop(eng, s.history)
  s.history = { state = "stopped" }
  eng.store:touch("settings")
  return 204
end

---------------------------------------------------------------------------
-- token exchange and the engine's own endpoints

function H.authorize(eng, ctx)
  local token, status, message = eng.auth:exchange(ctx.body)
  if not token then
    return reply.error(status, status == 401 and "invalid_credentials" or "bad_request", message)
  end
  return 200, { _messageCode_ = "200", message = "Success", token = token }
end

-- requests: every request by operation, those the server answered from a
-- kept answer (engine/answers.lua) included; replayed: those alone.
function H.engine_stats(eng)
  local requests, replayed = answers.count(eng, util.copy(eng.stats.requests))
  return 200, { requests = requests, replayed = replayed, faults = util.copy(eng.stats.faults),
                applications_created = eng.stats.applications_created }
end

return _M
