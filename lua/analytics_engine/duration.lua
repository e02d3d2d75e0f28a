--- Durations as people write them, one grammar for the whole project: the
-- workflow's step options (timeout, retry_delay), the engine's --app-timeout
-- and its per-application time limit, and `aeflow plan`'s text.
--   parse: a number, or "90", "90s", "15m", "2h", "1d", "1h30m", "1.5h";
--          spaces are ignored; nil for anything else.
--   format: 90 -> "1m30s", 5400 -> "1h30m", 2.5 -> "2.5s".
local _M = {}

local UNITS = { d = 86400, h = 3600, m = 60, s = 1 }
local ORDER = { { "d", 86400 }, { "h", 3600 }, { "m", 60 }, { "s", 1 } }

--- Seconds from a number or a duration string, or nil.
function _M.parse(v)
  if type(v) == "number" then return v end
  if type(v) ~= "string" then return nil end
  local s = v:gsub("%s+", "")
  local plain = tonumber(s)
  if plain then return plain end
  if s == "" then return nil end
  local total, pos = 0, 1
  while pos <= #s do
    local num, unit, e = s:match("^(%d+%.?%d*)([dhms])()", pos)
    if not num then return nil end
    total = total + tonumber(num) * UNITS[unit]
    pos = e
  end
  return total
end

--- Seconds as people write them (nil stays nil).
function _M.format(s)
  if s == nil then return nil end
  if s ~= math.floor(s) then return tostring(s) .. "s" end
  s = math.floor(s)
  if s == 0 then return "0s" end
  local out = {}
  for _, u in ipairs(ORDER) do
    if s >= u[2] then
      out[#out + 1] = math.floor(s / u[2]) .. u[1]
      s = s % u[2]
    end
  end
  return table.concat(out)
end

return _M
