-- Local stand-in for Spark's examples/src/main/r/dataframe.R: the original
-- needs R and SparkR, which a minimal machine lacks. It builds the same small
-- data frame (people: name, age), prints its schema, the rows, and the result
-- of the example's query (people aged 13 to 19).
local people = { { "Michael", 29 }, { "Andy", 30 }, { "Justin", 19 } }

print("local engine stand-in for the SparkR dataframe example")
print("root")
print(" |-- name: string (nullable = true)")
print(" |-- age: integer (nullable = true)")
print()
print(("%-3s %-8s %3s"):format("", "name", "age"))
for i, p in ipairs(people) do print(("%-3d %-8s %3d"):format(i, p[1], p[2])) end
print()
print("teenagers:")
for _, p in ipairs(people) do
  if p[2] >= 13 and p[2] <= 19 then print("  " .. p[1]) end
end
