--- What a server or a user's file says, made safe to print and to store.
--
-- Two things, used by every place that prints or stores text it did not
-- write itself (error messages, log lines, the live view, reports, state):
--
-- * `escape`: control characters become visible (`\x1b`, `\x07`, `\r`, …),
--   so a server cannot retitle the terminal, colour it, move the cursor or
--   fake a line of output. C1 controls (U+0080..U+009F, e.g. the one-byte CSI)
--   and DEL are shown too.
-- * `redact`: the caller's own credentials never appear, whatever echoed them:
--   every secret the process registered (`add_secret`: the token, API key,
--   password and the ZenApiKey/Basic base64 forms made from them, tokens
--   fetched by an exchange), and anything that looks like a credential
--   (`Bearer …`, `ZenApiKey …`, `Basic …`, `token=`/`api_key=`/`password=`
--   in a query or a JSON body, the password of a URL's user info).
--
-- `clean` does both, and is what one-line messages go through.
local util = require("analytics_engine.util")

local _M = {}

local type, tostring, pairs = type, tostring, pairs
local gsub, find, byte, format = string.gsub, string.find, string.byte, string.format

_M.MASK = "***"

-- Registered secrets, longest first so one that contains another is masked
-- whole. Bounded: a long run refreshes its token many times.
local secrets, MAX_SECRETS = {}, 64
-- The shortest registered secret's length: a shorter string holds none
-- (most of what a run's events carry: states, names, ids), so redact_known
-- returns it without a search per secret.
local shortest = math.huge
-- Counts the secrets ever registered: text redacted before a change must be
-- redacted again (secrets_version).
local version = 0

-- Per secret, made once (redact_known runs for every string a run writes):
-- its gsub pattern, and its JSON-escaped form and that form's pattern when it
-- has a "/" (cjson writes "/" as "\/", and base64 has slashes).
local pattern_of, escaped_of, escaped_pattern_of = {}, {}, {}

-- gsub replacement patterns must not see the secret's magic characters
local function plain(s) return (gsub(s, "[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

local function measure()
  shortest = math.huge
  pattern_of, escaped_of, escaped_pattern_of = {}, {}, {}
  for i = 1, #secrets do
    local v = secrets[i]
    if #v < shortest then shortest = #v end
    pattern_of[v] = plain(v)
    if find(v, "/", 1, true) then
      escaped_of[v] = gsub(v, "/", "\\/")
      escaped_pattern_of[v] = plain(escaped_of[v])
    end
  end
end

--- Remember a value that must never be printed or stored (too short a value,
-- under 4 bytes, would mask ordinary words, so it is not registered).
local function add_one(value)
  for _, s in pairs(secrets) do
    if s == value then return end
  end
  if #secrets >= MAX_SECRETS then table.remove(secrets, 1) end
  secrets[#secrets + 1] = value
  version = version + 1
  measure()
end

function _M.add_secret(value)
  if type(value) ~= "string" or #value < 4 then return end
  add_one(value)
  -- a server that echoes a URL shows the value percent-encoded (%2F or %2f)
  local pct = util.url_encode(value)
  if pct ~= value then
    add_one(pct)
    add_one((gsub(pct, "%%%x%x", string.lower)))
  end
  table.sort(secrets, function(a, b) return #a > #b end)
end

--- Changes whenever a secret is registered: a text redacted under an older
-- version may hold one unmasked.
function _M.secrets_version() return version end

--- Register a credential set { token, username, api_key, password }: the
-- values and the header forms derived from them.
function _M.add_credentials(cfg)
  if type(cfg) ~= "table" then return end
  _M.add_secret(cfg.token)
  _M.add_secret(cfg.api_key)
  _M.add_secret(cfg.password)
  local user = type(cfg.username) == "string" and cfg.username or nil
  for _, k in pairs { "api_key", "password" } do
    if user and type(cfg[k]) == "string" and #cfg[k] >= 4 then _M.add_secret(util.b64encode(user .. ":" .. cfg[k])) end
  end
end

-- Credentials by their look, for values nobody registered (a token another
-- process fetched, a proxy's own header echoed back). The third field: a
-- character every match contains (a plain find), so most strings (ids,
-- states, names: several per event of a run) skip the patterns whose
-- character they lack; the patterns were a quarter of a 2,000-item run's CPU.
local SHAPES = {
  { "([Bb][Ee][Aa][Rr][Ee][Rr]%s+)[%w%-%._~%+/=]+", "%1" .. _M.MASK, "%s" },
  { "([Zz][Ee][Nn][Aa][Pp][Ii][Kk][Ee][Yy]%s+)[%w%+/=_%-]+", "%1" .. _M.MASK, "%s" },
  { "([Bb][Aa][Ss][Ii][Cc]%s+)[%w%+/=]+", "%1" .. _M.MASK, "%s" },
  -- query strings and form bodies: token=…, api_key=…, password=…
  { "([%?&;][%w_%-]*[Tt][Oo][Kk][Ee][Nn]=)[^&%s\"']+", "%1" .. _M.MASK, "=" },
  { "([%?&;][Aa][Pp][Ii]_?[Kk][Ee][Yy]=)[^&%s\"']+", "%1" .. _M.MASK, "=" },
  { "([%?&;][Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]=)[^&%s\"']+", "%1" .. _M.MASK, "=" },
  -- JSON: "password": "…", "api_key": "…", "token": "…"
  { "(\"[%w_]*[Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]\"%s*:%s*\")[^\"]*", "%1" .. _M.MASK, "\"" },
  { "(\"[Aa][Pp][Ii]_?[Kk][Ee][Yy]\"%s*:%s*\")[^\"]*", "%1" .. _M.MASK, "\"" },
  { "(\"access_token\"%s*:%s*\")[^\"]*", "%1" .. _M.MASK, "\"" },
  { "(\"refresh_token\"%s*:%s*\")[^\"]*", "%1" .. _M.MASK, "\"" },
  { "(\"accessToken\"%s*:%s*\")[^\"]*", "%1" .. _M.MASK, "\"" },
  -- https://user:password@host
  { "(%a[%w+.-]*://[^/@:%s]+:)[^/@%s]+@", "%1" .. _M.MASK .. "@", "@" },
}

--- The text with every registered secret masked, also in its JSON-escaped
-- form (cjson writes "/" as "\/", and base64 has slashes): for documents
-- about to be stored, where only the caller's own values are masked (a run
-- token in a state file must stay as it is).
function _M.redact_known(s)
  if type(s) ~= "string" or #s < shortest then return s end
  for i = 1, #secrets do
    local v = secrets[i]
    if find(s, v, 1, true) then s = gsub(s, pattern_of[v], _M.MASK) end
    local j = escaped_of[v]
    if j and find(s, j, 1, true) then s = gsub(s, escaped_pattern_of[v], _M.MASK) end
  end
  return s
end

--- The text with every registered secret and credential-looking value masked.
function _M.redact(s)
  if type(s) ~= "string" then return s end
  s = _M.redact_known(s)
  -- every shape holds a blank, "=", '"' or "@": most strings of a run's
  -- events (ids, states, names, tokens) have none of them
  if not find(s, "[%s=\"@]") then return s end
  local has = {}
  for i = 1, #SHAPES do
    local shape = SHAPES[i]
    local need = shape[3]
    local h = has[need]
    if h == nil then
      h = find(s, need, 1, need ~= "%s") ~= nil
      has[need] = h
    end
    if h then s = gsub(s, shape[1], shape[2]) end
  end
  return s
end

local NAMED = { ["\t"] = "\\t", ["\n"] = "\\n", ["\r"] = "\\r" }

local function show_byte(c)
  return NAMED[c] or format("\\x%02x", byte(c))
end

-- The length of the valid UTF-8 sequence at s[i] (a byte >= 0x80), or nil:
-- RFC 3629 (no overlong forms, no surrogates, nothing past U+10FFFF).
local function utf8_seq(s, i)
  local a, b, c, d = byte(s, i, i + 3)
  local function cont(x) return x and x >= 0x80 and x <= 0xBF end
  if a >= 0xC2 and a <= 0xDF then return cont(b) and 2 or nil end
  if a >= 0xE0 and a <= 0xEF then
    if not (cont(b) and cont(c)) then return nil end
    if (a == 0xE0 and b < 0xA0) or (a == 0xED and b > 0x9F) then return nil end
    return 3
  end
  if a >= 0xF0 and a <= 0xF4 then
    if not (cont(b) and cont(c) and cont(d)) then return nil end
    if (a == 0xF0 and b < 0x90) or (a == 0xF4 and b > 0x8F) then return nil end
    return 4
  end
  return nil
end

-- Bytes that are not UTF-8 as \xNN: a lone 0x9B is CSI to a terminal in an
-- 8-bit mode, and broken sequences garble what follows them.
local function escape_invalid(s, as_json)
  local i = find(s, "[\128-\255]")
  if not i then return s end
  local out, from = {}, 1
  while i do
    local n = utf8_seq(s, i)
    if n then
      i = i + n
    else
      out[#out + 1] = s:sub(from, i - 1)
      -- JSON has no \xNN: there the byte becomes U+FFFD, as decoders do
      out[#out + 1] = as_json and "\\ufffd" or format("\\x%02x", byte(s, i))
      i = i + 1
      from = i
    end
    i = find(s, "[\128-\255]", i)
  end
  out[#out + 1] = s:sub(from)
  return table.concat(out)
end

--- Control characters made visible. `multiline` keeps newlines and tabs
-- (log text); otherwise the result is one line. Backslashes are left as
-- they are: they cannot do anything to a terminal. Bytes that are not
-- UTF-8 are shown as \xNN too.
function _M.escape(s, multiline)
  if type(s) ~= "string" then return s end
  s = escape_invalid(s)
  if multiline then
    s = gsub(s, "\r\n", "\n")
    s = gsub(s, "[%z\1-\8\11-\31\127]", show_byte)
  else
    s = gsub(s, "[%z\1-\31\127]", show_byte)
  end
  -- C1 controls in UTF-8 (a terminal may act on U+009B as CSI)
  return (gsub(s, "\194([\128-\159])", function(c) return format("\\u%04x", byte(c)) end))
end

--- JSON text made safe for a terminal: cjson escapes C0 controls itself, but
-- not DEL or the C1 controls (U+0080..U+009F); those become \u escapes, which
-- are still valid JSON, and bytes that are not UTF-8 become \ufffd. The caller's registered secrets are masked.
function _M.json(s)
  if type(s) ~= "string" then return s end
  s = gsub(escape_invalid(_M.redact_known(s), true), "\127", "\\u007f")
  return (gsub(s, "\194([\128-\159])", function(c) return format("\\u%04x", byte(c)) end))
end

--- Redacted, then escaped: safe for a one-line message.
function _M.clean(s, multiline)
  if s == nil then return s end
  if type(s) ~= "string" then s = tostring(s) end
  return _M.escape(_M.redact(s), multiline)
end

--- A copy of a value with every string in it cleaned (keys too): for
-- documents on their way to a report or a file.
function _M.deep(v, seen)
  if type(v) == "string" then return _M.clean(v, true) end
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local out = {}
  seen[v] = out
  for k, x in pairs(v) do out[_M.deep(k, seen)] = _M.deep(x, seen) end
  return setmetatable(out, getmetatable(v))
end

return _M
