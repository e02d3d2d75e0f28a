--- Small pure helpers shared by the client, the engine and the CLI.
local cjson = require("cjson.safe")

local _M = {}

local byte, char, concat, floor = string.byte, string.char, table.concat, math.floor

-- Lua-pattern form of api.UUID_PATTERN (version 1-5, variant 8/9/a/b).
local H = "[0-9a-f]"
local UUID = "^" .. H:rep(8) .. "%-" .. H:rep(4) .. "%-[1-5]" .. H:rep(3) .. "%-[89ab]" .. H:rep(3)
             .. "%-" .. H:rep(12) .. "$"

function _M.is_uuid(s)
  return type(s) == "string" and #s == 36 and s:find(UUID) ~= nil
end

--- A random version-4 UUID from the core's getrandom().
function _M.uuid4(random_bytes)
  local b = { byte(random_bytes(16), 1, 16) }
  -- Bit operations as arithmetic so the file also loads on Lua 5.1/LuaJIT.
  b[7] = b[7] % 16 + 0x40 -- version 4
  b[9] = b[9] % 64 + 0x80 -- variant 10xx
  local hex = {}
  for i = 1, 16 do hex[i] = ("%02x"):format(b[i]) end
  local s = concat(hex)
  return ("%s-%s-%s-%s-%s"):format(s:sub(1, 8), s:sub(9, 12), s:sub(13, 16), s:sub(17, 20), s:sub(21, 32))
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

local function b64encode(s, alphabet, pad)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local i1, i2, i3, i4 = floor(n / 262144) + 1, floor(n / 4096) % 64 + 1, floor(n / 64) % 64 + 1, n % 64 + 1
    local q = {
      alphabet:sub(i1, i1),
      alphabet:sub(i2, i2),
      b and alphabet:sub(i3, i3) or (pad and "=" or ""),
      c and alphabet:sub(i4, i4) or (pad and "=" or ""),
    }
    out[#out + 1] = concat(q)
  end
  return concat(out)
end

local function b64decode(s, alphabet)
  local rev = {}
  for i = 1, 64 do rev[byte(alphabet, i)] = i - 1 end
  s = s:gsub("[=%s]", "")
  local out, n, bits = {}, 0, 0
  for i = 1, #s do
    local v = rev[byte(s, i)]
    if not v then return nil, "invalid base64 character at position " .. i end
    -- n holds the `bits` pending bits, so it stays below 2^14.
    n = n * 64 + v
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      local scale = 2 ^ bits
      local o = floor(n / scale)
      out[#out + 1] = char(o)
      n = n - o * scale
    end
  end
  return concat(out)
end

function _M.b64encode(s) return b64encode(s, B64, true) end
function _M.b64decode(s) return b64decode(s, B64) end
function _M.b64url_encode(s) return b64encode(s, B64URL, false) end
function _M.b64url_decode(s) return b64decode(s, B64URL) end

function _M.hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(byte(c)) end))
end

-- JSON through cjson.safe, which never raises. Debian's lua-cjson 2.1.0 has no
-- array metatable, so an empty array is marked with ARRAY_MT; a value that
-- holds one is encoded here, container by container, with cjson for every
-- leaf and every part without an empty array (no placeholder string that
-- user data could collide with).
_M.null = cjson.null
local ARRAY_MT = { __name = "analytics_engine.array" }
local MAX_DEPTH = 1000 -- cjson's own default

-- Does `v` hold an empty array anywhere? Each table is looked at once per
-- encode (`memo`: table -> answer): asking again for every container on the
-- way down walked a large document (a 10,000-item state file) once per level.
local function has_empty_array(v, memo)
  if type(v) ~= "table" then return false end
  local known = memo[v]
  if known ~= nil then return known end
  memo[v] = false -- a cycle: cjson reports it
  local found
  if next(v) == nil then
    found = getmetatable(v) == ARRAY_MT
  else
    found = false
    for _, x in pairs(v) do
      if type(x) == "table" and has_empty_array(x, memo) then
        found = true
        break
      end
    end
  end
  memo[v] = found
  return found
end

-- Like cjson: a table whose keys are all positive integers is an array.
local function array_length(t)
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k ~= floor(k) then return nil end
    if k > n then n = k end
  end
  return n
end

--- n when `t`'s keys are all whole numbers 1..n (holes allowed), else nil.
_M.array_length = array_length

