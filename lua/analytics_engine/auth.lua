--- Authentication: Bearer token, ZenApiKey, or a token from the
-- /icp4d-api/v1/authorize exchange, cached and refreshed before it expires.
local util = require("analytics_engine.util")
local api = require("analytics_engine.api")
local errors = require("analytics_engine.errors")
local sanitize = require("analytics_engine.sanitize")

local _M = {}
local mt = { __index = _M }

-- Refresh at 80% of the token's lifetime, as the vendor's SDKs do, and never
-- later than a minute before `exp`.
local REFRESH_FRACTION = 0.8
local REFRESH_MARGIN = 60

--- Claims of a JWT (not verified: the server verifies; we read exp/iat).
function _M.jwt_claims(token)
  local payload = type(token) == "string" and token:match("^[%w_-]+%.([%w_-]+)%.")
  if not payload then return nil end
  local json = util.b64url_decode(payload)
  local claims = json and util.json_decode(json)
  return type(claims) == "table" and claims or nil
end

local function check_string(cfg, k, where)
  local v = cfg[k]
  if v ~= nil and (type(v) ~= "string" or v == "") then
    error(("bad argument: %s.%s must be a non-empty string"):format(where, k), 4)
  end
end

--- cfg: { token [, scheme] } | { username, api_key [, exchange] } | { username, password }
function _M.new(cfg, where)
  where = where or "auth"
  if cfg == nil then return setmetatable({ kind = "none" }, mt) end
  if type(cfg) ~= "table" then
    error(("bad argument: %s must be a table"):format(where), 3)
  end
  -- An auth object already (client:with shares one, with its token cache).
  if getmetatable(cfg) == mt then return cfg end
  for _, k in ipairs { "token", "username", "api_key", "password" } do check_string(cfg, k, where) end
  -- Whatever echoes them later (a server's error, a URL) prints them masked.
  sanitize.add_credentials(cfg)
  local self = setmetatable({}, mt)
  if cfg.scheme ~= nil and cfg.scheme ~= "Bearer" and cfg.scheme ~= "token" then
    error(("bad argument: %s.scheme must be 'Bearer' or 'token'"):format(where), 3)
  end
  if cfg.token then
    -- scheme "token": a Jupyter Server's "Authorization: token …".
    self.kind, self.header = "bearer", (cfg.scheme or "Bearer") .. " " .. cfg.token
  elseif cfg.username and cfg.password then
    self.kind, self.username, self.secret = "exchange", cfg.username, { password = cfg.password }
  elseif cfg.username and cfg.api_key and cfg.exchange then
    self.kind, self.username, self.secret = "exchange", cfg.username, { api_key = cfg.api_key }
  elseif cfg.username and cfg.api_key then
    self.kind = "zenapikey"
    self.header = "ZenApiKey " .. util.b64encode(cfg.username .. ":" .. cfg.api_key)
  else
    error(("bad argument: %s needs token, username+api_key or username+password"):format(where), 3)
  end
  return self
end

-- Keep secrets out of accidental prints of the client.
mt.__tostring = function(self) return "auth(" .. self.kind .. ")" end

--- The Authorization header value, exchanging for a token when needed.
-- `fetch(req)` is the client's raw transport call; `now` is the transport's
-- clock reading, or a function returning it (read only for exchanged tokens,
-- so a fixed header costs no clock call).
function _M.header_value(self, fetch, base_url, now)
  local kind, header = self.kind, self.header
  if kind == "none" then return nil end
  if header and kind ~= "exchange" then return header end
  if type(now) == "function" then now = now() end
  if header and now < self.refresh_at then return header end
  return self:exchange(fetch, base_url, now)
end

function _M.exchange(self, fetch, base_url, now)
  local body = { username = self.username, password = self.secret.password, api_key = self.secret.api_key }
  local path = api.AUTHORIZE_PATH
  local ctx = { method = "POST", path = path, operation = "authorize", url = base_url .. path }
  local res, terr = fetch { method = "POST", url = base_url .. path,
                            headers = { ["Content-Type"] = "application/json", Accept = "application/json" },
                            body = util.json_encode(body) }
  if not res then return nil, errors.from_transport(terr, ctx) end
  if res.status ~= 200 then
    local err = errors.from_response(res, ctx)
    err.message = "token exchange failed: " .. err.message
    return nil, err
  end
  local doc = util.json_decode(res.body)
  local token = type(doc) == "table" and (doc.token or doc.accessToken or doc.access_token)
  if type(token) ~= "string" then
    return nil, errors.new { status = res.status, code = "bad_response", method = "POST", path = path,
                             operation = "authorize", message = "token exchange answered without a token" }
  end
  local claims = _M.jwt_claims(token) or {}
  local wall = os.time()
  local exp, iat = tonumber(claims.exp), tonumber(claims.iat) or wall
  local lifetime
  if exp then
    lifetime = math.min((exp - iat) * REFRESH_FRACTION, exp - wall - REFRESH_MARGIN)
  else
    lifetime = 20 * 60 -- no exp claim: assume CPD's shortest default lifetime
  end
  sanitize.add_secret(token)
  self.header = "Bearer " .. token
  self.refresh_at = now + math.max(lifetime, 0)
  return self.header
end

--- Forget the cached token (after a 401); true when a new one can be fetched.
function _M.invalidate(self)
  if self.kind ~= "exchange" then return false end
  self.header = nil
  return true
end

return _M
