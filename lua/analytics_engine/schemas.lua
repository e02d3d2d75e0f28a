--- Request body schemas, by operation name (the names of api.lua). Data only:
-- engine/validate.lua applies them to every decoded body before a handler
-- runs, so each refusal is a 400 naming the field. A node is a table:
--   type      "object" (named fields), "map" (any keys, one value schema),
--             "array", "string", "boolean", "integer", "number" or "any"
--   required  the field must be present and not null
--   fields    object: field name -> node (other fields pass the generic limits)
--   values    map: the node every value must match
--   conf      map: values of the Spark keys resources.lua reads (cores,
--             memory, executor count) and of the engine's own keys
--             (ENGINE_CONF) must parse and be in range
--   items     array: the node every item must match
--   max       the most items (array), keys (map) or bytes (string)
--   bytes     map: the most bytes of its keys and string values together
--   min       the fewest bytes (string); the least value (integer, number)
--   upto      the largest value (integer, number)
--   nullable  a string map value may be null (merge-patch: delete the key)
--   root      how messages name the body itself (a top-level node only)
--   resource  "cores", "memory" or "instances": a string or number that
--             resources.lua parses in range (type is then "any")
-- Beyond a schema, every body is held to LIMITS: nesting, sizes, finite
-- numbers, valid UTF-8 without NUL in every key and string.
local _M = {}

_M.LIMITS = {
  depth = 32,       -- nesting of objects and arrays
  items = 10000,    -- items of any array
  keys = 10000,     -- keys of any object
  string = 262144,  -- bytes of any string or key
}

local function str(o)
  o = o or {}
  o.type = "string"
  return o
end

local function object(fields, o)
  o = o or {}
  o.type, o.fields = "object", fields
  return o
end

local function array(items, max, o)
  o = o or {}
  o.type, o.items, o.max = "array", items, max
  return o
end

local function map(values, max, o)
  o = o or {}
  o.type, o.values, o.max = "map", values, max
  return o
end

-- The engine's own conf keys (an application's conf, default_configs): what
-- each must parse as. Unchecked, a bad one was taken and then ignored (no
-- time limit at all), or failed a later request that never sent it.
_M.ENGINE_CONF = {
  ["ae.local-engine.timeout"] = "duration",
  ["ae.spark.history-server.cores"] = "cores",
  ["ae.spark.history-server.memory"] = "memory",
}
_M.MAX_DURATION = 366 * 86400 -- seconds: an application time limit of at most a year

local MAX_CONF = 1000
local PATH = 4096
local TEXT = 65536

-- Spark conf: string values; the resource keys are parsed and bounded.
local spark_conf = map(str { max = TEXT }, MAX_CONF, { conf = true })

local runtime = object { spark_version = str { max = 64 } }

_M.create_application = object {
  application_details = object({
    application = str { required = true, min = 1, max = PATH },
    arguments = array(str { max = TEXT }, 5000),
    class = str { max = 1024 }, name = str { max = 1024 },
    jars = str { max = TEXT }, packages = str { max = TEXT }, repositories = str { max = TEXT },
    files = str { max = TEXT }, archives = str { max = TEXT },
    conf = spark_conf,
    env = map(str { max = TEXT }, MAX_CONF),
    runtime = runtime,
  }, { required = true }),
  volumes = array(object {
    name = str { max = 1024 }, mount_path = str { max = PATH }, source_sub_path = str { max = PATH },
  }, 100),
  queuing_enabled = { type = "boolean" },
}

_M.create_cluster = object {
  cluster_details = object({
    name = str { max = 1024 },
    conf = spark_conf,
    runtime = runtime,
  }, { required = true }),
}

-- default_configs: every application keeps a copy, so the whole map is bounded
-- too (PATCH holds the merged map to the same bounds).
_M.replace_instance_default_configs = map(str { max = TEXT }, MAX_CONF,
  { conf = true, root = "default_configs", bytes = 1024 * 1024 })
_M.update_instance_default_configs = map(str { max = TEXT, nullable = true }, MAX_CONF,
  { conf = true, root = "default_configs" })
_M.replace_instance_default_runtime = object { spark_version = str { required = true, max = 64 } }

_M.replace_resource_consumption_limits = object {
  max_cores = str { max = 64 }, max_memory = str { max = 64 },
}

_M.start_spark_history_server = object {
  cores = { type = "any", resource = "cores" }, memory = { type = "any", resource = "memory" },
}

_M.create_kernel = object {
  name = str { max = 256 }, path = str { max = PATH },
}

_M.authorize = object {
  username = str { max = 1024 }, password = str { max = 4096 }, api_key = str { max = 4096 },
}

return _M
