--- Where client settings come from: arguments, then the environment, then a
-- profile file that must not be readable by others.
local util = require("analytics_engine.util")

local _M = {}

local ENV = {
  url = "AE_URL", instance_id = "AE_INSTANCE_ID", cafile = "AE_CAFILE", capath = "AE_CAPATH",
}

--- The profile file's path: $AE_CONFIG, else ~/.config/analytics-engine/config.json.
function _M.profile_path(getenv)
  getenv = getenv or os.getenv
  local p = getenv("AE_CONFIG")
  if p and p ~= "" then return p end
  local xdg = getenv("XDG_CONFIG_HOME")
  local home = getenv("HOME")
  if xdg and xdg ~= "" then return xdg .. "/analytics-engine/config.json" end
  if home and home ~= "" then return home .. "/.config/analytics-engine/config.json" end
  return nil
end

--- Read profile `name` (default $AE_PROFILE or "default") from the file.
-- Returns the profile table, {} when there is no file, or nil, err.
function _M.load_profile(path, name, file_mode)
  if not path then return {} end
  local f = io.open(path, "rb")
  if not f then return {} end
  local src = f:read("*a")
  f:close()
  if file_mode then
    local mode = file_mode(path)
    if mode and mode % 64 ~= 0 then -- any group/other permission bit (mode & 0x3f, as arithmetic for 5.1)
      return nil, ("%s is readable by others (mode %o); run: chmod 600 %s"):format(path, mode % 512, path)
    end
  end
  local doc, err = util.json_decode(src)
  if type(doc) ~= "table" then
    return nil, ("%s: not valid JSON (%s)"):format(path, err or "not an object")
  end
  local profiles = type(doc.profiles) == "table" and doc.profiles or { default = doc }
  local p = profiles[name]
  if p == nil then
    if name == "default" then return {} end
    return nil, ("%s: no profile named '%s'"):format(path, name)
  end
  if type(p) ~= "table" then return nil, ("%s: profile '%s' is not an object"):format(path, name) end
  return p
end

--- Merge explicit options with the environment and the profile.
-- Returns the settings table or nil, err (a one-line message).
function _M.resolve(opts, getenv, file_mode)
  getenv = getenv or os.getenv
  local out = util.copy(opts)
  for k, var in pairs(ENV) do
    if out[k] == nil then
      local v = getenv(var)
      if v and v ~= "" then out[k] = v end
    end
  end
  if out.insecure == nil then
    local v = getenv("AE_INSECURE")
    if v == "1" or v == "true" or v == "yes" then out.insecure = true end
  end
  if out.auth == nil then
    local token, user = getenv("AE_TOKEN"), getenv("AE_USERNAME")
    local key, pass = getenv("AE_API_KEY"), getenv("AE_PASSWORD")
    if token and token ~= "" then
      out.auth = { token = token }
    elseif user and user ~= "" and key and key ~= "" then
      out.auth = { username = user, api_key = key, exchange = getenv("AE_EXCHANGE") == "1" or nil }
    elseif user and user ~= "" and pass and pass ~= "" then
      out.auth = { username = user, password = pass }
    end
  end
  if out.url == nil or out.instance_id == nil or out.auth == nil then
    local name = out.profile or getenv("AE_PROFILE") or "default"
    local profile, err = _M.load_profile(out.profile_file or _M.profile_path(getenv), name, file_mode)
    if not profile then return nil, err end
    for _, k in ipairs { "url", "instance_id", "cafile", "capath", "insecure" } do
      if out[k] == nil then out[k] = profile[k] end
    end
    if out.auth == nil and (profile.token or profile.username) then
      out.auth = { token = profile.token, username = profile.username, api_key = profile.api_key,
                   password = profile.password, exchange = profile.exchange }
    end
  end
  return out
end

return _M
