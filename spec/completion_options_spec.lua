-- The bash and zsh completions offer what the parsers take: every long
-- option of every verb (serve's are the engine's option table), and nothing
-- a verb would refuse. Hand-kept lists drift: serve's --allow-any-program and
-- report's --output were missing from both.
local cli = require("analytics_engine.cli")
local engine_main = require("analytics_engine.engine.main")
local util = require("analytics_engine.util")

local bash = assert(util.read_file("contrib/aeflow.bash"))
local zsh = assert(util.read_file("contrib/_aeflow"))

-- A verb's offered options -> set, or nil when the file has no list for it.
local function offered(text, verb, pattern)
  local line = text:match("\n%s*" .. verb:gsub("%-", "%%-") .. pattern)
  if not line then return nil end
  local set = {}
  for w in line:gmatch("%S+") do set[w] = true end
  return set
end

-- What the parser takes -> set of long options.
local function accepted(verb)
  local set = {}
  local options = cli.commands()[verb].options or {}
  if verb == "serve" then
    options = { ["--stop"] = "flag", ["--background"] = "flag", ["--json"] = "flag" }
    for name in pairs(engine_main.OPTIONS) do options["--" .. name] = true end
  end
  for name in pairs(options) do
    if name:match("^%-%-") then set[name] = true end
  end
  return set
end

describe("shell completions", function()
  for _, shell in ipairs({ { "bash", bash, '%) opts="([^"]*)"' }, { "zsh", zsh, "%) opts=%(([^)]*)%)" } }) do
    it(shell[1] .. " offers every long option each verb takes, and none it refuses", function()
      local checked = 0
      for verb in pairs(cli.commands()) do
        local offers = offered(shell[2], verb, shell[3])
        if offers then
          checked = checked + 1
          local want = accepted(verb)
          for name in pairs(want) do
            assert.truthy(offers[name], ("%s completion of `aeflow %s` lacks %s"):format(shell[1], verb, name))
          end
          for name in pairs(offers) do
            if name:match("^%-%-") then
              assert.truthy(want[name], ("%s completion of `aeflow %s` offers %s, which it refuses")
                :format(shell[1], verb, name))
            end
          end
        end
      end
      assert.truthy(checked >= 10, "found the option lists of only " .. checked .. " verbs")
    end)
  end
end)
