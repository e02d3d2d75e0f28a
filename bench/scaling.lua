-- Benchmark 7: one `aeflow run` of N applications for N in SCALING_N
-- (default 100,1000,10000), each against a fresh local engine with room for
-- all of them. Per N, two runs:
--   * "finish": applications of `sleep 1`: wall time, requests per
--     application (engine counters), peak RSS (/usr/bin/time -v), and the
--     runner's submission rate;
--   * "wait": applications of `sleep 600`: once all are submitted (all
--     running, none finishing), the runner's CPU from /proc/PID/stat over
--     SCALING_WAIT seconds (default 30) and its peak RSS (VmHWM); then the
--     runner is killed and the engine stopped (its applications die with it).
-- And the engine's own create throughput alone: a small Lua client posting
-- the very creates the runner sends (same bodies) with 32 in flight against
-- a fresh engine started the same way, the baseline of the runner's
-- submission rate. Both rates are read the same way, from the engine's own
-- records: (N - 1) / (last creation time - first creation time). The pair
-- (engine alone, runner) is measured SCALING_PAIRS times (default 2) back to
-- back, the order alternating (alone first, then runner first), and the
-- ratio reported is the median of the pairs' ratios (each pair's too).
-- Writes bench/scaling.svg (or SCALING_SVG) and name=value lines to
-- BENCH_RESULTS.
--   lua5.4 bench/scaling.lua AEFLOW_BIN WORKDIR
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local launcher = require("analytics_engine.engine.launcher")
local ae = require("analytics_engine")
local svg = require("scaling_svg")

