-- HTTPS: the engine serves a certificate and key given with --tls-cert and
-- --tls-key (a self-signed pair made with openssl at test time); the client
-- verifies it against that certificate as its CA file and refuses it without.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local helper = require("helpers.engine")

local function sh(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  return ok == true
end

describe("local engine over HTTPS", function()
  local e, dir, cert, key
  lazy_setup(function()
    assert(sh("command -v openssl"), "openssl is needed (Debian package openssl)")
    dir = os.tmpname()
    os.remove(dir)
    assert(sh("mkdir -p '" .. dir .. "'"))
    cert, key = dir .. "/cert.pem", dir .. "/key.pem"
    assert(sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
      .. "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout '%s' -out '%s'"):format(key, cert)),
      "openssl could not make a self-signed certificate")
    e = helper.start({ "--tls-cert", cert, "--tls-key", key })
  end)
  lazy_teardown(function()
    helper.stop(e)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function get(opts)
    local s = core.http_session()
    local req = { method = "GET", url = e.url .. helper.v4(e, "/default_runtime"), timeout = 10,
                  headers = { Authorization = helper.zen(e) } }
    for k, v in pairs(opts or {}) do req[k] = v end
    local res, err = s:request(req)
    s:close()
    return res, err
  end

  it("announces an https URL", function()
    assert.truthy(e.url:find("^https://127%.0%.0%.1:%d+$"))
  end)

  it("is verified by a client given the certificate as its CA file", function()
    local res, err = get{ cafile = cert }
    assert.is_table(res, tostring(err and (err.message or err)))
    assert.equal(200, res.status)
    assert.equal("3.4", util.json_decode(res.body).spark_version)
  end)

  it("is refused by a client that does not trust the certificate", function()
    local res, err = get()
    assert.is_nil(res)
    local msg = type(err) == "table" and (err.message or err.kind) or tostring(err)
    assert.truthy(tostring(msg):lower():find("certificate"), tostring(msg))
  end)

  it("serves the client layer with cafile", function()
    local c = helper.client(e, { cafile = cert })
    local rt = assert(c:get_instance_default_runtime())
    assert.equal("3.4", rt.spark_version)
  end)

  it("refuses to start with a key that does not match the certificate's format", function()
    local bad = helper.write(dir .. "/bad.pem", "not a key\n")
    local ok, err = pcall(helper.start, { "--tls-cert", cert, "--tls-key", bad })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("TLS", 1, true))
  end)

  it("refuses to start when a file is missing, naming it", function()
    local ok, err = pcall(helper.start, { "--tls-cert", dir .. "/missing.pem", "--tls-key", key })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("missing.pem", 1, true))
  end)
end)
