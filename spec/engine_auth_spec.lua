-- The local engine's security: the role matrix (401 for who you are, 403 for
-- what you may do), tokens signed and expiring, request size limits, the
-- default bind address, and no secret in its log, state or files.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local helper = require("helpers.engine")

local sha256_hex = helper.sha256_hex

local KEYS = { editor = "editor-key-0123456789", user = "user-key-0123456789", viewer = "viewer-key-0123456789" }

describe("local engine authorization matrix", function()
  local e
  lazy_setup(function()
    e = helper.start_with_roles(KEYS, { users = {
      { username = "pw", role = "user", password_sha256 = sha256_hex("pw-secret-password") },
    } })
  end)
  lazy_teardown(function() helper.stop(e) end)

  local function as(role) return helper.zen_as(e, KEYS, role) end
  local function call(role, method, suffix, body)
    return helper.request(e, method, helper.v4(e, suffix), body, { Authorization = as(role) })
  end

  -- operation, method, path, body, expected status per role
  local submit = { application_details = { application = "ok.sh" } }
  local MATRIX = {
    { "get_instance_default_runtime", "GET", "/default_runtime", nil,
      { admin = 200, editor = 200, user = 200, viewer = 200 } },
    { "list_applications", "GET", "/spark_applications", nil,
      { admin = 200, editor = 200, user = 200, viewer = 200 } },
    { "create_application", "POST", "/spark_applications", submit,
      { admin = 202, editor = 202, user = 202, viewer = 403 } },
    { "replace_instance_default_configs", "PUT", "/default_configs", {},
      { admin = 200, editor = 200, user = 403, viewer = 403 } },
    { "replace_resource_consumption_limits", "PUT", "/resource_consumption_limits",
      { max_cores = "16", max_memory = "64Gi" }, { admin = 200, editor = 200, user = 403, viewer = 403 } },
    { "replace_instance_default_runtime", "PUT", "/default_runtime", { spark_version = "3.4" },
      { admin = 200, editor = 200, user = 403, viewer = 403 } },
  }
  for _, row in ipairs(MATRIX) do
    for _, role in ipairs({ "admin", "editor", "user", "viewer" }) do
      local want = row[5][role]
      it(("%s: %s answers %d"):format(row[1], role, want), function()
        local status, b = call(role, row[2], row[3], row[4])
        assert.equal(want, status)
        if want == 403 then
          assert.equal("forbidden", b.errors[1].code)
          assert.truthy(b.errors[1].message:find(role .. "1", 1, true))
        end
      end)
    end
  end

  it("a user may stop its applications", function()
    local _, b = call("user", "POST", "/spark_applications", submit)
    assert.equal(204, (call("user", "DELETE", "/spark_applications/" .. b.application_id)))
  end)

  it("an unknown user is a 401, not a 403", function()
    local status = helper.request(e, "GET", helper.v4(e, "/default_runtime"), nil,
      { Authorization = helper.zen(e, "nobody", "whatever") })
    assert.equal(401, status)
  end)

  it("a forbidden request with bad credentials is a 401 (authentication comes first)", function()
    local status = helper.request(e, "PUT", helper.v4(e, "/default_configs"), {},
      { Authorization = helper.zen(e, "viewer1", "wrong") })
    assert.equal(401, status)
  end)

  it("a token carries the role it was issued for", function()
    local _, t = helper.request(e, "POST", "/icp4d-api/v1/authorize",
      { username = "pw", password = "pw-secret-password" }, { Authorization = false })
    local bearer = "Bearer " .. t.token
    assert.equal(200, (helper.request(e, "GET", helper.v4(e, "/default_configs"), nil, { Authorization = bearer })))
    assert.equal(403, (helper.request(e, "PUT", helper.v4(e, "/default_configs"), {}, { Authorization = bearer })))
  end)

  it("a token signed with another key is a 401", function()
    local _, t = helper.request(e, "POST", "/icp4d-api/v1/authorize",
      { username = "pw", password = "pw-secret-password" }, { Authorization = false })
    local h, p = t.token:match("^([^.]+)%.([^.]+)%.")
    local forged = h .. "." .. p .. "." .. util.b64url_encode(core.hmac_sha256("another secret", h .. "." .. p))
    assert.equal(401, (helper.request(e, "GET", helper.v4(e, ""), nil, { Authorization = "Bearer " .. forged })))
  end)

  it("a token whose claims were raised to admin is a 401", function()
    local _, t = helper.request(e, "POST", "/icp4d-api/v1/authorize",
      { username = "pw", password = "pw-secret-password" }, { Authorization = false })
    local h, p, s = t.token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
    local claims = util.json_decode(util.b64url_decode(p))
    claims.username, claims.role = "admin", "admin"
    local forged = h .. "." .. util.b64url_encode(util.json_encode(claims)) .. "." .. s
    assert.equal(401, (helper.request(e, "PUT", helper.v4(e, "/default_configs"), {},
      { Authorization = "Bearer " .. forged })))
  end)

  it("keeps no key, password or token in its log, state or files", function()
    local _, t = helper.request(e, "POST", "/icp4d-api/v1/authorize",
      { username = "pw", password = "pw-secret-password" }, { Authorization = false })
    helper.request(e, "GET", helper.v4(e, ""), nil, { Authorization = "Bearer " .. t.token .. "x" })
    helper.request(e, "GET", helper.v4(e, ""), nil, { Authorization = helper.zen(e, "user1", "wrong-key-xyz") })
    local secrets = { "pw-secret-password", t.token, "wrong-key-xyz" }
    for _, k in pairs(KEYS) do secrets[#secrets + 1] = k end
    local p = assert(io.popen("find '" .. e.data_dir .. "' -type f ! -name credentials.json"))
    local files = {}
    for f in p:lines() do files[#files + 1] = f end
    p:close()
    assert.truthy(#files >= 3)
    for _, f in ipairs(files) do
      local h = assert(io.open(f, "rb"))
      local s = h:read("a")
      h:close()
      for _, secret in ipairs(secrets) do
        assert.falsy(s:find(secret, 1, true), f .. " contains a secret")
      end
      assert.falsy(s:find(e.api_key, 1, true), f .. " contains the admin's key")
    end
  end)
end)

describe("local engine limits and binding", function()
  local e
  lazy_setup(function() e = helper.start({ "--max-body", "1024" }) end)
  lazy_teardown(function() helper.stop(e) end)

  it("binds 127.0.0.1 unless told otherwise", function()
    assert.truthy(e.url:find("^http://127%.0%.0%.1:"))
  end)

  it("answers 413 to a body over --max-body", function()
    local status, b = helper.request(e, "PUT", helper.v4(e, "/default_configs"), { k = ("x"):rep(2000) })
    assert.equal(413, status)
    assert.equal("request_too_large", b.errors[1].code)
  end)

  it("accepts a body under --max-body", function()
    assert.equal(200, (helper.request(e, "PUT", helper.v4(e, "/default_configs"), { k = ("x"):rep(500) })))
  end)

  it("refuses oversized headers with a 4xx and keeps serving", function()
    local status = helper.request(e, "GET", helper.v4(e, "/default_runtime"), nil, { ["X-Big"] = ("y"):rep(65536) })
    assert.truthy(status == nil or (status >= 400 and status < 500), tostring(status))
    assert.equal(200, (helper.request(e, "GET", helper.v4(e, "/default_runtime"))))
  end)
end)
