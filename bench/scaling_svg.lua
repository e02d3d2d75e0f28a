--- bench/scaling.svg from benchmark 7's rows (bench/scaling.lua): six small
-- line charts over N (log scale): runner peak RSS (finishing and waiting
-- runs, with the 64 MB target), CPU while waiting (2% target), requests per
-- application (2 target), wall time, submissions per second (the runner and
-- the engine alone) and their ratio (0.8 target). Plain SVG, no fonts or
-- scripts.
local _M = {}

local W, H, PAD = 300, 200, 44

-- A round step for about four ticks up to `top`: 1, 2, 2.5 or 5 times a power of ten.
local function tick_step(top)
  local raw = top / 4
  local p = 10 ^ math.floor(math.log(raw, 10))
  for _, m in ipairs({ 1, 2, 2.5, 5, 10 }) do
    if m * p >= raw then return m * p end
  end
  return 10 * p
end

local function esc(s) return (tostring(s):gsub("[<>&]", { ["<"] = "&lt;", [">"] = "&gt;", ["&"] = "&amp;" })) end

local function chart(x0, y0, title, rows, series, target, unit)
  local out = {}
  local function add(fmt, ...) out[#out + 1] = fmt:format(...) end
  local ymax = target or 0
  for _, r in ipairs(rows) do
    for _, s in ipairs(series) do ymax = math.max(ymax, r[s.key] or 0) end
  end
  -- headroom above the highest point: the legend sits there, clear of the target line
  local top = ymax > 0 and ymax or 1
  ymax = top * 1.35
  local lo, hi = math.log(rows[1].n, 10), math.log(rows[#rows].n, 10)
  if hi == lo then lo, hi = lo - 1, hi + 1 end
  local function px(n) return x0 + PAD + (math.log(n, 10) - lo) / (hi - lo) * (W - PAD - 28) end
  local function py(v) return y0 + H - PAD + 10 - v / ymax * (H - PAD - 24) end
  add('<g><text x="%d" y="%d" font-size="12" font-weight="bold">%s</text>', x0 + 8, y0 + 14, esc(title))
  add('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#444"/>', x0 + PAD, py(0), x0 + W - 8, py(0))
  add('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#444"/>', x0 + PAD, py(0), x0 + PAD, py(ymax))
  for _, r in ipairs(rows) do
    add('<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%d</text>', px(r.n), py(0) + 13, r.n)
  end
  local step = tick_step(top)
  for i = 0, math.floor(ymax / step) do
    local v = i * step
    add('<text x="%.1f" y="%.1f" font-size="9" text-anchor="end">%g</text>', x0 + PAD - 3, py(v) + 3, v)
  end
  add('<text x="%d" y="%.1f" font-size="10" text-anchor="middle">N (applications, log)</text>', x0 + W // 2,
    py(0) + 26)
  if target then
    add('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="4 3"/>', x0 + PAD,
      py(target), x0 + W - 8, py(target))
    add('<text x="%.1f" y="%.1f" font-size="9" fill="#c00" text-anchor="end">target %g %s</text>', x0 + W - 8,
      py(target) - 3, target, unit)
  end
  for k, s in ipairs(series) do
    local pts = {}
    for _, r in ipairs(rows) do
      if r[s.key] then pts[#pts + 1] = ("%.1f,%.1f"):format(px(r.n), py(r[s.key])) end
    end
    add('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>', s.color, table.concat(pts, " "))
    for _, r in ipairs(rows) do
      if r[s.key] then
        add('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>N=%d: %.2f %s</title></circle>', px(r.n),
          py(r[s.key]), s.color, r.n, r[s.key], unit)
      end
    end
    add('<text x="%d" y="%d" font-size="10" fill="%s">%s</text>', x0 + PAD + 6, y0 + 28 + 12 * k, s.color,
      esc(s.label))
  end
  add("</g>")
  return table.concat(out, "\n")
end

--- rows: { n, rss_mb, wait_rss_mb, cpu_pct, per_app, wall, rate, wait_rate }, sorted by n.
function _M.render(rows)
  local parts = {
    ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">'):format(2 * W + 20,
      3 * H + 70),
    '<rect width="100%" height="100%" fill="white"/>',
    '<text x="10" y="18" font-size="13">One aeflow run of N applications (bench/scaling.lua)</text>',
    chart(0, 30, "runner peak RSS (MB)", rows, {
      { key = "rss_mb", label = "sleep 1 run", color = "#1f77b4" },
      { key = "wait_rss_mb", label = "sleep 600 run (waiting)", color = "#ff7f0e" } }, 64, "MB"),
    chart(W + 20, 30, "runner CPU while waiting (% of a core)", rows, {
      { key = "cpu_pct", label = "all running, none finishing", color = "#2ca02c" } }, 2, "%"),
    chart(0, H + 50, "requests per application (+ polls)", rows, {
      { key = "per_app", label = "creates, reads, admission", color = "#9467bd" } }, 2, ""),
    chart(W + 20, H + 50, "wall time of the sleep 1 run (s)", rows, {
      { key = "wall", label = "wall", color = "#8c564b" } }, nil, "s"),
    chart(0, 2 * H + 70, "creates per second (medians of the pairs)", rows, {
      { key = "wait_rate", label = "the runner", color = "#17becf" },
      { key = "engine_rate", label = "the engine alone (load client)", color = "#7f7f7f" } }, nil, "/s"),
    chart(W + 20, 2 * H + 70, "runner / engine alone", rows, {
      { key = "ratio", label = "submission rate ratio", color = "#d62728" } }, 0.8, "x"),
    "</svg>\n",
  }
  return table.concat(parts, "\n")
end

return _M
