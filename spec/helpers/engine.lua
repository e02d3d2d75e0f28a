--- A real local engine for specs: started on 127.0.0.1, port 0, with a fresh
-- data directory, and raw HTTP against it.
--   local helper = require("helpers.engine")
--   local e = helper.start{ "--token-ttl", "1" }     -- errors loudly if it cannot start
--   local status, json, headers, raw = helper.request(e, "GET", helper.v4(e, "/default_runtime"))
--   helper.stop(e)                                  -- also removes the temporary data directory
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local launcher = require("analytics_engine.engine.launcher")
local ae = require("analytics_engine")

local helper = {}

-- What the engine's answers look like: the v4 API's long time and ISO time,
-- and an id no record has.
helper.LONG_TIME = "^%a+ %d%d %a+ %d%d%d%d %d%d:%d%d:%d%d%.%d%d%d%+0000$"
helper.ISO_TIME = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$"
helper.MISSING = "00000000-0000-4000-8000-000000000000"

local exists = util.exists

--- How to run `aeflow`: $AEFLOW_BIN, else build/aeflow (make build), else PATH.
function helper.bin()
  local env = os.getenv("AEFLOW_BIN")
  if env and env ~= "" and exists(env) then return env end
  if exists("build/aeflow") then return "build/aeflow" end
  return "aeflow"
end

local session

--- Start an engine with extra `aeflow serve` arguments; opts.data_dir reuses a directory.
function helper.start(extra_args, opts)
  opts = opts or {}
  local e, err = launcher.start{ data_dir = opts.data_dir, args = extra_args, bin = opts.bin or helper.bin(),
                                 confined = opts.confined }
  if not e then error("cannot start the local engine: " .. tostring(err), 2) end
  e.temp_data = opts.data_dir == nil
  return e
end

--- Stop the engine; a data directory that helper.start made is removed too
-- (pass keep = true to restart on it: helper.start(args, { data_dir = e.data_dir })).
function helper.stop(e, keep)
  if not e then return end
  local ok, how = e:stop()
  if e.temp_data and not keep then helper.cleanup(e) end
  for _, p in ipairs(e.made or {}) do os.execute("rm -rf '" .. p .. "'") end
  return ok, how
end

--- Remove an engine's data directory (after stop).
function helper.cleanup(e)
  if e and e.data_dir and e.data_dir:find("^/tmp/") then
    os.execute("rm -rf '" .. e.data_dir .. "'")
  end
end

--- A client of the engine `e` as its admin (the generated credentials), with
-- the client options of `extra` added (loop, retries, cafile, ...).
function helper.client(e, extra)
  local opts = { url = e.url, instance_id = e.instance_id, auth = { username = e.username, api_key = e.api_key } }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return assert(ae.client(opts))
end

--- The full path of an instance endpoint: helper.v4(e, "/spark_applications").
function helper.v4(e, suffix, instance_id)
  return "/v4/analytics_engines/" .. (instance_id or e.instance_id) .. (suffix or "")
end

function helper.zen(e, username, api_key)
  return "ZenApiKey " .. util.b64encode((username or e.username) .. ":" .. (api_key or e.api_key))
end

--- A raw request. body: table (JSON-encoded) or string; headers: map that
-- replaces the defaults (Authorization = false sends none).
-- -> status, decoded JSON (or nil), headers (lowercased), raw body
function helper.request(e, method, path, body, headers)
  session = session or core.http_session()
  local h = { Authorization = helper.zen(e), Accept = "application/json" }
  if body ~= nil then h["Content-Type"] = "application/json" end
  for k, v in pairs(headers or {}) do
    if v == false then h[k] = nil else h[k] = v end
  end
  if type(body) == "table" then body = assert(util.json_encode(body)) end
  local res, err = session:request{ method = method, url = e.url .. path, headers = h, body = body, timeout = 30 }
  if not res then return nil, err end
  local json
  if res.body and res.body ~= "" and (res.headers["content-type"] or ""):find("json") then
    json = util.json_decode(res.body)
  end
  return res.status, json, res.headers, res.body
end

--- Poll until fn() returns a truthy value or `timeout` seconds pass -> the value.
function helper.eventually(fn, timeout)
  local deadline = core.monotime() + (timeout or 10)
  while true do
    local v = fn()
    if v then return v end
    if core.monotime() > deadline then return nil end
    core.sleep(0.05)
  end
end

--- An application's state now (nil when the engine has no such application).
function helper.state_of(e, id)
  local _, b = helper.request(e, "GET", helper.v4(e, "/spark_applications/" .. id))
  return b and b.state
end

--- Wait until an application reaches a terminal state -> its get_application body.
function helper.wait_app(e, id, timeout)
  local body
  helper.eventually(function()
    local _, b = helper.request(e, "GET", helper.v4(e, "/spark_applications/" .. id))
    body = b
    local s = b and b.state
    return s == "FINISHED" or s == "FAILED" or s == "STOPPED"
  end, timeout or 20)
  return body
