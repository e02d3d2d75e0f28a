/* analytics_engine.core: the C core. Thin, fast, no policy. */
#include "core.h"

int luaopen_analytics_engine_core(lua_State *L) {
  lua_newtable(L);
  lua_pushliteral(L, AE_CORE_VERSION);
  lua_setfield(L, -2, "VERSION");
  ae_open_http(L);
  ae_open_server(L);
  ae_open_process(L);
  ae_open_fs(L);
  ae_open_websocket(L);
  ae_open_sqlite(L);
  return 1;
}
