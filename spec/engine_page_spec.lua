-- The local engine's own page at /: refused without credentials, a login
-- form that sets an HttpOnly SameSite=Strict session cookie (not the key),
-- applications with their output, no secret anywhere, rendered by chromium.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local engine = require("helpers.engine")
local browser = require("helpers.browser")

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded", Authorization = false, Accept = "text/html" }

describe("the engine's page", function()
  local e, dir, ok_id, fail_id, cookie
  setup(function()
    e = engine.start()
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("engine-page-"))
    engine.write(dir .. "/hello.sh", "echo hello from the page spec\necho 'a <b>tag</b> & more' >&2\n")
    engine.write(dir .. "/bad.sh", "echo going down >&2; exit 4\n")
    ok_id = engine.submit(e, { application = dir .. "/hello.sh" })
    fail_id = engine.submit(e, { application = dir .. "/bad.sh" })
    engine.wait_app(e, ok_id)
    engine.wait_app(e, fail_id)
  end)
  teardown(function()
    engine.stop(e)
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  local function login()
    local status, _, headers = engine.request(e, "POST", "/login",
      "username=admin&api_key=" .. util.url_encode(e.api_key) .. "&next=%2F", FORM)
    return status, headers
  end

  local function get(path, c)
    local _, _, _, raw = engine.request(e, "GET", path, nil, { Authorization = false, Accept = "text/html",
                                                                Cookie = c })
    return raw
  end

  it("refuses a request without credentials with the login form", function()
    local status, _, headers, raw = engine.request(e, "GET", "/", nil, { Authorization = false })
    assert.equals(401, status)
    assert.matches("text/html", headers["content-type"], 1, true)
    assert.matches('<form class="login" method="post" action="/login">', raw, 1, true)
    assert.is_nil(raw:find(ok_id, 1, true))
  end)

  it("refuses a forged or wrong session cookie", function()
    local status = engine.request(e, "GET", "/", nil, { Authorization = false,
                                                        Cookie = "aeflow_session=YWRtaW4.9999999999.forged" })
    assert.equals(401, status)
  end)

  it("refuses a wrong API key at the login form", function()
    local status, _, headers = engine.request(e, "POST", "/login", "username=admin&api_key=wrong", FORM)
    assert.equals(401, status)
    assert.is_nil(headers["set-cookie"])
  end)

  it("logs in via the form: an HttpOnly, SameSite=Strict cookie that is not the key", function()
    local status, headers = login()
    assert.equals(303, status)
    assert.equals("/", headers.location)
    local sc = headers["set-cookie"]
    assert.matches("HttpOnly", sc, 1, true)
    assert.matches("SameSite=Strict", sc, 1, true)
    assert.is_nil(sc:find(e.api_key, 1, true), "the cookie holds the API key")
    cookie = sc:match("^([^;]+)")
    assert.equals(200, (engine.request(e, "GET", "/", nil, { Authorization = false, Cookie = cookie })))
  end)

  it("shows applications with their state and return code", function()
    local html = get("/", cookie)
    assert.matches('data-application="' .. ok_id .. '" data-state="FINISHED"', html, 1, true)
    assert.matches('data-application="' .. fail_id .. '" data-state="FAILED"', html, 1, true)
    assert.matches("<td>4</td>", html, 1, true)
    assert.matches('<meta http-equiv="refresh"', html, 1, true)
    assert.matches('id="history"', html, 1, true)
    assert.matches('id="kernels"', html, 1, true)
    assert.matches('id="clusters"', html, 1, true)
  end)

  it("shows an application's stdout and stderr, escaped", function()
    local html = get("/?app=" .. ok_id, cookie)
    assert.matches("hello from the page spec", html, 1, true)
    assert.matches("a &lt;b&gt;tag&lt;/b&gt; &amp; more", html, 1, true)
  end)

  it("shows no secret: neither the API key nor the token secret", function()
    local secret = engine.request and io.open(e.data_dir .. "/secret"):read("a"):match("%x+")
    for _, path in ipairs { "/", "/?app=" .. ok_id, "/login" } do
      local html = get(path, cookie)
      assert.is_nil(html:find(e.api_key, 1, true), path .. " shows the API key")
      assert.is_nil(html:find(secret, 1, true), path .. " shows the token secret")
    end
  end)

  it("changes nothing: other methods are refused", function()
    assert.equals(405, (engine.request(e, "POST", "/", "x=1", { Authorization = false, Cookie = cookie })))
    assert.equals(405, (engine.request(e, "DELETE", "/", nil, { Authorization = false, Cookie = cookie })))
    local _, doc = engine.request(e, "GET", engine.v4(e, "/spark_applications/" .. ok_id))
    assert.equals("FINISHED", doc.state)
  end)

  it("shows the login form to chromium without credentials", function()
    local dom = browser.dump_dom(e.url .. "/")
    assert.matches('name="api_key"', dom, 1, true)
    assert.is_nil(dom:find(ok_id, 1, true))
  end)

  it("renders in chromium and passes tidy once signed in; screenshot under build/", function()
    local html = get("/?app=" .. fail_id, cookie)
    local file = dir .. "/page.html"
    engine.write(file, html)
    local rc, msgs = browser.tidy(file)
    assert.equals(0, rc, msgs)
    local dom = browser.dump_dom("file://" .. file)
    assert.matches('data-application="' .. fail_id .. '" data-state="FAILED"', dom, 1, true)
    assert.matches("going down", dom, 1, true)
    core.mkdir_p("build", 493)
    local shot = (core.realpath("build") or "build") .. "/engine-page.png"
    browser.screenshot("file://" .. file, shot)
    assert.equals("\137PNG", browser.read(shot):sub(1, 4))
  end)
end)
