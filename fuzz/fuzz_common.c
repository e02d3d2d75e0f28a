/* See fuzz_common.h. */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>

#include "core.h"

#ifndef AE_SRCDIR
#define AE_SRCDIR "."
#endif

static int traceback(lua_State *L) {
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

lua_State *fuzz_lua_state(void) {
  lua_State *L = luaL_newstate();
  if (!L) abort();
  luaL_openlibs(L);
  luaL_requiref(L, "analytics_engine.core", luaopen_analytics_engine_core, 0);
  lua_pop(L, 1);
  fuzz_lua_do(L, "package.path = '" AE_SRCDIR "/lua/?.lua;" AE_SRCDIR
                 "/lua/?/init.lua;' .. package.path");
  return L;
}

void fuzz_lua_do(lua_State *L, const char *chunk) {
  lua_pushcfunction(L, traceback);
  if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 0, -2) != LUA_OK) {
    fprintf(stderr, "fuzz harness: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_pop(L, 1);
}

void fuzz_lua_call(lua_State *L, const char *fn, const char *arg, size_t len) {
  lua_pushcfunction(L, traceback);
  lua_getglobal(L, fn);
  lua_pushlstring(L, arg, len);
  if (lua_pcall(L, 1, 0, -3) != LUA_OK) {
    fprintf(stderr, "fuzz: %s raised: %s\n", fn, lua_tostring(L, -1));
    abort();
  }
  lua_pop(L, 1);
}
