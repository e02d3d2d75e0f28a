-- Local stand-in for org.apache.spark.examples.SparkPi (spark-examples*.jar).
-- The local engine runs it when a submission names the vendor's sample jar and
-- no Spark installation is present. Same contract as the original: an optional
-- number of slices (default 2), 100000 samples per slice, and the line
-- "Pi is roughly <estimate>" on stdout. Deterministic: a fixed seed.
local slices = math.tointeger(tonumber(arg and arg[1] or "2")) or 2
if slices < 1 then slices = 1 end
local n = math.min(100000 * slices, 0x7fffffff)
math.randomseed(42)
local inside = 0
for _ = 1, n do
  local x, y = math.random() * 2 - 1, math.random() * 2 - 1
  if x * x + y * y <= 1 then inside = inside + 1 end
end
print("local engine stand-in for the SparkPi example (" .. slices .. " slices)")
print(("Pi is roughly %.5f"):format(4.0 * inside / n))
