-- Admission's arithmetic: demand over the defaults, what fits, the numbers
-- people read, the plan's waves, and AIMD under 429/503.
local admission = require("analytics_engine.workflow.admission")
local resources = require("analytics_engine.resources")
local dsl = require("analytics_engine.workflow.dsl")

local huge = math.huge

describe("admission arithmetic", function()
  it("takes the demand from the conf over the instance's default configs", function()
    assert.same({ cores_m = 2000, memory_mib = 2048 }, resources.demand({}, {}))
    local defaults = { ["spark.executor.instances"] = "3", ["spark.executor.memory"] = "4G" }
    assert.same({ cores_m = 4000, memory_mib = 1024 + 3 * 4096 }, resources.demand({}, defaults))
    -- the conf wins over the defaults
    assert.same({ cores_m = 1500, memory_mib = 1024 + 512 },
      resources.demand({ ["spark.executor.instances"] = "1", ["spark.executor.cores"] = "500m",
                         ["spark.executor.memory"] = "512m" }, defaults))
  end)

  it("reads limits and consumption as the API gives them", function()
    assert.same({ cores_m = 6000, memory_mib = 24 * 1024 },
      admission.limits_of { max_cores = "6", max_memory = "24Gi" })
    assert.is_false(admission.limits_of {})
    assert.same({ cores_m = 3000, memory_mib = 3072 }, admission.used_of {
      running = { cores = "2000m", memory = "2048Mi" }, pending = { cores = "1000m", memory = "1024Mi" } })
    assert.same({ cores_m = 0, memory_mib = 0 }, admission.used_of {})
  end)

  it("fits running + pending + the demand within the limits, on both cores and memory", function()
    local lim = { cores_m = 6000, memory_mib = 8192 }
    local d = { cores_m = 2000, memory_mib = 2048 }
    assert.is_true(resources.fits(lim, { cores_m = 4000, memory_mib = 0 }, d))
    assert.is_false(resources.fits(lim, { cores_m = 4001, memory_mib = 0 }, d))
    assert.is_false(resources.fits(lim, { cores_m = 0, memory_mib = 6145 }, d))
    assert.is_true(resources.fits({ cores_m = huge, memory_mib = huge }, { cores_m = 1e9, memory_mib = 1e9 }, d))
  end)

  it("says what is held with numbers", function()
    local lim = { cores_m = 6000, memory_mib = 24 * 1024 }
    local d = { cores_m = 2000, memory_mib = 2048 }
    assert.equals("needs 2 cores / 2 GiB; free 0 of 6 cores",
      admission.held_text(d, lim, { cores_m = 6000, memory_mib = 6144 }))
    assert.equals("needs 2 cores / 2 GiB; free 1.5 GiB of 24 GiB",
      admission.held_text(d, lim, { cores_m = 0, memory_mib = 24 * 1024 - 1536 }))
    assert.equals("needs 0.5 cores / 512 MiB", admission.need_text { cores_m = 500, memory_mib = 512 })
  end)

  it("finds an application larger than the whole quota", function()
    local lim = { cores_m = 6000, memory_mib = huge }
    assert.is_nil(admission.too_large({ cores_m = 6000, memory_mib = 1 }, lim))
    assert.equals("needs 9 cores / 9 GiB, more than the instance's whole limits of 6 cores "
      .. "(resource_consumption_limits)", admission.too_large({ cores_m = 9000, memory_mib = 9216 }, lim))
    assert.is_nil(admission.too_large({ cores_m = 9000, memory_mib = 9216 }, false))
  end)

  it("counts how many fit at once", function()
    assert.equals(3, admission.at_once({ cores_m = 2000, memory_mib = 2048 }, { cores_m = 6000, memory_mib = huge }))
    assert.equals(2, admission.at_once({ cores_m = 2000, memory_mib = 2048 }, { cores_m = 6000, memory_mib = 5000 }))
    assert.equals(huge, admission.at_once({ cores_m = 2000, memory_mib = 2048 }, { cores_m = huge, memory_mib = huge }))
  end)

  it("plans waves with the defaults the steps before leave, and names what cannot fit", function()
    local plan = assert(dsl.load_string([[
return workflow "w" {
  params = { n = "4" },
  step "configs" { update_configs = { ["spark.executor.instances"] = "${n}" } },
  step "fan" { after = "configs", for_each = { 1, 2, 3, 4, 5, 6, 7 }, max_parallel = 2,
               submit = { application = "a.py" } },
  step "small" { after = "configs", for_each = { 1, 2, 3, 4, 5 },
                 submit = { application = "a.py", conf = { ["spark.executor.instances"] = "0" } } },
  step "off" { after = "configs", admission = false, submit = { application = "a.py" } },
}]], "w.lua"))
    local lim = { cores_m = 10000, memory_mib = huge }
    local lines = admission.waves(plan, lim, {}, plan.params)
    assert.same({
      "fan: needs 5 cores / 5 GiB each, 7 applications; 2 at a time in 10 cores: 4 waves",
      "small: needs 1 core / 1 GiB each, 5 applications; 10 at a time in 10 cores: 1 wave",
    }, lines)
    lines = admission.waves(plan, { cores_m = 4000, memory_mib = huge }, {}, plan.params)
    assert.matches("^fan: CANNOT FIT: needs 5 cores / 5 GiB, more than the instance's whole limits of 4 cores",
      lines[1])
  end)
end)

