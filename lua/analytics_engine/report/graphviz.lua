--- Rendering dot text to SVG or PNG with Graphviz's `dot` program, when it
-- is installed; otherwise a one-line message saying what to install.
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")

local _M = {}

_M.MISSING = "Graphviz is not installed: install the 'graphviz' package (apt-get install graphviz) "
  .. "for --format svg or png, or use --format dot or mermaid"

local function find_dot()
  for dir in (os.getenv("PATH") or "/usr/bin:/bin"):gmatch("[^:]+") do
    local p = dir .. "/dot"
    if util.exists(p) then return p end
  end
end
_M.find_dot = find_dot

local function read(path)
  return util.read_file(path) or ""
end

--- Render `text` (dot) as `format` ("svg" | "png") into `out` (a path; nil
-- writes to standard output). Returns true or nil, message.
function _M.render(text, format, out)
  local dot = find_dot()
  if not dot then return nil, _M.MISSING end
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(text, "\n")
  f:close()
  local target = out or (tmp .. "." .. format)
  local errf = tmp .. ".err"
  -- PNG at twice the screen resolution: readable on a high-density display.
  local argv = format == "png" and { dot, "-Tpng", "-Gdpi=144", "-o", target, tmp }
    or { dot, "-T" .. format, "-o", target, tmp }
  local pid, serr = core.spawn { argv = argv, stdout = "/dev/null",
                                 stderr = errf }
  if not pid then
    os.remove(tmp)
    return nil, "cannot run dot: " .. tostring(serr)
  end
  local how, code
  repeat
    how, code = core.wait(pid)
    if how == nil then core.sleep(0.02) end
  until how ~= nil
  local msg = read(errf):gsub("%s+$", ""):gsub("\n", "; ")
  os.remove(tmp)
  os.remove(errf)
  if how ~= "exited" or code ~= 0 then
    if not out then os.remove(target) end
    return nil, ("dot failed (%s %s)%s"):format(tostring(how), tostring(code), msg ~= "" and (": " .. msg) or "")
  end
  if not out then
    io.stdout:write(read(target))
    os.remove(target)
  end
  return true
end

return _M
