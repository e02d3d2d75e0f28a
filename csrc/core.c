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

/* Is there an empty table with metatable `mt` (stack index 2) among the
 * values reachable from the table at `idx`? 1 yes, 0 no, -1 gave up (deeper
 * than JSON_DEPTH, or more than *budget tables: a cycle, or shared parts
 * walked again and again; the caller then walks in Lua, which keeps a memo
 * and reports cycles). */
#define JSON_DEPTH 1000
static int has_empty(lua_State *L, int idx, int depth, long *budget) {
  if (depth > JSON_DEPTH || --*budget < 0) return -1;
  luaL_checkstack(L, 4, "has_empty_array");
  lua_pushnil(L);
  if (!lua_next(L, idx)) {
    int found = 0;
    if (lua_getmetatable(L, idx)) {
      found = lua_rawequal(L, -1, 2);
      lua_pop(L, 1);
    }
    return found;
  }
  do { /* key, value on the stack */
    if (lua_type(L, -1) == LUA_TTABLE) {
      int r = has_empty(L, lua_gettop(L), depth + 1, budget);
      if (r != 0) {
        lua_pop(L, 2);
        return r;
      }
    }
    lua_pop(L, 1);
  } while (lua_next(L, idx));
  return 0;
}

/* has_empty_array(v, mt) -> true | false | nil (too deep or too large to
 * say here). util.json_encode asks before handing a table to cjson, which
 * would write an empty array as {}; the same walk in Lua was most of the
 * cost of writing a 10,000-item state file. */
static int l_has_empty_array(lua_State *L) {
  long budget = 1000000;
  int r;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  r = has_empty(L, 1, 1, &budget);
  if (r < 0) lua_pushnil(L);
  else lua_pushboolean(L, r);
  return 1;
}

int luaopen_analytics_engine_core(lua_State *L) {
  static const luaL_Reg funcs[] = {{"monotime", l_monotime},
                                   {"time", l_time},
                                   {"sleep", l_sleep},
                                   {"has_empty_array", l_has_empty_array},
                                   {NULL, NULL}};
  lua_newtable(L);
  lua_pushliteral(L, AE_CORE_VERSION);
  lua_setfield(L, -2, "VERSION");
  luaL_setfuncs(L, funcs, 0);
  ae_open_http(L);
  ae_open_server(L);
  ae_open_process(L);
  ae_open_fs(L);
  ae_open_fs_sync(L);
  ae_open_digest(L);
  ae_open_websocket(L);
  ae_open_sqlite(L);
  ae_open_bounds(L);
  return 1;
}
