--- The local engine's own page at `/`: a read-only view of applications
-- (state, times, return code, stdout and stderr), the history server,
-- kernels and clusters, refreshing itself. Behind the engine's own
-- authentication: a login form takes the API key once and sets an HttpOnly,
-- SameSite=Strict cookie holding a signed session (user and expiry, HMAC'd
-- with the engine's token secret), never the key. Nothing here changes
-- state: GET only, plus the login POST. No script, no external asset.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local stylesheet = require("analytics_engine.stylesheet")
local same = require("analytics_engine.engine.auth").same

local _M = {}

local fmt, concat = string.format, table.concat

_M.COOKIE = "aeflow_session"
_M.SESSION_TTL = 12 * 3600
_M.REFRESH = 5
_M.LOG_LIMIT = 64 * 1024

local PATHS = { ["/"] = true, ["/login"] = true }

--- Does the page answer this path?
function _M.handles(path)
  return PATHS[path] == true
end

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                                          ["'"] = "&#39;" }))
end

local function sign(eng, payload)
  return util.b64url_encode(core.hmac_sha256(eng.auth.secret, "engine-page|" .. payload))
end


--- A session value for `user`: b64url(username).expiry.signature.
function _M.session(eng, user, now)
  local payload = util.b64url_encode(user.username) .. "." .. math.floor((now or core.time()) + _M.SESSION_TTL)
  return payload .. "." .. sign(eng, payload)
end

--- The user a session value stands for, or nil.
function _M.session_user(eng, value, now)
  if type(value) ~= "string" then return nil end
  local name64, exp, sig = value:match("^([%w_%-]+)%.(%d+)%.([%w_%-]+)$")
  if not name64 or not same(sign(eng, name64 .. "." .. exp), sig) then return nil end
  if tonumber(exp) <= (now or core.time()) then return nil end
  return eng.auth.users[util.b64url_decode(name64) or ""]
end

local function cookie_value(header)
  if type(header) ~= "string" then return nil end
  for part in header:gmatch("[^;]+") do
    local k, v = part:match("^%s*([^=%s]+)=(.-)%s*$")
    if k == _M.COOKIE then return v end
  end
end

--- The user of the request's session cookie, or nil (the engine's one check
-- in server.lua asks this for the page's door, after the Authorization header).
function _M.cookie_user(eng, req)
  return _M.session_user(eng, cookie_value(req.headers.cookie))
end

-- application/x-www-form-urlencoded is a query string's syntax.
local form_decode = util.parse_query

