--- Which programs an application may run. The engine runs a program only
-- when its real path (symlinks and ".." resolved) lies inside an allowed root:
-- --app-root and the bundled stand-ins for the vendor's samples. A program
-- must also be of a known type (.py, .jar, .R, .lua, .sh), so it runs under
-- its interpreter or spark-submit, never as a bare executable. Admins may go
-- beyond both only on an engine started with --allow-any-program, which
-- `serve` refuses when it listens beyond loopback. A URI other than file: or
-- local: (hdfs://, s3a://, ...) is for spark-submit to fetch, not a local file.
-- Policy lives here, in Lua; the C core only resolves paths (core.realpath).
local core = require "analytics_engine.core"
local runner = require "analytics_engine.engine.runner"

local _M = {}

_M.KNOWN_TYPES = { py = true, jar = true, R = true, r = true, lua = true, sh = true }

local function lexical_clean(path)
  local out = {}
  for seg in path:gmatch("[^/]+") do
    if seg == ".." then
      out[#out] = nil
    elseif seg ~= "." then
      out[#out + 1] = seg
    end
  end
  return "/" .. table.concat(out, "/")
end

--- The allowed roots of an engine's options, real paths (made once).
function _M.roots(opts)
  local roots = {}
  for _, dir in ipairs({ opts.app_root, opts.examples_dir }) do
    local real = dir and core.realpath(dir)
    if real then roots[#roots + 1] = real end
  end
  return roots
end

local function inside(path, roots)
  for _, r in ipairs(roots) do
    if r == "/" or path == r or path:sub(1, #r + 1) == r .. "/" then return true end
  end
  return false
end

local function is_sample(app)
  if runner.exists(app) then return false end
  for _, s in ipairs(runner.SAMPLES) do
    if app:find(s.pattern) then return true end
  end
  return false
end

--- check(app, opts, user) -> true | nil, status, code, message
-- app: application_details.application; opts: the engine's options
-- (app_root, examples_dir, allow_any_program, roots); user: the caller.
function _M.check(app, opts, user)
  local bad = app:find("%c")
  if bad then
    return nil, 400, "invalid_application", ("application_details.application has a control character "
      .. "(byte %d at position %d): a program path is one line of text"):format(app:byte(bad), bad)
  end
  if opts.allow_any_program and user and user.role == "admin" then return true end
  if is_sample(app) then return true end
  local scheme, rest = app:match("^(%a[%w+.%-]*):(.*)$")
  if scheme then
    scheme = scheme:lower()
    if scheme ~= "file" and scheme ~= "local" then return true end -- spark-submit fetches it
    app = rest:gsub("^//", "")
  end
  local path = app:sub(1, 1) == "/" and app or ((opts.app_root or ".") .. "/" .. app)
  local roots = opts.roots or _M.roots(opts)
  local where = table.concat(roots, ", ")
  -- A missing file: judge its path as written (launch then reports it missing);
  -- an existing one by where it really is, so no symlink leads out.
  local real = core.realpath(path) or lexical_clean(path)
  if not inside(real, roots) then
    return nil, 403, "application_not_allowed", ("%s is outside the directories this engine runs programs "
      .. "from (%s)"):format(app, where)
  end
  -- the type is the name's as given: that is what picks the interpreter (runner.lua)
  local ext = path:match("%.([%w]+)$")
  if not (ext and _M.KNOWN_TYPES[ext]) and not (user and user.role == "admin") then
    return nil, 403, "application_type_not_allowed", ("%s is not a program of a known type (.py, .jar, .R, "
      .. ".lua, .sh): only an admin may run it"):format(app)
  end
  return true
end

--- Is `host` a loopback address (where --allow-any-program is allowed)?
function _M.loopback(host)
  return host == "127.0.0.1" or host == "localhost" or host == "::1" or host == "[::1]"
    or (host or ""):find("^127%.%d+%.%d+%.%d+$") ~= nil
end

return _M