local bin, work = arg[1], arg[2]
assert(bin and work, "usage: scaling.lua AEFLOW_BIN WORKDIR")
local here = core.realpath(arg[0]:match("^(.*)/[^/]*$") or ".")
local sizes = {}
for v in (os.getenv("SCALING_N") or "100,1000,10000"):gmatch("%d+") do sizes[#sizes + 1] = tonumber(v) end
local WAIT = tonumber(os.getenv("SCALING_WAIT") or "30")
local PAIRS = tonumber(os.getenv("SCALING_PAIRS") or "2")
-- the path the runner sends: thousand.lua's, resolved against its folder
local app = core.realpath(here .. "/../workflows/apps/sleep.sh")

local engines, runners = {}, {}
local function start_engine(dir, n)
  local e = assert(launcher.start { bin = bin, data_dir = dir,
                                    args = { "--quota-cores", 4 * n, "--quota-memory", (4 * n) .. "Gi" } })
  engines[#engines + 1] = e
  local c = assert(ae.client { url = e.url, instance_id = e.instance_id,
                               auth = { username = e.username, api_key = e.api_key } })
  assert(c:replace_resource_consumption_limits { max_cores = tostring(4 * n), max_memory = (4 * n) .. "Gi" })
  e.auth = "ZenApiKey " .. util.b64encode(e.username .. ":" .. e.api_key)
  e.db = dir .. "/state.db"
  function e.stats()
    local res = assert(core.http_session():request { url = e.url .. "/engine/v1/stats", timeout = 120,
                                                     headers = { Authorization = e.auth } })
    assert(res.status == 200, "stats: " .. res.status)
    return util.json_decode(res.body).requests
  end
  return e
end

-- A file's text; "" when it cannot be read (a process that just ended).
local function read(path) return util.read_file(path) or "" end

-- Creates per second as the engine saw them: its records' creation times
-- (state.db, committed before each create was answered), first to last.
-- The same reading for the runner and for the engine alone.
local function created_rate(e)
  local db = assert(core.sqlite_open(e.db))
  local rows = assert(db:query("SELECT count(*) AS n, min(created) AS t0, max(created) AS t1 FROM applications"))
  db:close()
  local r = rows[1]
  return (r.n - 1) / (r.t1 - r.t0), r.n, r.t1 - r.t0
end

-- After an engine stopped: wait until the applications it ran are gone (a
-- 10,000-application engine may be killed before it has stopped them all,
-- and the kernel tears down 20,000 processes: a sh and its sleep each) so
-- their end does not eat into the next measurement. Left-overs are killed.
local function settle()
  local function count()
    local p = io.popen("pgrep -c -f '^sleep (1|600)$|/workflows/apps/sleep\\.sh' 2>/dev/null")
    local n = tonumber(p:read("a")) or 0
    p:close()
    return n
  end
  local deadline = core.monotime() + 60
  while count() > 0 do
    if core.monotime() > deadline then
      os.execute("pkill -KILL -f '^sleep (1|600)$|/workflows/apps/sleep\\.sh' 2>/dev/null")
      deadline = core.monotime() + 60
    end
    core.sleep(0.5)
  end
  core.sleep(2)
end

local function cpu_ticks(pid)
  local stat = read("/proc/" .. pid .. "/stat")
  local after = stat:match("%) (.*)$")
  if not after then return nil end
  local f = {}
  for x in after:gmatch("%S+") do f[#f + 1] = x end
  return tonumber(f[12]) + tonumber(f[13]) -- utime, stime (fields 14, 15)
end
local CLK_TCK = tonumber(io.popen("getconf CLK_TCK"):read("l")) or 100

-- The events of a run: run_start time, submissions (count, last time), run_end.
local function events_of(path)
  local ev = { submitted = 0, running = 0 }
  local running = {}
  for line in (read(path) .. ""):gmatch("[^\n]+") do
    local e = util.json_decode(line)
    if type(e) == "table" then
      if e.event == "run_start" then ev.start = e.time end
      if e.event == "application" and e.state == "RUNNING" and not running[e.application_id] then
        running[e.application_id] = true
        ev.running = ev.running + 1
      end
      if e.event == "application_submitted" then
        ev.submitted = ev.submitted + 1
        ev.last_submit = math.max(ev.last_submit or 0, e.time)
      end
      if e.event == "run_end" then ev.run_end = e end
    end
  end
  return ev
end

local function run_argv(dir, n, seconds, timed)
  local argv = { "/usr/bin/env", "AE_URL=" .. dir.e.url, "AE_INSTANCE_ID=" .. dir.e.instance_id,
                 "AE_USERNAME=" .. dir.e.username, "AE_API_KEY=" .. dir.e.api_key, "BENCH_APPS=" .. n,
                 "BENCH_SECONDS=" .. seconds }
  if timed then
    for _, a in ipairs { "/usr/bin/time", "-v", "-o", dir.path .. "/time.txt" } do argv[#argv + 1] = a end
  end
  for _, a in ipairs { bin, "run", here .. "/workflows/thousand.lua", "--json", "--state",
                       dir.path .. "/state.json" } do argv[#argv + 1] = a end
  return argv
end

local function finish_run(n)
  local path = ("%s/finish-%d"):format(work, n)
  local e = start_engine(path .. "/engine", n)
  local before = e.stats()
  local t0 = core.monotime()
  local pid = assert(core.spawn { argv = run_argv({ e = e, path = path }, n, "1", true),
                                  stdout = path .. "/events.ndjson", stderr = path .. "/stderr.txt" })
  runners[#runners + 1] = pid
  local st, code
  repeat
    core.sleep(0.2)
    st, code = core.wait(pid)
  until st
  local wall = core.monotime() - t0
  local after = e.stats()
  local rate = created_rate(e)
  e:stop()
  settle()
  local ev = events_of(path .. "/events.ndjson")
  assert(st == "exited" and code == 0 and ev.run_end and ev.run_end.status == "succeeded",
    ("aeflow run of %d did not succeed (%s %s); see %s/stderr.txt"):format(n, st, tostring(code), path))
  local rss = tonumber(read(path .. "/time.txt"):match("Maximum resident set size %(kbytes%): (%d+)"))
  local total, polls = 0, ev.run_end.poll_requests or 0
  for _, v in pairs(after) do total = total + v end
  for _, v in pairs(before) do total = total - v end
  local function d(name) return (after[name] or 0) - (before[name] or 0) end
  -- (the second stats request is counted in `total` and `other`)
  return { wall = wall, rss_mb = rss / 1024, creates = d("create_application"), gets = d("get_application"),
           polls = polls, rounds = ev.run_end.poll_rounds, direct = ev.run_end.poll_direct or 0, total = total,
           other = total - polls - d("create_application") - d("get_application"),
           per_app = (total - polls) / n, rate = rate }
end

-- The runner with `sleep 600` applications. With `window`: once all run, its
-- CPU over SCALING_WAIT seconds and its peak RSS; without: only until all
-- were submitted (a repeat of the submission rate).
local function wait_run(n, window, k)
  local path = ("%s/wait-%d%s"):format(work, n, k and k > 1 and ("-" .. k) or "")
  local e = start_engine(path .. "/engine", n)
  local pid = assert(core.spawn { argv = run_argv({ e = e, path = path }, n, "600", false),
                                  stdout = path .. "/events.ndjson", stderr = path .. "/stderr.txt" })
  runners[#runners + 1] = pid
  local t0 = core.monotime()
  local ev
  repeat
    core.sleep(1)
    assert(core.wait(pid) == nil, "aeflow run of " .. n .. " ended early; see " .. path .. "/stderr.txt")
    ev = events_of(path .. "/events.ndjson")
  until ev.submitted >= n or core.monotime() - t0 > 900
  assert(ev.submitted >= n, "not all submitted within 900 s")
  if not window then
    local rate, got, span = created_rate(e)
    core.kill(pid, "KILL")
    core.wait(pid)
    e:stop()
    settle()
    assert(got == n, ("the engine holds %d applications, %d were submitted"):format(got, n))
    return { rate = rate, submit_s = span }
  end
  -- The window starts once the runner has seen every application RUNNING
  -- (the issue's "every application running, none finishing"): before that
  -- it still records state changes (events, state writes), which is the
  -- submission's tail, not waiting.
  local t1 = core.monotime()
  while ev.running < n and core.monotime() - t1 < 300 do
    core.sleep(1)
    ev = events_of(path .. "/events.ndjson")
  end
  assert(ev.running >= n, ("only %d of %d seen RUNNING within 300 s"):format(ev.running, n))
  local c0, w0 = cpu_ticks(pid), core.monotime()
  core.sleep(WAIT)
  local c1, w1 = cpu_ticks(pid), core.monotime()
  local hwm = tonumber(read("/proc/" .. pid .. "/status"):match("VmHWM:%s*(%d+)"))
  core.kill(pid, "KILL")
  core.wait(pid)
  local rate, _, span = created_rate(e)
  e:stop()
  settle()
  return { cpu_pct = (c1 - c0) / CLK_TCK / (w1 - w0) * 100, hwm_mb = hwm / 1024, rate = rate, submit_s = span }
end

-- The engine alone: a small Lua client (core.http_session through the same
-- loop, CONNS transfers in flight, nothing else) posting the runner's N
-- creates (sleep 600) to a fresh engine, so it meets the same growing number
-- of running applications as the runner. The bodies are the runner's: its
-- application path and arguments, the name and token conf it adds to each,
-- and queuing_enabled = false (it sends that when limits are set, and the
-- engine then checks the room at each create). Encoded before the clock
-- starts. Returns creates per second (created_rate).
local CONNS = tonumber(os.getenv("SCALING_CONNS") or "32")
local function engine_creates(n, k)
  local loop = require("analytics_engine.loop")
  local path = ("%s/load-%d%s"):format(work, n, k and k > 1 and ("-" .. k) or "")
  local e = start_engine(path .. "/engine", n)
  local sched = loop.new { max_transfers = CONNS }
  local session = core.http_session()
  local url = e.url .. "/v4/analytics_engines/" .. e.instance_id .. "/spark_applications"
  local headers = { Authorization = e.auth, ["Content-Type"] = "application/json" }
  local bodies = {}
  for i = 1, n do
    local token = ("aeflow-%s-sleepers-%d-1"):format("benchload", i)
    bodies[i] = util.json_encode { queuing_enabled = false, application_details = {
      application = app, arguments = { "600" },
      conf = { ["spark.app.name"] = "sleepers #" .. token, ["ae.lua.submission.token"] = token } } }
  end
  local sent, done, bad = 0, 0, 0
  for _ = 1, CONNS do
    sched:spawn("create", function()
      while sent < n do
        sent = sent + 1
        local res = sched:http(session, { method = "POST", url = url, headers = headers, timeout = 120,
                                          body = bodies[sent] })
        if not res or res.status ~= 202 then bad = bad + 1 end
        done = done + 1
      end
    end)
  end
  assert(sched:loop(function() return done >= n end))
  local rate = created_rate(e)
  e:stop()
  settle()
  assert(bad == 0, bad .. " creates were not accepted")
  return rate
end

local function median(xs)
  local t = {}
  for i, x in ipairs(xs) do t[i] = x end
  table.sort(t)
  local m = #t
  if m == 0 then return 0 / 0 end
  return m % 2 == 1 and t[(m + 1) // 2] or (t[m // 2] + t[m // 2 + 1]) / 2
end

local rows = {}
local ok, err = pcall(function()
  -- SCALING_RUNS=wait (or finish, load) runs only those parts (a quick look; the table needs all three)
  local runs = os.getenv("SCALING_RUNS") or "finish,wait,load"
  for _, n in ipairs(sizes) do
    local r = runs:find("finish") and finish_run(n) or { wall = 0, rss_mb = 0, per_app = 0, polls = 0, rate = 0,
                                                          creates = 0, gets = 0, rounds = 0, direct = 0,
                                                          other = 0 }
    -- (engine alone, runner) pairs back to back, the order alternating; the
    -- first runner is the wait run (CPU window, RSS), later ones stop once
    -- all are submitted.
    local w = { cpu_pct = 0, hwm_mb = 0 }
    local runner_rates, engine_rates, ratios = {}, {}, {}
    local do_wait, do_load = runs:find("wait") ~= nil, runs:find("load") ~= nil
    for k = 1, (do_wait and do_load) and PAIRS or 1 do
      local function runner()
        if not do_wait then return end
        local x = wait_run(n, k == 1, k)
        if k == 1 then w = x end
        runner_rates[k] = x.rate
      end
      local function alone()
        if do_load then engine_rates[k] = engine_creates(n, k) end
      end
      if k % 2 == 1 then alone() runner() else runner() alone() end
      if runner_rates[k] and engine_rates[k] then ratios[k] = runner_rates[k] / engine_rates[k] end
    end
    r.n, r.cpu_pct, r.wait_rss_mb = n, w.cpu_pct, w.hwm_mb
    r.wait_rate, r.engine_rate = median(runner_rates), median(engine_rates)
    r.ratio, r.ratios, r.runner_rates, r.engine_rates = median(ratios), ratios, runner_rates, engine_rates
    rows[#rows + 1] = r
  end
  print(("== 7. scaling: one `aeflow run` of N applications, fresh local engine per run (%d s CPU window)")
    :format(WAIT))
  print(("  engine alone: a Lua client posting the runner's N creates (sleep 600), %d in flight; rates from the"
    .. " engine's creation times; %d (alone, runner) pairs, order alternating, medians"):format(CONNS, PAIRS))
  print(("  %7s | %9s | %9s | %9s | %17s | %8s | %s"):format("N", "RSS fin.", "RSS wait", "CPU wait",
    "requests/app", "wall", "creates/s: fin. / runner / engine alone = median ratio"))
  local out = os.getenv("BENCH_RESULTS")
  local res = out and out ~= "" and assert(io.open(out, "a"))
  for _, r in ipairs(rows) do
    print(("  %7d | %6.1f MB | %6.1f MB | %8.2f%% | %5.2f (+%d polls) | %6.1f s | %5.0f / %5.0f / %5.0f = %.2fx")
      :format(r.n, r.rss_mb, r.wait_rss_mb, r.cpu_pct, r.per_app, r.polls, r.wall, r.rate, r.wait_rate,
        r.engine_rate, r.ratio))
    local pairs_text = {}
    for k in ipairs(r.engine_rates) do
      pairs_text[k] = ("%s%.0f / %.0f = %.2fx"):format(k % 2 == 1 and "alone first: " or "runner first: ",
        r.runner_rates[k] or 0 / 0, r.engine_rates[k], r.ratios[k] or 0 / 0)
    end
    print(("  %7s   pairs (runner / alone): %s"):format("", table.concat(pairs_text, "; ")))
    print(("  %7s   creates %d, get_application %d, polls %d in %d rounds (%d direct status reads), other %d")
      :format("", r.creates, r.gets, r.polls, r.rounds, r.direct, r.other))
    if res then
      res:write(("scaling_%d_rss_mb=%.1f\nscaling_%d_wait_rss_mb=%.1f\nscaling_%d_wait_cpu_pct=%.2f\n"
        .. "scaling_%d_requests_per_app=%.2f\nscaling_%d_wall_s=%.1f\nscaling_%d_submit_per_s=%.0f\n"
        .. "scaling_%d_engine_creates_per_s=%.0f\nscaling_%d_submit_ratio=%.2f\n")
        :format(r.n, r.rss_mb, r.n, r.wait_rss_mb, r.n, r.cpu_pct, r.n, r.per_app, r.n, r.wall, r.n, r.wait_rate,
          r.n, r.engine_rate, r.n, r.ratio))
    end
  end
  if res then res:close() end
  local file = os.getenv("SCALING_SVG") or (here .. "/scaling.svg")
  local f = assert(io.open(file, "wb"))
  f:write(svg.render(rows))
  f:close()
  print("  plot: " .. file)
end)
-- Whatever happened: no runner, engine or application left behind.
for _, pid in ipairs(runners) do
  if core.wait(pid) == nil then
    core.kill(pid, "KILL")
    core.wait(pid)
  end
end
for _, e in ipairs(engines) do e:stop() end
if not ok then error(err, 0) end
