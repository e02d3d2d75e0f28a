-- Roles are data and cover every door: this spec walks the engine's whole
-- door list (router.doors(): api.lua's operations, the token exchange, the
-- WebSockets, the engine's own endpoints, the Jupyter pass-through, the page)
-- for every role, no credentials and bad credentials, and expects 401 for who
-- you are, 403 for what you may do, and an answer past the check otherwise.
-- The WebSocket doors are also opened for real (an Upgrade): same answers.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local api = require("analytics_engine.api")
local router = require("analytics_engine.engine.router")
local helper = require("helpers.engine")

local KEYS = { editor = "editor-key-0123456789", user = "user-key-0123456789", viewer = "viewer-key-0123456789" }
local WHO = { "admin", "editor", "user", "viewer", "none", "bad" }

local function hostile(e, path, auth)
  local cmd = ("python3 spec/helpers/hostile_ws_client.py '%s' '%s' read:1 2>&1")
    :format(e.url:gsub("^http", "ws") .. path, auth or "")
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return tonumber(out:match("STATUS (%d+)"))
end

describe("every door x every role", function()
  local e, ids
  lazy_setup(function()
    e = helper.start_with_roles(KEYS, { args = { "--no-jupyter" } })
    local _, a = helper.request(e, "POST", helper.v4(e, "/spark_applications"),
      { application_details = { application = "ok.sh" } })
    local _, c = helper.request(e, "POST", helper.v4(e, "/spark_clusters"), { cluster_details = {} })
    assert.equal(200, (helper.request(e, "POST", helper.v4(e, "/spark_history_server"), {})))
    ids = { instance_id = e.instance_id, application_id = a.application_id, cluster_id = c.id,
            kernel_id = util.uuid4(core.random_bytes) }
    local deadline = core.monotime() + 20
    repeat
      local _, got = helper.request(e, "GET", helper.v4(e, "/spark_clusters/" .. c.id))
      core.sleep(0.05)
    until got.state == "ACTIVE" or core.monotime() > deadline
  end)
  lazy_teardown(function() helper.stop(e) end)

  local function auth_for(who)
    if who == "none" then return false end
    if who == "bad" then return helper.zen(e, "viewer1", "not-the-key") end
    return helper.zen_as(e, KEYS, who)
  end

  local function path_of(door)
    return (door.full_path:gsub("{([%w_]+)}", ids):gsub("%*$", "sessions"))
  end

  -- reads first, so the writes (deletes among them) cannot change what they see
  local doors = router.doors()
  table.sort(doors, function(a, b)
    local ra, rb = a.method == "GET" and 0 or 1, b.method == "GET" and 0 or 1
    if ra ~= rb then return ra < rb end
    return a.name < b.name
  end)

  it("every door has a role, or is one of the few open ones", function()
    local open = {}
    for _, d in ipairs(doors) do
      if d.role == nil then open[#open + 1] = d.name else assert.truthy(api.ROLE_RANK[d.role], d.name) end
    end
    table.sort(open)
    assert.same({ "authorize", "page_login", "page_login_form" }, open)
  end)

  it("docs/security.md's door table is the one the engine enforces", function()
    local doc = assert(util.read_file("docs/security.md"))
    local tbl = doc:match("<!%-%- doors:begin[^\n]*%-%->\n(.-)<!%-%- doors:end %-%->")
    assert.truthy(tbl, "docs/security.md has no doors:begin/doors:end section")
    assert.equal(router.doors_markdown(), tbl, "regenerate the table: lua5.4 -e "
      .. "'package.path=\"lua/?.lua;\"..package.path io.write(require(\"analytics_engine.engine.router\")"
      .. ".doors_markdown())'")
  end)

  it("code runs only for the role that may create applications", function()
    local need = api.by_name.create_application.role
    for _, d in ipairs(doors) do
      if d.name:find("kernel") and d.method ~= "GET" or d.websocket or d.name == "create_cluster"
         or d.name == "jupyter_api" then
        assert.is_true(api.ROLE_RANK[d.role] >= api.ROLE_RANK[need], d.name)
      end
    end
  end)

  -- Writes that succeed however often they are made: the body that makes them
  -- succeed, and the status; whoever may pass the door must get it.
  local SUCCEEDS = {
    replace_instance_default_runtime = { { spark_version = "3.4" }, 200 },
    replace_instance_default_configs = { {}, 200 },
    update_instance_default_configs = { {}, 200 },
    replace_resource_consumption_limits = { { max_cores = "16", max_memory = "64Gi" }, 200 },
    create_application = { { application_details = { application = "ok.sh" } }, 202 },
    delete_application = { nil, 204 },
    create_cluster = { { cluster_details = {} }, 202 },
    delete_cluster = { nil, 204 },
  }

  for _, door in ipairs(doors) do
    -- POST /login judges the form's key itself (engine_page_spec, engine_security_spec)
    if door.name ~= "page_login" then
      it(("%s %s: 401 / 403 / passes as its role says"):format(door.method, door.name), function()
        local method = door.method == "*" and "GET" or door.method
        local body = (method == "POST" or method == "PUT" or method == "PATCH") and "{}" or nil
        local success = SUCCEEDS[door.name]
        if success and success[1] then body = util.json_encode(success[1]) end
        for _, who in ipairs(WHO) do
          local headers = { Authorization = auth_for(who) }
          if body then headers["Content-Type"] = "application/json" end
          local status = helper.request(e, method, path_of(door), body, headers)
          local where = ("%s %s as %s"):format(method, path_of(door), who)
          if door.role == nil then
            assert.is_true(status ~= 401 and status ~= 403, where .. ": " .. tostring(status))
          elseif who == "none" or who == "bad" then
            assert.equal(401, status, where)
          elseif api.ROLE_RANK[who] >= api.ROLE_RANK[door.role] then
            assert.is_true(status ~= 401 and status ~= 403, where .. ": " .. tostring(status))
            -- a read of something that exists is a success for whoever may read it
            if method == "GET" and not door.websocket and not door.full_path:find("/jkg/", 1, true) then
              assert.equal(200, status, where)
            elseif success then
              assert.equal(success[2], status, where)
            end
          else
            assert.equal(403, status, where)
          end
        end
      end)
    end
  end

  it("the WebSocket upgrades go through the same check", function()
    -- a fresh cluster: the walk deleted the first one
    local _, c = helper.request(e, "POST", helper.v4(e, "/spark_clusters"), { cluster_details = {} })
    local deadline = core.monotime() + 20
    repeat
      local _, got = helper.request(e, "GET", helper.v4(e, "/spark_clusters/" .. c.id))
      core.sleep(0.05)
    until got.state == "ACTIVE" or core.monotime() > deadline
    local connect = helper.v4(e, "/spark_clusters/" .. c.id .. "/connect")
    local channels = helper.v4(e, "/jkg/api/kernels/" .. ids.kernel_id .. "/channels")
    assert.equal(401, hostile(e, connect, nil))
    assert.equal(401, hostile(e, connect, auth_for("bad")))
    assert.equal(403, hostile(e, connect, auth_for("viewer")))
    assert.equal(101, hostile(e, connect, auth_for("user")))
    assert.equal(101, hostile(e, connect, auth_for("admin")))
    assert.equal(401, hostile(e, channels, nil))
    assert.equal(403, hostile(e, channels, auth_for("viewer")))
    -- past the check: this engine has no Jupyter Server
    assert.equal(503, hostile(e, channels, auth_for("user")))
  end)
end)
