--- The one stylesheet of the project's HTML: the engine's page (engine/page.lua)
-- and the run report (report/html.lua) share the page frame, tables, code and
-- the state colours; each adds only rules of its own. Inline CSS, no asset.
local _M = {}

--- The shared rules: page frame, sections, tables, code, state colours.
_M.BASE = [[
:root { --ok: #2e9d4f; --bad: #d64541; --skip: #9aa5ab; --cancel: #e6a23c; --run: #3b82f6; --pend: #cfd8dc; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #1f2933; background: #f6f8fa; }
header { background: #1f2933; color: #fff; padding: 16px 24px; }
header h1 { margin: 0 0 4px; font-size: 20px; }
header .meta { color: #cbd2d9; font-size: 13px; }
main { padding: 8px 24px 32px; }
section { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; margin: 16px 0; padding: 12px 16px;
          overflow-x: auto; }
h2 { font-size: 16px; margin: 4px 0 12px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eef0f2; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #f6f8fa; padding: 8px; border-radius: 4px; overflow-x: auto; margin: 4px 0; }
]]

--- The shared rules followed by a page's own.
function _M.with(rules)
  return _M.BASE .. (rules or "")
end

return _M
