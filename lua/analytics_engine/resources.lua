--- Spark resource arithmetic: what an application asks for, from its conf
-- over the instance's default_configs, and whether that fits a quota.
-- Pure Lua with Lua 5.1-compatible syntax and no requires, so the engine and
-- the client (quota-aware admission in the runner) share one definition.
--   resources.demand(conf, defaults) -> { cores_m = n, memory_mib = n } | nil, err
--   resources.fits(limits, consumption, demand) -> true | false, reason
--   resources.millicores(v), memory_mib(v), instances(v) -> number | nil
-- Cores are integer millicores ("2" = 2000, "0.5" = 500, "500m" = 500);
-- memory is MiB ("4g", "512m", "2Gi"; a bare number is MiB, as in the
-- service's quota fields). Every parse refuses what is out of range (negative,
-- 1e308, NaN) rather than clamping it: a bad value must not lower a demand.
local _M = {}

local floor = math.floor

_M.MAX_MILLICORES = 1000 * 1000     -- 1000 cores for one driver or executor
_M.MAX_MIB = 16 * 1024 * 1024       -- 16 TiB
_M.MAX_INSTANCES = 1000             -- executors of one application

-- Spark's own defaults when neither the conf nor the instance sets a key.
_M.DEFAULTS = {
  ["spark.driver.cores"] = "1", ["spark.driver.memory"] = "1g",
  ["spark.executor.cores"] = "1", ["spark.executor.memory"] = "1g",
  ["spark.executor.instances"] = "1",
}

local UNIT = { k = 1 / 1024, m = 1, g = 1024, t = 1024 * 1024, p = 1024 * 1024 * 1024 }

local function text(v)
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return nil end
    return string.format("%.17g", v)
  end
  if type(v) ~= "string" then return nil end
  return v
end

--- Cores as integer millicores in 1..max (default MAX_MILLICORES), or nil.
function _M.millicores(v, max)
  local s = text(v)
  if not s then return nil end
  local m = s:match("^%s*(%d+)m%s*$")
  local n
  if m then
    if #m > 12 then return nil end
    n = tonumber(m)
  else
    local d = s:match("^%s*(%d+%.?%d*)%s*$") or s:match("^%s*(%.%d+)%s*$")
    if not d or #d > 15 then return nil end
    n = floor(tonumber(d) * 1000 + 0.5)
  end
  if n < 1 or n > (max or _M.MAX_MILLICORES) then return nil end
  return n
end

--- A memory size in MiB (fractions allowed) in (0, max] (default MAX_MIB), or nil.
function _M.memory_mib(v, max)
  local s = text(v)
  if not s then return nil end
  local d, unit = s:lower():match("^%s*(%d+%.?%d*)%s*([kmgtp]?)i?b?%s*$")
  if not d or #d > 15 then return nil end
  local n = tonumber(d) * (UNIT[unit] or 1)
  if n <= 0 or n > (max or _M.MAX_MIB) then return nil end
  return n
end

--- An executor count: an integer in 0..MAX_INSTANCES, or nil.
function _M.instances(v)
  local s = text(v)
  if not s then return nil end
  local d = s:match("^%s*(%d+)%s*$")
  if not d or #d > 6 then return nil end
  local n = tonumber(d)
  if n > _M.MAX_INSTANCES then return nil end
  return n
end

-- The message for a value that does not parse, naming what is accepted.
_M.EXPECT = {
  cores = ("must be a number of cores between 0.001 and %d (like 2, 0.5 or 500m)"):format(_M.MAX_MILLICORES / 1000),
  memory = ("must be a memory size up to %dt (like 4g or 512m)"):format(_M.MAX_MIB / (1024 * 1024)),
  instances = ("must be an integer between 0 and %d"):format(_M.MAX_INSTANCES),
}

-- The conf keys demand() reads, and how each parses.
_M.KEYS = {
  ["spark.driver.cores"] = "cores", ["spark.executor.cores"] = "cores",
  ["spark.driver.memory"] = "memory", ["spark.executor.memory"] = "memory",
  ["spark.executor.instances"] = "instances",
}
-- Each kind's parser (validate.lua checks the schemas' resource fields by it).
local PARSE = { cores = _M.millicores, memory = _M.memory_mib, instances = _M.instances }
_M.PARSE = PARSE

-- Parsed values by kind, type and text: a run of 10,000 items asks for the
-- demand of each (admission), mostly of the same few values. Bounded: emptied
-- when it reaches MEMO_MAX.
local memo, memo_n, MEMO_MAX = {}, 0, 1024

--- Check one conf value -> parsed | nil, message (nil, nil for a key demand() does not read).
function _M.check(key, v)
  local kind = _M.KEYS[key]
  if not kind then return nil end
  local tv = type(v)
  local mkey = (tv == "string" or tv == "number") and (kind .. "\0" .. tv .. "\0" .. v) or nil
  local n = mkey and memo[mkey]
  if n == nil then
    n = PARSE[kind](v)
    if mkey and n ~= nil then
      if memo_n >= MEMO_MAX then memo, memo_n = {}, 0 end
      memo[mkey], memo_n = n, memo_n + 1
    end
  end
  if n == nil then return nil, _M.EXPECT[kind] end
  return n
end

--- What one application asks for: the driver plus its executors.
-- conf over defaults over Spark's defaults -> { cores_m, memory_mib } | nil, "key: message"
function _M.demand(conf, defaults)
  conf, defaults = conf or {}, defaults or {}
  local v = {}
  for key in pairs(_M.KEYS) do
    local raw = conf[key]
    if raw == nil then raw = defaults[key] end
    if raw == nil then raw = _M.DEFAULTS[key] end
    local n, err = _M.check(key, raw)
    if n == nil then return nil, key .. ": " .. err end
    v[key] = n
  end
  local n = v["spark.executor.instances"]
  return {
    cores_m = v["spark.driver.cores"] + v["spark.executor.cores"] * n,
    memory_mib = v["spark.driver.memory"] + v["spark.executor.memory"] * n,
  }
end

--- Does demand fit beside consumption under limits? Each is
-- { cores_m, memory_mib }; a nil limit field is no limit.
-- -> true | false, reason
function _M.fits(limits, consumption, demand)
  limits, consumption = limits or {}, consumption or {}
  local used_c, used_m = consumption.cores_m or 0, consumption.memory_mib or 0
  if limits.cores_m and used_c + demand.cores_m > limits.cores_m then
    return false, ("needs %dm cores, %dm of %dm are free"):format(demand.cores_m,
      math.max(0, limits.cores_m - used_c), limits.cores_m)
  end
  if limits.memory_mib and used_m + demand.memory_mib > limits.memory_mib then
    return false, ("needs %dMi memory, %dMi of %dMi are free"):format(floor(demand.memory_mib),
      floor(math.max(0, limits.memory_mib - used_m)), floor(limits.memory_mib))
  end
  return true
end

return _M