local function encode_marked(v, depth, out, memo)
  if not has_empty_array(v, memo) then
    local s, err = cjson.encode(v)
    if not s then return nil, err end
    out[#out + 1] = s
    return true
  end
  if depth > MAX_DEPTH then return nil, "Cannot serialise, excessive nesting (" .. depth .. ")" end
  if next(v) == nil then
    out[#out + 1] = "[]"
    return true
  end
  local n = array_length(v)
  if n then
    out[#out + 1] = "["
    for i = 1, n do
      if i > 1 then out[#out + 1] = "," end
      local x = v[i]
      if x == nil then x = cjson.null end
      local ok, err = encode_marked(x, depth + 1, out, memo)
      if not ok then return nil, err end
    end
    out[#out + 1] = "]"
    return true
  end
  out[#out + 1] = "{"
  local first = true
  for k, x in pairs(v) do
    local tk = type(k)
    if tk ~= "string" and tk ~= "number" then
      return nil, "Cannot serialise " .. tk .. ": table key must be a number or string"
    end
    if not first then out[#out + 1] = "," end
    first = false
    local ks, err = cjson.encode(tk == "number" and ("%.14g"):format(k) or k)
    if not ks then return nil, err end
    out[#out + 1] = ks
    out[#out + 1] = ":"
    local ok, xerr = encode_marked(x, depth + 1, out, memo)
    if not ok then return nil, xerr end
  end
  out[#out + 1] = "}"
  return true
end

-- The C core's walk (core.has_empty_array), when this Lua has the core: the
-- Lua walk below was ~70 % of writing a 10,000-item state file. Looked up on
-- first use (util also loads where the core cannot: LuaJIT under nginx).
local c_has_empty
local function core_walk()
  if c_has_empty == nil then
    c_has_empty = false
    if _VERSION == "Lua 5.4" then
      local ok, core = pcall(require, "analytics_engine.core")
      if ok and type(core) == "table" and core.has_empty_array then c_has_empty = core.has_empty_array end
    end
  end
  return c_has_empty
end

function _M.json_encode(v)
  if type(v) ~= "table" then return cjson.encode(v) end
  local walk = c_has_empty or core_walk()
  if walk and walk(v, ARRAY_MT) == false then return cjson.encode(v) end
  local memo = {}
  if not has_empty_array(v, memo) then return cjson.encode(v) end
  local out = {}
  local ok, err = encode_marked(v, 1, out, memo)
  if not ok then return nil, err end
  return concat(out)
end

--- The JSON text of `v` in pieces, for a writer that takes a producer
-- (core.write_file_atomic): a function returning the next piece (about
-- `size` bytes, each passed through `map` if given) and nil at the end.
-- Containers down to `levels` deep are walked here and deeper values encoded
-- whole, so one piece and one deep value's text are alive at a time instead
-- of the whole document's (a 10,000-item state file is ~3.5 MB of text, and
-- cjson's buffer and the copies made of it held several times that). A
-- piece ends only after a whole value. An unencodable value raises.
function _M.json_pieces(v, levels, size, map)
  size = size or 65536
  return coroutine.wrap(function()
    local buf, n = {}, 0
    local function put(s)
      buf[#buf + 1] = s
      n = n + #s
    end
    local function cut()
      if n < size then return end
      local piece = concat(buf)
      buf, n = {}, 0
      coroutine.yield(map and map(piece) or piece)
    end
    local function walk(x, left, depth)
      if type(x) ~= "table" or left == 0 or next(x) == nil then
        local s, err = _M.json_encode(x)
        if not s then error(err, 0) end
        put(s)
        return cut()
      end
      if depth > MAX_DEPTH then error("Cannot serialise, excessive nesting (" .. depth .. ")", 0) end
      local len = array_length(x)
      put(len and "[" or "{")
      if len then
        for i = 1, len do
          if i > 1 then put(",") end
          local e = x[i]
          if e == nil then e = cjson.null end
          walk(e, left - 1, depth + 1)
        end
      else
        local first = true
        for k, e in pairs(x) do
          local tk = type(k)
          if tk ~= "string" and tk ~= "number" then
            error("Cannot serialise " .. tk .. ": table key must be a number or string", 0)
          end
          if not first then put(",") end
          first = false
          put(cjson.encode(tk == "number" and ("%.14g"):format(k) or k))
          put(":")
          walk(e, left - 1, depth + 1)
        end
      end
      put(len and "]" or "}")
      return cut()
    end
    walk(v, levels, 1)
    if n > 0 then
      local piece = concat(buf)
      buf = nil
      coroutine.yield(map and map(piece) or piece)
    end
  end)
end

function _M.json_decode(s) return cjson.decode(s) end

--- An array that encodes as [] even when empty.
function _M.array(t)
  return setmetatable(t or {}, ARRAY_MT)
end

local DAYS = { "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday" }
local MONTHS = { "January", "February", "March", "April", "May", "June", "July", "August", "September",
                 "October", "November", "December" }

--- The service's long timestamp: "Friday 03 January 2025 08:40:42.324+0000".
function _M.long_time(t)
  local d = os.date("!*t", floor(t))
  return ("%s %02d %s %d %02d:%02d:%02d.%03d+0000"):format(DAYS[d.wday], d.day, MONTHS[d.month], d.year,
    d.hour, d.min, d.sec, floor((t % 1) * 1000))
end

--- ISO 8601 with milliseconds: "2021-04-21T04:24:01.000Z".
function _M.iso_time(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", floor(t)) .. (".%03dZ"):format(floor((t % 1) * 1000))
end

--- An integer from a number or a numeric string; nil for fractions, NaN and
-- infinities (integral floats from JSON count). Lua 5.1-safe, unlike math.tointeger.
function _M.tointeger(v)
  v = tonumber(v)
  if v and v == v and v ~= math.huge and v ~= -math.huge and v == math.floor(v) then return math.floor(v) end
  return nil
end

--- Decode one application/x-www-form-urlencoded component.
function _M.url_decode(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

function _M.url_encode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(byte(c)) end))
end

function _M.parse_query(q)
  local t = {}
  for pair in (q or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    t[_M.url_decode(k)] = _M.url_decode(v)
  end
  return t
end

--- Whether a file can be opened for reading.
function _M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local KINDS = { char = "character device", block = "block device", fifo = "FIFO", dir = "directory" }

--- What `path` is when it exists and is not a regular file ("a character
-- device", "a FIFO"…), else nil. Readers of a user's file check it first:
-- /dev/zero never ends and a FIFO blocks open() forever. The C core is
-- loaded here, not at the top: a client under nginx must not load it.
function _M.not_regular(path)
  local ok, core = pcall(require, "analytics_engine.core")
  if not ok or not core.file_mode then return nil end
  local mode, kind = core.file_mode(path) -- nil, err when missing: the open says so
  if mode and kind ~= "file" then return "a " .. (KINDS[kind] or tostring(kind)) end
  return nil
end

--- A whole file, or nil and the io error.
function _M.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

--- A file holding a JSON object, decoded; nil when missing or not an object.
function _M.read_json_file(path)
  local s = _M.read_file(path)
  local v = s and _M.json_decode(s)
  return type(v) == "table" and v or nil
end

--- The directory part of a path ("." for a bare name, "/" for the root).
function _M.dirname(path)
  local d = path:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

--- Shallow copy.
function _M.copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

--- Deep copy of plain data.
function _M.deepcopy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = _M.deepcopy(x) end
  return setmetatable(c, getmetatable(v))
end

--- JSON with sorted keys and two-space indentation, for people to read.
function _M.json_pretty(v, indent)
  indent = indent or ""
  if type(v) ~= "table" or v == _M.null then return (cjson.encode(v)) end
  local inner = indent .. "  "
  local n = #v
  if n > 0 or (next(v) == nil and getmetatable(v) == ARRAY_MT) then
    if n == 0 then return "[]" end
    local items = {}
    for i = 1, n do items[i] = inner .. _M.json_pretty(v[i], inner) end
    return "[\n" .. concat(items, ",\n") .. "\n" .. indent .. "]"
  end
  if next(v) == nil then return "{}" end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local items = {}
  for i, k in ipairs(keys) do
    local x = v[k]
    if x == nil then x = v[tonumber(k)] end
    items[i] = inner .. cjson.encode(k) .. ": " .. _M.json_pretty(x, inner)
  end
  return "{\n" .. concat(items, ",\n") .. "\n" .. indent .. "}"
end

return _M
