--- The engine's side of authentication: users, API keys, HS256 JWTs.
-- Files in the data directory (all 0600):
--   secret            the HMAC key for tokens (hex), made once
--   users.json        [{username, role, api_key_sha256 | password_sha256}] for the generated admin
--   credentials.json  {username, api_key, instance_id, url}: the admin's key in plain text, for the user
-- Keys and passwords are kept only as sha256 hex; no secret is ever logged.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local api = require("analytics_engine.api")

local _M = {}
local mt = { __index = _M }

local ROLES = api.ROLE_RANK

local function sha256_hex(s) return util.hex(core.sha256(s)) end
_M.sha256_hex = sha256_hex

local read_file = util.read_file

--- Equal-time comparison of two strings (secrets, signatures): the engine's
-- one copy, also used by the page's session check.
local function same(a, b)
  if type(a) ~= "string" or type(b) ~= "string" or #a ~= #b then return false end
  local d = 0
  for i = 1, #a do d = d | (a:byte(i) ~ b:byte(i)) end
  return d == 0
end
_M.same = same

local function check_users(list, where)
  if type(list) ~= "table" then return nil, where .. ": must be a JSON array of users" end
  local out = {}
  for i, u in ipairs(list) do
    local at = ("%s: user #%d"):format(where, i)
    if type(u) ~= "table" or type(u.username) ~= "string" or u.username == "" then
      return nil, at .. ": username must be a non-empty string"
    end
    if u.role ~= nil and not ROLES[u.role] then
      return nil, ("%s: role must be one of admin, editor, user, viewer"):format(at)
    end
    if type(u.api_key_sha256) ~= "string" and type(u.password_sha256) ~= "string" then
      return nil, at .. ": needs api_key_sha256 or password_sha256"
    end
    out[#out + 1] = { username = u.username, role = u.role or "user",
                      api_key_sha256 = u.api_key_sha256 and u.api_key_sha256:lower(),
                      password_sha256 = u.password_sha256 and u.password_sha256:lower() }
  end
  return out
end

-- The admin's key from credentials.json: nil on a first start (neither file
-- there), nil, message when a file is damaged or credentials.json is gone
-- while users.json still holds a key. Making a new key then would lock out
-- every client of the old one with a bare 401, so start-up stops and says
-- which file and what to do.
local function admin_key(dir)
  local cpath, upath = dir .. "/credentials.json", dir .. "/users.json"
  local cs, cerr = read_file(cpath)
  local us, uerr = read_file(upath)
  for _, e in pairs({ cerr or false, uerr or false }) do -- there but unreadable is not "missing"
    if e and not e:find("No such file", 1, true) then return nil, "cannot read " .. e end
  end
  local fresh = "delete it to have a new admin key made (clients with the old key then get 401)"
  if us then
    local list = util.json_decode(us)
    if not check_users(list, upath) then
      return nil, upath .. ": damaged (not the engine's JSON list of users); it is made again from "
        .. "credentials.json at start: move it away and start again"
    end
  end
  if cs then
    local c = util.json_decode(cs)
    if type(c) ~= "table" or type(c.api_key) ~= "string" or c.api_key == "" then
      return nil, cpath .. ": damaged (not JSON with the admin's api_key); restore it from a backup, or "
        .. fresh
    end
    return c.api_key
  end
  if us then
    return nil, cpath .. " is missing but " .. upath .. " holds the admin's key; restore credentials.json "
      .. "from a backup, or delete users.json to have a new admin key made (clients with the old key then get 401)"
  end
  return nil
end

--- open{ data_dir, token_ttl = 3600, users_file = nil } -> auth | nil, err
function _M.open(opts)
  local dir = opts.data_dir
  local self = setmetatable({ dir = dir, ttl = opts.token_ttl or 3600, users = {} }, mt)

  local secret = read_file(dir .. "/secret")
  secret = secret and secret:match("^(%x+)%s*$")
  if not secret or #secret < 32 then
    secret = util.hex(core.random_bytes(32))
    local ok, err = core.write_file_atomic(dir .. "/secret", secret .. "\n", 384)
    if not ok then return nil, "cannot write " .. dir .. "/secret: " .. tostring(err) end
  end
  self.secret = secret

  local key, kerr = admin_key(dir)
  if kerr then return nil, kerr end
  if not key then key = util.hex(core.random_bytes(24)) end
  self.admin = { username = "admin", role = "admin", api_key_sha256 = sha256_hex(key) }
  self.admin_key = key
  local ok, err = core.write_file_atomic(dir .. "/users.json", util.json_encode({ self.admin }), 384)
  if not ok then return nil, "cannot write " .. dir .. "/users.json: " .. tostring(err) end
  self.users.admin = self.admin

  if opts.users_file then
    local s = read_file(opts.users_file)
    if not s then return nil, "cannot read users file " .. opts.users_file end
    local list, derr = util.json_decode(s)
    if list == nil then return nil, opts.users_file .. ": not valid JSON: " .. tostring(derr) end
    local users, uerr = check_users(list, opts.users_file)
    if not users then return nil, uerr end
    for _, u in ipairs(users) do self.users[u.username] = u end
  end
  return self
