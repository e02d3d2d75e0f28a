--- Handlers for every operation but the applications' (apps.lua): the
-- instance, its defaults and quotas, the history server, clusters, kernels,
-- the token exchange and the engine's own stats. One function per api.lua
-- row name: h(eng, ctx) -> status, body, headers.
-- ctx = { method, params, query, body (decoded JSON object or nil), headers, user }
local core = require "analytics_engine.core"
local util = require "analytics_engine.util"
local reply = require "analytics_engine.engine.reply"
local apps = require "analytics_engine.engine.apps"

local _M = {}
local H = {}
_M.handlers = H
for name, h in pairs(apps.handlers) do H[name] = h end

local floor = math.floor
local null = util.null

_M.SPARK_VERSIONS = { "3.3", "3.4", "3.5" }
_M.DEFAULT_SPARK_VERSION = "3.4"
_M.HISTORY_NOTE = "The local engine's history server is state-only: it records start and stop but serves no UI."
_M.KERNELS_MESSAGE = "kernels need a Jupyter Server: install python3-jupyter-server and python3-ipykernel"

--- {set = {["3.4"] = true, ...}, text = "3.3, 3.4, 3.5"}
function _M.versions()
  local set = {}
  for _, v in ipairs(_M.SPARK_VERSIONS) do set[v] = true end
  return { set = set, text = table.concat(_M.SPARK_VERSIONS, ", ") }
end

-- The machine's size, for the instance's default quota.
local function machine()
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
  return cpus > 0 and cpus or 4, (mem_gib and mem_gib > 0) and mem_gib or 16
end

--- Fill in the settings a fresh (or older) state lacks.
function _M.init_settings(s, instance_id)
  local now = core.time()
  s.instance = s.instance or { instance_id = instance_id, creation_ts = now, state_change_ts = now }
  s.default_runtime = s.default_runtime or { spark_version = _M.DEFAULT_SPARK_VERSION }
  s.default_configs = s.default_configs or {}
  if s.limits == nil then
    local cpus, mem = machine()
    s.limits = { max_cores = tostring(cpus), max_memory = mem .. "Gi" }
  end
  s.history = s.history or { state = "stopped" }
  return s
end

---------------------------------------------------------------------------
-- instance

function H.get_instance(eng)
  local s = eng.store:settings()
  local i = s.instance
  local cpu, mem = machine()
  local lim = s.limits
  if lim then
    cpu = floor((apps.millicores(lim.max_cores) or cpu * 1000) / 1000)
    mem = floor((apps.memory_mib(lim.max_memory) or mem * 1024) / 1024)
  end
  local _, used_c, used_m = apps.consumption(eng.store)
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
      avail_cpu_quota = math.max(0, floor(cpu - used_c / 1000)),
      avail_memory_quota_gibibytes = math.max(0, floor(mem - used_m / 1024)),
    },
    state = "Created",
    state_change_time = util.long_time(i.state_change_ts),
  }
end

function H.get_instance_default_runtime(eng)
  return 200, { spark_version = eng.store:settings().default_runtime.spark_version }
end

function H.replace_instance_default_runtime(eng, ctx)
  local v = ctx.body.spark_version
  if v == nil or v == null then return reply.bad_request("spark_version is required") end
  if not eng.versions.set[v] then
    return reply.bad_request(("spark_version must be one of %s"):format(eng.versions.text))
  end
  local s = eng.store:settings()
  s.default_runtime = { spark_version = v }
  eng.store:touch()
  return 200, { spark_version = v }
end

function H.get_instance_default_configs(eng)
  return 200, util.copy(eng.store:settings().default_configs)
end

function H.replace_instance_default_configs(eng, ctx)
  local ok, err = apps.check_string_map(ctx.body, "default_configs")
  if not ok then return reply.bad_request(err) end
  local s = eng.store:settings()
  s.default_configs = util.copy(ctx.body)
  eng.store:touch()
  return 200, util.copy(s.default_configs)
