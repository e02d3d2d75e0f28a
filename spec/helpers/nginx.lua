--- A real nginx for specs: Debian's nginx with the lua module, started as a
-- plain foreground process (one process, one worker) on 127.0.0.1 with a
-- generated config in a temporary prefix.
--   local nginx = require("helpers.nginx")
--   local n = nginx.start{ http = "lua_shared_dict d 1m;", server = [[ location /x { content_by_lua_block {...} } ]] }
--   n.url .. "/x"          -- http://127.0.0.1:PORT/x
--   nginx.stop(n)          -- always, also after a failure (it removes the prefix too)
-- Fails loudly when nginx or the lua module is missing.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local launcher = require("analytics_engine.engine.launcher")

local helper = {}

helper.NGINX = os.getenv("NGINX_BIN") or "/usr/sbin/nginx"
helper.MODULES = os.getenv("NGINX_MODULES") or "/usr/lib/nginx/modules"

local exists = util.exists

-- A log's text; "" before nginx wrote it.
local function read(p) return util.read_file(p) or "" end

local function write(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

local function cwd()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end

--- A port nobody listens on right now (nginx cannot bind port 0 and report it).
function helper.free_port()
  local s = assert(core.http_server { host = "127.0.0.1", port = 0 })
  local port = s:port()
  s:close()
  return port
end

local CONF = [[
daemon off;
master_process off;
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log %s;
load_module %s/ndk_http_module.so;
load_module %s/ngx_http_lua_module.so;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %s/tmp/body;
  proxy_temp_path %s/tmp/proxy;
  fastcgi_temp_path %s/tmp/fastcgi;
  uwsgi_temp_path %s/tmp/uwsgi;
  scgi_temp_path %s/tmp/scgi;
  lua_package_path "%s";
  lua_package_cpath "%s";
  %s
  server {
    listen 127.0.0.1:%d;
    location = /__ready { return 204; }
    %s
  }
}
]]

--- start{ http = "directives", server = "locations", log_level = "info", build_jit = "build-jit",
--          lua_package_path = "...", lua_package_cpath = "..." }
-- The default paths are the checkout's lua/ and spec/ and the LuaJIT core in
-- build_jit, then nginx's defaults.
-- -> { url, port, prefix, pid, error_log }; raises when nginx cannot start.
function helper.start(o)
  o = o or {}
  if not exists(helper.NGINX) then
    error("nginx is not installed (" .. helper.NGINX .. "): apt-get install nginx libnginx-mod-http-lua", 2)
  end
  for _, m in ipairs { "ndk_http_module.so", "ngx_http_lua_module.so" } do
    if not exists(helper.MODULES .. "/" .. m) then
      error("the nginx lua module is not installed (" .. helper.MODULES .. "/" .. m
        .. "): apt-get install libnginx-mod-http-lua", 2)
    end
  end
  local root = cwd()
  return helper.launch(function(prefix, port)
    local lpath = o.lua_package_path or ("%s/lua/?.lua;%s/lua/?/init.lua;%s/spec/?.lua;;"):format(root, root, root)
    local cpath = o.lua_package_cpath or ("%s/%s/?.so;;"):format(root, o.build_jit or "build-jit")
    return CONF:format(prefix, prefix, o.log_level or "info", helper.MODULES, helper.MODULES,
      prefix, prefix, prefix, prefix, prefix, lpath, cpath, o.http or "", port, o.server or "")
  end, { ready = "/__ready" }, 3)
end

--- launch(make_conf, opts) starts nginx with the whole config that
-- make_conf(prefix, port) returns, in a fresh temporary prefix on a free port.
-- opts: { ready = path answering 204 (else any HTTP answer at / will do),
-- env = { "NAME=value", ... } for nginx's environment, global = "directives"
-- added with -g (e.g. the pid and temp paths a user's config leaves out) }.
-- -> { url, port, prefix, pid, error_log }; raises when nginx cannot start.
function helper.launch(make_conf, opts, level)
  opts = opts or {}
  local last
  for _ = 1, 5 do -- the free port may be taken between the probe and nginx's bind
    local prefix = assert(launcher.temp_dir("ae-nginx-"))
    core.mkdir_p(prefix .. "/tmp", 448)
    core.mkdir_p(prefix .. "/logs", 448)
    local port = helper.free_port()
    write(prefix .. "/nginx.conf", make_conf(prefix, port))
    local n = { prefix = prefix, port = port, url = "http://127.0.0.1:" .. port, error_log = prefix .. "/error.log" }
    local argv = { helper.NGINX, "-p", prefix, "-c", prefix .. "/nginx.conf", "-e", prefix .. "/error.log" }
    if opts.global then
      argv[#argv + 1] = "-g"
      argv[#argv + 1] = opts.global:gsub("PREFIX", prefix)
    end
    local pid, err = core.spawn { argv = argv, env = opts.env,
                                  stdout = prefix .. "/stdout.log", stderr = prefix .. "/stdout.log" }
    if not pid then error("cannot start nginx: " .. tostring(err), level or 2) end
    n.pid = pid
    local session = core.http_session()
    local deadline = core.monotime() + 10
    local ready
    while core.monotime() < deadline do
      local st = core.wait(pid)
      if st ~= nil then break end
      local res = session:request { url = n.url .. (opts.ready or "/"), timeout = 2, connect_timeout = 1 }
      if res and (res.status == 204 or not opts.ready) then ready = true break end
      core.sleep(0.05)
    end
    session:close()
    if ready then return n end
    last = read(prefix .. "/error.log") .. read(prefix .. "/stdout.log")
    helper.stop(n)
    if not last:find("Address already in use", 1, true) then break end
  end
  error("nginx did not start: " .. (last or "?"):gsub("%s+", " "):sub(1, 600), level or 2)
end

--- The error log so far (handlers' ngx.log lines, lua errors).
function helper.log(n)
  return read(n.error_log)
end

--- Stop nginx (QUIT, then KILL after 5 s) and remove its prefix.
function helper.stop(n)
  if not n or n.stopped then return end
  n.stopped = true
  if n.pid then
    core.kill(n.pid, "QUIT")
    local deadline = core.monotime() + 5
    while core.wait(n.pid) == nil do
      if core.monotime() > deadline then
        core.kill(n.pid, "KILL")
        deadline = math.huge
      end
      core.sleep(0.02)
    end
  end
  if n.prefix and n.prefix:find("^/tmp/") then os.execute("rm -rf '" .. n.prefix .. "'") end
end

return helper
