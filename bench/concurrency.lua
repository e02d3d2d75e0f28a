-- Benchmark 2: BENCH_APPS applications submitted and awaited by one
-- `aeflow run` against a local engine. Prints wall time against the bound
-- 1.5 x (slowest application + submission time), requests per poll cycle,
-- the engine's request counts, and the runner's peak RSS.
--   lua5.4 bench/concurrency.lua AEFLOW_BIN WORKDIR
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local launcher = require("analytics_engine.engine.launcher")

local bin, work = arg[1], arg[2]
assert(bin and work, "usage: concurrency.lua AEFLOW_BIN WORKDIR")
local here = arg[0]:match("^(.*)/[^/]*$") or "."
here = core.realpath and core.realpath(here) or here
local n = tonumber(os.getenv("BENCH_APPS") or "1000")

-- Room for every application at once: the engine's default quota and limits
-- (16 cores) would queue them, which measures the queue, not the runner.
local e = assert(launcher.start { bin = bin, data_dir = work .. "/engine",
                                  args = { "--quota-cores", 4 * n, "--quota-memory", (4 * n) .. "Gi" } })
local ok, err = pcall(function()
  local session = core.http_session()
  local function get(path)
    local res = assert(session:request { url = e.url .. path, timeout = 120, headers = {
      Authorization = "ZenApiKey " .. util.b64encode(e.username .. ":" .. e.api_key) } })
    assert(res.status == 200, path .. ": " .. res.status)
    return util.json_decode(res.body)
  end
  local ae = require("analytics_engine")
  local c = assert(ae.client { url = e.url, instance_id = e.instance_id,
                               auth = { username = e.username, api_key = e.api_key } })
  assert(c:replace_resource_consumption_limits { max_cores = tostring(4 * n), max_memory = (4 * n) .. "Gi" })
  local before = get("/engine/v1/stats").requests

  local events = work .. "/events.ndjson"
  local cmd = ("cd %q && AE_URL=%q AE_INSTANCE_ID=%q AE_USERNAME=%q AE_API_KEY=%q BENCH_APPS=%d "
    .. "/usr/bin/time -v -o %q %q run %q --json --state %q > %q 2> %q"):format(work, e.url, e.instance_id,
    e.username, e.api_key, n, work .. "/time.txt", bin, here .. "/workflows/thousand.lua", work .. "/state.json",
    events, work .. "/stderr.txt")
  local t0 = core.monotime()
  local okrun = os.execute(cmd)
  local wall = core.monotime() - t0

  local after = get("/engine/v1/stats").requests
  local list = get("/v4/analytics_engines/" .. e.instance_id .. "/spark_applications")

  local run_start, last_submit, run_end, nsub = nil, nil, nil, 0
  for line in io.lines(events) do
    local ev = util.json_decode(line)
    if ev then
      if ev.event == "run_start" then run_start = ev.time end
      if ev.event == "application_submitted" then
        nsub = nsub + 1
        last_submit = math.max(last_submit or 0, ev.time)
      end
      if ev.event == "run_end" then run_end = ev end
    end
  end
  assert(okrun and run_end and run_end.status == "succeeded",
    "aeflow run did not succeed; see " .. work .. "/stderr.txt and " .. events)

  -- "Friday 03 January 2025 08:40:42.324+0000" -> seconds (UTC; only differences matter)
  local MON = { January = 1, February = 2, March = 3, April = 4, May = 5, June = 6, July = 7, August = 8,
                September = 9, October = 10, November = 11, December = 12 }
  local function secs(s)
    local d, mon, y, h, mi, sec, ms = s:match("(%d+) (%a+) (%d+) (%d+):(%d+):(%d+)%.(%d+)")
    return os.time { year = y, month = MON[mon], day = d, hour = h, min = mi, sec = sec } + ms / 1000
  end
  local slowest, first_create, last_finish, finished = 0, math.huge, 0, 0
  for _, app in ipairs(list.applications) do
    if app.state == "FINISHED" then finished = finished + 1 end
    if app.start_time and app.finish_time then
      slowest = math.max(slowest, secs(app.finish_time) - secs(app.start_time))
      last_finish = math.max(last_finish, secs(app.finish_time))
    end
    first_create = math.min(first_create, secs(app.creation_time))
  end

  local rss_kb
  for line in io.lines(work .. "/time.txt") do
    rss_kb = rss_kb or tonumber(line:match("Maximum resident set size %(kbytes%): (%d+)"))
  end
  local function delta(name) return (after[name] or 0) - (before[name] or 0) end

  local submission = last_submit - run_start
  local bound = 1.5 * (slowest + submission)
  local per_cycle = run_end.poll_requests / math.max(run_end.poll_rounds, 1)
  local rss_mb = rss_kb / 1024
  print(("== 2. concurrency: %d applications (sleep 1 s) in one `aeflow run`, local engine"):format(n))
  print(("  %-44s %8.2f s   (%d submitted, %d FINISHED)"):format("wall time of aeflow run", wall, nsub, finished))
  print(("  %-44s %8.2f s"):format("submission time (run_start -> last submitted)", submission))
  print(("  %-44s %8.2f s"):format("slowest application (start -> finish)", slowest))
  print(("  %-44s %8.2f s   wall/bound %.2fx   (target <= 1.00x: wall <= 1.5 x (slowest + submission))")
    :format("bound 1.5 x (slowest + submission)", bound, wall / bound))
  print(("  %-44s %8.2f s"):format("last finish -> runner's run_end", run_end.time - last_finish))
  print(("  %-44s %8.2f      (%d requests / %d rounds; target <= 10)"):format("poller requests per poll cycle",
    per_cycle, run_end.poll_requests, run_end.poll_rounds))
  print(("  %-44s %s"):format("engine requests during the run", ("create_application %d, list_applications %d, "
    .. "get_application_state %d, get_application %d"):format(delta("create_application"),
    delta("list_applications"), delta("get_application_state"), delta("get_application"))))
  print(("  %-44s %8.1f MB  (target < 32 MB)"):format("runner peak RSS (/usr/bin/time -v)", rss_mb))
  local out = os.getenv("BENCH_RESULTS")
  if out and out ~= "" then
    local f = assert(io.open(out, "a"))
    f:write(("concurrency_wall_s=%.2f\nconcurrency_submission_s=%.2f\nconcurrency_slowest_s=%.2f\n"
      .. "concurrency_wall_over_bound=%.2f\nconcurrency_requests_per_cycle=%.2f\nconcurrency_rss_mb=%.1f\n")
      :format(wall, submission, slowest, wall / bound, per_cycle, rss_mb))
    f:close()
  end
end)
e:stop()
if not ok then error(err, 0) end