local HEADERS = {
  ["Content-Type"] = "text/html; charset=utf-8",
  ["Cache-Control"] = "no-store",
  ["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    .. "frame-ancestors 'none'; base-uri 'none'",
  ["X-Content-Type-Options"] = "nosniff",
  ["X-Frame-Options"] = "DENY",
  ["Referrer-Policy"] = "no-referrer",
}

local function headers(extra)
  local h = {}
  for k, v in pairs(HEADERS) do h[k] = v end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

-- The shared frame (analytics_engine.stylesheet) and the page's own rules.
local CSS = stylesheet.with [[
pre { max-height: 420px; }
.state { font-weight: 600; }
.FINISHED, .ACTIVE, .started { color: #2e7d32; }
.FAILED, .ERROR, .KILLED { color: #c62828; }
.STOPPED, .stopped { color: #8d6e63; }
.RUNNING { color: #1565c0; }
.ACCEPTED, .SUBMITTED, .WAITING, .QUEUED { color: #b7791f; }
form.login { max-width: 360px; margin: 60px auto; background: #fff; border: 1px solid #e1e4e8; border-radius: 6px;
             padding: 20px; }
form.login label { display: block; margin: 10px 0 4px; font-weight: 600; }
form.login input { width: 100%; box-sizing: border-box; padding: 6px; }
form.login button { margin-top: 14px; padding: 6px 14px; }
.error { color: #c62828; }
]]

local function document(title, body, refresh)
  return concat {
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
    refresh and fmt('<meta http-equiv="refresh" content="%d">\n', refresh) or "",
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
    "<title>", esc(title), "</title>\n<style>\n", CSS, "</style>\n</head>\n<body>\n", body, "</body>\n</html>\n" }
end

local function forbidden(why)
  return 403, document("Forbidden", fmt("<main><p>%s</p></main>\n", esc(why))), headers()
end

-- Only local targets after login: a path on this page, never another site.
local function safe_next(v)
  if type(v) == "string" and v:match("^/%??[%w%-%._~=&%%]*$") and not v:find("^//") then return v end
  return "/"
end

local function login_form(message, next_path)
  return document("Local Analytics Engine: sign in", concat {
    '<form class="login" method="post" action="/login">\n<h1>Local Analytics Engine</h1>\n',
    "<p>Sign in with the API key of a user of this engine (the admin's is in credentials.json in the "
      .. "engine's data directory).</p>\n",
    message and fmt('<p class="error" id="login-error">%s</p>\n', esc(message)) or "",
    '<label for="username">User</label>\n<input id="username" name="username" value="admin" '
      .. 'autocomplete="username">\n',
    '<label for="api_key">API key</label>\n<input id="api_key" name="api_key" type="password" '
      .. 'autocomplete="current-password">\n',
    fmt('<input type="hidden" name="next" value="%s">\n', esc(safe_next(next_path))),
    '<button type="submit">Sign in</button>\n</form>\n' })
end

local function when(ts)
  if type(ts) ~= "number" then return "" end
  return os.date("!%Y-%m-%d %H:%M:%S", math.floor(ts)) .. " UTC"
end

local function tail(path, limit)
  local f = io.open(path, "rb")
  if not f then return "" end
  local size = f:seek("end")
  local start = math.max(0, size - limit)
  f:seek("set", start)
  local s = f:read("a") or ""
  f:close()
  if start > 0 then s = fmt("[… %d earlier bytes not shown]\n", start) .. s end
  return s
end

local function row(cells, attrs)
  local o = { "<tr", attrs or "", ">" }
  for _, c in ipairs(cells) do o[#o + 1] = "<td>" .. c .. "</td>" end
  o[#o + 1] = "</tr>\n"
  return concat(o)
end

-- Append to `o` a table with the header cells `head` and a row per item of
-- `items` (cells(item) -> its cells), or the `empty` paragraph.
local function listing(o, items, empty, head, cells, attrs)
  if #items == 0 then
    o[#o + 1] = "<p>" .. empty .. "</p>\n"
    return
  end
  o[#o + 1] = "<table>\n<thead><tr><th>" .. concat(head, "</th><th>") .. "</th></tr></thead>\n<tbody>\n"
  for _, item in ipairs(items) do o[#o + 1] = row(cells(item), attrs) end
  o[#o + 1] = "</tbody>\n</table>\n"
end

local function state_cell(s)
  return fmt('<span class="state %s">%s</span>', esc(tostring(s or ""):gsub("[^%w_]", "")), esc(s or ""))
end

local function applications(eng)
  local list = eng.store:list("applications")
  local o = { '<section id="applications">\n<h2>Applications (', #list, ')</h2>\n<table>\n<thead><tr><th>id</th>'
    .. "<th>name</th><th>state</th><th>created</th><th>started</th><th>finished</th><th>return code</th>"
    .. "<th>logs</th></tr></thead>\n<tbody>\n" }
  for i = #list, 1, -1 do -- newest first
    local r = list[i]
    local link = "/?app=" .. r.id
    o[#o + 1] = row({ fmt('<a href="%s"><code>%s</code></a>', esc(link), esc(r.id)),
      esc(r.spark_application_name or r.name or ""), state_cell(r.state), when(r.creation_ts), when(r.start_ts),
      when(r.finish_ts), esc(r.return_code ~= nil and tostring(r.return_code) or ""),
      fmt('<a href="%s#stdout">stdout</a> · <a href="%s#stderr">stderr</a>', esc(link), esc(link)) },
      fmt(' class="application" data-application="%s" data-state="%s"', esc(r.id), esc(r.state or "")))
  end
  o[#o + 1] = "</tbody>\n</table>\n</section>\n"
  return concat(o)
end

local function application(eng, id)
  local r = util.is_uuid(id) and eng.store:get("applications", id)
  if not r then return fmt('<section><p class="error">No application %s.</p></section>\n', esc(id)) end
  local o = { fmt('<section id="application" data-application="%s" data-state="%s">\n<h2>Application <code>%s'
    .. "</code></h2>\n<table>\n", esc(r.id), esc(r.state or ""), esc(r.id)) }
  local fields = { { "name", esc(r.spark_application_name or "") }, { "state", state_cell(r.state) },
    { "application", fmt("<code>%s</code>", esc(r.application or (r.details and r.details.application) or "")) },
    { "created", when(r.creation_ts) }, { "started", when(r.start_ts) }, { "finished", when(r.finish_ts) },
    { "return code", esc(r.return_code ~= nil and tostring(r.return_code) or "") },
    { "spark application id", esc(r.spark_application_id or "") } }
  for _, f in ipairs(fields) do o[#o + 1] = fmt("<tr><th>%s</th><td>%s</td></tr>\n", f[1], f[2]) end
  o[#o + 1] = "</table>\n"
  for _, stream in ipairs { "stdout", "stderr" } do
    local text = r.dir and tail(r.dir .. "/" .. stream, _M.LOG_LIMIT) or ""
    o[#o + 1] = fmt('<h2 id="%s">%s</h2>\n<pre class="log" data-stream="%s">%s</pre>\n', stream, stream, stream,
      esc(text))
  end
  o[#o + 1] = '<p><a href="/">All applications</a></p>\n</section>\n'
  return concat(o)
end

local function history(eng)
  local h = eng.store:settings().history or {}
  local o = { '<section id="history">\n<h2>History server</h2>\n<table>\n' }
  o[#o + 1] = fmt('<tr><th>state</th><td>%s</td></tr>\n', state_cell(h.state or "stopped"))
  if h.state == "started" then
    o[#o + 1] = fmt("<tr><th>cores</th><td>%s</td></tr>\n<tr><th>memory</th><td>%s</td></tr>\n"
      .. "<tr><th>started</th><td>%s</td></tr>\n", esc(h.cores or ""), esc(h.memory or ""), when(h.start_ts))
  end
  o[#o + 1] = "</table>\n</section>\n"
  return concat(o)
end

-- Kernels as the engine knows them without asking the Jupyter Server: asking
-- could start one, and this page changes nothing.
local function kernels(eng)
  local k = type(eng.kernels) == "table" and eng.kernels or nil
  local o = { '<section id="kernels">\n<h2>Kernels</h2>\n' }
  local ids = {}
  for id, meta in pairs(k and type(k.meta) == "table" and k.meta or {}) do ids[#ids + 1] = { id, meta } end
  table.sort(ids, function(a, b) return a[1] < b[1] end)
  local running = k and type(k.jupyter) == "table" and k.jupyter.pid
  o[#o + 1] = fmt("<p>Jupyter Server: %s.</p>\n", running and "running" or "not running (it starts on the first "
    .. "kernel request)")
  listing(o, ids, "No kernels were created through this engine.", { "id", "requested kernel" }, function(e)
    return { fmt("<code>%s</code>", esc(e[1])), esc(type(e[2]) == "table" and e[2].requested_name or "") }
  end, ' class="kernel"')
  o[#o + 1] = "</section>\n"
  return concat(o)
end

local function clusters(eng)
  local list = eng.store:list("clusters")
  local o = { '<section id="clusters">\n<h2>Clusters (', #list, ')</h2>\n' }
  listing(o, list, "No clusters.", { "id", "name", "state", "started", "finished" }, function(c)
    return { fmt("<code>%s</code>", esc(c.id)), esc(c.name or ""), state_cell(c.state), when(c.start_ts),
             when(c.finish_ts) }
  end, ' class="cluster"')
  o[#o + 1] = "</section>\n"
  return concat(o)
end

local function dashboard(eng, user, query)
  local app = query.app
  local body = concat {
    fmt('<header>\n<h1>Local Analytics Engine</h1>\n<div class="meta">instance <code>%s</code> · signed in as %s'
      .. " · refreshes every %ds · %s</div>\n</header>\n<main>\n", esc(eng.instance_id or ""), esc(user.username),
      _M.REFRESH, when(core.time())),
    app and application(eng, app) or "",
    applications(eng), history(eng), kernels(eng), clusters(eng),
    "</main>\n" }
  return document("Local Analytics Engine", body, _M.REFRESH)
end

--- Is a POST /login from this engine's own page? Login CSRF (another site
-- logging the browser in as the attacker) is refused: a browser sends Origin
-- (or at least Referer) with a form POST, and it must be this engine's, as
-- the browser reached it (its Host) or as it announces itself (eng.url).
-- A client that sends neither (curl, a script) is not a browser: allowed.
-- -> true | nil, message
function _M.same_origin(eng, req)
  local h = req.headers
  local origin = h.origin
  if (origin == nil or origin == "") and h.referer and h.referer ~= "" then
    origin = h.referer:match("^(%a[%w+.%-]*://[^/?#]+)")
    if not origin then return nil, "the login form's Referer is not a URL" end
  end
  if origin == nil or origin == "" then return true end
  origin = origin:lower()
  local scheme = (eng.url or "http:"):match("^(%a+):") or "http"
  local ok = {}
  if eng.url then ok[#ok + 1] = eng.url:lower():match("^(%a+://[^/]+)") end
  if h.host then ok[#ok + 1] = (scheme .. "://" .. h.host):lower() end
  for _, o in ipairs(ok) do
    if origin == o then return true end
  end
  return nil, ("a login from another site (%s) is refused: sign in from this engine's own page"):format(origin)
end

--- Answer a request for the page -> status, body, headers. `user`, `status`
-- and `message` are what the engine's door check (server.lua) found.
function _M.handle(eng, req, user, status, message)
  if req.path == "/login" and req.method == "POST" then
    local same_site, why = _M.same_origin(eng, req)
    if not same_site then
      return forbidden(why)
    end
    local form = form_decode(req.body)
    local name, key = form.username or "admin", form.api_key or ""
    local u = name ~= "" and key ~= "" and eng.auth:authenticate("ZenApiKey " .. util.b64encode(name .. ":" .. key))
    if not u then
      return 401, login_form("Invalid user or API key.", form.next), headers()
    end
    return 303, "", headers {
      Location = safe_next(form.next),
      -- Secure under TLS: the browser never sends the session over plain HTTP
      ["Set-Cookie"] = fmt("%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d%s", _M.COOKIE,
        _M.session(eng, u), _M.SESSION_TTL, (eng.url or ""):find("^https:") and "; Secure" or ""),
    }
  end
  if req.method ~= "GET" and req.method ~= "HEAD" then
    return 405, "the engine's page is read-only\n", headers { Allow = req.path == "/login" and "GET, POST" or "GET",
                                                               ["Content-Type"] = "text/plain; charset=utf-8" }
  end
  local query = util.parse_query(req.query)
  if req.path == "/login" then return 200, login_form(nil, query.next), headers() end
  if status == 403 then
    return forbidden(message or "forbidden")
  end
  if not user then
    local next_path = query.app and ("/?app=" .. query.app) or "/"
    return 401, login_form(nil, next_path), headers()
  end
  return 200, dashboard(eng, user, query), headers()
end

return _M
