local template = require("analytics_engine.workflow.template")

local scope = {
  date = "2026-11-24", days = 7,
  params = { date = "2026-11-24", days = 7, region = "eu" },
  item = "apac", index = 3,
  outputs = {
    ingest = { application_id = "a1", state = "FINISHED" },
    reports = { { application_id = "r1", return_code = "0" }, { application_id = "r2", return_code = "1" } },
    ["v1.2"] = { application_id = "dotted" },
  },
}

describe("template.expand", function()
  it("replaces a bare name", function()
    assert.equal("day 2026-11-24", template.expand("day ${date}", scope))
  end)

  it("walks params.x", function()
    assert.equal("eu", template.expand("${params.region}", scope))
  end)

  it("falls back to params for a bare name the scope lacks", function()
    assert.equal("region eu", template.expand("region ${region}", scope))
  end)

  it("walks dotted paths into tables", function()
    assert.equal("id=a1", template.expand("id=${outputs.ingest.application_id}", scope))
  end)

  it("indexes arrays with numeric segments", function()
    assert.equal("r2:1", template.expand("${outputs.reports.2.application_id}:${outputs.reports.2.return_code}",
      scope))
  end)

  it("resolves step names that contain dots", function()
    assert.equal("dotted", template.expand("${outputs.v1.2.application_id}", scope))
  end)

  it("expands item and index", function()
    assert.equal("apac #3", template.expand("${item} #${index}", scope))
  end)

  it("keeps the type of a string that is exactly one reference", function()
    assert.equal(7, template.expand("${days}", scope))
    assert.equal(3, template.expand("${index}", scope))
  end)

  it("returns a copy of a table a whole reference names", function()
    local v = template.expand("${outputs.ingest}", scope)
    assert.same(scope.outputs.ingest, v)
    assert.are_not.equal(scope.outputs.ingest, v)
  end)

  it("interpolates numbers with tostring inside text", function()
    assert.equal("7 days", template.expand("${days} days", scope))
  end)

  it("allows spaces inside the braces", function()
    assert.equal("2026-11-24", template.expand("${ date }", scope))
  end)

  it("treats $${ as a literal ${", function()
    assert.equal("literal ${date} and 2026-11-24", template.expand("literal $${date} and ${date}", scope))
  end)

  it("leaves a lone $ alone", function()
    assert.equal("costs $5", template.expand("costs $5", scope))
  end)

  it("expands every string in nested tables", function()
    local v = template.expand({ application = "a.py", arguments = { "${item}", "${date}" },
                                conf = { ["spark.app.name"] = "r ${item}" } }, scope)
    assert.same({ application = "a.py", arguments = { "apac", "2026-11-24" },
                  conf = { ["spark.app.name"] = "r apac" } }, v)
  end)

  it("does not expand keys", function()
    assert.same({ ["${date}"] = "2026-11-24" }, template.expand({ ["${date}"] = "${date}" }, scope))
  end)

  it("does not change its input", function()
    local input = { arguments = { "${item}" } }
    template.expand(input, scope)
    assert.same({ arguments = { "${item}" } }, input)
  end)

  it("keeps metatables (empty arrays, for instance)", function()
    local mt = { __name = "array" }
    local v = template.expand({ list = setmetatable({}, mt) }, scope)
    assert.equal(mt, getmetatable(v.list))
  end)

  it("passes non-strings through", function()
    local f = function() end
    assert.same({ 1, true, f }, template.expand({ 1, true, f }, scope))
  end)

  it("reports a missing name", function()
    local v, err = template.expand({ arguments = { "${x}" } }, scope)
    assert.is_nil(v)
    assert.equal([[unknown template name 'x' in "${x}"]], err)
  end)

  it("reports a missing path inside text", function()
    local _, err = template.expand("id ${outputs.nope.application_id}", scope)
    assert.equal([[unknown template name 'outputs.nope.application_id' in "id ${outputs.nope.application_id}"]],
      err)
  end)

  it("reports an unterminated reference", function()
    local _, err = template.expand("x ${date", scope)
    assert.equal([[unterminated '${' in "x ${date"]], err)
  end)
end)

describe("template.names", function()
  it("lists references in a stable order, each once", function()
    assert.same({ "date", "item", "outputs.ingest.application_id" },
      template.names({ arguments = { "${item}", "${date}" }, id = "${outputs.ingest.application_id}",
                       again = "${date}" }))
  end)

  it("skips escaped references", function()
    assert.same({}, template.names("$${date}"))
  end)

  it("reports malformed strings", function()
    local names, err = template.names({ "${oops" })
    assert.is_nil(names)
    assert.equal([[unterminated '${' in "${oops"]], err)
  end)

  it("gives the root of a path", function()
    assert.equal("outputs", template.root("outputs.ingest.application_id"))
    assert.equal("date", template.root("date"))
  end)
end)
