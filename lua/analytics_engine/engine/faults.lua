--- Fault injection: a fraction of /v4 requests get a failure instead of (or
-- after) their answer, so clients can prove their retries. Deterministic for
-- a given seed: its own xorshift64* generator, not the global math.random.
local util = require("analytics_engine.util")

local _M = {}
local mt = { __index = _M }

local tointeger = util.tointeger

_M.KINDS = { "429", "500", "503", "reset", "reset-after", "delay" }
local KNOWN = {}
for _, k in ipairs(_M.KINDS) do KNOWN[k] = true end

_M.DELAY_SECONDS = 2

--- Parse "429,500,reset" into a list; nil, message on an unknown kind.
function _M.parse_kinds(s)
  local kinds = {}
  for k in tostring(s):gmatch("[^,%s]+") do
    if not KNOWN[k] then
      return nil, ("unknown fault kind '%s' (known: %s)"):format(k, table.concat(_M.KINDS, ","))
    end
    kinds[#kinds + 1] = k
  end
  if #kinds == 0 then return nil, "no fault kinds given" end
  return kinds
end

--- Parse "create_application,list_applications" into a set of operation
-- names from api.lua; nil, message on an unknown one.
function _M.parse_ops(s)
  local api = require("analytics_engine.api")
  local ops, any = {}, false
  for name in tostring(s):gmatch("[^,%s]+") do
    if not api.by_name[name] then return nil, ("unknown operation '%s'"):format(name) end
    ops[name], any = true, true
  end
  if not any then return nil, "no operations given" end
  return ops
end

--- new{ rate = 0..1, kinds = {...}, seed = integer, ops = set or nil, delay = seconds }
function _M.new(opts)
  local seed = tointeger(opts.seed) or 0x2545F4914F6CDD1D
  if seed == 0 then seed = 0x9E3779B97F4A7C15 end
  return setmetatable({ rate = opts.rate or 0, kinds = opts.kinds or _M.KINDS, x = seed, ops = opts.ops,
                        delay = opts.delay or _M.DELAY_SECONDS }, mt)
end

--- A float in [0, 1).
function _M:random()
  local x = self.x
  x = x ~ (x >> 12)
  x = x ~ (x << 25)
  x = x ~ (x >> 27)
  self.x = x
  local r = x * 0x2545F4914F6CDD1D
  return (r >> 11) * (1.0 / 9007199254740992.0)
end

--- The fault kind for a request to operation `op`, or nil for none.
function _M:decide(op)
  if self.rate <= 0 then return nil end
  if self.ops and not (op and self.ops[op]) then return nil end
  if self.rate < 1 and self:random() >= self.rate then return nil end
  local n = #self.kinds
  if n == 1 then return self.kinds[1] end
  return self.kinds[math.floor(self:random() * n) + 1]
end

return _M