end

--- Write credentials.json for the user to read (the only place the key is in plain text).
function _M:write_credentials(url, instance_id)
  local body = util.json_encode({ username = self.admin.username, api_key = self.admin_key,
                                  instance_id = instance_id, url = url })
  return core.write_file_atomic(self.dir .. "/credentials.json", body .. "\n", 384)
end

local function sign(secret, s)
  return util.b64url_encode(core.hmac_sha256(secret, s))
end

--- An HS256 JWT for `user`.
function _M:issue(user, now)
  now = math.floor(now or core.time())
  local header = util.b64url_encode(util.json_encode({ alg = "HS256", typ = "JWT" }))
  local payload = util.b64url_encode(util.json_encode({
    username = user.username, sub = user.username, role = user.role, iat = now, exp = now + self.ttl }))
  local signing = header .. "." .. payload
  return signing .. "." .. sign(self.secret, signing)
end

--- POST /icp4d-api/v1/authorize: body {username, password | api_key} -> token | nil, message
function _M:exchange(body)
  local name = body.username
  if type(name) ~= "string" or name == "" then return nil, 400, "username is required" end
  local given, field
  if type(body.password) == "string" then
    given, field = body.password, "password_sha256"
  elseif type(body.api_key) == "string" then
    given, field = body.api_key, "api_key_sha256"
  else
    return nil, 400, "password or api_key is required"
  end
  local u = self.users[name]
  if not u or not u[field] or not same(u[field], sha256_hex(given)) then
    return nil, 401, "invalid username or credentials"
  end
  return self:issue(u)
end

function _M:verify_token(token, now)
  local h, p, s = token:match("^([%w_%-]+)%.([%w_%-]+)%.([%w_%-]+)$")
  if not h then return nil, "the bearer token is malformed" end
  if not same(sign(self.secret, h .. "." .. p), s) then return nil, "the bearer token is invalid" end
  local claims = util.json_decode(util.b64url_decode(p) or "")
  if type(claims) ~= "table" or type(claims.exp) ~= "number" then return nil, "the bearer token is invalid" end
  if (now or core.time()) >= claims.exp then return nil, "the bearer token has expired" end
  local u = self.users[claims.username]
  if not u then return nil, "the bearer token's user no longer exists" end
  return u, nil, claims.exp
end

_M.CACHE_SIZE = 4096

--- authenticate(authorization_header_value) -> user, nil, expiry | nil, message
-- Headers that passed are remembered (user, and a token's expiry), so the
-- polls that make most of the load skip the base64, SHA-256 and HMAC work.
-- Only successes are kept, the set of users is fixed for the engine's life,
-- and the cache is dropped whole when it fills. `expiry` (core.time()
-- seconds) is when the credential stops passing: a token's exp, nil for a key.
-- (Answers the server replays, engine/answers.lua, rest on the same fixed
-- users: a change to them would have to clear both.)
function _M:authenticate(header)
  local hit = self.cache and self.cache[header]
  if hit then
    if not hit.exp or core.time() < hit.exp then return hit.user, nil, hit.exp end
    self.cache[header] = nil
  end
  local user, err, exp = self:check(header)
  if user then
    if not self.cache or self.cached >= _M.CACHE_SIZE then self.cache, self.cached = {}, 0 end
    self.cache[header] = { user = user, exp = exp }
    self.cached = self.cached + 1
  end
  return user, err, exp
end

function _M:check(header)
  if type(header) ~= "string" or header == "" then
    return nil, "authorization required: send 'Authorization: ZenApiKey <base64(user:key)>' or 'Bearer <token>'"
  end
  local scheme, cred = header:match("^(%S+)%s+(%S+)%s*$")
  scheme = scheme and scheme:lower()
  if scheme == "bearer" then
    local u, err, exp = self:verify_token(cred)
    return u, err, exp
  elseif scheme == "zenapikey" then
    local plain = util.b64decode(cred)
    local name, key = (plain or ""):match("^([^:]+):(.+)$")
    local u = name and self.users[name]
    if not u or not u.api_key_sha256 or not same(u.api_key_sha256, sha256_hex(key)) then
      return nil, "invalid ZenApiKey credentials"
    end
    return u
  end
  return nil, "unsupported authorization scheme: use ZenApiKey or Bearer"
end

--- May `user` pass `door` (a row of api.lua or the engine's; `role` is the
-- least role it needs)? -> true | nil, message. Roles rank as api.ROLES.
function _M.permits(user, door)
  local need = door.role
  if need == nil then return true end
  local have, want = api.ROLE_RANK[user.role], api.ROLE_RANK[need]
  if have and want and have >= want then return true end
  return nil, ("user '%s' has the %s role; %s needs %s or higher"):format(user.username, tostring(user.role),
    door.name, need)
end

return _M