end

function H.update_instance_default_configs(eng, ctx)
  local ct = (ctx.headers["content-type"] or ""):match("^%s*([^;%s]+)")
  ct = ct and ct:lower()
  if ct ~= "application/merge-patch+json" and ct ~= "application/json" then
    return reply.error(415, "unsupported_media_type",
      "Content-Type must be application/merge-patch+json or application/json")
  end
  if not apps.is_object(ctx.body) then return reply.bad_request("default_configs must be an object") end
  for k, v in pairs(ctx.body) do
    if v ~= null and type(v) ~= "string" then
      return reply.bad_request(("default_configs.%s must be a string or null"):format(tostring(k)))
    end
  end
  local s = eng.store:settings()
  for k, v in pairs(ctx.body) do
    if v == null then s.default_configs[k] = nil else s.default_configs[k] = v end
  end
  eng.store:touch()
  return 200, util.copy(s.default_configs)
end

---------------------------------------------------------------------------
-- quotas

local CORES = { "^%d+$", "^%d+%.%d+$", "^%d+m$" }
local MEMORY = { "^%d+[KMGTPE]i?$", "^%d+%.%d+[KMGTPE]i?$" }

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
  if not matches_any(b.max_cores, CORES) then
    return reply.bad_request('max_cores must be a string with a number of cores, such as "10"')
  end
  if not matches_any(b.max_memory, MEMORY) then
    return reply.bad_request('max_memory must be a string with a memory quantity, such as "20Gi"')
  end
  local s = eng.store:settings()
  s.limits = { max_cores = b.max_cores, max_memory = b.max_memory }
  eng.store:touch()
  return 200, { max_cores = b.max_cores, max_memory = b.max_memory }
end

function H.delete_resource_consumption_limits(eng)
  local s = eng.store:settings()
  if not s.limits then
    return reply.error(404, "resource_quota_not_found", "no resource consumption limits are set for this instance")
  end
  s.limits = false
  eng.store:touch()
  return 204
end

function H.get_current_resource_consumption(eng)
  return 200, (apps.consumption(eng.store))
end

---------------------------------------------------------------------------
-- history server (state only)

local function history_view(h)
  return { state = h.state, cores = h.cores, memory = h.memory, start_time = util.iso_time(h.start_ts),
           local_engine_note = _M.HISTORY_NOTE }
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
  if type(cores) == "number" and cores == floor(cores) then cores = ("%d"):format(cores) end
  if type(cores) ~= "string" or not apps.millicores(cores) then
    return reply.bad_request('cores must be a string with a number of cores, such as "1"')
  end
  if type(memory) ~= "string" or not apps.memory_mib(memory) then
    return reply.bad_request('memory must be a string with a memory size, such as "4G"')
  end
  s.history = { state = "started", cores = cores, memory = memory, start_ts = core.time() }
  eng.store:touch()
  return 200, history_view(s.history)
end

function H.get_spark_history_server(eng)
  local h = eng.store:settings().history
  if h.state ~= "started" then
    return reply.error(404, "history_server_not_found", "History server already stopped")
  end
  return 200, history_view(h)
end

function H.stop_spark_history_server(eng)
  local s = eng.store:settings()
  if s.history.state ~= "started" then
    return reply.error(409, "history_server_already_stopped", "History server already stopped")
  end
  s.history = { state = "stopped" }
  eng.store:touch()
  return 204
end

---------------------------------------------------------------------------
-- clusters

local function find_cluster(eng, id)
  if not util.is_uuid(id) then
    return nil, reply.error(400, "invalid_cluster_id", ("cluster_id '%s' is not a valid id"):format(id))
  end
  local rec = eng.store:get("clusters", id)
  if not rec then return nil, reply.error(404, "cluster_not_found", ("cluster %s does not exist"):format(id)) end
  return rec
end