end

--- spec/helpers/hostile_ws_client.py against the WebSocket `path` of `e`, doing
-- its steps ("read:1", "text:hi", "drop", ...) as `auth` (the admin's
-- ZenApiKey header when nil) -> what it printed.
function helper.hostile_ws(e, path, auth, ...)
  local args = { "python3", "spec/helpers/hostile_ws_client.py", e.url:gsub("^http", "ws") .. path,
                 auth or helper.zen(e) }
  for _, a in ipairs({ ... }) do args[#args + 1] = a end
  for i, a in ipairs(args) do args[i] = "'" .. a:gsub("'", "'\\''") .. "'" end
  local p = assert(io.popen(table.concat(args, " ") .. " 2>&1"))
  local out = p:read("a")
  p:close()
  return out
end

--- Create a cluster named `name` and wait until it is ACTIVE -> its id.
function helper.active_cluster(e, name)
  local status, b = helper.request(e, "POST", helper.v4(e, "/spark_clusters"), { cluster_details = { name = name } })
  assert(status == 202, "create_cluster answered " .. tostring(status))
  local deadline = core.monotime() + 20
  while true do
    local _, c = helper.request(e, "GET", helper.v4(e, "/spark_clusters/" .. b.id))
    if c and c.state == "ACTIVE" then return b.id end
    assert(core.monotime() < deadline, "the cluster did not become ACTIVE")
    core.sleep(0.05)
  end
end

--- Submit application_details -> application_id (asserts the 202).
function helper.submit(e, details, extra)
  local payload = { application_details = details }
  for k, v in pairs(extra or {}) do payload[k] = v end
  local status, body = helper.request(e, "POST", helper.v4(e, "/spark_applications"), payload)
  assert(status == 202, "submit answered " .. tostring(status) .. ": " .. tostring(body and util.json_encode(body)))
  return body.application_id
end

--- An application's stdout or stderr through the engine's log endpoint.
function helper.logs(e, id, stream)
  local status, _, _, raw = helper.request(e, "GET", "/engine/v1/applications/" .. id .. "/logs?stream="
    .. (stream or "stdout"))
  return raw, status
end

--- Is any live (non-zombie) process left in process group `pgid`? Zombies
-- reparented to a container's init may linger unreaped; they run nothing.
function helper.group_alive(pgid)
  local p = assert(io.popen("ps -eo pgid=,stat="))
  local alive = false
  for line in p:lines() do
    local g, stat = line:match("^%s*(%d+)%s+(%S+)")
    if tonumber(g) == pgid and not stat:find("^Z") then alive = true end
  end
  p:close()
  return alive
end

--- Write a file (for sample applications) -> path.
function helper.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

--- A fresh private (0700) directory under /tmp named after `prefix`.
function helper.temp_dir(prefix)
  return assert(launcher.temp_dir(prefix))
end

--- A fresh directory under /tmp with sample applications in it:
-- helper.app_root { ["ok.sh"] = "exit 0\n" } -> path (remove it with rm -rf).
function helper.app_root(files)
  local root = os.tmpname()
  os.remove(root)
  assert(os.execute("mkdir -p " .. root))
  for name, text in pairs(files or {}) do helper.write(root .. "/" .. name, text) end
  return root
end

--- A users file (for --users) with one user "<role>1" per role of `keys`
-- ({ role = api_key }) and the rows of `extra` -> path.
function helper.users_file(keys, extra)
  local list = {}
  for role, key in pairs(keys) do
    list[#list + 1] = { username = role .. "1", role = role, api_key_sha256 = helper.sha256_hex(key) }
  end
  for _, row in ipairs(extra or {}) do list[#list + 1] = row end
  return helper.write(os.tmpname(), util.json_encode(list))
end
--- An engine with users: one "<role>1" per role of `keys` plus the rows of
-- opts.users (helper.users_file), an app root holding ok.sh, and the extra
-- arguments opts.args. helper.stop(e) removes the users file and the root too.
function helper.start_with_roles(keys, opts)
  opts = opts or {}
  local users_file = helper.users_file(keys, opts.users)
  local root = helper.app_root { ["ok.sh"] = "echo ok\n" }
  local args = { "--users", users_file, "--app-root", root }
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  local e = helper.start(args)
  e.made = { users_file, root }
  return e
end

--- The Authorization header for `role` of a users file made by
-- helper.users_file(keys): "admin" is the engine's generated admin.
function helper.zen_as(e, keys, role)
  if role == "admin" then return helper.zen(e) end
  return helper.zen(e, role .. "1", keys[role])
end
function helper.sha256_hex(s) return util.hex(core.sha256(s)) end

--- A path for a state database that does not exist yet, and its removal
-- with the WAL files SQLite keeps beside it.
function helper.db_path()
  local path = os.tmpname()
  os.remove(path)
  return path
end
function helper.remove_db(path)
  for _, s in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. s) end
end

return helper
