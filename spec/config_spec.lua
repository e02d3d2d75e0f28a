local config = require("analytics_engine.config")

local function env(t) return function(k) return t[k] end end

describe("config", function()
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
  end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  local function write(name, text, mode)
    local p = dir .. "/" .. name
    local f = assert(io.open(p, "w"))
    f:write(text)
    f:close()
    os.execute(("chmod %s %s"):format(mode or "600", p))
    return p
  end
  local function mode_of(p)
    local h = io.popen("stat -c %a " .. p)
    local m = tonumber(h:read("l"), 8)
    h:close()
    return m
  end

  it("prefers arguments over the environment", function()
    local c = config.resolve({ url = "http://a" }, env { AE_URL = "http://b" })
    assert.equals("http://a", c.url)
  end)
  it("reads AE_URL, AE_INSTANCE_ID and AE_TOKEN", function()
    local c = config.resolve({}, env { AE_URL = "http://b", AE_INSTANCE_ID = "i", AE_TOKEN = "t" })
    assert.same({ url = "http://b", instance_id = "i", auth = { token = "t" } }, c)
  end)
  it("reads username and api key from the environment", function()
    local c = config.resolve({ url = "u", instance_id = "i" }, env { AE_USERNAME = "n", AE_API_KEY = "k" })
    assert.same({ username = "n", api_key = "k" }, c.auth)
  end)
  it("falls back to the profile file", function()
    local p = write("c.json", '{"profiles":{"default":{"url":"http://p","instance_id":"i","token":"t"}}}')
    local c = config.resolve({}, env { AE_CONFIG = p }, mode_of)
    assert.equals("http://p", c.url)
    assert.same({ token = "t" }, c.auth)
  end)
  it("chooses the profile named by AE_PROFILE", function()
    local p = write("c.json", '{"profiles":{"default":{"url":"http://d"},"prod":{"url":"http://prod"}}}')
    assert.equals("http://prod", config.resolve({}, env { AE_CONFIG = p, AE_PROFILE = "prod" }, mode_of).url)
  end)
  -- A profile file it will not use: no configuration, and why.
  for _, case in ipairs {
    { "refuses a profile file readable by others", '{"url":"http://p"}', "644",
      "readable by others %(mode 644%); run: chmod 600" },
    { "reports a profile file that is not JSON", "url = 1", nil, "c.json: not valid JSON" },
  } do
    it(case[1], function()
      local p = write("c.json", case[2], case[3])
      local c, err = config.resolve({}, env { AE_CONFIG = p }, mode_of)
      assert.is_nil(c)
      assert.matches(case[4], err)
    end)
  end
  it("names a missing profile", function()
    local p = write("c.json", '{"profiles":{}}')
    local _, err = config.resolve({}, env { AE_CONFIG = p, AE_PROFILE = "x" }, mode_of)
    assert.matches("no profile named 'x'", err)
  end)
end)