-- Poll until fn() holds (a signal reaches a process asynchronously) -> whether it did.
local function helper_eventually(fn)
  local core = require("analytics_engine.core")
  local deadline = core.monotime() + 10
  while core.monotime() < deadline do
    if fn() then return true end
    core.sleep(0.05)
  end
  return false
end

describe("admission turns between runs on one machine", function()
  local peers = require("analytics_engine.workflow.admission_peers")
  local core = require("analytics_engine.core")
  local dir
  local iid = "11111111-2222-4333-8444-555555555555"
  before_each(function()
    dir = assert(require("analytics_engine.engine.launcher").temp_dir("aeflow-turns-"))
  end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  local function open(run_id) return assert(peers.open(iid, run_id, dir)) end

  it("an older intent of another live run goes first; a run that ends gives up its turn", function()
    local a, b = open("aaaa"), open("bbbb")
    a:note(100)
    b:note(200)
    assert.is_true(b:older(200), "a waits since 100")
    assert.is_false(a:older(100))
    a:note(nil) -- a holds nothing any more
    assert.is_false(b:older(200))
    a:note(50)
    a:close()
    assert.is_false(b:older(200), "a closed: its turn is gone")
    b:close()
  end)

  it("ignores an entry of a process that is gone", function()
    local b = open("bbbb")
    local db = assert(core.sqlite_open(dir .. "/" .. iid .. ".db"))
    -- pid 2^22 + 1 is above Linux's pid_max default: no such process
    assert(db:run("INSERT INTO heads (run_id, pid, intent_at, noted) VALUES ('dead', 4194305, 1, ?)", core.time()))
    db:close()
    assert.is_false(b:older(200))
    b:close()
  end)

  it("ignores an entry of a stopped process (a run suspended with Ctrl-Z) until it runs again", function()
    local b = open("bbbb")
    local pid = assert(core.spawn{ argv = { "sleep", "30" } })
    finally(function()
      core.kill(pid, "KILL")
      core.wait(pid)
    end)
    local db = assert(core.sqlite_open(dir .. "/" .. iid .. ".db"))
    assert(db:run("INSERT INTO heads (run_id, pid, intent_at, noted) VALUES ('held', ?, 1, ?)", pid, core.time()))
    db:close()
    assert.is_true(b:older(200), "a running process holds the older intent")
    assert(core.kill(pid, "STOP"))
    assert.is_true(helper_eventually(function() return not b:older(200) end), "a stopped run kept its turn")
    assert(core.kill(pid, "CONT"))
    assert.is_true(helper_eventually(function() return b:older(200) end), "a resumed run lost its turn")
    b:close()
  end)

  it("refuses an instance id that is not a plain name", function()
    assert.is_nil(peers.open("../etc", "x"))
  end)
end)

describe("admission in the live view", function()
  it("counts held for quota apart from the service's queue", function()
    local live = require("analytics_engine.workflow.live")
    local c = { finished = 1, failed = 0, stopped = 0, running = 3, queued = 1, submitted = 5, held = 4 }
    assert.equals("1/10 finished · 3 running · 4 held for quota · 2 queued", live.fanout_text(c, 10, false))
    local out = {}
    local emit, tick = live.new({ write = function(_, ...) for _, x in ipairs { ... } do out[#out + 1] = x end end,
                            flush = function() end }, { now = function() return 0 end })
    emit { event = "step_start", step = "big" }
    emit { event = "application_held", step = "big", item = 1, token = "t1", phase = "held for quota",
           message = "needs 2 cores / 2 GiB; free 0 of 6 cores" }
    tick()
    local text = table.concat(out)
    assert.matches("held for quota: needs 2 cores / 2 GiB; free 0 of 6 cores", text, 1, true)
  end)
end)

describe("admission AIMD", function()
  it("starts unlimited, halves on back-pressure once per round, adds one per quiet round", function()
    local a = admission.aimd()
    assert.is_true(admission.aimd_allows(a, 0))
    for _ = 1, 10 do admission.aimd_admit(a) end
    assert.is_true(admission.aimd_allows(a, 0))
    local w, changed = admission.aimd_backoff(a, 0, nil, 1)
    assert.equals(5, w)
    assert.is_true(changed)
    -- a burst of 503s in the same round is one signal
    w, changed = admission.aimd_backoff(a, 0, nil, 1)
    assert.equals(5, w)
    assert.is_false(changed)
    -- nobody goes before the next round (no Retry-After: one interval)
    assert.is_false(admission.aimd_allows(a, 0.5))
    admission.aimd_round(a) -- the round with the cut: no increase
    assert.equals(5, a.window)
    assert.is_true(admission.aimd_allows(a, 1))
    for _ = 1, 5 do admission.aimd_admit(a) end
    assert.is_false(admission.aimd_allows(a, 1), "at most the window per round")
    admission.aimd_round(a)
    assert.equals(6, a.window)
    w = admission.aimd_backoff(a, 10, nil, 1)
    assert.equals(3, w)
    admission.aimd_round(a)
    w = admission.aimd_backoff(a, 20, nil, 1)
    assert.equals(1, w)
    admission.aimd_round(a)
    assert.equals(1, admission.aimd_backoff(a, 30, nil, 1), "never below one")
  end)

  it("honours Retry-After", function()
    local a = admission.aimd()
    admission.aimd_backoff(a, 100, 30, 1)
    assert.is_false(admission.aimd_allows(a, 129))
    assert.is_true(admission.aimd_allows(a, 130))
  end)

  it("is unlimited again once the window grows past the cap", function()
    local a = admission.aimd()
    admission.aimd_backoff(a, 0, nil, 1)
    for _ = 1, admission.MAX_WINDOW + 1 do admission.aimd_round(a) end
    assert.is_nil(a.window)
  end)

  it("an admission object cuts its window on 429 and 503, not on other statuses", function()
    local events = {}
    local now = 0
    local adm = admission.new { emit = function(ev) events[#events + 1] = ev end, clock = function() return now end }
    adm:observe(500)
    adm:observe(200)
    assert.equals(0, #events)
    adm:observe(503, "2")
    assert.equals(1, #events)
    assert.equals("admission_rate", events[1].event)
    assert.equals(2, events[1].retry_after)
    assert.is_false(admission.aimd_allows(adm.aimd, 1.9))
    assert.is_true(admission.aimd_allows(adm.aimd, 2))
    adm:observe(429)
    assert.equals(1, #events, "one cut per round")
  end)
end)
