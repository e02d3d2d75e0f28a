local retry = require "analytics_engine.retry"
local errors = require "analytics_engine.errors"

describe("retry policy", function()
  local function status(n) return errors.new { status = n } end
  local function transport(kind) return errors.new { code = kind } end

  describe("retryable", function()
    it("retries 429, 502, 503 and 504", function()
      for _, n in ipairs { 429, 502, 503, 504 } do assert.is_true(retry.retryable(status(n), false)) end
    end)
    it("does not retry 400, 401, 404, 409 or 500", function()
      for _, n in ipairs { 400, 401, 404, 409, 500 } do assert.is_false(retry.retryable(status(n), false)) end
    end)
    it("retries timeouts and resets of requests that create nothing", function()
      assert.is_true(retry.retryable(transport("timeout"), false))
      assert.is_true(retry.retryable(transport("recv"), false))
    end)
    it("never retries an ambiguous failure of a request that creates", function()
      assert.is_false(retry.retryable(transport("timeout"), true))
      assert.is_false(retry.retryable(transport("recv"), true))
      assert.is_false(retry.retryable(status(502), true))
      assert.is_false(retry.retryable(status(504), true))
    end)
    it("retries a creating request the server refused or never received", function()
      assert.is_true(retry.retryable(status(429), true))
      assert.is_true(retry.retryable(status(503), true))
      assert.is_true(retry.retryable(transport("connect"), true))
    end)
    it("does not retry TLS failures", function()
      assert.is_false(retry.retryable(transport("tls"), false))
    end)
  end)

  describe("delay", function()
    local p = retry.new { base_delay = 1, max_delay = 8 }
    it("stays under the exponential ceiling (full jitter)", function()
      for attempt = 1, 6 do
        local ceiling = math.min(8, 2 ^ (attempt - 1))
        assert.equals(ceiling, retry.delay(p, attempt, nil, function() return 1 end))
        assert.equals(0, retry.delay(p, attempt, nil, function() return 0 end))
      end
    end)
    it("is capped by max_delay", function()
      assert.equals(8, retry.delay(p, 30, nil, function() return 1 end))
    end)
    it("honours Retry-After", function()
      assert.equals(3, retry.delay(p, 1, 3))
    end)
    it("caps an absurd Retry-After", function()
      assert.equals(p.max_retry_after, retry.delay(p, 1, 1e9))
    end)
  end)

  describe("parse_retry_after", function()
    it("reads delta seconds", function()
      assert.equals(7, retry.parse_retry_after("7"))
    end)
    it("reads an HTTP date relative to now", function()
      local now = os.time { year = 2015, month = 10, day = 21, hour = 7, min = 28, sec = 0 }
      local offset = os.time(os.date("!*t", 0)) - os.time(os.date("*t", 0))
      assert.equals(30, retry.parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now - offset))
    end)
    it("ignores garbage", function()
      assert.is_nil(retry.parse_retry_after("soon"))
      assert.is_nil(retry.parse_retry_after(nil))
    end)
  end)
end)
