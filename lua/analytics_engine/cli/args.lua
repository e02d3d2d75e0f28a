--- aeflow's one argument parser. Every verb declares its options as data:
--   { ["--state"] = "value", ["--json"] = "flag", ["--param"] = "multi", ["-o"] = "value" }
-- Kinds: "flag", "value" (or "string"), "multi" (repeatable), "integer", "number".
-- Every verb also takes -h/--help (anywhere) and --profile NAME. `--name=value`
-- is the same as `--name value`; a lone "-" is a positional (standard input).
local schema = require("analytics_engine.workflow.schema")

local _M = {}

local COMMON = { ["-h"] = "flag", ["--help"] = "flag", ["--profile"] = "value" }

local function convert(name, kind, v)
  if kind == "integer" then
    local n = math.tointeger(tonumber(v))
    if not n then return nil, ("%s wants an integer, got '%s'"):format(name, v) end
    return n
  elseif kind == "number" then
    local n = tonumber(v)
    if not n or n ~= n then return nil, ("%s wants a number, got '%s'"):format(name, v) end
    return n
  end
  return v
end

--- parse(args, spec[, opts]) -> positional, options | nil, message
-- opts.stop_at = n: everything after the n-th positional is positional too
-- (exec's script arguments). options.help is true for -h/--help.
function _M.parse(args, spec, opts)
  spec = spec or {}
  local stop_at = opts and opts.stop_at
  local pos, opt = {}, {}
  local i = 1
  while args[i] ~= nil do
    local a = args[i]
    if stop_at and #pos >= stop_at then
      pos[#pos + 1] = a
    elseif a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      local name, inline = a:match("^(%-%-?[%w][%w-]*)=(.*)$")
      name = name or a
      local kind = spec[name] or COMMON[name]
      if not kind then
        local names = {}
        for k in pairs(spec) do names[#names + 1] = k end
        for k in pairs(COMMON) do names[#names + 1] = k end
        return nil, ("unknown option '%s'%s"):format(name, schema.did_you_mean(name, names))
      end
      if kind == "flag" then
        if inline then return nil, ("%s takes no value"):format(name) end
        opt[name] = true
      else
        local v = inline
        if v == nil then
          i = i + 1
          v = args[i]
        end
        if v == nil then return nil, ("%s needs a value"):format(name) end
        local cv, cerr = convert(name, kind, v)
        if cv == nil then return nil, cerr end
        if kind == "multi" then
          opt[name] = opt[name] or {}
          table.insert(opt[name], cv)
        else
          opt[name] = cv
        end
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  opt.help = opt["-h"] or opt["--help"]
  return pos, opt
end

--- --param key=value pairs as a table, or nil, message.
function _M.params(list)
  local params = {}
  for _, kv in ipairs(list or {}) do
    local k, v = kv:match("^([%w_]+)=(.*)$")
    if not k then return nil, ("--param wants key=value, got '%s'"):format(kv) end
    params[k] = v
  end
  return params
end

return _M
