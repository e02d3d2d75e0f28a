--- The environment a workflow file is loaded in, and the bounds on loading.
--
-- `aeflow validate`, `plan` and `graph` read a workflow file without running
-- anything it describes, so loading one must not have side effects and must
-- end. While a file loads (and while its result is checked and planned):
--
-- * only an allow-list is reachable: the DSL (`workflow`, `step`, `finally`),
--   `ae.null`, copies of `string` (no `dump`; `rep` capped), `table`, `math`,
--   `utf8`, `os.date/time/clock/difftime`, the base functions that cannot
--   reach outside (`pairs`, `pcall`, `setmetatable` without `__gc`, `load` of
--   text into this same environment, ...) and the helpers below. No `io`,
--   `require`, `dofile`, `os.exit/execute/remove/rename/getenv`, `debug`,
--   `package`, `coroutine` or `collectgarbage`.
-- * a count hook bounds the wall time (MAX_SECONDS), the instructions
--   (MAX_INSTRUCTIONS) and the heap's growth (MAX_MEMORY_MB); past any,
--   loading stops with
--   `nightly.lua: took more than 2 s to load (an endless loop? at line 3)`,
--   and a `pcall` in the file cannot swallow that.
-- * the hook cannot see inside one C call, so the heap is also capped in the
--   allocator (core.memory_limit: `s .. s` or table.concat cannot ask for
--   gigabytes between two hooks), and a one-shot command (the aeflow CLI
--   sets HARD_DEADLINE) arms a last-resort timer (core.hard_deadline) that
--   ends the process with exit 2 if one call never returns (a backtracking
--   `string.find` pattern runs for years).
--
-- Helpers for what a file legitimately needs while loading, paths relative to
-- the workflow file's directory (and inside it):
--   env "NAME" [, default]      an environment variable (a string), or default
--   read_json "items.json"      the decoded file
--   read_lines "items.txt"      its non-empty lines, trimmed
--   read_csv "items.csv"        its rows as tables keyed by the header row
--
-- Once loading is over, the same environment falls through to the real
-- globals: a `run = function(ctx) ... end` step executes during `aeflow run`
-- only, as the user's own code, with the whole standard library (as `aeflow
-- exec` scripts have). The sandbox is about reading a file safely, not about
-- confining a run the user asked for.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local schema = require("analytics_engine.workflow.schema")

local _M = {}

_M.MAX_SECONDS = 2
_M.MAX_INSTRUCTIONS = 2e9
_M.MAX_FILE_BYTES = 16 * 1024 * 1024
_M.MAX_STRING = 64 * 1024 * 1024
_M.MAX_MEMORY_MB = 1024 -- heap growth while loading (checked with the clock, capped in the allocator)
_M.HARD_DEADLINE = false -- seconds past MAX_SECONDS before the process is ended (false: never)
local MEMORY_ERROR = "not enough memory" -- Lua's own message for a failed allocation
local EVERY = 10000 -- instructions between two looks at the clock
-- The caller's own credentials (config.lua reads them): `env` must not hand
-- them to a file, which could print them in `plan` or send them as arguments.
local CREDENTIALS = { AE_TOKEN = true, AE_API_KEY = true, AE_PASSWORD = true }

local type, pairs, ipairs, tostring, select, error = type, pairs, ipairs, tostring, select, error
local fmt = string.format
local pack, unpack = table.pack, table.unpack
local sethook, gethook, getinfo = debug.sethook, debug.gethook, debug.getinfo

local function copy(t, except)
  local c = {}
  for k, v in pairs(t) do
    if not (except and except[k]) then c[k] = v end
  end
  return c
end

--- A new sandbox for the file `file`. Fields: env (give it to `load`),
-- and the methods below.
function _M.new(file, full_ae)
  local box = { file = file, dir = util.dirname(file), loading = false, stopped = nil }
  local STOP = setmetatable({}, { __tostring = function() return box.stopped or "stopped" end })
  box.STOP = STOP

  -- After a stop every protected call re-raises it: the file cannot go on.
  local function check_stop(ok, ...)
    if box.stopped then error(STOP, 0) end
    if not ok and box.loading and (...) == MEMORY_ERROR then
      box.stopped = fmt("%s: used more than %d MB while loading", box.file, _M.MAX_MEMORY_MB)
      error(STOP, 0)
    end
    return ok, ...
  end
  local function safe_pcall(f, ...)
    return check_stop(pcall(f, ...))
  end
  local function safe_xpcall(f, handler, ...)
    return check_stop(xpcall(f, function(e)
      if box.stopped then return e end
      return handler(e)
    end, ...))
  end

  -- The file's line that called a helper (the nearest frame of the file).
  local function where_called()
    local src = "@" .. box.file
    for level = 2, 30 do
      local info = getinfo(level, "Sl")
      if not info then break end
      if info.source == src and info.currentline and info.currentline > 0 then
        return box.file .. ":" .. info.currentline
      end
    end
    return box.file
  end

  -- A path the helpers may read: relative, inside the workflow's directory.
  local function local_path(fname, p)
    if type(p) ~= "string" or p == "" then
      error(fmt("%s: %s wants a file name, got %s", where_called(), fname, type(p)), 0)
    end
    if p:sub(1, 1) == "/" or ("/" .. p .. "/"):find("/%.%./") then
      error(fmt("%s: %s: '%s' is outside the workflow's directory (give a path relative to %s, without ..)",
        where_called(), fname, p, box.dir), 0)
    end
    return box.dir .. "/" .. p
  end
  local function read(fname, p)
    local path = local_path(fname, p)
    -- a symlink in the directory must not lead outside it either
    local real, top = core.realpath(path), core.realpath(box.dir)
    if not real then error(fmt("%s: %s: cannot read %s (looked in %s)", where_called(), fname, p, box.dir), 0) end
    if not top or real:sub(1, #top + 1) ~= (top == "/" and "/" or top .. "/") then
      error(fmt("%s: %s: '%s' leads outside the workflow's directory (a symlink to %s)", where_called(), fname, p,
        real), 0)
    end
    local mode, kind = core.file_mode(real)
    if mode and kind ~= "file" then
      error(fmt("%s: %s: %s is not a regular file (a %s)", where_called(), fname, p, tostring(kind)), 0)
    end
    local f = io.open(real, "rb")
    if not f then error(fmt("%s: %s: cannot read %s (looked in %s)", where_called(), fname, p, box.dir), 0) end
    local s = f:read(_M.MAX_FILE_BYTES + 1)
    f:close()
    s = s or ""
    if #s > _M.MAX_FILE_BYTES then
      error(fmt("%s: %s: %s is larger than %d MB", where_called(), fname, p, _M.MAX_FILE_BYTES // 1048576), 0)
    end
    return s
  end

  local helpers = {}
  function helpers.env(name, default)
    if type(name) ~= "string" then error(fmt("%s: env wants a variable name", where_called()), 0) end
    if CREDENTIALS[name] then
      error(fmt("%s: env: %s is the caller's credential; a workflow file cannot read it", where_called(), name), 0)
    end
    local v = os.getenv(name)
    if v == nil then return default end
    return v
  end
  -- JSON numbers that are whole come back as integers (3, not 3.0), as the
  -- same numbers written in Lua would be.
  local function integral(v)
    if type(v) == "number" then return math.tointeger(v) or v end
    if type(v) ~= "table" then return v end
    for k, x in pairs(v) do v[k] = integral(x) end
    return v
  end
  function helpers.read_json(p)
    local doc, err = util.json_decode(read("read_json", p))
    if doc == nil then error(fmt("%s: read_json: %s is not JSON (%s)", where_called(), p, tostring(err)), 0) end
    return integral(doc)
  end
  function helpers.read_lines(p)
    local out = {}
    for line in (read("read_lines", p) .. "\n"):gmatch("([^\n]*)\n") do
      line = line:match("^%s*(.-)%s*$")
      if line ~= "" then out[#out + 1] = line end
    end
    return out
  end
  -- RFC 4180 fields: commas, "quoted, with "" inside", CRLF or LF.
  local function csv_rows(s)
    local rows, row, i, n = {}, {}, 1, #s
    local field = {}
    local function end_field() row[#row + 1] = table.concat(field) field = {} end
    local function end_row()
      end_field()
      if not (#row == 1 and row[1] == "") then rows[#rows + 1] = row end
      row = {}
    end
    while i <= n do
      local c = s:sub(i, i)
      if c == '"' and #field == 0 then
        local j = i + 1
        while true do
          local q = s:find('"', j, true)
          if not q then error("unterminated quoted field", 0) end
          field[#field + 1] = s:sub(j, q - 1)
          if s:sub(q + 1, q + 1) == '"' then
            field[#field + 1] = '"'
            j = q + 2
          else
            i = q + 1
            break
          end
        end
      elseif c == "," then
        end_field()
        i = i + 1
      elseif c == "\n" or c == "\r" then
        end_row()
        i = i + ((c == "\r" and s:sub(i + 1, i + 1) == "\n") and 2 or 1)
      else
        local j = s:find('[,\r\n]', i) or n + 1
        field[#field + 1] = s:sub(i, j - 1)
        i = j
      end
    end
    if #field > 0 or #row > 0 then end_row() end
    return rows
  end
  function helpers.read_csv(p)
    local ok, rows = pcall(csv_rows, read("read_csv", p))
    if not ok then error(fmt("%s: read_csv: %s: %s", where_called(), p, tostring(rows)), 0) end
    local header = rows[1] or {}
    local out = {}
    for r = 2, #rows do
      local rec = {}
      for c, name in ipairs(header) do rec[name] = rows[r][c] end
      out[#out + 1] = rec
    end
    return out
  end

  local safe_string = copy(string, { dump = true })
  function safe_string.rep(s, n, sep)
    local len = #tostring(s) * (tonumber(n) or 0) + #tostring(sep or "") * math.max((tonumber(n) or 0) - 1, 0)
    if len > _M.MAX_STRING then
      error(fmt("%s: string.rep: the result would be %d MB (at most %d MB while loading)", where_called(),
        len // 1048576, _M.MAX_STRING // 1048576), 0)
    end
    return string.rep(s, n, sep)
  end

  local env
  -- Text only (bytecode can break out of any sandbox), into this environment
  -- unless the file gives one (which can only hold what the file can reach).
  local function safe_load(chunk, name, _, chunk_env)
    return load(chunk, name, "t", chunk_env == nil and env or chunk_env)
  end
  -- Metatables the file set itself: the only ones it may read back. The
  -- string metatable (every string's, the host's too) and the DSL's own would
  -- let it plant functions the host calls after loading, outside the sandbox.
  local own_mts = setmetatable({}, { __mode = "k" })
  local function safe_setmetatable(t, mt)
    -- a finalizer would run after loading, outside the sandbox
    if box.loading and type(mt) == "table" and rawget(mt, "__gc") ~= nil then
      error(fmt("%s: __gc metamethods are not allowed in a workflow file", where_called()), 0)
    end
    if type(mt) == "table" then own_mts[mt] = true end
    return setmetatable(t, mt)
  end
  local function safe_getmetatable(v)
    local mt = getmetatable(v)
    if not box.loading or own_mts[mt] then return mt end
    return nil
  end

  -- Tables that are restricted while loading and whole afterwards.
  local function layered(allowed, whole)
    return setmetatable(allowed, { __index = function(_, k)
      if not box.loading then return whole[k] end
    end })
  end

  local ae_min = { null = util.null }
  if full_ae then ae_min.VERSION, ae_min.is_terminal = full_ae.VERSION, full_ae.is_terminal end

  env = {
    string = safe_string, table = copy(table), math = copy(math), utf8 = copy(utf8),
    os = layered({ date = os.date, time = os.time, clock = os.clock, difftime = os.difftime }, os),
    ae = layered(ae_min, full_ae or {}),
    tostring = tostring, tonumber = tonumber, ipairs = ipairs, pairs = pairs, next = next, select = select,
    type = type, error = error, assert = assert, pcall = safe_pcall, xpcall = safe_xpcall,
    rawget = rawget, rawset = rawset, rawequal = rawequal, rawlen = rawlen,
    getmetatable = safe_getmetatable, setmetatable = safe_setmetatable, load = safe_load,
    env = helpers.env, read_json = helpers.read_json, read_lines = helpers.read_lines, read_csv = helpers.read_csv,
    _VERSION = _VERSION,
  }
  env._G = env
  setmetatable(env, { __index = function(_, k)
    if not box.loading then return _G[k] end
    -- Withheld while loading (io, require, ...): absent, as the sandbox means.
    if _G[k] ~= nil then return nil end
    -- Any other name the file never defined is a typo (`stpe "a"`): say so
    -- at the user's line, with the nearest name the file can use.
    local names = {}
    for name in pairs(env) do
      if type(name) == "string" and name ~= "_G" then names[#names + 1] = name end
    end
    error(("unknown name '%s'%s"):format(tostring(k), schema.did_you_mean(k, names)), 2)
  end })
  box.env = env
  return setmetatable(box, { __index = _M })
end

--- Call fn(...) with the sandbox closed and the bounds on. Returns true and
-- fn's results, or false and a one-line message.
function _M.run(box, fn, ...)
  local deadline = core.monotime() + _M.MAX_SECONDS
  local budget = _M.MAX_INSTRUCTIONS // EVERY
  local heap_limit = collectgarbage("count") + _M.MAX_MEMORY_MB * 1024
  local function hook()
    if box.stopped then error(box.STOP, 0) end
    budget = budget - 1
    local over
    if core.monotime() > deadline then
      over = fmt("took more than %g s to load", _M.MAX_SECONDS)
    elseif budget <= 0 then
      over = fmt("ran more than %d instructions while loading", _M.MAX_INSTRUCTIONS)
    elseif collectgarbage("count") > heap_limit then
      collectgarbage() -- what is still reachable, not garbage, is what counts
      if collectgarbage("count") > heap_limit then
        over = fmt("used more than %d MB while loading", _M.MAX_MEMORY_MB)
      end
    end
    if over then
      local info = getinfo(2, "Sl")
      local at = (info and info.currentline and info.currentline > 0 and info.source == "@" .. box.file)
        and (" at line " .. info.currentline) or ""
      box.stopped = fmt("%s: %s (an endless loop?%s)", box.file, over, at)
      error(box.STOP, 0)
    end
  end
  local old = pack(gethook())
  -- Every string's methods ("x"):rep(...) come from the one string
  -- metatable: while the file loads they are the sandbox's (capped rep, no
  -- dump), and the real ones again right after.
  local string_mt = getmetatable("")
  local string_index = string_mt.__index
  box.loading, box.stopped = true, nil
  string_mt.__index = box.env.string
  if _M.HARD_DEADLINE then
    core.hard_deadline(_M.MAX_SECONDS + _M.HARD_DEADLINE,
      fmt("aeflow: %s: took more than %g s to load (stuck in one library call, such as a string pattern"
        .. " that backtracks)\n", box.file, _M.MAX_SECONDS + _M.HARD_DEADLINE))
  end
  core.memory_limit(math.floor(collectgarbage("count") * 1024) + _M.MAX_MEMORY_MB * 1048576)
  sethook(hook, "", EVERY)
  local res = pack(pcall(fn, ...))
  string_mt.__index = string_index
  if not res[1] and res[2] == MEMORY_ERROR and not box.stopped then
    box.stopped = fmt("%s: used more than %d MB while loading", box.file, _M.MAX_MEMORY_MB)
  end
  if not res[1] and res[2] ~= box.STOP and type(res[2]) ~= "string" then
    -- an error object's __tostring is the file's code: still inside the bounds
    string_mt.__index = box.env.string
    local okm, msg = pcall(tostring, res[2])
    string_mt.__index = string_index
    res[2] = okm and type(msg) == "string" and msg or "the workflow file raised an error that is not a string"
  end
  core.memory_limit(nil)
  if _M.HARD_DEADLINE then core.hard_deadline(nil) end
  sethook(unpack(old, 1, old.n))
  box.loading = false
  if box.stopped then return false, box.stopped end
  if not res[1] then
    local e = res[2]
    if e == box.STOP then return false, box.stopped or "stopped" end
    return false, tostring(e)
  end
  return true, select(2, unpack(res, 1, res.n))
end

return _M
