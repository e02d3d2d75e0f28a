--- The library's version, in a module of its own so that `aeflow --version`
-- need not load the client to print it.
local _M = { VERSION = "0.1.0" }

return _M
