--- The reference generators' descriptions, written as text rather than as Lua
-- strings: one `key  description` a line, and a line that starts with white
-- space goes on with the description above it. Used by gen_operations.lua
-- and gen_workflow.lua.
local _M = {}

--- The text's descriptions as a table: key -> description.
function _M.parse(text)
  local t, last = {}, nil
  for line in text:gmatch("[^\n]+") do
    local key, desc = line:match("^(%S+)%s+(.-)%s*$")
    if key then
      assert(t[key] == nil, "described twice: " .. key)
      t[key], last = desc, key
    else
      assert(last, "a continued line before the first key: " .. line)
      t[last] = t[last] .. " " .. line:match("^%s*(.-)%s*$")
    end
  end
  return t
end

return _M
