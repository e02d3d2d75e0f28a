-- The run's state writer on a real loop: durable saves answered only once
-- their record is in the state file (journal included), from many tasks at
-- once, with the journal's syncs on their own thread.
local util = require("analytics_engine.util")
local loop = require("analytics_engine.loop")
local state = require("analytics_engine.workflow.state")
local writer = require("analytics_engine.workflow.writer")

local function temp_path()
  local dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-writer-"))
  return dir .. "/state.json", dir
end

local function fan_state(path, n)
  local st = state.new(path, { run_id = "r1", workflow = "w", file = "/x/w.lua", params = {} })
  local rec = st:step("fan")
  local atts = {}
  for i = 1, n do
    local it = st:item(rec, i)
    local att = { n = 1, token = "t" .. i }
    st:add_attempt(it, att)
    atts[i] = att
  end
  return st, atts
end

describe("state writer", function()
  local path, dir
  before_each(function() path, dir = temp_path() end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("answers each durable save only once its record is in the state file", function()
    local st, atts = fan_state(path, 300)
    local errors = {}
    local w = writer.new(st, function(msg) errors[#errors + 1] = msg end)
    assert(w:flush()) -- the whole file first: later saves go to the journal
    local s = loop.new()
    w:use(s)
    local missing = {}
    for i = 1, 300 do
      s:spawn("item " .. i, function()
        s:sleep((i % 7) * 0.003) -- (intents arrive while earlier commits sync)
        atts[i].application_id = "app-" .. i
        assert.is_true(w:save_durable(atts[i]))
        local on_disk = assert(state.read(path)).steps.fan.items[tostring(i)].attempts[1]
        if on_disk.application_id ~= "app-" .. i then missing[#missing + 1] = i end
      end)
    end
    assert.is_true(s:loop())
    assert.same({}, missing)
    assert.same({}, errors)
    assert.is_truthy(util.read_file(path .. ".journal"))
  end)

  it("answers the waiters of a failed write and goes on writing, even when on_error raises", function()
    local st, atts = fan_state(path, 3)
    local w = writer.new(st, function(msg) error("on_error: " .. msg) end)
    assert(w:flush())
    local s = loop.new()
    w:use(s)
    local first, second
    s:spawn("item", function()
      atts[1].bad = function() end -- cannot be encoded: the write fails
      first = { w:save_durable(atts[1]) }
      atts[1].bad = nil
      atts[2].application_id = "app-2"
      second = { w:save_durable(atts[2]) }
    end)
    assert.is_true(s:loop())
    assert.is_false(first[1])
    assert.matches("cannot write the state file's journal", first[2])
    assert.same({ true }, second)
    assert.equals("app-2", assert(state.read(path)).steps.fan.items["2"].attempts[1].application_id)
  end)

  it("writes a plain save within its delay, also while durable saves come and go", function()
    local st, atts = fan_state(path, 10)
    local w = writer.new(st, function(msg) error(msg) end)
    assert(w:flush())
    local s = loop.new()
    w:use(s)
    s:spawn("plain", function()
      atts[1].state = "RUNNING"
      w:save(atts[1])
    end)
    s:spawn("durable", function()
      atts[2].application_id = "app-2"
      w:save_durable(atts[2])
    end)
    assert.is_true(s:loop())
    local items = assert(state.read(path)).steps.fan.items
    assert.equals("RUNNING", items["1"].attempts[1].state)
    assert.equals("app-2", items["2"].attempts[1].application_id)
  end)
end)
