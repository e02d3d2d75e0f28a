-- sanitize: escapes and credentials, for everything printed or stored.
local sanitize = require("analytics_engine.sanitize")
local util = require("analytics_engine.util")
local errors = require("analytics_engine.errors")

describe("sanitize", function()
  it("shows control characters instead of sending them to the terminal", function()
    assert.equals("a\\x1b]0;title\\x07b\\x1b[31mc\\r\\nd\\x00\\x7f",
      sanitize.escape("a\27]0;title\7b\27[31mc\r\nd\0\127"))
    assert.equals("csi \\u009b2J", sanitize.escape("csi \194\1552J"))
    assert.equals("tabs\tand\nlines \\x1b", sanitize.escape("tabs\tand\r\nlines \27", true))
    assert.equals("naïve ✓ \\", sanitize.escape("naïve ✓ \\"))
  end)

  it("masks registered credentials and the base64 forms made from them", function()
    sanitize.add_credentials { username = "alice", api_key = "k3y/for+alice", password = "pa55word" }
    local b64 = util.b64encode("alice:k3y/for+alice")
    local s = sanitize.redact("key k3y/for+alice; pw pa55word; zen " .. b64 .. ".")
    assert.equals("key ***; pw ***; zen ***.", s)
    -- in JSON (cjson writes / as \/): still masked, run tokens are not
    local j = sanitize.redact_known(util.json_encode { k = "k3y/for+alice", token = "aeflow-abc" })
    assert.is_nil(j:find("k3y", 1, true))
    assert.truthy(j:find("aeflow-abc", 1, true))
  end)

  it("shows bytes that are not UTF-8 as \\xNN (a lone 0x9B is CSI to an 8-bit terminal), keeps UTF-8", function()
    assert.equals("\\x9b[31mred", sanitize.escape("\155[31mred"))
    assert.equals("RUN\\xff\\xc0\\x80\\xed\\xa0\\x80NING", sanitize.escape("RUN\255\192\128\237\160\128NING"))
    assert.equals("cut \\xf0\\x9f\\x98", sanitize.escape("cut \240\159\152"))
    assert.equals("é — ✅ 𝄞", sanitize.escape("é — ✅ 𝄞"))
    assert.equals("C1 \\u009b", sanitize.escape("C1 \194\155"))
  end)

  it("turns bytes that are not UTF-8 into U+FFFD in JSON output (still valid JSON)", function()
    local j = sanitize.json(util.json_encode { state = "RUN\255\155x é" })
    assert.equals('{"state":"RUN\\ufffd\\ufffdx é"}', j)
    assert.equals("RUN\239\191\189\239\191\189x é", util.json_decode(j).state)
  end)

  it("masks a registered credential a server echoes percent-encoded (in a URL)", function()
    sanitize.add_secret("tok/with+slash=Zz12345")
    assert.equals("x *** y", sanitize.clean("x tok%2Fwith%2Bslash%3DZz12345 y"))
    assert.equals("x *** y", sanitize.clean("x tok%2fwith%2bslash%3dZz12345 y"))
    assert.equals("x *** y", sanitize.clean("x tok/with+slash=Zz12345 y"))
  end)

  it("masks what looks like a credential nobody registered", function()
    assert.equals("Bearer *** ok", sanitize.redact("Bearer eyJhbGciOi.x-y_z ok"))
    assert.equals("ZenApiKey ***", sanitize.redact("ZenApiKey YWRtaW46c2VjcmV0"))
    assert.equals("/x?a=1&access_token=***&apikey=***&b=2", sanitize.redact("/x?a=1&access_token=s3&apikey=s4&b=2"))
    assert.equals("https://bob:***@host/p", sanitize.redact("https://bob:hunter2@host/p"))
    assert.equals('{"password": "***", "api_key":"***"}', sanitize.redact('{"password": "x", "api_key":"y"}'))
  end)

  it("cleans nested documents for reports", function()
    local d = sanitize.deep { steps = { a = { error = "bad \27[2J pa55word" } }, n = 3 }
    assert.equals("bad \\x1b[2J ***", d.steps.a.error)
    assert.equals(3, d.n)
  end)
end)

describe("errors", function()
  local ctx = { method = "GET", path = "/v4/x", operation = "op", url = "http://127.0.0.1:9443/v4/x" }

  it("say a refused connection once, with the attempts and the time they took", function()
    local e = errors.from_transport({ kind = "connect", message = "Couldn't connect to server: Failed to connect "
      .. "to 127.0.0.1 port 9443 after 0 ms: Couldn't connect to server" }, ctx)
    e.attempts, e.elapsed = 5, 4.62
    assert.equals("GET /v4/x: connect: 127.0.0.1:9443 refused (5 attempts over 4.6 s)", tostring(e))
  end)

  it("say other transport failures without repeating libcurl's text", function()
    local e = errors.from_transport({ kind = "timeout", message = "Timeout was reached: Operation timed out "
      .. "after 30001 milliseconds with 0 bytes received" }, ctx)
    assert.equals("GET /v4/x: timeout: Timeout was reached: Operation timed out after 30.0 s with 0 bytes received",
      tostring(e))
    local r = errors.from_transport({ kind = "resolve", message = "Couldn't resolve host name: Could not resolve "
      .. "host: nowhere.invalid" }, { method = "GET", path = "/", url = "https://nowhere.invalid/v4" })
    assert.equals("GET /: resolve: cannot resolve nowhere.invalid", tostring(r))
  end)

  it("carry no escape and no credential from the server's answer", function()
    sanitize.add_secret("tok-123456")
    local e = errors.from_response({ status = 401, headers = {},
      body = '{"message":"bad token tok-123456 \\u001b]0;x\\u0007"}' }, ctx)
    assert.equals("bad token *** \\x1b]0;x\\x07", e.message)
    assert.is_nil(e.body:find("tok-123456", 1, true))
    assert.is_nil(tostring(e):find("[%z\1-\31]"))
  end)

  it("masks a registered secret in strings of its length and longer, and leaves shorter ones as they are", function()
    sanitize.add_secret("s3cr3t-value-of-some-length")
    assert.equals("RUNNING", sanitize.redact_known("RUNNING"))
    assert.equals(sanitize.MASK, sanitize.redact_known("s3cr3t-value-of-some-length"))
    assert.equals("key=" .. sanitize.MASK .. "!", sanitize.redact_known("key=s3cr3t-value-of-some-length!"))
    sanitize.add_secret("zq9x") -- a shorter secret lowers the bound
    assert.equals("a " .. sanitize.MASK .. " b", sanitize.redact_known("a zq9x b"))
  end)
end)
