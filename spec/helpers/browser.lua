--- Debian's chromium, headless, for specs: dump a page's DOM after it is
-- rendered, or take a screenshot. A missing chromium is an error (the specs
-- that need it fail, they do not skip).
local core = require("analytics_engine.core")
local util = require("analytics_engine.util")
local launcher = require("analytics_engine.engine.launcher")

local helper = {}

local function read(path)
  return util.read_file(path) or ""
end
helper.read = read

--- The chromium binary, or an error naming the package to install.
function helper.bin()
  for _, p in ipairs { "/usr/bin/chromium", "/usr/bin/chromium-browser" } do
    if util.exists(p) then return p end
  end
  error("chromium is not installed: `make deps` installs Debian's chromium package", 2)
end

local FLAGS = { "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage" }

--- Run chromium with `extra` flags and `url`; returns stdout, stderr.
function helper.run(extra, url, timeout)
  local dir = assert(launcher.temp_dir("chromium-spec-"))
  local argv = { helper.bin() }
  for _, f in ipairs(FLAGS) do argv[#argv + 1] = f end
  argv[#argv + 1] = "--user-data-dir=" .. dir .. "/profile"
  for _, f in ipairs(extra or {}) do argv[#argv + 1] = f end
  argv[#argv + 1] = url
  local pid = assert(core.spawn { argv = argv, stdout = dir .. "/out", stderr = dir .. "/err",
                                  env = { "PATH=/usr/bin:/bin", "HOME=" .. dir, "LANG=C.UTF-8" } })
  local deadline = core.monotime() + (timeout or 60)
  local how, code
  while true do
    how, code = core.wait(pid)
    if how then break end
    if core.monotime() > deadline then
      core.kill(pid, "KILL")
      core.wait(pid)
      os.execute("rm -rf '" .. dir .. "'")
      error("chromium did not finish within " .. (timeout or 60) .. "s", 2)
    end
    core.sleep(0.05)
  end
  local out, err = read(dir .. "/out"), read(dir .. "/err")
  os.execute("rm -rf '" .. dir .. "'")
  if how ~= "exited" or code ~= 0 then
    error(("chromium failed (%s %s): %s"):format(tostring(how), tostring(code), err:sub(-2000)), 2)
  end
  return out, err
end

--- The rendered DOM of `url`.
function helper.dump_dom(url)
  return (helper.run({ "--dump-dom" }, url))
end

--- A screenshot of `url` into `path` (1280x900).
function helper.screenshot(url, path)
  helper.run({ "--screenshot=" .. path, "--window-size=1280,900" }, url)
  return path
end

--- `tidy -e -q` on a file: exit code (0 clean, 1 warnings, 2 errors) and messages.
function helper.tidy(path)
  local f = io.open("/usr/bin/tidy", "rb")
  if not f then error("tidy is not installed: `make deps` installs Debian's tidy package", 2) end
  f:close()
  local p = assert(io.popen("/usr/bin/tidy -e -q '" .. path .. "' 2>&1; echo \"exit=$?\""))
  local out = p:read("a")
  p:close()
  local code = tonumber(out:match("exit=(%d+)%s*$"))
  return code, (out:gsub("exit=%d+%s*$", ""))
end

return helper
