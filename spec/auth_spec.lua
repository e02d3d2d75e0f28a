local auth = require("analytics_engine.auth")
local util = require("analytics_engine.util")

local function jwt(claims)
  return util.b64url_encode('{"alg":"HS256"}') .. "." .. util.b64url_encode(util.json_encode(claims)) .. ".sig"
end

describe("auth", function()
  it("sends a given token as Bearer", function()
    assert.equals("Bearer t0k", auth.new { token = "t0k" }:header_value(nil, "", 0))
  end)
  it("encodes username:api_key as ZenApiKey", function()
    assert.equals("ZenApiKey YWRtaW46c2VjcmV0",
      auth.new { username = "admin", api_key = "secret" }:header_value(nil, "", 0))
  end)
  it("raises for a config without usable credentials", function()
    assert.has_error(function() auth.new { username = "admin" } end,
      "bad argument: auth needs token, username+api_key or username+password")
  end)
  it("does not print its secret", function()
    local a = auth.new { username = "admin", password = "hunter2" }
    assert.is_nil(tostring(a):find("hunter2"))
  end)
  it("reads exp and iat from a JWT", function()
    assert.same({ exp = 200, iat = 100 }, auth.jwt_claims(jwt { exp = 200, iat = 100 }))
  end)

  describe("exchange", function()
    local calls, now_wall
    local function fetch_with(token)
      return function(req)
        calls[#calls + 1] = util.json_decode(req.body)
        return { status = 200, headers = {}, body = util.json_encode { token = token } }
      end
    end
    before_each(function() calls = {}; now_wall = os.time() end)

    it("posts username and password to the authorize endpoint", function()
      local a = auth.new { username = "u", password = "p" }
      assert.equals("Bearer T", a:header_value(fetch_with("T"), "http://h", 0))
      assert.same({ username = "u", password = "p" }, calls[1])
    end)
    it("posts username and api_key when exchange is asked for", function()
      local a = auth.new { username = "u", api_key = "k", exchange = true }
      a:header_value(fetch_with("T"), "http://h", 0)
      assert.same({ username = "u", api_key = "k" }, calls[1])
    end)
    it("reuses the token until 80% of its lifetime", function()
      local token = jwt { iat = now_wall, exp = now_wall + 1000 }
      local a = auth.new { username = "u", password = "p" }
      a:header_value(fetch_with(token), "http://h", 0)
      a:header_value(fetch_with(token), "http://h", 790)
      assert.equals(1, #calls)
      a:header_value(fetch_with(token), "http://h", 801)
      assert.equals(2, #calls)
    end)
    it("fetches a new token after invalidate", function()
      local a = auth.new { username = "u", password = "p" }
      a:header_value(fetch_with("T"), "http://h", 0)
      assert.is_true(a:invalidate())
      a:header_value(fetch_with("T"), "http://h", 1)
      assert.equals(2, #calls)
    end)
    it("returns an error without the password when the exchange is refused", function()
      local a = auth.new { username = "u", password = "hunter2" }
      local h, err = a:header_value(function()
        return { status = 401, headers = {}, body = '{"message":"Invalid user or password"}' }
      end, "http://h", 0)
      assert.is_nil(h)
      assert.equals(401, err.status)
      assert.matches("token exchange failed: Invalid user or password", err.message)
      assert.is_nil(tostring(err):find("hunter2"))
    end)
  end)
end)
