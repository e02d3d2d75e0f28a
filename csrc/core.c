/* analytics_engine.core: the C core. Thin, fast, no policy. This file makes
 * the module table from the parts, and holds the clock functions every part
 * shares (clock.h). */
#include "core.h"

#include <errno.h>
#include <time.h>

#include "clock.h"

static int l_monotime(lua_State *L) {
  lua_pushnumber(L, (lua_Number)ae_clock_mono());
  return 1;
}

static int l_time(lua_State *L) {
  lua_pushnumber(L, (lua_Number)ae_clock_real());
  return 1;
}

/* sleep(seconds): returns early (false) when a watched signal arrives. */
static int l_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  struct timespec ts, rem;
  int seen = ae_signal_count();
  if (!(s > 0)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (s > 1e9) s = 1e9;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
  if (ts.tv_nsec > 999999999L) ts.tv_nsec = 999999999L;
  while (nanosleep(&ts, &rem) != 0 && errno == EINTR) {
    if (ae_signal_count() != seen) {
      lua_pushboolean(L, 0);
      return 1;
    }
    ts = rem;
  }
  lua_pushboolean(L, 1);
  return 1;
}

int luaopen_analytics_engine_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"monotime", l_monotime}, {"time", l_time}, {"sleep", l_sleep}, {NULL, NULL}};
  lua_newtable(L);
  lua_pushliteral(L, AE_CORE_VERSION);
  lua_setfield(L, -2, "VERSION");
  luaL_setfuncs(L, funcs, 0);
  ae_open_http(L);
  ae_open_server(L);
  ae_open_process(L);
  ae_open_fs(L);
  ae_open_digest(L);
  ae_open_websocket(L);
  ae_open_sqlite(L);
  ae_open_bounds(L);
  return 1;
}