function H.create_cluster(eng, ctx)
  local d = ctx.body.cluster_details
  if d == nil or d == null then return reply.bad_request("cluster_details is required") end
  if not apps.is_object(d) then return reply.bad_request("cluster_details must be an object") end
  if d.name ~= nil and d.name ~= null and type(d.name) ~= "string" then
    return reply.bad_request("cluster_details.name must be a string")
  end
  local conf = {}
  if d.conf ~= nil and d.conf ~= null then
    local ok, err = apps.check_string_map(d.conf, "cluster_details.conf")
    if not ok then return reply.bad_request(err) end
    conf = util.copy(d.conf)
  end
  local s = eng.store:settings()
  local version = s.default_runtime.spark_version
  if type(d.runtime) == "table" and d.runtime.spark_version ~= nil then
    version = d.runtime.spark_version
    if not eng.versions.set[version] then
      return reply.bad_request(("cluster_details.runtime.spark_version must be one of %s"):format(eng.versions.text))
    end
  end
  local now = core.time()
  local id = util.uuid4(core.random_bytes)
  local rec = { id = id, name = type(d.name) == "string" and d.name or ("cluster-" .. id:sub(1, 8)),
                conf = conf, runtime = version, state = "ACCEPTED", creation_ts = now, start_ts = now }
  eng.store:put("clusters", rec)
  eng.clusters_pending[id] = rec
  return 202, { id = id, cluster_id = id, state = rec.state }
end

function H.list_clusters(eng)
  local out = util.array()
  for _, c in ipairs(eng.store:list("clusters")) do
    out[#out + 1] = { id = c.id, name = c.name, state = c.state, start_time = util.iso_time(c.start_ts),
                      end_time = c.finish_ts and util.iso_time(c.finish_ts) or nil,
                      finish_time = c.finish_ts and util.iso_time(c.finish_ts) or nil,
                      default_runtime = { spark_version = c.runtime } }
  end
  return 200, { clusters = out }
end

function H.get_cluster(eng, ctx)
  local c, st, b, h = find_cluster(eng, ctx.params.cluster_id)
  if not c then return st, b, h end
  return 200, {
    cluster_details = { name = c.name, conf = util.copy(c.conf or {}), runtime = { spark_version = c.runtime } },
    mode = "stand-alone",
    cluster_id = c.id,
    state = c.state,
    creation_time = util.long_time(c.creation_ts),
    start_time = util.long_time(c.start_ts),
    finish_time = c.finish_ts and util.long_time(c.finish_ts) or nil,
  }
end

function H.delete_cluster(eng, ctx)
  local c, st, b, h = find_cluster(eng, ctx.params.cluster_id)
  if not c then return st, b, h end
  if c.state ~= "STOPPED" then
    c.state = "STOPPED"
    c.finish_ts = core.time()
    eng.clusters_pending[c.id] = nil
    eng.store:touch()
  end
  return 204
end

--- Clusters become ACTIVE on the tick after they are accepted.
function _M.tick_clusters(eng)
  for id, c in pairs(eng.clusters_pending) do
    c.state = "ACTIVE"
    c.start_ts = core.time()
    eng.clusters_pending[id] = nil
    eng.store:touch()
  end
end

---------------------------------------------------------------------------
-- kernels (a later issue proxies these to a Jupyter Server)

local function kernels_unavailable()
  return reply.error(503, "kernels_unavailable", _M.KERNELS_MESSAGE)
end
_M.kernels_unavailable = kernels_unavailable
for _, name in ipairs({ "list_kernelspecs", "list_kernels", "create_kernel", "get_kernel", "delete_kernel",
                         "interrupt_kernel", "restart_kernel" }) do
  H[name] = kernels_unavailable
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

function H.engine_stats(eng)
  return 200, { requests = util.copy(eng.stats.requests), faults = util.copy(eng.stats.faults),
                applications_created = eng.stats.applications_created }
end

return _M
