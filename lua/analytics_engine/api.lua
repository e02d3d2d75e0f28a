--- The v4 API as data: one row per operation.
-- The client makes one method per row, the local engine routes by the same
-- rows, and `aeflow call`/`aeflow plan` read them too, so the three cannot
-- drift apart. Adding an operation is adding a row.
--
-- Row fields:
--   name      operation id (the vendor SDK's name; also the client method)
--   method    HTTP method
--   path      template under `base`; {instance_id} comes from the client,
--             other {ids} are the method's leading arguments, in order
--   body      nil (none), "json", or "merge-patch"
--   wrap      the body is sent as { [wrap] = args } unless it already has
--             that key; `lift` names keys kept at the top level
--   query     allowed query parameters (a table argument after the ids)
--   ok        statuses that mean success
--   creates   true when a blind retry could create a second resource
--   auth      false for the token exchange itself
--   websocket true for an endpoint the client opens as a WebSocket
--             (c:connect_kernel, c:connect_cluster): no REST method
--   role      the least role that may call it (see ROLES); none for a public door
-- Derived by compile: ids, full_path, ok_set, and jupyter_path (a kernel
-- operation's path under a Jupyter Server's base URL, for a client with
-- `base_path`).
local _M = {}

-- Roles, least to most. viewer reads; user also runs code (applications,
-- kernels, clusters: whoever may create an application may start any of
-- them); editor also changes the instance's settings and history server;
-- admin also runs programs outside the allowed roots when the engine was
-- started with --allow-any-program. docs/security.md is checked against this.
_M.ROLES = { "viewer", "user", "editor", "admin" }
_M.ROLE_RANK = {}
for i, r in ipairs(_M.ROLES) do _M.ROLE_RANK[r] = i end

_M.BASE = "/v4/analytics_engines"
_M.AUTHORIZE_PATH = "/icp4d-api/v1/authorize"

--- The application states no application leaves (the vendor's list). The
-- client, the engine and the reports all read this one set.
_M.TERMINAL_STATES = { FINISHED = true, FAILED = true, STOPPED = true, AUTO_TERMINATED = true,
                       OPS_TERMINATED = true, ERROR = true, KILLED = true }

--- The states an application passes through before one of those (the
-- vendor's and the local engine's). A state in neither set is one a runner
-- cannot interpret: it keeps waiting, and says so.
_M.LIVE_STATES = { ACCEPTED = true, SUBMITTED = true, QUEUED = true, WAITING = true, PENDING = true,
                   STARTING = true, RUNNING = true, STOPPING = true }

--- True for a state the API defines (terminal or not; case-insensitive).
function _M.is_known_state(state)
  if type(state) ~= "string" then return false end
  local up = state:upper()
  return _M.TERMINAL_STATES[up] == true or _M.LIVE_STATES[up] == true
end

--- True for a state no application leaves (case-insensitive; unknown → false).
function _M.is_terminal(state)
  return type(state) == "string" and _M.TERMINAL_STATES[state:upper()] == true
end

-- The vendor's pattern for every id in the API.
_M.UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"

local I = "/{instance_id}"
local APPS = I .. "/spark_applications"
local KERNELS = I .. "/jkg/api/kernels"
local CLUSTERS = I .. "/spark_clusters"
local V, U, E = "viewer", "user", "editor"

_M.operations = {
  { name = "get_instance", method = "GET", role = V, path = I, ok = { 200 } },
  { name = "get_instance_default_runtime", method = "GET", role = V, path = I .. "/default_runtime", ok = { 200 } },
  { name = "replace_instance_default_runtime", method = "PUT", role = E, path = I .. "/default_runtime",
    body = "json", ok = { 200 } },
  { name = "get_instance_default_configs", method = "GET", role = V, path = I .. "/default_configs", ok = { 200 } },
  { name = "replace_instance_default_configs", method = "PUT", role = E, path = I .. "/default_configs",
    body = "json", ok = { 200 } },
  { name = "update_instance_default_configs", method = "PATCH", role = E, path = I .. "/default_configs",
    body = "merge-patch", ok = { 200 } },
  { name = "get_resource_consumption_limits", method = "GET", role = V, path = I .. "/resource_consumption_limits",
    ok = { 200 } },
  { name = "replace_resource_consumption_limits", method = "PUT", role = E,
    path = I .. "/resource_consumption_limits", body = "json", ok = { 200 } },
  { name = "delete_resource_consumption_limits", method = "DELETE", role = E,
    path = I .. "/resource_consumption_limits", ok = { 204 } },
  { name = "get_current_resource_consumption", method = "GET", role = V, path = I .. "/current_resource_consumption",
    ok = { 200 } },
  { name = "start_spark_history_server", method = "POST", role = E, path = I .. "/spark_history_server",
    body = "json", optional_body = true, ok = { 200 }, creates = true },
  { name = "get_spark_history_server", method = "GET", role = V, path = I .. "/spark_history_server", ok = { 200 } },
  { name = "stop_spark_history_server", method = "DELETE", role = E, path = I .. "/spark_history_server",
    ok = { 204 } },
  { name = "create_application", method = "POST", role = U, path = APPS, body = "json",
    wrap = "application_details", lift = { "volumes", "queuing_enabled" }, ok = { 202 }, creates = true },
  { name = "list_applications", method = "GET", role = V, path = APPS,
    query = { "state", "limit", "start", "changed_since" },
    ok = { 200 } },
  { name = "get_application", method = "GET", role = V, path = APPS .. "/{application_id}", ok = { 200 } },
  { name = "get_application_state", method = "GET", role = V, path = APPS .. "/{application_id}/status", ok = { 200 } },
  { name = "delete_application", method = "DELETE", role = U, path = APPS .. "/{application_id}", ok = { 204 } },
  { name = "list_kernelspecs", method = "GET", role = V, path = I .. "/jkg/api/kernelspecs", ok = { 200 } },
  { name = "list_kernels", method = "GET", role = V, path = KERNELS, ok = { 200 } },
  { name = "create_kernel", method = "POST", role = U, path = KERNELS, body = "json", optional_body = true,
    ok = { 201, 200 }, creates = true },
  { name = "get_kernel", method = "GET", role = V, path = KERNELS .. "/{kernel_id}", ok = { 200 } },
  { name = "delete_kernel", method = "DELETE", role = U, path = KERNELS .. "/{kernel_id}", ok = { 204 } },
  { name = "interrupt_kernel", method = "POST", role = U, path = KERNELS .. "/{kernel_id}/interrupt",
    ok = { 204, 200 } },
  { name = "restart_kernel", method = "POST", role = U, path = KERNELS .. "/{kernel_id}/restart", ok = { 200 } },
  { name = "create_cluster", method = "POST", role = U, path = CLUSTERS, body = "json",
    wrap = "cluster_details", ok = { 202 }, creates = true },
  { name = "list_clusters", method = "GET", role = V, path = CLUSTERS, ok = { 200 } },
  { name = "get_cluster", method = "GET", role = V, path = CLUSTERS .. "/{cluster_id}", ok = { 200 } },
  { name = "delete_cluster", method = "DELETE", role = U, path = CLUSTERS .. "/{cluster_id}", ok = { 204 } },
}

-- The WebSocket endpoints: the client opens them as sessions (kernel.lua,
-- connect.lua); the engine routes them like the rows above. Both run code,
-- so both need the role that may create applications.
_M.websockets = {
  { name = "connect_kernel", method = "GET", role = U, path = KERNELS .. "/{kernel_id}/channels", websocket = true,
    ok = { 101 } },
  { name = "connect_cluster", method = "GET", role = U, path = CLUSTERS .. "/{cluster_id}/connect", websocket = true,
    ok = { 101 } },
}

-- The local engine's own endpoints (not the vendor's): same row shape, under
-- /engine/v1. The client has them as methods too (`aeflow logs` reads
-- c:engine_application_logs); the service answers them 404.
_M.engine_operations = {
  { name = "engine_application_logs", method = "GET", role = V, absolute = true,
    path = "/engine/v1/applications/{application_id}/logs", query = { "stream", "offset", "format" }, ok = { 200 } },
  { name = "engine_stats", method = "GET", role = V, absolute = true, path = "/engine/v1/stats", ok = { 200 } },
}

-- The token exchange is not under the instance; only the engine routes it.
_M.authorize = { name = "authorize", method = "POST", path = _M.AUTHORIZE_PATH, absolute = true,
                 body = "json", ok = { 200 }, auth = false }

local function compile(op)
  local ids = {}
  for id in op.path:gmatch("{([%w_]+)}") do
    if id ~= "instance_id" then ids[#ids + 1] = id end
  end
  op.ids = ids
  op.full_path = op.absolute and op.path or (_M.BASE .. op.path)
  op.jupyter_path = op.path:match("^/{instance_id}/jkg/(.+)$")
  local ok = {}
  for _, s in ipairs(op.ok) do ok[s] = true end
  op.ok_set = ok
  if op.creates == nil then op.creates = false end
  return op
end

_M.by_name = {}
for _, op in ipairs(_M.operations) do
  compile(op)
  _M.by_name[op.name] = op
end
-- Apart from by_name: `call` and the workflow's call steps take REST operations only.
_M.websocket = {}
for _, op in ipairs(_M.websockets) do
  compile(op)
  _M.websocket[op.name] = op
end
for _, op in ipairs(_M.engine_operations) do compile(op) end
compile(_M.authorize)

--- Fill a path template. `values` maps id names to strings.
function _M.expand(op, values)
  return (op.full_path:gsub("{([%w_]+)}", values))
end

--- The path of a kernel operation at a Jupyter Server whose base URL is
-- `base` ("/" or "/x/"), or nil for an operation a Jupyter Server has not.
function _M.expand_jupyter(op, values, base)
  local p = op.jupyter_path
  return p and base .. p:gsub("{([%w_]+)}", values)
end

return _M
