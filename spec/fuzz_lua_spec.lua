-- Fuzzing the Lua-side parsers with a fixed seed (reproducible): random and
-- truncated input must never raise, and every failure is a one-line message.
-- The C-side parsers have libFuzzer targets in fuzz/ (make fuzz-short).
local util = require("analytics_engine.util")
local retry = require("analytics_engine.retry")
local errors = require("analytics_engine.errors")
local dsl = require("analytics_engine.workflow.dsl")

local SEED = 20261124
local N = 3000

local random = math.random

local function random_bytes(max)
  local n = random(0, max)
  local t = {}
  for i = 1, n do t[i] = string.char(random(0, 255)) end
  return table.concat(t)
end

-- A random string from an alphabet that reaches deeper into a parser.
local function random_from(alphabet, max)
  local n = random(0, max)
  local t = {}
  for i = 1, n do
    local k = random(1, #alphabet)
    t[i] = alphabet:sub(k, k)
  end
  return table.concat(t)
end

local function one_line(msg)
  return type(msg) == "string" and msg ~= "" and not msg:find("[\r\n]")
end

-- Small edits of a valid input: cut, duplicate, flip, insert, truncate.
local function mutate(s, pieces)
  local n = #s
  local op = random(1, 6)
  if n == 0 then return pieces[random(1, #pieces)] end
  local i = random(1, n)
  local j = math.min(n, i + random(0, 16))
  if op == 1 then return s:sub(1, i - 1) .. s:sub(j + 1) end                      -- delete
  if op == 2 then return s:sub(1, j) .. s:sub(i, j) .. s:sub(j + 1) end           -- duplicate
  if op == 3 then return s:sub(1, i - 1) .. string.char(random(0, 255)) .. s:sub(i + 1) end
  if op == 4 then return s:sub(1, i) .. pieces[random(1, #pieces)] .. s:sub(i + 1) end
  if op == 5 then return s:sub(1, random(0, n)) end                               -- truncate
  return s:sub(1, i - 1) .. s:sub(j + 1, n) .. s:sub(i, j)                        -- move
end

describe("Lua parsers under random input (seed " .. SEED .. ")", function()
  before_each(function() math.randomseed(SEED) end)

  describe("retry.parse_retry_after", function()
    local valid = { "0", "2", " 120 ", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT" }
    local pieces = { "GMT", ",", " ", "99999999999", "-1", "Feb", "31", "25:61:61", "1e308", "nan", "0x10" }

    it("returns nil or a non-negative number for random and mutated values", function()
      for k = 1, N do
        local v = k % 2 == 0 and random_bytes(40) or mutate(valid[random(1, #valid)], pieces)
        for _ = 1, random(0, 3) do v = mutate(v, pieces) end
        local ok, r = pcall(retry.parse_retry_after, v, 1700000000)
        assert(ok, ("raised on %q: %s"):format(v, tostring(r)))
        assert(r == nil or (type(r) == "number" and r >= 0 and r == r), ("answered %s for %q"):format(tostring(r), v))
      end
    end)

    it("survives HTTP dates with out-of-range fields", function()
      for _, v in ipairs { "Wed, 99 Jan 99999999999999 99:99:99 GMT", "Wed, 0 Dec 0 0:0:0 GMT",
                           "Wed, 21 Oct -2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT GMT" } do
        local ok, r = pcall(retry.parse_retry_after, v, 1700000000)
        assert(ok, ("raised on %q: %s"):format(v, tostring(r)))
        assert(r == nil or (type(r) == "number" and r >= 0))
      end
    end)
  end)

  describe("errors.from_response", function()
    local bodies = {
      '{"errors":[{"code":"c","message":"m"}],"trace":"t"}', '{"error":{"message":"x","code":"y"}}',
      '{"message":"plain"}', '{"errorMessage":"e"}', '<html><body>Bad Gateway</body></html>', "",
      '{"errors":[]}', '[1,2,3]', '"just a string"',
    }
    local pieces = { "{", "}", "[", "]", '"', ":", ",", "null", "true", "1e999", "\\u0000", "\n", "\r\n" }

    it("builds a one-line error for any status and any body", function()
      for k = 1, N do
        local body = k % 3 == 0 and random_bytes(200) or mutate(bodies[random(1, #bodies)], pieces)
        local ct = ({ "application/json", "text/html", "text/plain", nil })[random(1, 4)]
        local res = { status = random(100, 599), body = body, headers = { ["content-type"] = ct,
          ["x-global-transaction-id"] = k % 5 == 0 and random_from("abc\r\n-", 10) or nil } }
        local ok, e = pcall(errors.from_response, res, { method = "GET", path = "/v4/x" })
        assert(ok, ("raised on body %q: %s"):format(body, tostring(e)))
        assert(errors.is_error(e))
        assert(type(e.message) == "string")
        assert(one_line(tostring(e)), ("not one line: %q"):format(tostring(e)))
        assert(#e.body <= 4096)
      end
    end)
  end)

  describe("util.json_decode", function()
    local docs = { '{"a":[1,2,{"b":null}],"c":"d\\u00e9"}', '[]', '{}', '"s"', '1.5e3', 'true',
                   '{"applications":[{"id":"x","state":"RUNNING"}]}' }
    local pieces = { "[", "{", "]", "}", '"', "\\", "\\u", "\\ud800", ",", ":", "-", "1e99999", "0x1" }

    it("returns a value or nil and a message, never raises", function()
      for k = 1, N do
        local s = k % 2 == 0 and random_bytes(100) or mutate(docs[random(1, #docs)], pieces)
        local ok, v, err = pcall(util.json_decode, s)
        assert(ok, ("raised on %q: %s"):format(s, tostring(v)))
        if v == nil then assert(one_line(err), ("no one-line message for %q"):format(s)) end
      end
    end)

    it("refuses deep nesting without raising", function()
      local ok, v, err = pcall(util.json_decode, string.rep("[", 100000))
      assert.is_true(ok)
      assert.is_nil(v)
      assert.is_true(one_line(err))
    end)
  end)

  describe("util base64 decoding", function()
    it("returns a string or nil and a message for random text", function()
      local alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n\0%"
      for k = 1, N do
        local s = k % 2 == 0 and random_bytes(60) or random_from(alpha, 60)
        for _, fn in ipairs { util.b64decode, util.b64url_decode } do
          local ok, v, err = pcall(fn, s)
          assert(ok, ("raised on %q: %s"):format(s, tostring(v)))
          assert(type(v) == "string" or one_line(err), ("no one-line message for %q"):format(s))
        end
      end
    end)

    it("round-trips random bytes", function()
      for _ = 1, 500 do
        local s = random_bytes(64)
        assert.equals(s, util.b64decode(util.b64encode(s)))
        assert.equals(s, util.b64url_decode(util.b64url_encode(s)))
      end
    end)
  end)

  describe("the workflow loader on mutated workflow files", function()
    local sources = {}
    for _, name in ipairs { "valid_full.lua", "valid_order.lua", "valid_dotted.lua", "cycle.lua", "bad_type.lua" } do
      local f = assert(io.open("spec/fixtures/workflows/" .. name, "rb"))
      sources[#sources + 1] = f:read("a")
      f:close()
    end
    local pieces = { "{", "}", "(", ")", '"', ",", "=", "step", "after", "submit", "for_each", "nil", "true",
                     "-1", "1e309", "\"x\"", "{}", "finally", "workflow", "retries", "timeout", "\"1h\"" }

    it("answers a plan or a one-line message for every mutant, never raises", function()
      local plans, failures = 0, 0
      for _ = 1, 1500 do
        local src = sources[random(1, #sources)]
        for _ = 1, random(1, 4) do src = mutate(src, pieces) end
        -- a mutant that could loop forever is not what this looks for
        if not (src:find("while") or src:find("repeat") or src:find("for%s") or src:find("goto")) then
          local ok, plan, err = pcall(dsl.load_string, src, "mutant.lua")
          assert(ok, ("raised on mutant:\n%s\n-> %s"):format(src, tostring(plan)))
          if plan then
            plans = plans + 1
          else
            failures = failures + 1
            assert(one_line(err), ("not a one-line message: %q\nfor mutant:\n%s"):format(tostring(err), src))
          end
        end
      end
      assert.is_true(plans > 0 and failures > 0, ("plans %d, failures %d"):format(plans, failures))
    end)
  end)
end)
