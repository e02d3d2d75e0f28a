--- Retry policy: which failures are retried, and how long to wait.
-- Capped exponential backoff with full jitter, honouring Retry-After.
local _M = {}

local DEFAULTS = { max_attempts = 5, base_delay = 0.5, max_delay = 30, max_retry_after = 300 }
_M.DEFAULTS = DEFAULTS

local RETRY_STATUS = { [429] = true, [502] = true, [503] = true, [504] = true }
-- Statuses that say the server did not act on the request, so even a request
-- that creates something may be sent again.
local REFUSED_STATUS = { [429] = true, [503] = true }
-- Transport failures before any byte of the request could have been acted on.
local UNSENT_KINDS = { connect = true, resolve = true }
local TRANSIENT_KINDS = { connect = true, resolve = true, timeout = true, recv = true, send = true }

function _M.new(opts)
  local p = {}
  for k, v in pairs(DEFAULTS) do p[k] = v end
  for k, v in pairs(opts or {}) do p[k] = v end
  return p
end

--- Parse Retry-After: delta seconds or an HTTP date. Returns seconds or nil.
function _M.parse_retry_after(v, now)
  if type(v) ~= "string" then return nil end
  local n = tonumber(v:match("^%s*(%d+%.?%d*)%s*$"))
  if n then return n end
  local d, mon, y, h, mi, s = v:match("%a+,%s*(%d+)%s+(%a+)%s+(%d+)%s+(%d+):(%d+):(%d+)%s+GMT")
  if not d then return nil end
  local months = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9,
                   Oct = 10, Nov = 11, Dec = 12 }
  local m = months[mon]
  if not m then return nil end
  -- os.time reads a local-time table; correct by the zone offset of the epoch.
  -- A server may send any year; os.time raises for one it cannot represent.
  local ok, t = pcall(os.time, { year = tonumber(y), month = m, day = tonumber(d), hour = tonumber(h),
                                 min = tonumber(mi), sec = tonumber(s) })
  if not ok or not t then return nil end
  local offset = os.time(os.date("!*t", 0)) - os.time(os.date("*t", 0))
  local at = t - offset
  local delta = at - (now or os.time())
  return delta > 0 and delta or 0
end

--- Decide whether `err` (an errors object) may be retried for an operation.
-- `creates` operations are retried only when the server cannot have acted.
function _M.retryable(err, creates)
  if err.status then
    if not RETRY_STATUS[err.status] then return false end
    return not creates or REFUSED_STATUS[err.status] == true
  end
  if not TRANSIENT_KINDS[err.code] then return false end
  return not creates or UNSENT_KINDS[err.code] == true
end

--- The delay before attempt number `attempt + 1` (attempt counts from 1).
function _M.delay(policy, attempt, retry_after, random)
  random = random or math.random
  if retry_after then return math.min(retry_after, policy.max_retry_after) end
  local ceiling = math.min(policy.max_delay, policy.base_delay * 2 ^ (attempt - 1))
  return random() * ceiling
end

return _M
