-- The client inside a real nginx (Debian's nginx + lua module, OpenResty's
-- LuaJIT): handlers call real local engines through the ngx transport.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local engine = require("helpers.engine")
local nginx = require("helpers.nginx")
local launcher = require("analytics_engine.engine.launcher")
local ae = require("analytics_engine")

-- A Lua literal for plain data (strings, numbers, booleans, tables).
local function literal(v)
  if type(v) == "table" then
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = "[" .. literal(k) .. "]=" .. literal(x) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif type(v) == "string" then
    return ("%q"):format(v)
  end
  return tostring(v)
end

local function target(e, extra)
  local t = { url = e.url, instance_id = e.instance_id, auth = { username = e.username, api_key = e.api_key },
              retries = { max_attempts = 2, base_delay = 0.01, max_delay = 0.05 } }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

local function self_signed(dir, name)
  local cert, key = dir .. "/" .. name .. ".pem", dir .. "/" .. name .. ".key"
  local ok = os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
    .. "-addext subjectAltName=IP:127.0.0.1 -keyout '%s' -out '%s' >/dev/null 2>&1"):format(key, cert))
  assert(ok == true or ok == 0, "openssl could not make a test certificate")
  return cert, key
end

describe("the client in nginx (ngx transport)", function()
  local fast, slow, n, session, dir

  local function get(path, timeout)
    local res, err = session:request { url = n.url .. path, timeout = timeout or 30 }
    assert(res, err and err.message)
    assert.equals(200, res.status, res.body)
    return assert(util.json_decode(res.body))
  end

  lazy_setup(function()
    dir = assert(launcher.temp_dir("ae-ngx-spec-"))
    local cert, key = self_signed(dir, "engine")
    local other = self_signed(dir, "other")
    fast = engine.start()
    slow = engine.start { "--faults", "1", "--fault-kinds", "delay" }
    -- TLS from nginx itself, in front of the fast engine.
    local tls_port = nginx.free_port()
    local tls_url = "https://127.0.0.1:" .. tls_port
    local targets = {
      fast = target(fast),
      fast_ngx = target(fast, { transport = "ngx" }),
      slow = target(slow),
      slow_timeout = target(slow, { timeout = 0.5, retries = false }),
      bad_key = target(fast, { auth = { username = fast.username, api_key = "wrong-key" } }),
      refused = target(fast, { url = "http://127.0.0.1:" .. nginx.free_port() }),
      tls = target(fast, { url = tls_url }),
      -- Own pools: a connection verified under one trust store is not
      -- handed to a location with another.
      tls_untrusted = target(fast, { url = tls_url, pool = "untrusted" }),
      tls_insecure = target(fast, { url = tls_url, insecure = true, pool = "untrusted" }),
    }
    n = nginx.start {
      http = ([[
        lua_ssl_trusted_certificate %s;
        lua_ssl_verify_depth 2;
        init_by_lua_block { package.loaded.ae_spec_targets = %s }
        init_worker_by_lua_block { require("helpers.ngx_handlers").init_worker() }
        server {
          listen 127.0.0.1:%d ssl;
          ssl_certificate %s;
          ssl_certificate_key %s;
          location / {
            proxy_pass %s;
            proxy_http_version 1.1; # WebSockets pass too
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $http_connection;
          }
        }
      ]]):format(cert, literal(targets), tls_port, cert, key, fast.url),
      server = ([[
        location /call { content_by_lua_block { require("helpers.ngx_handlers").call() } }
        location /untrusted {
          lua_ssl_trusted_certificate %s;
          content_by_lua_block { require("helpers.ngx_handlers").call() }
        }
        location /set_phase {
          set_by_lua_block $tr { return require("helpers.ngx_handlers").transport_name() }
          return 200 '{"transport":"$tr"}';
        }
      ]]):format(other),
    }
    session = core.http_session()
  end)

  lazy_teardown(function()
    if session then session:close() end
    nginx.stop(n)
    engine.stop(fast)
    engine.stop(slow)
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  describe("transport choice", function()
    it("uses cosockets in a content handler", function()
      local r = get("/call?target=fast")
      assert.is_true(r.ok, r.error and r.error.message)
      assert.equals("ngx", r.transport)
    end)

    it("uses the curl transport in set_by_lua, where cosockets do not exist", function()
      local r = get("/set_phase")
      assert.equals("curl", r.transport, "is build-jit/analytics_engine/core.so built (make build-jit)?")
    end)

    it("uses cosockets when forced with transport = 'ngx'", function()
      local r = get("/call?target=fast_ngx")
      assert.is_true(r.ok)
      assert.equals("ngx", r.transport)
    end)
  end)

  describe("requests", function()
    it("returns the decoded body of a success", function()
      local r = get("/call?target=fast&op=get_instance")
      assert.is_true(r.ok)
      assert.equals(fast.instance_id, r.result.instance_id)
    end)

    it("reuses pooled connections for sequential requests", function()
      local before = get("/call?target=fast").stats
      for _ = 1, 5 do assert.is_true(get("/call?target=fast").ok) end
      local after = get("/call?target=fast").stats
      assert.equals(before.connects, after.connects)
      assert.equals(before.reused + 6, after.reused)
    end)

    it("opens a new connection for a request that creates", function()
      local before = get("/call?target=fast").stats
      local r = get("/call?target=fast&op=start_spark_history_server")
      assert.is_true(r.ok, r.error and r.error.message)
      assert.equals(before.connects + 1, r.stats.connects)
      assert.equals(before.reused, r.stats.reused)
    end)
  end)

  describe("errors", function()
    it("reports the engine's 401 with the client's error object", function()
      local r = get("/call?target=bad_key")
      assert.is_false(r.ok)
      assert.equals(401, r.error.status, r.error.message)
      assert.is_false(r.error.retryable)
    end)

    it("reports a refused connection as kind 'connect', retried by the policy", function()
      local r = get("/call?target=refused")
      assert.is_false(r.ok)
      assert.equals("connect", r.error.code)
      assert.equals(2, r.error.attempts)
      assert.matches("refused", r.error.message)
    end)

    it("reports a response slower than the timeout as kind 'timeout'", function()
      local r = get("/call?target=slow_timeout")
      assert.is_false(r.ok)
      assert.equals("timeout", r.error.code, r.error.message)
      assert.is_true(r.seconds < 1.9)
    end)
  end)

  describe("TLS", function()
    it("verifies the server's certificate against lua_ssl_trusted_certificate", function()
      local r = get("/call?target=tls")
      assert.is_true(r.ok, r.error and r.error.message)
      assert.equals(fast.instance_id, (get("/call?target=tls&op=get_instance").result or {}).instance_id)
    end)

    it("fails with kind 'tls' when the certificate is not trusted", function()
      local r = get("/untrusted?target=tls_untrusted")
      assert.is_false(r.ok)
      assert.equals("tls", r.error.code, r.error.message)
    end)

    it("skips verification only when insecure is set", function()
      local r = get("/untrusted?target=tls_insecure")
      assert.is_true(r.ok, r.error and r.error.message)
    end)

    it("verifies the certificate for a WebSocket (wss://) on cosockets too", function()
      local c = assert(ae.client(target(fast)))
      local cl = assert(c:create_cluster { name = "ngx-wss" })
      local cid = cl.id or cl.cluster_id
      engine.eventually(function() return assert(c:get_cluster(cid)).state == "ACTIVE" end, 10)
      local r = get("/call?target=tls&op=cluster_echo&id=" .. cid)
      assert.is_true(r.ok, r.error and r.error.message)
      assert.matches(cid, r.result.hello, 1, true)
      assert.equals("echo me", r.result.echo)
      r = get("/untrusted?target=tls_untrusted&op=cluster_echo&id=" .. cid)
      assert.is_false(r.ok)
      assert.equals("tls", r.error.code, r.error.message)
    end)
  end)
end)

-- The directory of LuaJIT's cjson.so from Debian's lua-cjson
-- (/usr/lib/<triplet>/lua/5.1).
local function system_cjson_dir()
  local p = assert(io.popen("ls -d /usr/lib/*/lua/5.1/cjson.so 2>/dev/null"))
  local path = p:read("*l")
  p:close()
  assert(path, "no /usr/lib/<triplet>/lua/5.1/cjson.so: install Debian's lua-cjson")
  return path:match("^(.*)/cjson%.so$")
end

local function run(cmd)
  local out = os.tmpname()
  local ok = os.execute(cmd .. " >'" .. out .. "' 2>&1")
  local text = util.read_file(out) or ""
  os.remove(out)
  return ok == true or ok == 0, text
end

describe("the client in nginx without the C core", function()
  -- The project's lua/ on the path (then nginx's defaults, for resty.core)
  -- and only Debian's cjson on the cpath: no analytics_engine.core anywhere
  -- nginx could find one.
  local slow, fast, n, cid

  lazy_setup(function()
    local h = assert(io.popen("pwd"))
    local root = h:read("*l")
    h:close()
    slow = engine.start { "--faults", "1", "--fault-kinds", "delay", "--fault-delay", "1" }
    fast = engine.start()
    local c = assert(ae.client(target(fast)))
    local r = assert(c:create_cluster { name = "ngx-ws" })
    cid = r.id or r.cluster_id
    engine.eventually(function() return assert(c:get_cluster(cid)).state == "ACTIVE" end, 10)
    n = nginx.start {
      lua_package_path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;",
      lua_package_cpath = system_cjson_dir() .. "/?.so",
      http = ([[
        init_worker_by_lua_block {
          local ae = require("analytics_engine")
          package.loaded.spark = assert(ae.client(%s))
          package.loaded.spark_fast = assert(ae.client(%s))
        }
      ]]):format(literal(target(slow)), literal(target(fast))),
      server = [[
        location /rt {
          content_by_lua_block {
            local cjson = require("cjson")
            local c = require("spark")
            local rt, err = c:get_instance_default_runtime()
            ngx.say(cjson.encode {
              ok = rt ~= nil, version = rt and rt.spark_version, error = err and tostring(err),
              core_loaded = package.loaded["analytics_engine.core"] ~= nil,
              core_found = (pcall(require, "analytics_engine.core")),
            })
          }
        }
        location /cluster {
          content_by_lua_block {
            local cjson = require("cjson")
            local c = require("spark_fast")
            local out = {}
            local _, merr = c:connect_cluster("00000000-0000-4000-8000-000000000000")
            out.missing = merr and merr.status
            local ws, err = c:connect_cluster(ngx.var.arg_id)
            if not ws then ngx.say(cjson.encode { error = tostring(err) }) return end
            out.hello = ws:receive(10)
            ngx.update_time()
            local t0 = ngx.now()
            local _, terr = ws:receive(1) -- nothing comes: the handler yields for 1 s
            ngx.update_time()
            out.idle = { terr and terr.kind, ngx.now() - t0 }
            assert(ws:send("hello cluster"))
            out.echo = { ws:receive(10) }
            assert(ws:send("\0\1\2\255", { binary = true }))
            local bin, op = ws:receive(10)
            out.bin = { ngx.encode_base64(bin), op }
            assert(ws:send("!fragment 2 fragmented reply"))
            out.frag = ws:receive(10)
            assert(ws:send("!ping p-42"))
            out.pong = ws:receive(10)
            assert(ws:send("!close 4005 finished"))
            local _, cerr = ws:receive(10)
            out.closed = { cerr.kind, cerr.code, cerr.reason }
            ws:close()
            out.core_loaded = package.loaded["analytics_engine.core"] ~= nil
            ngx.say(cjson.encode(out))
          }
        }
        location /kernel {
          content_by_lua_block {
            local cjson = require("cjson")
            local s, err = require("spark_fast"):connect_kernel(ngx.var.arg_id)
            if not s then ngx.say(cjson.encode { error = tostring(err) }) return end
            local r, xerr = s:execute("import time\ntime.sleep(2)\n6*7", { timeout = 30 })
            s:close()
            ngx.say(cjson.encode { result = r and r.result, error = xerr and tostring(xerr),
                                   core_loaded = package.loaded["analytics_engine.core"] ~= nil })
          }
        }
        location = /ping { content_by_lua_block { ngx.say("pong") } }
      ]],
    }
  end)

  lazy_teardown(function()
    nginx.stop(n)
    engine.stop(slow)
    engine.stop(fast)
  end)

  -- Start N requests at once; wait for all; -> decoded bodies, seconds.
  local function concurrent(N, path)
    local multi = core.http_session()
    local t0 = core.monotime()
    local ids, docs = {}, {}
    for _ = 1, N do ids[assert(multi:start { url = n.url .. path, timeout = 60 })] = true end
    while #docs < N and core.monotime() - t0 < 60 do
      for _, item in ipairs(multi:poll(1)) do
        assert.is_true(ids[item.id])
        local body = item.res and item.res.body or item.err.message
        docs[#docs + 1] = item.res and item.res.status == 200 and util.json_decode(body) or { raw = body }
      end
    end
    multi:close()
    return docs, core.monotime() - t0
  end

  -- Every /v4 request stalls 1 s in the engine. One nginx worker serves all
  -- requests: if a handler blocked it, 40 requests would take 40 s.
  it("serves 40 concurrent handlers, each waiting 1 s on the engine, without blocking the worker", function()
    local docs, elapsed = concurrent(40, "/rt")
    assert.equals(40, #docs)
    for _, doc in ipairs(docs) do
      assert.is_true(doc.ok, (doc.error or doc.raw or "?") .. "\n" .. nginx.log(n):sub(-2000))
      assert.is_string(doc.version)
      assert.is_false(doc.core_loaded)
      assert.is_false(doc.core_found)
    end
    assert.is_true(elapsed >= 0.9, ("the engine did not stall (%.2fs)"):format(elapsed))
    -- Serial handling would take 40 s; a loaded machine gets plenty of room.
    assert.is_true(elapsed < 10, ("40 requests took %.2fs"):format(elapsed))
  end)

  it("runs cluster WebSocket sessions on cosockets: 20 at once, each idle 1 s, without blocking", function()
    local docs, elapsed = concurrent(20, "/cluster?id=" .. cid)
    assert.equals(20, #docs)
    for _, doc in ipairs(docs) do
      assert.is_nil(doc.error or doc.raw, doc.error or doc.raw)
      assert.equals(404, doc.missing)
      assert.matches(cid, doc.hello, 1, true)
      assert.equals("timeout", doc.idle[1])
      assert.is_true(doc.idle[2] >= 0.9)
      assert.same({ "hello cluster", "text" }, doc.echo)
      assert.same({ "AAEC/w==", "binary" }, doc.bin)
      assert.equals("fragmented reply", doc.frag)
      assert.equals("pong p-42", doc.pong)
      assert.same({ "closed", 4005, "finished" }, doc.closed)
      assert.is_false(doc.core_loaded)
    end
    -- Blocking receives would take 20 x 1 s.
    assert.is_true(elapsed < 10, ("20 sessions took %.2fs"):format(elapsed))
  end)

  -- A Jupyter kernel (the engine's /jkg/api) runs a cell that takes 2 s; half
  -- a second in, another request comes. A blocked worker would answer it
  -- only after the cell; a yielding one answers it first.
  it("runs a kernel session in a handler on cosockets: the worker serves others meanwhile", function()
    local c = assert(ae.client(target(fast)))
    local k = assert(c:create_kernel { name = "python3" })
    finally(function() c:delete_kernel(k.id) end)
    local multi = core.http_session()
    local kernel_req = assert(multi:start { url = n.url .. "/kernel?id=" .. k.id, timeout = 60 })
    core.sleep(0.5)
    local ping_req = assert(multi:start { url = n.url .. "/ping", timeout = 60 })
    local order, bodies = {}, {}
    local t0 = core.monotime()
    while #order < 2 and core.monotime() - t0 < 60 do
      for _, item in ipairs(multi:poll(1)) do
        order[#order + 1] = item.id
        bodies[item.id] = item.res and item.res.body or item.err.message
      end
    end
    multi:close()
    local doc = util.json_decode(bodies[kernel_req] or "") or {}
    assert.equals("42", doc.result, (doc.error or bodies[kernel_req] or "?") .. "\n" .. nginx.log(n):sub(-1500))
    assert.is_false(doc.core_loaded)
    assert.equals("pong\n", bodies[ping_req])
    assert.same({ ping_req, kernel_req }, order, "the ping waited for the kernel: the worker was blocked")
  end)
end)

describe("docs/openresty.md's example, verbatim", function()
  local fast, n, dir, tree, conf

  lazy_setup(function()
    dir = assert(launcher.temp_dir("ae-ngx-doc-"))
    tree = dir .. "/tree"
    -- The Lua 5.1 rock, as the doc installs it (from this checkout).
    local ok, out = run(("luarocks --lua-version=5.1 --tree '%s' make --deps-mode=none "
      .. "analytics-engine-scm-1.rockspec LUA_INCDIR=/usr/include/luajit-2.1"):format(tree))
    assert(ok, "luarocks --lua-version=5.1 make failed: " .. out)
    local doc = assert(util.read_file("docs/openresty.md"))
    conf = assert(doc:match("```nginx\n(.-)\n```"), "no ```nginx block in docs/openresty.md")
    fast = engine.start()
    -- Only what the doc says to change: the port and the tree.
    local changed
    conf, changed = conf:gsub("/usr/local/", tree .. "/")
    assert.equals(3, changed, "the doc's /usr/local paths changed: update this spec and the doc together")
    n = nginx.launch(function(_, port)
      local c, k = conf:gsub("listen 8080;", "listen 127.0.0.1:" .. port .. ";")
      assert.equals(1, k)
      return c
    end, {
      env = { "AE_URL=" .. fast.url, "AE_INSTANCE_ID=" .. fast.instance_id, "AE_USERNAME=" .. fast.username,
              "AE_API_KEY=" .. fast.api_key },
      -- Where a user runs nginx as root these are Debian's defaults.
      global = "daemon off; master_process off; pid PREFIX/nginx.pid;",
    })
  end)

  lazy_teardown(function()
    nginx.stop(n)
    engine.stop(fast)
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  it("loads the modules from Debian's absolute paths and the client from the 5.1 rock's tree", function()
    assert.truthy(conf:find("load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;", 1, true))
    local installed = tree .. "/share/lua/5.1/analytics_engine/init.lua"
    assert.truthy(util.read_file(installed), installed)
    assert.truthy(util.read_file(tree .. "/lib/lua/5.1/analytics_engine/core.so"))
    -- The rock for 5.1 has the client only.
    assert.is_nil(util.read_file(tree .. "/share/lua/5.1/analytics_engine/engine/server.lua"))
  end)

  it("answers /spark/runtime with the engine's default Spark version", function()
    local want = assert(ae.client(target(fast)):get_instance_default_runtime()).spark_version
    local session = core.http_session()
    local res = assert(session:request { url = n.url .. "/spark/runtime", timeout = 30 })
    session:close()
    assert.equals(200, res.status, res.body .. nginx.log(n):sub(-1500))
    assert.equals(want .. "\n", res.body)
  end)

  it("submits an application with /spark/submit", function()
    local session = core.http_session()
    local res = assert(session:request { url = n.url .. "/spark/submit", timeout = 30 })
    session:close()
    assert.equals(200, res.status, res.body .. nginx.log(n):sub(-1500))
    local id = res.body:match("^(%x+%-[%x-]+)\n$")
    assert.truthy(id, res.body)
    local app = assert(ae.client(target(fast)):get_application(id))
    assert.equals(id, app.application_id)
  end)
end)
