-- The rock: every Lua module is listed, and `luarocks make` installs a
-- working module offline from Debian's packages.
describe("the rockspec", function()
  local function read(p)
    local f = assert(io.open(p))
    local s = f:read("a")
    f:close()
    return s
  end

  it("lists every Lua module under lua/", function()
    local rockspec = read("analytics-engine-scm-1.rockspec")
    local h = io.popen("cd lua && find analytics_engine -name '*.lua' | sort")
    for path in h:lines() do
      assert.truthy(rockspec:find('"lua/' .. path .. '"', 1, true), path .. " is missing from the rockspec")
    end
    h:close()
  end)

  it("builds and installs offline with luarocks --lua-version=5.4 make", function()
    local tree = os.tmpname()
    os.remove(tree)
    finally(function() os.execute("rm -rf '" .. tree .. "'") end)
    local ok = os.execute(("luarocks --lua-version=5.4 --tree '%s' make --deps-mode=none "
      .. "analytics-engine-scm-1.rockspec > '%s.log' 2>&1"):format(tree, tree))
    assert.is_true(ok == true or ok == 0, read(tree .. ".log"))
    local cmd = ("LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;;' LUA_CPATH='%s/lib/lua/5.4/?.so;;' "
      .. "lua5.4 -e 'local ae = require \"analytics_engine\"; local core = require \"analytics_engine.core\"; "
      .. "assert(package.searchpath(\"analytics_engine.core\", package.cpath):find(\"%s\", 1, true)); "
      .. "io.write(ae.VERSION, \" \", core.VERSION)'"):format(tree, tree, tree, tree)
    local p = io.popen(cmd)
    local out = p:read("a")
    p:close()
    assert.equals("0.1.0 0.1.0", out)
    p = io.popen(("LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;;' "
      .. "LUA_CPATH='%s/lib/lua/5.4/?.so;;' '%s/bin/aeflow' --version"):format(tree, tree, tree, tree))
    out = p:read("a")
    p:close()
    os.remove(tree .. ".log")
    assert.matches("^aeflow 0%.1%.0", out)
  end)
end)
